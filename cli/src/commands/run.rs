//! `mvm run`: boot a kernel in a fresh VM, show its console, exit when the
//! guest does.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use vmm::{Console, ExitReason, Vm, VmConfig};

use super::{EXIT_GUEST_FAULT, EXIT_GUEST_PANIC};

#[derive(Args)]
#[command(
    about = "Boot a kernel in a new VM and show its console",
    long_about = "Boot a Linux kernel in a new microVM, with its serial console on \
stdout (or in a file), and exit when the guest reboots.\n\n\
The guest reboots (`reboot -f`) to end the VM: mvm then exits 0.",
    after_help = "Exit status:\n  \
0  the guest rebooted or powered off\n  \
1  mvm could not start the VM (the message says why)\n  \
2  bad command-line usage\n  \
3  the guest kernel panicked\n  \
4  a vCPU failed (triple fault, KVM internal error, failed entry)\n\n\
Examples:\n  \
mvm run --initrd rootfs.cpio.gz\n  \
mvm run --kernel ./vmlinux --initrd ./initrd --cpus 2 --memory 1G --cmdline 'init=/bin/sh'"
)]
pub struct RunArgs {
    /// Guest kernel: an uncompressed vmlinux (ELF) or a bzImage.
    /// [default: $MVM_KERNEL, then the kernel built by guest-kernel/build.sh]
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,

    /// Initramfs (cpio archive, optionally compressed) to boot into.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,

    /// Extra kernel command-line arguments, appended to mvm's defaults
    /// (a later value for the same key wins).
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    cmdline: Option<String>,

    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=254))]
    cpus: u8,

    /// Guest memory: MiB, or with a unit (512M, 2G).
    #[arg(long, value_name = "SIZE", default_value = "512M", value_parser = parse_memory)]
    memory: u64,

    /// Where the guest console goes: `stdout`, `none`, or a file path.
    #[arg(long, value_name = "stdout|none|FILE", default_value = "stdout")]
    console: String,

    /// Do not give the guest a virtio-rng device.
    #[arg(long)]
    no_rng: bool,

    /// Boot even on a PVM-backed KVM host (for PVM-enabled guest kernels).
    #[arg(long, hide = true)]
    allow_pvm_host: bool,
}

pub fn parse_memory(s: &str) -> Result<u64, String> {
    let mib = vmm::parse_memory_mib(s).map_err(|e| e.to_string())?;
    if mib < vmm::config::MIN_MEMORY_MIB {
        return Err(format!(
            "{s} is too small: a Linux guest needs at least {} MiB",
            vmm::config::MIN_MEMORY_MIB
        ));
    }
    Ok(mib)
}

pub fn kernel_path(arg: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(k) = arg {
        return Ok(k);
    }
    if let Some(k) = std::env::var_os("MVM_KERNEL").filter(|v| !v.is_empty()) {
        return Ok(k.into());
    }
    match crate::paths::cached_kernel() {
        Some(k) if k.exists() => Ok(k),
        Some(k) => bail!(
            "no guest kernel: pass --kernel PATH, set MVM_KERNEL, or build ours with guest-kernel/build.sh (looked for {})",
            k.display()
        ),
        None => bail!("no guest kernel: pass --kernel PATH or set MVM_KERNEL"),
    }
}

fn console(arg: &str) -> Console {
    match arg {
        "stdout" | "-" => Console::Stdout,
        "none" => Console::Null,
        path => Console::File(path.into()),
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut config = VmConfig::new(kernel_path(args.kernel)?);
    config.initrd = args.initrd;
    config.cmdline = args.cmdline.unwrap_or_default();
    config.cpus = args.cpus;
    config.memory_mib = args.memory;
    config.console = console(&args.console);
    config.rng = !args.no_rng;
    config.allow_pvm_host = args.allow_pvm_host;

    let mut vm = Vm::new(&config)?;
    if let Some(path) = std::env::var_os("MVM_STARTUP_REPORT") {
        vm.on_first_run(move || crate::startup::write_report(path.as_ref()));
    }
    let reason = vm.run().context("the VM failed")?;
    Ok(exit_code(&reason))
}

pub fn exit_code(reason: &ExitReason) -> ExitCode {
    if reason.is_clean() {
        return ExitCode::SUCCESS;
    }
    eprintln!("mvm: {reason}");
    match reason {
        ExitReason::GuestPanic => ExitCode::from(EXIT_GUEST_PANIC),
        _ => ExitCode::from(EXIT_GUEST_FAULT),
    }
}
