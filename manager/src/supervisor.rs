//! The root parent of a jailed VMM that drops root (its jail runs it as the
//! project's user): the VMM can then no longer remove its cgroup or its
//! runtime files from the VM's root-owned folder when the guest ends, so
//! `mvm _vmm` forks first; the child builds and runs the VM in its jail,
//! the parent waits for it and cleans up as a VMM that stayed root does.
//!
//! The parent runs no guest-facing code: it forwards the signals the
//! manager sends its pid (SIGTERM, SIGINT, SIGHUP, SIGUSR1 for a state
//! dump), waits, and exits as the child did. Its capabilities shrink to
//! [`SUPERVISOR_CAPS`];
//! the child dies with it (PDEATHSIG), so killing the pid the manager
//! knows still kills the VM.

use std::sync::atomic::{AtomicI32, Ordering};

use crate::state::VmDir;

static CHILD: AtomicI32 = AtomicI32::new(0);
static PARENT: AtomicI32 = AtomicI32::new(0);
/// In the child: the pipe's end that [`report_end`] writes to (-1: none).
static REPORT: AtomicI32 = AtomicI32::new(-1);

/// In the child: SIGKILL when the supervisor dies. Call again after the
/// jail changes the credentials (that clears the setting).
pub fn die_with_parent() {
    let parent = PARENT.load(Ordering::SeqCst);
    if parent == 0 {
        return; // not supervised
    }
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != parent {
        std::process::exit(1); // it died before the setting took
    }
}

/// CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER (removing the
/// user's files from the run folder) and CAP_KILL (signalling a child
/// that is another user now).
const SUPERVISOR_CAPS: &[u32] = &[1, 2, 3, 5];

extern "C" fn forward(sig: libc::c_int) {
    let child = CHILD.load(Ordering::SeqCst);
    if child > 0 {
        // SAFETY: kill is async-signal-safe; child is our own child's pid.
        unsafe { libc::kill(child, sig) };
    }
}

/// How a supervised child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildEnd {
    /// It exited with this status.
    Exited(i32),
    /// A signal killed it (the OOM killer, SIGKILL, a forwarded signal).
    Killed(i32),
}

impl ChildEnd {
    /// The status a process that relays this end exits with.
    pub fn exit_status(self) -> i32 {
        match self {
            ChildEnd::Exited(code) => code,
            ChildEnd::Killed(sig) => 128 + sig,
        }
    }
}

/// In a supervised child: tells the parent how the VM ended, so it can
/// clean up and exit while this process is still leaving (its last step,
/// KVM freeing the VM, can take tens of milliseconds). Call it once every
/// host resource the parent's clean-up or the user's next command could
/// meet (taps, volume locks, share files) is closed, right before exiting:
/// it closes the standard streams too (a reader of `mvm run`'s output sees
/// their end now, not once this process is gone). A no-op when not
/// supervised.
pub fn report_end(code: u8) {
    let fd = REPORT.swap(-1, Ordering::SeqCst);
    if fd < 0 {
        return;
    }
    // SAFETY: closing the standard streams (nothing is written after
    // this), then one valid byte from `code` into the pipe's write end,
    // ours alone since the fork, which is closed too.
    unsafe {
        for stdio in 0..3 {
            libc::close(stdio);
        }
        libc::write(fd, std::ptr::from_ref(&code).cast(), 1);
        libc::close(fd);
    }
}

/// When the parent of [`fork`] learns how the child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReport {
    /// As soon as the child says so ([`report_end`]), or at its exit.
    Early,
    /// Only at its exit (a caller whose clean-up needs the child gone).
    AtExit,
}

/// Which side of [`fork`] this is.
pub enum Side {
    /// The child: goes on to build and run the VM.
    Child,
    /// The parent, once the child ended.
    Parent(ChildEnd),
}

/// Forks while the process is single-threaded. The child dies with the
/// parent. The parent forwards SIGTERM, SIGINT, SIGHUP and SIGUSR1 to the
/// child, keeps only `keep_caps` (all, with None), waits, and returns how
/// the child ended: with [`EndReport::Early`], as the child reported it
/// ([`report_end`], the child may then still be exiting) or as it exited;
/// the caller cleans up.
pub fn fork(keep_caps: Option<&[u32]>, end_report: EndReport) -> crate::Result<Side> {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // The child's CPU clock starts again at zero: its stage stamps add this.
    let cpu_before_fork = vmm::stages::cpu_ns();
    // The child's early word on how it ended (report_end).
    let mut report = [-1; 2];
    // SAFETY: pipe2 writes two descriptors into the array we pass.
    if end_report == EndReport::Early
        && unsafe { libc::pipe2(report.as_mut_ptr(), libc::O_CLOEXEC) } != 0
    {
        return Err(crate::error::err!(
            "cannot create the VMM's report pipe: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: the caller runs single-threaded (the jail requires it too),
    // so the child may go on running Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        close_all(&report);
        return Err(crate::error::err!(
            "cannot fork the VMM: {}",
            std::io::Error::last_os_error()
        ));
    }
    if pid == 0 {
        close_all(&report[..1]);
        REPORT.store(report[1], Ordering::SeqCst);
        PARENT.store(parent, Ordering::SeqCst);
        vmm::stages::set_cpu_offset(cpu_before_fork);
        vmm::stages::stamp("fork");
        die_with_parent();
        return Ok(Side::Child);
    }
    CHILD.store(pid, Ordering::SeqCst);
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1] {
        // SAFETY: a zeroed sigaction with a handler that only calls the
        // async-signal-safe kill(2).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    // The caller may hold these blocked until now (to forward them later
    // itself): the handlers above take them from here.
    // SAFETY: a sigset built and used on this thread only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
    if let Some(caps) = keep_caps {
        if let Err(e) = vmm::jail::keep_capabilities(caps) {
            tracing::warn!("the VMM's supervisor keeps its capabilities: {e}");
        }
    }
    // The write end is the child's: our copy must go for the read below
    // to see the end of the pipe when the child exits.
    close_all(&report[1..]);
    let reported = (report[0] >= 0).then(|| read_report(report[0])).flatten();
    close_all(&report[..1]);
    if let Some(code) = reported {
        // The child is leaving: init (or a subreaper) reaps it.
        return Ok(Side::Parent(ChildEnd::Exited(i32::from(code))));
    }
    let status = wait(pid);
    Ok(Side::Parent(if libc::WIFSIGNALED(status) {
        ChildEnd::Killed(libc::WTERMSIG(status))
    } else {
        ChildEnd::Exited(libc::WEXITSTATUS(status))
    }))
}

/// Closes the report pipe's ends that are open (-1: never opened).
fn close_all(fds: &[libc::c_int]) {
    for &fd in fds.iter().filter(|&&fd| fd >= 0) {
        // SAFETY: `fd` is an end of the report pipe this process made and
        // closes once; nothing else holds it.
        unsafe { libc::close(fd) };
    }
}

/// The status the child reported with [`report_end`], or None when the
/// pipe ended without one (the child exited or was killed first).
fn read_report(fd: libc::c_int) -> Option<u8> {
    let mut code = 0u8;
    loop {
        // SAFETY: reads at most one byte into `code`.
        let n = unsafe { libc::read(fd, std::ptr::from_mut(&mut code).cast(), 1) };
        match n {
            1 => return Some(code),
            n if n < 0
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => return None,
        }
    }
}

/// [`fork`] for `mvm _vmm`: returns in the child; the parent never
/// returns: on a clean end (the child exited, whatever its status) it
/// removes `cgroup` and the VM's runtime files, and exits as the child
/// did. A child killed by a signal leaves both, as a killed VMM always
/// has: the VM then shows as crashed.
pub fn fork_and_supervise(
    dir: &VmDir,
    cgroup: Option<crate::cgroup::VmCgroup>,
) -> crate::Result<()> {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    // Its clean-up (the cgroup) needs the child gone: no early word.
    let end = match fork(Some(SUPERVISOR_CAPS), EndReport::AtExit)? {
        Side::Child => return Ok(()),
        Side::Parent(end) => end,
    };
    if let ChildEnd::Exited(_) = end {
        if let Some(cg) = cgroup {
            if let Err(e) = cg.leave_and_remove() {
                tracing::warn!("{e}");
            }
        }
        if dir.pid() == Some(me) {
            let _ = dir.clear_runtime();
        }
    }
    std::process::exit(end.exit_status());
}

/// The child's wait status.
fn wait(pid: libc::pid_t) -> libc::c_int {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status we pass and nothing else.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return status;
        }
        if rc < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return 0;
        }
    }
}
