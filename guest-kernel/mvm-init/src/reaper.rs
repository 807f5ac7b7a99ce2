//! Child reaping: PID 1 inherits every orphan, so one thread waits for any
//! child (`waitid(P_ALL)`) and hands each exit status to whoever spawned
//! that child; statuses of processes nobody asked about (orphans) are just
//! collected.
//!
//! All spawns in this process must go through [`Reaper::spawn`]: it holds
//! the registry lock across fork+exec and registration, and the reaper peeks
//! at exits (`WNOWAIT`) before taking that lock to reap. So a child can
//! never be reaped before it is registered, and std's own `waitpid` after a
//! failed exec (inside `Command::spawn`) never races with ours.
//!
//! The same design serves tests and `--test-listen-unix` (not PID 1): there
//! the reaper sees only this process's own children, all spawned through it.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use agent_proto::ExitStatus;

use crate::sys::{self, lock};

#[derive(Default)]
struct State {
    /// pid -> write end of the pipe that receives its raw wait status.
    watchers: HashMap<libc::pid_t, OwnedFd>,
    /// Bumped by every spawn, so an idle reaper knows to look again.
    generation: u64,
}

pub struct Reaper {
    state: Mutex<State>,
    spawned: Condvar,
}

/// Receives one child's exit status.
#[derive(Debug)]
pub struct ExitWatch {
    pid: u32,
    rx: OwnedFd,
}

impl ExitWatch {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Readable once the child has exited (for poll).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.rx.as_fd()
    }

    /// Blocks until the child exits. `None` only if the reaper lost it
    /// (someone else waited for it), which the spawn discipline prevents.
    pub fn wait(&self) -> Option<ExitStatus> {
        let mut buf = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match sys::read_fd(self.rx.as_fd(), &mut buf[got..]) {
                Ok(0) => return None,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        Some(ExitStatus::from_wait_status(i32::from_ne_bytes(buf)))
    }
}

impl ExitWatch {
    /// Like [`wait`](Self::wait), but gives up after `timeout` (`None`).
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitStatus> {
        let mut pfd = libc::pollfd {
            fd: self.rx.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        let n = sys::cvt_r(|| unsafe { libc::poll(&mut pfd, 1, ms) }).unwrap_or(0);
        if n == 0 {
            None
        } else {
            self.wait()
        }
    }
}

impl Reaper {
    /// The process-wide reaper; its thread starts on first use.
    pub fn global() -> Arc<Reaper> {
        static R: OnceLock<Arc<Reaper>> = OnceLock::new();
        R.get_or_init(|| {
            let r = Arc::new(Reaper {
                state: Mutex::new(State::default()),
                spawned: Condvar::new(),
            });
            let r2 = Arc::clone(&r);
            if let Err(e) = std::thread::Builder::new()
                .name("reaper".into())
                .spawn(move || r2.run())
            {
                // Without a reaper no exit is ever reported: say so loudly.
                crate::log!("cannot start the reaper thread: {e}");
            }
            r
        })
        .clone()
    }

    /// Spawns `cmd` and registers the child before anyone can reap it.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<ExitWatch> {
        let (rx, tx) = sys::pipe()?;
        let mut st = lock(&self.state);
        let child = cmd.spawn()?;
        let pid = child.id();
        // The Child handle is dropped without waiting: the reaper owns that.
        drop(child);
        st.watchers.insert(pid as libc::pid_t, tx);
        st.generation += 1;
        drop(st);
        self.spawned.notify_all();
        Ok(ExitWatch { pid, rx })
    }

    /// True while any child (registered or orphan) exists.
    pub fn has_children(&self) -> bool {
        // SAFETY: siginfo_t is plain data; zeroed is a valid initial value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes into info; WNOWAIT|WNOHANG neither reaps nor
        // blocks.
        let r = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOWAIT | libc::WNOHANG,
            )
        };
        r == 0
    }

    fn run(&self) {
        loop {
            let gen = lock(&self.state).generation;
            // SAFETY: siginfo_t is plain data; zeroed is a valid initial value.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: waitid writes into info; WNOWAIT leaves the zombie for
            // the waitpid below, done under the registry lock.
            let r =
                unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) };
            if r == -1 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ECHILD) {
                    // No children: sleep until a spawn (the timeout is only
                    // a safety net).
                    let st = lock(&self.state);
                    if st.generation == gen {
                        let _ = self
                            .spawned
                            .wait_timeout(st, Duration::from_secs(5))
                            .map(|_| ());
                    }
                }
                continue;
            }
            // SAFETY: waitid succeeded with WEXITED, so si_pid is valid.
            let pid = unsafe { info.si_pid() };
            if pid <= 0 {
                continue;
            }
            let mut st = lock(&self.state);
            let mut status = 0;
            // SAFETY: status is a valid out-pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                if let Some(tx) = st.watchers.remove(&pid) {
                    // A full pipe is impossible (4 bytes, one write); a
                    // closed read end means nobody cares any more.
                    let _ = sys::write_fd(tx.as_fd(), &status.to_ne_bytes());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_reach_their_spawner() {
        let r = Reaper::global();
        let watches: Vec<_> = (0..20)
            .map(|i| {
                r.spawn(Command::new("sh").args(["-c", &format!("exit {i}")]))
                    .unwrap()
            })
            .collect();
        for (i, w) in watches.iter().enumerate() {
            assert_eq!(w.wait(), Some(ExitStatus::Code { code: i as i32 }));
        }
        let w = r
            .spawn(Command::new("sh").args(["-c", "kill -9 $$"]))
            .unwrap();
        assert_eq!(
            w.wait(),
            Some(ExitStatus::Signal {
                signal: 9,
                core_dumped: false
            })
        );
    }

    #[test]
    fn failed_exec_is_an_error_not_a_lost_child() {
        let r = Reaper::global();
        let err = r
            .spawn(&mut Command::new("/nonexistent/program"))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        // A pre_exec failure goes through fork (not posix_spawn) and std's
        // own waitpid: the reaper must not steal that child.
        let mut cmd = Command::new("true");
        // SAFETY: the closure only returns an error; async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                Err(io::Error::from_raw_os_error(libc::EPERM))
            })
        };
        for _ in 0..20 {
            assert!(r.spawn(&mut cmd).is_err());
        }
        let w = r.spawn(&mut Command::new("true")).unwrap();
        assert_eq!(w.wait(), Some(ExitStatus::Code { code: 0 }));
    }
}
