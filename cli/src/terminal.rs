//! The local terminal during `mvm shell`: raw mode (so Ctrl-C, job control
//! and line editing happen in the guest's terminal), window size changes,
//! and signal forwarding for non-terminal sessions.

use std::os::fd::AsRawFd;
use std::time::Duration;

/// The terminal's size as (rows, cols), if stdout is one.
pub fn size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO] {
        // SAFETY: TIOCGWINSZ writes a winsize into the struct we pass.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
            return Some((ws.ws_row, ws.ws_col));
        }
    }
    None
}

/// Raw mode on stdin until dropped.
pub struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    pub fn enable() -> std::io::Result<RawMode> {
        let fd = std::io::stdin().as_raw_fd();
        // SAFETY: termios is plain data; tcgetattr fills it.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and pointer to a termios.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw only edits the struct.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: valid fd and termios.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the attributes saved from the same fd.
        unsafe { libc::tcsetattr(std::io::stdin().as_raw_fd(), libc::TCSANOW, &self.saved) };
    }
}

/// Calls `send(rows, cols)` whenever the terminal's size differs from
/// `last` (polled: no signal handler needed), until `send` returns false.
/// `last` is the size the session started with, so a change made before
/// this thread runs is sent too.
pub fn watch_resizes(
    mut last: Option<(u16, u16)>,
    mut send: impl FnMut(u16, u16) -> bool + Send + 'static,
) {
    std::thread::spawn(move || loop {
        let now = size();
        if now != last {
            if let Some((rows, cols)) = now {
                if !send(rows, cols) {
                    return;
                }
            }
            last = now;
        }
        std::thread::sleep(Duration::from_millis(200));
    });
}

/// The signals forwarded to a guest command instead of ending this process
/// (the guest process decides).
const FORWARDED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// SIGINT, SIGTERM, SIGHUP and SIGQUIT held back from the moment of
/// [`hold`](Self::hold): one that arrives stays pending in the kernel until
/// [`forward`](Self::forward) hands it on, so a Ctrl-C pressed while the
/// guest command is starting reaches it once it runs. Dropped without
/// forwarding, the signals are let through again (a pending one then acts
/// as usual).
pub struct HeldSignals {
    set: libc::sigset_t,
    forwarding: bool,
}

impl HeldSignals {
    /// Blocks the signals in this thread and in every thread it spawns
    /// later, so only the forwarding thread's sigwait receives them.
    pub fn hold() -> HeldSignals {
        // SAFETY: sigset operations on a local, initialised set;
        // pthread_sigmask only changes this thread's mask.
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in FORWARDED {
                libc::sigaddset(&mut set, s);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            set
        };
        HeldSignals {
            set,
            forwarding: false,
        }
    }

    /// Passes each signal, the pending ones first, to `send` until it
    /// returns false.
    pub fn forward(mut self, mut send: impl FnMut(i32) -> bool + Send + 'static) {
        self.forwarding = true;
        let set = self.set;
        std::thread::spawn(move || loop {
            let mut sig = 0;
            // SAFETY: `set` is a valid, initialised sigset; sig is written.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                return;
            }
            if !send(sig) {
                return;
            }
        });
    }
}

impl Drop for HeldSignals {
    fn drop(&mut self) {
        if !self.forwarding {
            // SAFETY: unblocks the set this thread blocked in `hold`.
            unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &self.set, std::ptr::null_mut()) };
        }
    }
}
