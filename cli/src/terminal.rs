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

/// Calls `send(rows, cols)` whenever the terminal's size changes (polled:
/// no signal handler needed), until `send` returns false.
pub fn watch_resizes(mut send: impl FnMut(u16, u16) -> bool + Send + 'static) {
    std::thread::spawn(move || {
        let mut last = size();
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let now = size();
            if now != last {
                if let Some((rows, cols)) = now {
                    if !send(rows, cols) {
                        return;
                    }
                }
                last = now;
            }
        }
    });
}

/// Forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT to `send` instead of
/// letting them kill this process (the guest process decides).
pub fn forward_signals(mut send: impl FnMut(i32) -> bool + Send + 'static) {
    // SAFETY: sigset operations on a local set; pthread_sigmask blocks the
    // signals in this thread, and threads spawned later inherit the mask,
    // so only sigwait below receives them.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
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
