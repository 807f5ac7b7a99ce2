//! Starting, stopping and removing a VM: its VMM runs as its own detached
//! process (`mvm _vmm DIR`), which outlives the `mvm` that started it.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{bail, Context};
use vmm::api::{self, ApiRequest};

use crate::state::{RunState, VmDir, VmLock};
use crate::Report;

/// How long `start` waits for the VMM to answer on its API socket.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts VM `name` (locked) unless it runs; true when it was started.
pub fn start(name: &str, report: &dyn Report) -> crate::Result<bool> {
    let dir = VmDir::existing(name)?;
    let _lock = VmLock::acquire(&dir.path, &dir.name, report)?;
    start_locked(&dir, report)
}

/// Starts the VM unless it runs; true when it was started.
pub fn start_locked(dir: &VmDir, report: &dyn Report) -> crate::Result<bool> {
    match dir.run_state() {
        RunState::Running | RunState::Paused => return Ok(false),
        RunState::Crashed => {
            report.progress(&format!(
                "VM '{}' had crashed; cleaning up before starting it again",
                dir.name
            ));
        }
        RunState::Stopped => {}
    }
    // Before run/ (a one-off VM's upper layer, with the journal) goes.
    crate::changes::finish_interrupted_commit(dir, report)?;
    dir.clear_runtime()?;
    let spec = dir.spec()?;
    // What can fail cheaply fails before any host resource is taken.
    vmm::loader::probe_kernel(&crate::image::kernel(&spec)?)?;
    crate::image::mvm_init()?;
    crate::net::reconcile();
    let mut attached = None;
    let result = (|| {
        let net = if spec.network {
            crate::net::attach(&spec, report)?
        } else {
            None
        };
        attached = net.clone();
        if let Some(n) = &net {
            crate::net::ensure_daemon()?;
            crate::net::sync_forwards(&spec)?;
            let plan = crate::net::ProxyPlan {
                guest_ip: n.ip,
                forwards: spec.ports.clone(),
            };
            std::fs::write(crate::net::proxy_plan_path(dir), serde_json::to_vec(&plan)?)?;
        }
        let config = crate::image::vm_config(dir, &spec, net.as_ref(), report)?;
        let json = serde_json::to_vec_pretty(&config).context("cannot serialise the VM config")?;
        std::fs::write(dir.vmm_config(), json)
            .with_context(|| format!("cannot write {}", dir.vmm_config().display()))?;
        rotate_console(dir);
        let pid = spawn_vmm(dir)?;
        if net.is_some() {
            crate::net::set_owner(&spec, pid);
        }
        Ok::<(), crate::Error>(())
    })();
    if result.is_err() {
        let _ = dir.clear_runtime();
        if attached.is_some() {
            crate::net::detach(&spec);
        }
    }
    result?;
    if let Err(e) = crate::cgroup::mount_point() {
        report.warn(&format!(
            "VM '{}' runs without a cgroup (no CPU, memory or task bounds): {e}; `mvm doctor` says how to get one",
            dir.name
        ));
    }
    // The VM runs from here on: a service that cannot start leaves it
    // running, so that its logs can be read.
    if !spec.services.is_empty() {
        crate::services::declare(dir, &spec).with_context(|| {
            format!(
                "VM '{0}' runs, but not all its services started (`mvm service {0}`, `mvm logs {0} --service NAME`)",
                dir.name
            )
        })?;
    }
    Ok(true)
}

/// Starts `mvm ARGS...` in its own session (it survives the terminal and
/// this mvm going away), stdin from /dev/null, output to `log`.
pub fn spawn_detached(
    args: &[&std::ffi::OsStr],
    log: &std::path::Path,
) -> crate::Result<std::process::Child> {
    let exe = std::env::current_exe().context("cannot find the mvm executable")?;
    let out =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(
            out.try_clone()
                .with_context(|| format!("cannot open {}", log.display()))?,
        )
        .stderr(out);
    // SAFETY: setsid, syscall and fcntl are async-signal-safe and touch no
    // memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            // Descriptors our caller passed us without close-on-exec (direnv
            // gives its .envrc a pipe on fd 3) must not live on in a
            // long-lived child: the caller would wait for their EOF forever.
            const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) != 0 {
                for fd in 3..1024 {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            Ok(())
        });
    }
    Ok(cmd.spawn()?)
}

/// Keeps the previous boot's console as console.log.old.
fn rotate_console(dir: &VmDir) {
    let log = dir.console_log();
    if log.exists() {
        let _ = std::fs::rename(&log, log.with_extension("log.old"));
    }
}

fn spawn_vmm(dir: &VmDir) -> crate::Result<u32> {
    let path = dir.path.as_os_str();
    let mut child = spawn_detached(&["_vmm".as_ref(), path], &dir.vmm_log())
        .context("cannot start the VMM process")?;
    std::fs::write(dir.pid_path(), format!("{}\n", child.id()))
        .with_context(|| format!("cannot write {}", dir.pid_path().display()))?;

    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().context("cannot watch the VMM process")? {
            let log = std::fs::read_to_string(dir.vmm_log()).unwrap_or_default();
            let why = log
                .lines()
                .rev()
                .find(|l| l.starts_with("mvm: "))
                .map(|l| l.trim_start_matches("mvm: ").to_string())
                .unwrap_or_else(|| {
                    format!("it exited with {status}; see {}", dir.vmm_log().display())
                });
            bail!("VM '{}' failed to start: {why}", dir.name);
        }
        if api::call(
            &dir.api_socket(),
            &ApiRequest::Status,
            Duration::from_secs(1),
        )
        .is_ok()
        {
            return Ok(child.id());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "VM '{}' did not come up within {}s; see {}",
                dir.name,
                START_TIMEOUT.as_secs(),
                dir.vmm_log().display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops VM `name` (locked) if it runs; the state it was in.
pub fn stop(name: &str, timeout: Duration, report: &dyn Report) -> crate::Result<RunState> {
    let dir = VmDir::existing(name)?;
    let _lock = VmLock::acquire(&dir.path, &dir.name, report)?;
    stop_locked(&dir, timeout, report)
}

/// Stops the VM if it runs; returns the state it was in.
pub fn stop_locked(dir: &VmDir, timeout: Duration, report: &dyn Report) -> crate::Result<RunState> {
    let state = dir.run_state();
    if let (RunState::Running | RunState::Paused, Some(pid)) = (state, dir.pid()) {
        // The clean way: the guest agent shuts the guest down and the guest
        // resets. Until it answers, ask the VMM itself to stop.
        if crate::agent::shutdown(dir, timeout).is_err() {
            let _ = api::call(&dir.api_socket(), &ApiRequest::Stop, Duration::from_secs(2));
        }
        if !wait_gone(pid, &dir.path, timeout) {
            report.progress(&format!(
                "VM '{}' did not stop within {}s; killing its VMM",
                dir.name,
                timeout.as_secs()
            ));
            // SAFETY: plain kill(2) on a pid we just verified is our VMM.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            wait_gone(pid, &dir.path, Duration::from_secs(5));
        }
    }
    crate::changes::finish_interrupted_commit(dir, report)?;
    dir.clear_runtime()?;
    let spec = dir.spec()?;
    if spec.network {
        crate::net::detach(&spec);
    }
    if !spec.persistent {
        let upper = dir.state_dir();
        if upper.exists() {
            std::fs::remove_dir_all(&upper)
                .with_context(|| format!("cannot remove {}", upper.display()))?;
        }
    }
    Ok(state)
}

fn wait_gone(pid: i32, vm_dir: &std::path::Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while crate::state::process_is_vmm(pid, vm_dir) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Stops and starts VM `name` (locked).
pub fn restart(name: &str, timeout: Duration, report: &dyn Report) -> crate::Result<()> {
    let dir = VmDir::existing(name)?;
    let _lock = VmLock::acquire(&dir.path, &dir.name, report)?;
    stop_locked(&dir, timeout, report)?;
    start_locked(&dir, report)?;
    Ok(())
}

/// Removes VM `name` and its state; `force`: stop it first if it runs.
pub fn rm(name: &str, force: bool, report: &dyn Report) -> crate::Result<()> {
    rm_with(name, force, false, report)
}

/// [`rm`], and with `volumes` the VM's volumes that no other VM attaches
/// (after the VM is gone; they are kept otherwise).
pub fn rm_with(name: &str, force: bool, volumes: bool, report: &dyn Report) -> crate::Result<()> {
    let mounts = if volumes {
        VmDir::existing(name)?.spec()?.volumes
    } else {
        Vec::new()
    };
    rm_vm(name, force, report)?;
    crate::volume::remove_of_vm(name, &mounts, report)
}

fn rm_vm(name: &str, force: bool, report: &dyn Report) -> crate::Result<()> {
    let dir = VmDir::existing(name)?;
    let lock = VmLock::acquire(&dir.path, &dir.name, report)?;
    match dir.run_state() {
        RunState::Running | RunState::Paused if !force => {
            return Err(crate::Error::VmRunning(dir.name.clone()));
        }
        RunState::Running | RunState::Paused | RunState::Crashed => {
            stop_locked(&dir, Duration::from_secs(10), report)?;
        }
        RunState::Stopped => {}
    }
    if let Ok(spec) = dir.spec() {
        crate::net::forget(&spec);
    }
    crate::cgroup::remove_stale(&crate::cgroup::key(&dir));
    // Rename first so a concurrent mvm never sees a half-removed VM.
    let doomed = dir
        .path
        .with_file_name(format!(".{}.{}.rm", dir.name, std::process::id()));
    std::fs::rename(&dir.path, &doomed)
        .with_context(|| format!("cannot remove {}", dir.path.display()))?;
    drop(lock);
    std::fs::remove_dir_all(&doomed)
        .with_context(|| format!("cannot remove {}", doomed.display()))?;
    Ok(())
}

/// A throw-away VM (`mvm run` without --initrd): stopped and removed when
/// dropped, whatever happened.
pub struct Throwaway<'r> {
    pub dir: VmDir,
    report: &'r dyn Report,
}

/// Creates VM `opts.name` from `opts` alone (no project configuration)
/// and starts it; it goes when the [`Throwaway`] does.
pub fn throwaway<'r>(
    opts: &crate::create::CreateOptions,
    report: &'r dyn Report,
) -> crate::Result<Throwaway<'r>> {
    let dir = VmDir::of(&opts.name)?;
    {
        let _ports = crate::state::VmLock::acquire_ports()?;
        let spec = crate::create::validate(opts, &dir, &Default::default(), report)?;
        crate::create::write_vm(&dir, &spec)?;
    }
    let vm = Throwaway { dir, report };
    start_locked(&vm.dir, report)?;
    Ok(vm)
}

impl Drop for Throwaway<'_> {
    fn drop(&mut self) {
        let _ = stop_locked(&self.dir, Duration::from_secs(10), self.report);
        if let Ok(spec) = self.dir.spec() {
            crate::net::forget(&spec);
        }
        let _ = std::fs::remove_dir_all(&self.dir.path);
    }
}
