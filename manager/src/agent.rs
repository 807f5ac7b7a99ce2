//! Talking to the guest agent (mvm-init) through the VM's vsock socket.

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::error::{bail, Context};
use agent_proto::client::{connect_unix_timeout, Client};
use agent_proto::ShutdownAction;

use crate::state::VmDir;

/// How long one request to the agent may wait for its answer: the agent
/// answers at once, so a silence this long means a stalled guest.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the agent's hello may take once connected.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a running exec/shell session checks that the VM still
/// answers, and how long such a check waits.
const WATCH_INTERVAL: Duration = Duration::from_secs(30);
const WATCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Connects and shakes hands with the agent, retrying while the guest is
/// still booting, for at most `wait`. Every request on it then waits at
/// most `REQUEST_TIMEOUT` (60 s) for its answer.
pub fn client(dir: &VmDir, wait: Duration) -> crate::Result<Client<UnixStream>> {
    connect(dir, wait, Some(REQUEST_TIMEOUT))
}

/// A client for a session that may be silent for as long as its command
/// runs (exec, shell, following logs): no read timeout after the handshake.
/// Pair it with [`watch`].
pub fn session_client(dir: &VmDir, wait: Duration) -> crate::Result<Client<UnixStream>> {
    connect(dir, wait, None)
}

fn connect(
    dir: &VmDir,
    wait: Duration,
    read_timeout: Option<Duration>,
) -> crate::Result<Client<UnixStream>> {
    match dir.run_state() {
        crate::state::RunState::Running => {}
        crate::state::RunState::Paused => bail!("VM '{}' is paused", dir.name),
        state => bail!(
            "VM '{}' is {state}; start it with `mvm start {}`",
            dir.name,
            dir.name
        ),
    }
    let deadline = Instant::now() + wait;
    loop {
        if !dir.vsock_socket().exists() {
            bail!("VM '{}' is not running", dir.name);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let socket = dir.vsock_socket();
        // A blocking connect waits without a bound once the VMM stops
        // accepting (its listen backlog fills): each attempt runs on a
        // thread of its own and is abandoned when it overstays.
        let attempt = match bounded(left + HANDSHAKE_TIMEOUT, move || {
            let stream = connect_unix_timeout(
                &socket,
                Some(agent_proto::DEFAULT_AGENT_PORT),
                Some(left.max(Duration::from_millis(200))),
            )?;
            // The timeout is a property of the socket, shared by clones:
            // bound the handshake, then set the client's own.
            let same_socket = stream.try_clone()?;
            stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
            let client = Client::handshake(stream, "mvm")?;
            same_socket.set_read_timeout(read_timeout)?;
            Ok(client)
        }) {
            Ok(attempt) => attempt,
            Err(Overstayed) => bail!(
                "the VMM of VM '{}' did not take a connection on {} within {:?}: it may be stalled; `mvm debug {}` shows its state",
                dir.name,
                dir.vsock_socket().display(),
                left + HANDSHAKE_TIMEOUT,
                dir.name
            ),
        };
        match attempt {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() >= deadline => {
                return Err(e).with_context(|| {
                    format!(
                        "the guest agent of VM '{}' did not answer within {wait:?} (`mvm logs {}` shows its console, `mvm debug {}` its vCPUs and devices)",
                        dir.name, dir.name, dir.name
                    )
                })
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Asks the guest to shut down cleanly (services stopped, file systems
/// synced); the VMM ends when the guest resets.
pub fn shutdown(dir: &VmDir, _timeout: Duration) -> crate::Result<()> {
    // A live agent answers at once; a guest without one must not hold
    // `stop` up for long.
    let mut c = client(dir, Duration::from_secs(2))?;
    c.shutdown(ShutdownAction::Poweroff)?;
    Ok(())
}

/// Watches a VM while a long session runs in it: every `WATCH_INTERVAL` (30 s)
/// a fresh connection pings the agent, and when that fails (a stalled
/// guest or VMM) `on_change` hears of it, and again when it answers
/// again. The session itself goes on waiting: a silent command is not a
/// stalled VM.
pub struct Watch {
    stop: Option<std::sync::mpsc::Sender<()>>,
}

/// What [`watch`] noticed.
pub enum Health<'a> {
    /// The VM stopped answering, for this reason.
    Stalled(&'a crate::Error),
    /// It answers again.
    Answers,
}

pub fn watch(dir: &VmDir, on_change: impl Fn(Health) + Send + 'static) -> Watch {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let dir = dir.clone();
    let spawned = spawn_without_signals("watch", move || {
        let mut said = false;
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            stopped.recv_timeout(WATCH_INTERVAL)
        {
            let alive = connect(&dir, WATCH_TIMEOUT, Some(WATCH_TIMEOUT))
                .and_then(|mut c| c.ping().map_err(crate::Error::from));
            match alive {
                Err(e) if !said => {
                    on_change(Health::Stalled(&e));
                    said = true;
                }
                Ok(()) if said => {
                    on_change(Health::Answers);
                    said = false;
                }
                _ => {}
            }
        }
    });
    Watch {
        stop: spawned.ok().map(|_| stop),
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts a thread that never takes a process-directed signal: a Ctrl-C
/// or SIGTERM sent to a command using this library (`mvm exec`, which
/// holds them to forward them into the VM) must reach its main or
/// forwarding thread, never default-kill it through a helper thread that
/// happened to be started first. The new thread inherits the mask blocked
/// here, around the spawn only.
fn spawn_without_signals(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    // SAFETY: sigset operations on local, initialised sets; pthread_sigmask
    // changes only this thread's mask, and it is restored below.
    let old = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        // Faults are delivered to the thread that made them; never block them.
        for s in [libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE, libc::SIGILL] {
            libc::sigdelset(&mut all, s);
        }
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        old
    };
    let spawned = std::thread::Builder::new().name(name.into()).spawn(f);
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    spawned
}

/// A bounded call that did not return in time (its thread is left behind).
struct Overstayed;

/// Runs `f` on a thread of its own and waits at most `limit` for it (a
/// thread that cannot be started runs nothing and reports why).
fn bounded<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> Result<crate::Result<T>, Overstayed> {
    let (tx, rx) = std::sync::mpsc::channel();
    if let Err(e) = spawn_without_signals("agent-connect", move || {
        let _ = tx.send(f());
    }) {
        return Ok(Err(crate::error::err!("cannot start a thread: {e}")));
    }
    rx.recv_timeout(limit).map_err(|_| Overstayed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SigBlk` of one of this process's threads, as a mask.
    fn blocked(tid: i32) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
        let mask = mvm_test_guests::support::proc_status_field(&status, "SigBlk:");
        u64::from_str_radix(&mask, 16).unwrap()
    }

    #[test]
    fn helper_threads_take_no_process_signals_and_the_caller_keeps_its_mask() {
        let bit = |s: i32| 1u64 << (s - 1);
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() };
        let before = blocked(me);
        let (tx, rx) = std::sync::mpsc::channel();
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let t = spawn_without_signals("t", move || {
            // SAFETY: as above.
            tx.send(unsafe { libc::gettid() }).unwrap();
            let _ = wait.recv();
        })
        .unwrap();
        let helper = blocked(rx.recv().unwrap());
        for s in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGWINCH,
        ] {
            assert_ne!(helper & bit(s), 0, "signal {s} not blocked: {helper:x}");
        }
        assert_eq!(helper & bit(libc::SIGSEGV), 0, "{helper:x}");
        assert_eq!(blocked(me), before);
        done.send(()).unwrap();
        t.join().unwrap();
    }
}
