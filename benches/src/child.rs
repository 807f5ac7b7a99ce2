//! A child process (a VMM) whose stdout is timestamped as it arrives, and
//! whose exit is reaped with `wait4` for its CPU time and peak RSS.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use crate::clock::monotonic_ns;

/// Bytes the child wrote, and when they arrived (CLOCK_MONOTONIC ns).
/// Empty `data` marks the end of its output.
struct Chunk {
    t_ns: u64,
    data: Vec<u8>,
}

/// A running child. Its stdout is read by a thread that stamps every chunk.
pub struct Running {
    pid: u32,
    /// CLOCK_MONOTONIC right before the spawn.
    pub t_spawn_ns: u64,
    /// When the first byte of stdout arrived.
    pub first_byte_ns: Option<u64>,
    /// Everything read so far.
    pub output: Vec<u8>,
    rx: Receiver<Chunk>,
    partial: Vec<u8>,
    /// When the latest chunk arrived: the time of the lines it completes.
    last_chunk_ns: u64,
    eof: bool,
    reaped: bool,
}

/// How a child ended.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    /// Exit code, or minus the signal number that killed it.
    pub status: i32,
    /// CLOCK_MONOTONIC when `wait4` returned.
    pub t_ns: u64,
    /// User + system CPU time of the whole process (every thread).
    pub cpu_ns: u64,
    /// Peak resident set (KiB).
    pub maxrss_kb: u64,
}

impl Running {
    /// Spawns `cmd` with stdout piped to us (stdin from /dev/null); takes
    /// CLOCK_MONOTONIC just before.
    pub fn spawn(cmd: &mut Command) -> std::io::Result<Running> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        let t_spawn_ns = monotonic_ns();
        let mut child = cmd.spawn()?;
        let pid = child.id();
        let mut stdout = child.stdout.take().expect("stdout is piped");
        // `child` is dropped without waiting: `wait` reaps it with wait4.
        drop(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 16 << 10];
            loop {
                let n = stdout.read(&mut buf).unwrap_or(0);
                let t_ns = monotonic_ns();
                if tx
                    .send(Chunk {
                        t_ns,
                        data: buf[..n].to_vec(),
                    })
                    .is_err()
                    || n == 0
                {
                    break;
                }
            }
        });
        Ok(Running {
            pid,
            t_spawn_ns,
            first_byte_ns: None,
            output: Vec::new(),
            rx,
            partial: Vec::new(),
            last_chunk_ns: 0,
            eof: false,
            reaped: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Takes the next chunk, waiting until `deadline` (CLOCK_MONOTONIC ns);
    /// false at the end of the output or at the deadline.
    fn pull(&mut self, deadline_ns: u64) -> bool {
        if self.eof {
            return false;
        }
        let wait = Duration::from_nanos(deadline_ns.saturating_sub(monotonic_ns()));
        match self.rx.recv_timeout(wait) {
            Ok(c) if !c.data.is_empty() => {
                self.first_byte_ns.get_or_insert(c.t_ns);
                self.output.extend_from_slice(&c.data);
                self.partial.extend_from_slice(&c.data);
                self.last_chunk_ns = c.t_ns;
                true
            }
            Ok(_) | Err(RecvTimeoutError::Disconnected) => {
                self.eof = true;
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
        }
    }

    /// Waits for the first byte of output; `None` at EOF or the deadline.
    pub fn wait_first_byte(&mut self, deadline_ns: u64) -> Option<u64> {
        while self.first_byte_ns.is_none() {
            if !self.pull(deadline_ns) {
                break;
            }
        }
        self.first_byte_ns
    }

    /// The next complete line (without its end) and when it arrived; at the
    /// end of the output, what is left. `None` at EOF or the deadline.
    pub fn next_line(&mut self, deadline_ns: u64) -> Option<(u64, String)> {
        loop {
            if let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.partial.drain(..=i).collect();
                let text = String::from_utf8_lossy(&line);
                return Some((self.last_chunk_ns, text.trim_end().to_string()));
            }
            if !self.pull(deadline_ns) {
                if self.eof && !self.partial.is_empty() {
                    let text = String::from_utf8_lossy(&self.partial)
                        .trim_end()
                        .to_string();
                    self.partial.clear();
                    return Some((self.last_chunk_ns, text));
                }
                return None;
            }
        }
    }

    /// Whether the output has ended (the child closed stdout or exited).
    pub fn at_eof(&self) -> bool {
        self.eof
    }

    /// SIGKILL (no-op once reaped).
    pub fn kill(&self) {
        if self.reaped {
            return;
        }
        // SAFETY: kill(2) with a pid we spawned and have not reaped yet, so
        // the pid still names our child (a zombie at worst).
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
    }

    /// Reaps the child (blocking) with its resource usage.
    pub fn wait(mut self) -> std::io::Result<Exit> {
        let mut status: libc::c_int = 0;
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let rc = loop {
            // SAFETY: wait4 on our own unreaped child, writing only to the
            // two locals passed by valid pointers.
            let rc = unsafe { libc::wait4(self.pid as libc::pid_t, &mut status, 0, &mut ru) };
            if rc == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
            {
                continue;
            }
            break rc;
        };
        let t_ns = monotonic_ns();
        if rc == -1 {
            return Err(std::io::Error::last_os_error());
        }
        self.reaped = true;
        let tv_ns = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1000;
        let (mut cpu_ns, mut maxrss_kb) = (tv_ns(ru.ru_utime) + tv_ns(ru.ru_stime), ru.ru_maxrss);
        // A subreaper gets what the child left running (mvm run's VMM,
        // still leaving when mvm has exited): count it as the child's.
        if ADOPTING.load(Ordering::Relaxed) {
            for orphan in reap_all() {
                cpu_ns += tv_ns(orphan.ru_utime) + tv_ns(orphan.ru_stime);
                maxrss_kb = maxrss_kb.max(orphan.ru_maxrss);
            }
        }
        let status = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else if libc::WIFSIGNALED(status) {
            -libc::WTERMSIG(status)
        } else {
            i32::MIN
        };
        Ok(Exit {
            status,
            t_ns,
            cpu_ns,
            maxrss_kb: maxrss_kb as u64,
        })
    }
}

static ADOPTING: AtomicBool = AtomicBool::new(false);

/// Makes this process the reaper of its children's orphans, which
/// [`Running::wait`] then waits for and counts with the child. For a bench
/// that runs one child at a time: `mvm run` exits once its VM is closed,
/// while its forked VMM is still leaving.
pub fn adopt_orphans() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    ADOPTING.store(true, Ordering::Relaxed);
    Ok(())
}

/// Waits for every child left; their resource usage.
fn reap_all() -> Vec<libc::rusage> {
    let mut all = Vec::new();
    loop {
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 for any child, writing only to the two locals.
        let rc = unsafe { libc::wait4(-1, &mut status, 0, &mut ru) };
        if rc > 0 {
            all.push(ru);
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return all; // ECHILD: none left
        }
    }
}

impl Drop for Running {
    /// A child that was never reaped is killed and reaped, so no bench run
    /// leaves a VMM behind.
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
            let mut status = 0;
            // SAFETY: reaping our own child; `status` is a valid local.
            unsafe { libc::waitpid(self.pid as libc::pid_t, &mut status, 0) };
            self.reaped = true;
        }
    }
}

/// CLOCK_MONOTONIC ns `secs` from now.
pub fn deadline_in(secs: f64) -> u64 {
    monotonic_ns() + (secs * 1e9) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_lines_and_reaps() {
        let mut r = Running::spawn(
            Command::new("sh").args(["-c", "echo one; echo two; printf tail; exit 3"]),
        )
        .unwrap();
        let d = deadline_in(10.0);
        let (t1, l1) = r.next_line(d).unwrap();
        assert_eq!(l1, "one");
        assert!(t1 >= r.t_spawn_ns);
        assert_eq!(r.next_line(d).unwrap().1, "two");
        assert_eq!(r.next_line(d).unwrap().1, "tail");
        assert!(r.next_line(d).is_none() && r.at_eof());
        assert!(r.first_byte_ns.unwrap() <= t1);
        let e = r.wait().unwrap();
        assert_eq!(e.status, 3);
        assert!(e.maxrss_kb > 0);
    }

    #[test]
    fn kills_at_the_deadline() {
        let mut r = Running::spawn(Command::new("sleep").arg("30")).unwrap();
        assert!(r.wait_first_byte(deadline_in(0.05)).is_none());
        assert!(!r.at_eof());
        r.kill();
        assert_eq!(r.wait().unwrap().status, -libc::SIGKILL);
    }
}
