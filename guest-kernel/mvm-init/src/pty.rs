//! Pseudo-terminals, through /dev/ptmx directly (no libutil needed in the
//! static binary).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use agent_proto::WinSize;

use crate::sys::cvt;

pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Opens a new PTY pair, both ends close-on-exec, with the given size.
pub fn open(size: Option<WinSize>) -> io::Result<Pty> {
    // SAFETY: a constant NUL-terminated path and plain flags.
    let m = cvt(unsafe {
        libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: open succeeded; we own the new descriptor.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from the valid pointer.
    cvt(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) })?;
    // TIOCGPTPEER (Linux 4.13+) opens the slave from the master itself, with
    // no path lookup that a different /dev/pts could confuse.
    // SAFETY: TIOCGPTPEER takes open flags by value and returns a new fd.
    let s = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    let slave = if s >= 0 {
        // SAFETY: the ioctl returned a new descriptor that we own.
        unsafe { OwnedFd::from_raw_fd(s) }
    } else {
        let mut n: libc::c_uint = 0;
        // SAFETY: TIOCGPTN writes one unsigned int.
        cvt(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) })?;
        let path = crate::sys::cstring(&format!("/dev/pts/{n}"))?;
        // SAFETY: valid NUL-terminated path and plain flags.
        let s = cvt(unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: open succeeded; we own the new descriptor.
        unsafe { OwnedFd::from_raw_fd(s) }
    };
    if let Some(ws) = size {
        set_size(master.as_fd(), ws)?;
    }
    Ok(Pty { master, slave })
}

/// TIOCSWINSZ: the kernel sends SIGWINCH to the foreground process group.
pub fn set_size(fd: BorrowedFd<'_>, ws: WinSize) -> io::Result<()> {
    let w = libc::winsize {
        ws_row: ws.rows,
        ws_col: ws.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the valid pointer.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &w) })?;
    Ok(())
}

/// The terminal's foreground process group, where typed signals go.
pub fn foreground_pgrp(master: BorrowedFd<'_>) -> Option<u32> {
    let mut pgrp: libc::pid_t = 0;
    // SAFETY: TIOCGPGRP writes one pid_t.
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPGRP, &mut pgrp) };
    (r == 0 && pgrp > 0).then_some(pgrp as u32)
}

/// The terminal's EOF character (VEOF, normally ^D) if it is in canonical
/// mode, where that character means end of input.
pub fn eof_char(fd: BorrowedFd<'_>) -> Option<u8> {
    // SAFETY: termios is plain data; tcgetattr fills it.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and out-pointer.
    if unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) } != 0 {
        return None;
    }
    (t.c_lflag & libc::ICANON != 0).then_some(t.c_cc[libc::VEOF])
}
