//! Service supervision: one thread per declared service runs it, waits for
//! it, and restarts it per its policy with exponential backoff. Output
//! (stdout and stderr together) goes to a bounded in-memory ring and to
//! `<log_dir>/<name>.log` (rotated once to `.log.1` past a size limit).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use agent_proto::{
    ErrorCode, ExitStatus, Readiness, RestartPolicy, ServiceInfo, ServiceSpec, ServiceState,
};

use crate::exec::{self, Refusal, Spec};
use crate::reaper::Reaper;
use crate::sys::{self, kill_group, lock};

#[derive(Debug, Clone)]
pub struct Options {
    /// First restart delay; doubles per consecutive failure.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A run this long resets the backoff.
    pub stable_after: Duration,
    /// SIGTERM -> SIGKILL grace period.
    pub stop_timeout: Duration,
    pub probe_interval: Duration,
    /// In-memory log per service.
    pub ring_bytes: usize,
    /// Log file size before it is rotated to `.log.1`.
    pub file_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            stable_after: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(10),
            probe_interval: Duration::from_millis(250),
            ring_bytes: 256 * 1024,
            file_bytes: 8 << 20,
        }
    }
}

#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    services: Mutex<BTreeMap<String, Arc<Service>>>,
    root: PathBuf,
    reaper: Arc<Reaper>,
    log_dir: Option<PathBuf>,
    opts: Options,
}

struct Service {
    name: String,
    st: Mutex<SvcState>,
    /// Signalled on every state change (exit, requests).
    cv: Condvar,
    log: Arc<LogRing>,
}

struct SvcState {
    spec: ServiceSpec,
    want_running: bool,
    phase: ServiceState,
    pid: Option<u32>,
    ready: bool,
    restarts: u32,
    last_exit: Option<ExitStatus>,
    /// Bumped per spawn; probes of an older run give up.
    run_id: u64,
    removed: bool,
    /// A restart request: respawn at once when the process is gone.
    restart_now: bool,
}

fn not_found(name: &str) -> Refusal {
    Refusal(ErrorCode::NotFound, format!("no service named '{name}'"))
}

impl Supervisor {
    /// `root` is where `/etc/passwd` is read; `log_dir` gets one file per
    /// service (None: memory only).
    pub fn new(
        root: PathBuf,
        reaper: Arc<Reaper>,
        log_dir: Option<PathBuf>,
        opts: Options,
    ) -> Self {
        if let Some(d) = &log_dir {
            if let Err(e) = std::fs::create_dir_all(d) {
                crate::log!(
                    "cannot create the service log directory {}: {e}",
                    d.display()
                );
            }
        }
        Supervisor {
            inner: Arc::new(Inner {
                services: Mutex::new(BTreeMap::new()),
                root,
                reaper,
                log_dir,
                opts,
            }),
        }
    }

    fn get(&self, name: &str) -> Result<Arc<Service>, Refusal> {
        lock(&self.inner.services)
            .get(name)
            .cloned()
            .ok_or_else(|| not_found(name))
    }

    /// Declares or redefines a service (a running process keeps running
    /// with its old definition until its next start).
    pub fn declare(&self, spec: ServiceSpec, start: bool) -> Result<(), Refusal> {
        spec.validate()
            .map_err(|m| Refusal(ErrorCode::BadRequest, m))?;
        let name = spec.name.clone();
        let mut map = lock(&self.inner.services);
        if let Some(svc) = map.get(&name) {
            lock(&svc.st).spec = spec;
        } else {
            let file = self
                .inner
                .log_dir
                .as_ref()
                .map(|d| d.join(format!("{name}.log")));
            let svc = Arc::new(Service {
                name: name.clone(),
                st: Mutex::new(SvcState {
                    spec,
                    want_running: false,
                    phase: ServiceState::Stopped,
                    pid: None,
                    ready: false,
                    restarts: 0,
                    last_exit: None,
                    run_id: 0,
                    removed: false,
                    restart_now: false,
                }),
                cv: Condvar::new(),
                log: Arc::new(LogRing::new(
                    self.inner.opts.ring_bytes,
                    file,
                    self.inner.opts.file_bytes,
                )),
            });
            let (inner, svc2) = (Arc::clone(&self.inner), Arc::clone(&svc));
            std::thread::Builder::new()
                .name(format!("svc-{name}"))
                .spawn(move || supervise(inner, svc2))
                .map_err(|e| Refusal(ErrorCode::Failed, format!("cannot start a thread: {e}")))?;
            map.insert(name.clone(), svc);
        }
        drop(map);
        if start {
            self.start(&name)?;
        }
        Ok(())
    }

    pub fn start(&self, name: &str) -> Result<(), Refusal> {
        let svc = self.get(name)?;
        let mut st = lock(&svc.st);
        if !st.want_running {
            st.want_running = true;
            svc.cv.notify_all();
        }
        Ok(())
    }

    /// Stops the service; returns once its process is gone.
    pub fn stop(&self, name: &str) -> Result<(), Refusal> {
        let svc = self.get(name)?;
        let st = lock(&svc.st);
        drop(self.terminate(&svc, st, false));
        Ok(())
    }

    pub fn restart(&self, name: &str) -> Result<(), Refusal> {
        let svc = self.get(name)?;
        let mut st = lock(&svc.st);
        if st.pid.is_some() {
            drop(self.terminate(&svc, st, true));
        } else {
            st.want_running = true;
            st.restart_now = true;
            svc.cv.notify_all();
        }
        Ok(())
    }

    pub fn remove(&self, name: &str) -> Result<(), Refusal> {
        let svc = self.get(name)?;
        let st = lock(&svc.st);
        let mut st = self.terminate(&svc, st, false);
        st.removed = true;
        svc.cv.notify_all();
        drop(st);
        svc.log.close();
        lock(&self.inner.services).remove(name);
        Ok(())
    }

    /// SIGTERM to the process group, SIGKILL after the grace period; waits
    /// for the supervisor thread to see the exit. With `restart`, the
    /// service is started again right away.
    fn terminate<'a>(
        &self,
        svc: &'a Service,
        mut st: MutexGuard<'a, SvcState>,
        restart: bool,
    ) -> MutexGuard<'a, SvcState> {
        st.want_running = restart;
        st.restart_now = restart;
        svc.cv.notify_all();
        let Some(pid) = st.pid else {
            if st.phase == ServiceState::Backoff {
                st.phase = ServiceState::Stopped;
            }
            return st;
        };
        st.phase = ServiceState::Stopping;
        svc.log.note(&format!("stopping (SIGTERM to pid {pid})"));
        kill_group(pid, libc::SIGTERM);
        let deadline = Instant::now() + self.inner.opts.stop_timeout;
        let mut killed = false;
        while st.pid == Some(pid) {
            let now = Instant::now();
            if now >= deadline {
                if killed {
                    // SIGKILL did not end it within another grace period
                    // (stuck in the kernel): give up waiting.
                    crate::log!("service {}: pid {pid} survives SIGKILL", svc.name);
                    break;
                }
                svc.log
                    .note(&format!("still running, SIGKILL to pid {pid}"));
                kill_group(pid, libc::SIGKILL);
                killed = true;
                let deadline2 = Instant::now() + self.inner.opts.stop_timeout;
                st = wait_until(&svc.cv, st, deadline2, |s| s.pid != Some(pid));
                continue;
            }
            st = wait_until(&svc.cv, st, deadline, |s| s.pid != Some(pid));
        }
        st
    }

    pub fn status(&self, name: Option<&str>) -> Result<Vec<ServiceInfo>, Refusal> {
        let svcs: Vec<Arc<Service>> = match name {
            Some(n) => vec![self.get(n)?],
            None => lock(&self.inner.services).values().cloned().collect(),
        };
        Ok(svcs
            .iter()
            .map(|svc| {
                let st = lock(&svc.st);
                ServiceInfo {
                    name: svc.name.clone(),
                    state: st.phase,
                    pid: st.pid,
                    ready: st.ready,
                    restarts: st.restarts,
                    last_exit: st.last_exit,
                    restart: st.spec.restart,
                    argv: st.spec.argv.clone(),
                }
            })
            .collect())
    }

    pub fn log_ring(&self, name: &str) -> Result<Arc<LogRing>, Refusal> {
        Ok(Arc::clone(&self.get(name)?.log))
    }

    /// Stops every service in parallel (for shutdown).
    pub fn stop_all(&self) {
        let names: Vec<String> = lock(&self.inner.services).keys().cloned().collect();
        let handles: Vec<_> = names
            .into_iter()
            .filter_map(|n| {
                let me = self.clone();
                std::thread::Builder::new()
                    .spawn(move || {
                        let _ = me.stop(&n);
                    })
                    .ok()
            })
            .collect();
        for h in handles {
            let _ = h.join();
        }
    }
}

fn wait_until<'a>(
    cv: &Condvar,
    mut st: MutexGuard<'a, SvcState>,
    deadline: Instant,
    done: impl Fn(&SvcState) -> bool,
) -> MutexGuard<'a, SvcState> {
    while !done(&st) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        st = cv
            .wait_timeout(st, deadline - now)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
    }
    st
}

fn supervise(inner: Arc<Inner>, svc: Arc<Service>) {
    let mut failures: u32 = 0;
    loop {
        let spec = {
            let mut st = lock(&svc.st);
            while !st.want_running && !st.removed {
                st = svc.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.removed {
                return;
            }
            st.restart_now = false;
            st.spec.clone()
        };

        let started = Instant::now();
        let status = match spawn_service(&inner, &svc, &spec) {
            Ok(status) => status,
            Err(r) => {
                svc.log.note(&format!("cannot start: {}", r.1));
                lock(&svc.st).last_exit = None;
                None
            }
        };

        let mut st = lock(&svc.st);
        svc.cv.notify_all();
        if st.removed {
            return;
        }
        if st.restart_now {
            continue;
        }
        if !st.want_running {
            st.phase = ServiceState::Stopped;
            continue;
        }
        let failed = !status.is_some_and(|s| s.success());
        let again = match spec.restart {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => failed,
            RestartPolicy::Always => true,
        };
        if !again {
            st.phase = ServiceState::Exited;
            st.want_running = false;
            continue;
        }
        if started.elapsed() >= inner.opts.stable_after {
            failures = 0;
        }
        let delay = inner
            .opts
            .initial_backoff
            .saturating_mul(1u32 << failures.min(16))
            .min(inner.opts.max_backoff);
        failures = failures.saturating_add(1);
        st.phase = ServiceState::Backoff;
        svc.log
            .note(&format!("restarting in {:.1}s", delay.as_secs_f64()));
        let st = wait_until(&svc.cv, st, Instant::now() + delay, |s| {
            !s.want_running || s.removed || s.restart_now
        });
        let mut st = st;
        if st.want_running && !st.removed && !st.restart_now {
            st.restarts = st.restarts.saturating_add(1);
        }
    }
}

/// Runs one instance of the service to its end; `Ok(None)` if the reaper
/// lost track of it.
fn spawn_service(
    inner: &Arc<Inner>,
    svc: &Arc<Service>,
    spec: &ServiceSpec,
) -> Result<Option<ExitStatus>, Refusal> {
    let internal = |e: std::io::Error| Refusal(ErrorCode::Failed, format!("log pipe: {e}"));
    let (r, w) = sys::pipe().map_err(internal)?;
    let w2 = w.try_clone().map_err(internal)?;
    let watch = exec::spawn_with(
        &inner.reaper,
        &inner.root,
        &Spec {
            argv: &spec.argv,
            env: &spec.env,
            cwd: spec.cwd.as_deref(),
            user: spec.user.as_ref(),
            tty: false,
        },
        Stdio::from(w),
        Stdio::from(w2),
    )?;
    let pid = watch.pid();
    let run_id = {
        let mut st = lock(&svc.st);
        st.pid = Some(pid);
        st.ready = spec.readiness.is_none();
        st.phase = if st.ready {
            ServiceState::Running
        } else {
            ServiceState::Starting
        };
        st.run_id += 1;
        svc.cv.notify_all();
        st.run_id
    };
    svc.log.note(&format!(
        "started pid {pid}: {}",
        exec::describe(&spec.argv)
    ));
    spawn_log_reader(Arc::clone(&svc.log), r, &svc.name);
    if let Some(readiness) = spec.readiness.clone() {
        let (inner2, svc2, spec2) = (Arc::clone(inner), Arc::clone(svc), spec.clone());
        let _ = std::thread::Builder::new()
            .name(format!("probe-{}", svc.name))
            .spawn(move || probe(inner2, svc2, spec2, run_id, readiness));
    }
    let status = watch.wait();
    {
        let mut st = lock(&svc.st);
        st.pid = None;
        st.ready = false;
        st.last_exit = status;
    }
    svc.log.note(&match status {
        Some(s) => format!("pid {pid} exited: {s}"),
        None => format!("pid {pid} exited (status unknown)"),
    });
    Ok(status)
}

fn spawn_log_reader(ring: Arc<LogRing>, fd: OwnedFd, name: &str) {
    let r = std::thread::Builder::new()
        .name(format!("log-{name}"))
        .spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match sys::read_fd(fd.as_fd(), &mut buf) {
                    Ok(0) => return,
                    Ok(n) => ring.append(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        });
    if let Err(e) = r {
        crate::log!("service {name}: no log thread: {e}");
    }
}

fn probe(inner: Arc<Inner>, svc: Arc<Service>, spec: ServiceSpec, run_id: u64, r: Readiness) {
    loop {
        std::thread::sleep(inner.opts.probe_interval);
        {
            let st = lock(&svc.st);
            if st.run_id != run_id || st.pid.is_none() || st.removed {
                return;
            }
        }
        let ok = match &r {
            Readiness::Tcp { port } => ["127.0.0.1", "[::1]"].iter().any(|h| {
                format!("{h}:{port}").parse::<SocketAddr>().is_ok_and(|a| {
                    TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_ok()
                })
            }),
            Readiness::Command { argv } => run_probe_command(&inner, &spec, argv),
        };
        if ok {
            let mut st = lock(&svc.st);
            if st.run_id == run_id && st.pid.is_some() {
                st.ready = true;
                if st.phase == ServiceState::Starting {
                    st.phase = ServiceState::Running;
                }
                svc.cv.notify_all();
                drop(st);
                svc.log.note("ready");
            }
            return;
        }
    }
}

fn run_probe_command(inner: &Inner, spec: &ServiceSpec, argv: &[String]) -> bool {
    let Ok(watch) = exec::spawn_with(
        &inner.reaper,
        &inner.root,
        &Spec {
            argv,
            env: &spec.env,
            cwd: spec.cwd.as_deref(),
            user: spec.user.as_ref(),
            tty: false,
        },
        Stdio::null(),
        Stdio::null(),
    ) else {
        return false;
    };
    match watch.wait_timeout(Duration::from_secs(10)) {
        Some(s) => s.success(),
        None => {
            kill_group(watch.pid(), libc::SIGKILL);
            let _ = watch.wait();
            false
        }
    }
}

/// A service's log: the last `cap` bytes in memory (plus a file).
/// Offsets count every byte ever appended, so a follower can tell what it
/// missed.
pub struct LogRing {
    inner: Mutex<RingInner>,
    cv: Condvar,
}

struct RingInner {
    buf: VecDeque<u8>,
    cap: usize,
    total: u64,
    closed: bool,
    file: Option<LogFile>,
}

struct LogFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max: u64,
}

impl LogFile {
    fn open(path: &Path) -> Option<File> {
        OpenOptions::new().create(true).append(true).open(path).ok()
    }

    fn write(&mut self, data: &[u8]) {
        if self.size + data.len() as u64 > self.max {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            let _ = std::fs::rename(&self.path, old);
            self.file = Self::open(&self.path);
            self.size = 0;
        }
        if let Some(f) = &mut self.file {
            if f.write_all(data).is_ok() {
                self.size += data.len() as u64;
            }
        }
    }
}

impl LogRing {
    pub fn new(cap: usize, path: Option<PathBuf>, file_max: u64) -> Self {
        let file = path.map(|p| {
            let file = LogFile::open(&p);
            let size = file
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .map_or(0, |m| m.len());
            LogFile {
                path: p,
                file,
                size,
                max: file_max,
            }
        });
        LogRing {
            inner: Mutex::new(RingInner {
                buf: VecDeque::with_capacity(cap.min(64 * 1024)),
                cap,
                total: 0,
                closed: false,
                file,
            }),
            cv: Condvar::new(),
        }
    }

    pub fn append(&self, data: &[u8]) {
        let mut r = lock(&self.inner);
        let keep = data.len().min(r.cap);
        let data_tail = &data[data.len() - keep..];
        let overflow = (r.buf.len() + keep).saturating_sub(r.cap);
        r.buf.drain(..overflow);
        r.buf.extend(data_tail);
        r.total += data.len() as u64;
        if let Some(f) = &mut r.file {
            f.write(data);
        }
        drop(r);
        self.cv.notify_all();
    }

    /// A supervisor event, as its own line in the log.
    pub fn note(&self, what: &str) {
        self.append(format!("[mvm-init] {what}\n").as_bytes());
    }

    fn close(&self) {
        lock(&self.inner).closed = true;
        self.cv.notify_all();
    }

    /// The offset `max_bytes` before the end (or the oldest kept byte).
    pub fn tail_offset(&self, max_bytes: Option<u64>) -> u64 {
        let r = lock(&self.inner);
        let oldest = r.total - r.buf.len() as u64;
        match max_bytes {
            Some(m) => r.total.saturating_sub(m).max(oldest),
            None => oldest,
        }
    }

    /// Up to `max` bytes from `offset` (moved forward to the oldest kept
    /// byte if they were dropped); returns the data and the next offset.
    pub fn read_from(&self, offset: u64, max: usize) -> (Vec<u8>, u64) {
        let r = lock(&self.inner);
        let oldest = r.total - r.buf.len() as u64;
        let start = offset.clamp(oldest, r.total);
        let skip = (start - oldest) as usize;
        let n = (r.buf.len() - skip).min(max);
        let data: Vec<u8> = r.buf.range(skip..skip + n).copied().collect();
        (data, start + n as u64)
    }

    /// Waits until there is data past `offset`, the ring is closed, or the
    /// timeout passes. Returns false if closed.
    pub fn wait_past(&self, offset: u64, timeout: Duration) -> bool {
        let r = lock(&self.inner);
        let r = self
            .cv
            .wait_timeout_while(r, timeout, |r| r.total <= offset && !r.closed)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
        !r.closed
    }
}

#[cfg(test)]
mod tests;
