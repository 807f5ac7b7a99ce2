//! Small wrappers over libc shared by the other modules.

use std::ffi::CString;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, MutexGuard};

/// Prints `mvm-init: <msg>` on stderr (the console when PID 1). Never
/// panics, unlike `eprintln!`, which matters for PID 1.
pub fn log(msg: std::fmt::Arguments<'_>) {
    let mut e = io::stderr().lock();
    let _ = writeln!(e, "mvm-init: {msg}");
}

#[macro_export]
macro_rules! log {
    ($($t:tt)*) => { $crate::sys::log(format_args!($($t)*)) };
}

/// Turns a `-1`-on-error return into `io::Result`.
pub fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Like [`cvt`], retrying on EINTR.
pub fn cvt_r(mut f: impl FnMut() -> libc::c_int) -> io::Result<libc::c_int> {
    loop {
        match cvt(f()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

pub fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{s:?} contains a NUL byte"),
        )
    })
}

/// Locks a mutex, ignoring poisoning: a panic elsewhere must not take the
/// agent down with it (and with panic=abort there is none).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A pipe whose both ends are close-on-exec, so concurrent spawns never
/// inherit another session's pipe (which would delay its EOF forever).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both are fresh descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a valid borrowed descriptor.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    let flags = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags) })?;
    Ok(())
}

/// `read(2)` into `buf`.
pub fn read_fd(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of buf.len() bytes.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `write(2)` from `buf`.
pub fn write_fd(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for reads of buf.len() bytes.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Non-blocking receive on a socket that stays blocking for writes.
pub fn recv_nonblocking(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of buf.len() bytes.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// True if the peer of a stream socket has closed (EOF pending) or the
/// socket failed; false while it is open (whether or not data is waiting).
pub fn socket_closed(fd: BorrowedFd<'_>) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: b is valid for one byte; MSG_PEEK leaves the data queued.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => true,
        n if n > 0 => false,
        _ => {
            let e = io::Error::last_os_error();
            !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            )
        }
    }
}

/// Sends `sig` to process group `pgid`; ESRCH (already gone) is not an
/// error worth reporting.
pub fn kill_group(pgid: u32, sig: i32) {
    if pgid > 1 && pgid <= i32::MAX as u32 {
        // SAFETY: kill has no memory effects; a negative pid names a group.
        unsafe { libc::kill(-(pgid as i32), sig) };
    }
}

/// Sets every signal the process ignores back to its default action. Run
/// in a child before exec: an ignored signal stays ignored across exec, so
/// an agent started with SIGINT ignored (e.g. `cmd &` from a script) would
/// otherwise give every session a SIGINT that does nothing. (std already
/// clears the signal mask and SIGPIPE.) Handlers end at exec anyway, so
/// every signal is simply set to SIG_DFL. The raw system call, because
/// glibc refuses its internal signals 32 and 33, which can arrive ignored
/// too. Only async-signal-safe calls.
pub fn default_signal_dispositions() {
    // The kernel's struct sigaction: all zero is SIG_DFL, no flags, empty
    // mask, on every architecture (at most 4 words).
    let dfl = [0u64; 4];
    // Linux numbers its signals 1..=64; the mask argument is 64 bits.
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads one kernel sigaction from a valid
        // pointer and writes nothing (null old action).
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                dfl.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8usize,
            )
        };
    }
}

pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Creates a directory and its parents, accepting existing ones.
pub fn mkdir_p(path: &str) -> io::Result<()> {
    std::fs::create_dir_all(path)
}
