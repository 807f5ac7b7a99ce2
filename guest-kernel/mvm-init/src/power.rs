//! Going down: stop services, end every process, sync, unmount, reset.
//!
//! The VMM runs the kernel with `reboot=k`: a reboot resets through the
//! i8042 and the VMM exits. A power-off would leave the VMM running, so
//! both actions end in `reboot(RB_AUTOBOOT)`.

use std::time::{Duration, Instant};

use agent_proto::ShutdownAction;

use crate::reaper::Reaper;
use crate::services::Supervisor;
use crate::sys::is_pid1;

/// Resets the VM. Outside PID 1 (tests, `--test-listen-unix`) it exits the
/// process instead: this must never reboot a host.
pub fn reboot_now(exit_code: i32) -> ! {
    if !is_pid1() {
        std::process::exit(exit_code);
    }
    // SAFETY: sync and reboot have no memory-safety preconditions.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    crate::log!("reboot failed: {}", std::io::Error::last_os_error());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// A setup step failed: say so on the console and reset (PID 1 exiting
/// would panic the kernel with a less helpful message).
pub fn fatal(msg: &str) -> ! {
    crate::log!("fatal: {msg}");
    if is_pid1() {
        crate::log!("rebooting (the VM stops)");
    }
    reboot_now(1)
}

/// SIGTERM to every process, SIGKILL to what is left after a grace period.
/// PID 1 only: kill(-1) from anything else would hit the whole host.
fn terminate_everything(reaper: &Reaper) {
    if !is_pid1() {
        return;
    }
    for (sig, grace) in [
        (libc::SIGTERM, Duration::from_secs(3)),
        (libc::SIGKILL, Duration::from_secs(2)),
    ] {
        // SAFETY: kill(-1) from PID 1 signals every other user process.
        unsafe { libc::kill(-1, sig) };
        let deadline = Instant::now() + grace;
        while reaper.has_children() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The whole sequence; does not return.
pub fn shutdown(services: &Supervisor, reaper: &Reaper, action: ShutdownAction) -> ! {
    crate::log!(
        "{} requested: stopping services",
        match action {
            ShutdownAction::Poweroff => "power-off",
            ShutdownAction::Reboot => "reboot",
        }
    );
    services.stop_all();
    if !is_pid1() {
        crate::log!("not PID 1: exiting instead of resetting");
        std::process::exit(0);
    }
    terminate_everything(reaper);
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    crate::mounts::unmount_all();
    crate::log!("resetting");
    reboot_now(0)
}
