pub mod changes;
pub mod create;
pub mod debug;
pub mod direnv;
pub mod doctor;
pub mod exec;
pub mod lifecycle;
pub mod list;
pub mod logs;
pub mod net_cmd;
pub mod port;
pub mod run;
pub mod service;
pub mod trust;
pub mod up;
pub mod vmm_process;

/// Exit statuses of `mvm` (documented in `mvm run --help`).
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_GUEST_PANIC: u8 = 3;
pub const EXIT_GUEST_FAULT: u8 = 4;

/// mvm's exit status for how a guest ended (saying why when it failed).
pub fn exit_code(reason: &vmm::ExitReason) -> std::process::ExitCode {
    use std::process::ExitCode;
    if reason.is_clean() {
        return ExitCode::SUCCESS;
    }
    eprintln!("mvm: {reason}");
    match reason {
        vmm::ExitReason::GuestPanic => ExitCode::from(EXIT_GUEST_PANIC),
        _ => ExitCode::from(EXIT_GUEST_FAULT),
    }
}
