//! The root parent of a VMM that drops root (its jail runs it as the
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

/// Forks. Returns in the child (which goes on to run the VM); the parent
/// never returns: it waits for the child, then on a clean end (the child
/// exited, whatever its status) removes `cgroup` and the VM's runtime
/// files, and exits with the child's status. A child killed by a signal
/// (the OOM killer, SIGKILL) leaves both, as a killed VMM always has: the
/// VM then shows as crashed.
pub fn fork_and_supervise(
    dir: &VmDir,
    cgroup: Option<crate::cgroup::VmCgroup>,
) -> crate::Result<()> {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the process is single-threaded here (the jail requires it
    // too), so the child may go on running Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(crate::error::err!(
            "cannot fork the VMM: {}",
            std::io::Error::last_os_error()
        ));
    }
    if pid == 0 {
        PARENT.store(parent, Ordering::SeqCst);
        die_with_parent();
        return Ok(());
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
    if let Err(e) = vmm::jail::keep_capabilities(SUPERVISOR_CAPS) {
        tracing::warn!("the VMM's supervisor keeps its capabilities: {e}");
    }
    let status = wait(pid);
    if libc::WIFEXITED(status) {
        if let Some(cg) = cgroup {
            if let Err(e) = cg.leave_and_remove() {
                tracing::warn!("{e}");
            }
        }
        if dir.pid() == Some(parent) {
            let _ = dir.clear_runtime();
        }
        std::process::exit(libc::WEXITSTATUS(status));
    }
    std::process::exit(128 + libc::WTERMSIG(status));
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
