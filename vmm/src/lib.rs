//! The mvm virtual machine monitor: boots a Linux guest on KVM from a
//! [`VmConfig`].
//!
//! ```no_run
//! use vmm::{Vm, VmConfig};
//!
//! let mut config = VmConfig::new("/path/to/vmlinux");
//! config.initrd = Some("/path/to/initramfs.cpio.gz".into());
//! config.cpus = 2;
//! let reason = Vm::new(&config)?.run()?;
//! println!("{reason}");
//! # Ok::<(), vmm::Error>(())
//! ```
//!
//! The boot path reads in three files: `vm.rs` builds the VM top to
//! bottom, `loader.rs` puts the kernel in memory, `vcpu.rs` runs it; the
//! tables the kernel reads are in `arch/x86_64/` (zero page, MP table,
//! CPUID) and `acpi/`.

pub mod acpi;
pub mod api;
pub mod arch;
pub mod config;
pub mod console;
pub mod console_file;
pub mod dump;
pub mod jail;
pub mod kvm;
pub mod loader;
pub mod memory;
pub mod seccomp;
pub mod stages;
pub mod vcpu;
mod vm;

pub use config::{
    parse_memory_mib, vhost_net_usable, BlockConfig, Console, NetBackend, NetConfig, ShareConfig,
    ShareMode, VhostUserFsConfig, VmConfig, VsockConfig, DEFAULT_CMDLINE,
};
pub use vcpu::ExitReason;
pub use vm::{StopHandle, Vm};

use std::path::PathBuf;

/// Why a VM could not be built or run. Guest failures are not errors: they
/// are an [`ExitReason`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Host(#[from] kvm::KvmError),
    #[error(transparent)]
    Jail(#[from] jail::JailError),
    #[error("cpus {requested} is out of range: this host's KVM allows 1 to {max}")]
    Cpus { requested: u8, max: usize },
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    #[error(transparent)]
    Load(#[from] loader::LoadError),
    #[error(transparent)]
    BootParams(#[from] arch::boot_params::BootParamsError),
    #[error(transparent)]
    Mptable(#[from] arch::mptable::MptableError),
    #[error(transparent)]
    Acpi(#[from] acpi::AcpiError),
    #[error(transparent)]
    Regs(#[from] arch::regs::RegsError),
    #[error(transparent)]
    Msr(#[from] arch::msr::MsrError),
    #[error("{0} failed: {1}")]
    Kvm(&'static str, kvm_ioctls::Error),
    #[error("cannot open the console file {0}: {1}")]
    Console(PathBuf, std::io::Error),
    #[error("cannot create an eventfd: {0}")]
    EventFd(std::io::Error),
    #[error("cannot create the console's flush timer: {0}")]
    ConsoleTimer(std::io::Error),
    #[error("event loop failed: {0:?}")]
    EventManager(event_manager::Error),
    #[error("device address conflict: {0}")]
    Bus(devices::bus::BusError),
    #[error("{0}")]
    Share(String),
    #[error("cannot create a device: {0}")]
    Device(String),
    #[error("cannot attach a virtio device: {0}")]
    Transport(devices::virtio::MmioError),
    #[error("no MMIO window or IRQ line left for another virtio device")]
    TooManyDevices,
    #[error(transparent)]
    Api(#[from] api::ApiError),
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    #[error(transparent)]
    Seccomp(#[from] seccomp::Error),
}
