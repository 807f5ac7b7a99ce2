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
pub mod volume;

/// Exit statuses of `mvm` (documented in `mvm run --help`).
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_GUEST_PANIC: u8 = 3;
pub const EXIT_GUEST_FAULT: u8 = 4;

/// mvm's exit status for how a guest ended (saying why when it failed).
pub fn exit_code(reason: &vmm::ExitReason) -> std::process::ExitCode {
    std::process::ExitCode::from(exit_status(reason))
}

/// [`exit_code`] as a number (what a supervised VMM reports).
pub fn exit_status(reason: &vmm::ExitReason) -> u8 {
    if reason.is_clean() {
        return 0;
    }
    eprintln!("mvm: {reason}");
    match reason {
        vmm::ExitReason::GuestPanic => EXIT_GUEST_PANIC,
        _ => EXIT_GUEST_FAULT,
    }
}

/// The VMM's errors name its configuration fields (`memory_mib`); the
/// command line says them in its flags, as it always has.
pub fn in_flags(e: vmm::Error) -> anyhow::Error {
    use vmm::memory::MemoryError;
    match e {
        vmm::Error::Cpus { requested, max } => anyhow::anyhow!(
            "--cpus {requested} is out of range: this host's KVM allows 1 to {max}"
        ),
        vmm::Error::Memory(MemoryError::MoreThanHost { requested, host }) => anyhow::anyhow!(
            "--memory {requested} MiB is more than this host has ({host} MiB of RAM)"
        ),
        vmm::Error::Memory(MemoryError::TooSmall(mib)) => anyhow::anyhow!(
            "--memory {mib} MiB is too small: a Linux guest needs at least {} MiB",
            vmm::config::MIN_MEMORY_MIB
        ),
        vmm::Error::Load(vmm::loader::LoadError::InitrdTooBig { path, size }) => anyhow::anyhow!(
            "initrd {} ({size} bytes) does not fit in guest memory above the kernel; give the VM more --memory",
            path.display()
        ),
        e => e.into(),
    }
}
