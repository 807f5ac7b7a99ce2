//! `mvm run`: a command in a throw-away VM for a project (`project.rs`), or
//! a kernel and initramfs booted with the console on stdout (`raw.rs`).

mod project;
mod raw;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use manager::create::parse_memory;

use crate::args::NetArg;

pub use raw::{parse_share, parse_vhost_user_fs, ShareArg};

#[derive(Args)]
#[command(
    about = "Run a command (or a shell) in a throw-away VM for a project, or boot a kernel and initramfs",
    long_about = "Without --initrd: a throw-away VM for the project (the current folder, \
or --project): the project at /project under a copy-on-write layer, the host's root, the \
network; runs COMMAND (or an interactive shell) there, then stops and removes the VM. \
Its exit status is the command's.\n\n\
With --initrd: boot that kernel and initramfs with the serial console on stdout (or in a \
file), and exit when the guest reboots (`reboot -f`): mvm then exits 0.",
    after_help = "Exit status:\n  \
0  the guest rebooted or powered off\n  \
1  mvm could not start the VM (the message says why)\n  \
2  bad command-line usage\n  \
3  the guest kernel panicked\n  \
4  a vCPU failed (triple fault, KVM internal error, failed entry)\n  \
130  stopped by Ctrl-C (128 + the signal: SIGTERM 143, SIGHUP 129), after releasing the network\n\n\
Examples:\n  \
mvm run --initrd rootfs.cpio.gz\n  \
mvm run --kernel ./vmlinux --initrd ./initrd --cpus 2 --memory 1G --cmdline 'init=/bin/sh'\n  \
mvm run --initrd rootfs.cpio.gz --net vhost"
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

    /// Share a host directory with the guest: HOST_DIR:TAG[:cow|:ro|:rw]
    /// (default cow: the guest's writes go to a throw-away upper layer and
    /// the host directory is never written), with `,xattr` after the mode
    /// to serve extended attributes (off by default, as in virtiofsd). The
    /// guest mounts it with `mount -t virtiofs TAG DIR`. Repeatable.
    #[arg(long = "share", value_name = "HOST_DIR:TAG[:MODE[,xattr]]", value_parser = parse_share)]
    shares: Vec<ShareArg>,

    /// A virtio-fs share served by a vhost-user backend already listening
    /// on SOCKET (e.g. `virtiofsd --socket-path SOCKET --shared-dir DIR`):
    /// SOCKET:TAG[:QUEUE_SIZE]. Guest RAM is then a memfd the backend maps.
    /// Repeatable.
    #[arg(long = "vhost-user-fs", value_name = "SOCKET:TAG[:QUEUE_SIZE]", value_parser = parse_vhost_user_fs)]
    vhost_user_fs: Vec<vmm::VhostUserFsConfig>,

    /// Share this project folder as tag `project` (copy-on-write), to be
    /// mounted at /project (mvm-init does; `mvm.share=project:/project` is
    /// on the command line for other inits).
    #[arg(long, value_name = "DIR")]
    project: Option<PathBuf>,

    /// Do not give the guest a virtio-rng device.
    #[arg(long)]
    no_rng: bool,

    /// A network interface on the mvm bridge (tap, MAC, a lease from mvm's
    /// DHCP server): `tap` (the VMM moves the frames; the default value),
    /// `vhost` (the kernel's vhost-net does, where /dev/vhost-net can be
    /// used), `none`. Project VMs have one by default when the host allows
    /// it; kernel+initramfs runs only with --net (their init must run a
    /// DHCP client, e.g. `udhcpc -i eth0`; `mvm.net=dhcp` is on the command
    /// line). Taken down when the VM ends, Ctrl-C included.
    #[arg(long, value_enum, value_name = "tap|vhost|none", num_args = 0..=1,
          default_missing_value = "tap", require_equals = false)]
    net: Option<NetArg>,

    /// No network interface (same as --net none).
    #[arg(long, conflicts_with = "net")]
    no_net: bool,

    /// Let the VM reach a network refused by default (RFC 1918, CGNAT,
    /// link-local with the cloud metadata address): an IPv4 ADDRESS or
    /// ADDRESS/PREFIX, e.g. 10.1.0.0/16. Repeatable.
    #[arg(long = "allow-net", value_name = "CIDR")]
    allow_net: Vec<netstack::Cidr>,

    /// Share a file or folder of your home with a project VM (~/PATH, e.g.
    /// ~/.gitconfig), at the same place under the guest's home (/root),
    /// copy-on-write. Repeatable.
    #[arg(long = "share-home", value_name = "PATH")]
    share_home: Vec<String>,

    /// The command to run in a project VM (default: an interactive shell).
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,

    /// Serve share TAG on the VMM's event loop thread rather than on the
    /// notifying vCPU's (for comparing the two). Repeatable.
    #[arg(long = "fs-event-loop", value_name = "TAG", hide = true)]
    fs_event_loop: Vec<String>,

    /// Boot even on a PVM-backed KVM host (for PVM-enabled guest kernels).
    #[arg(long, hide = true)]
    allow_pvm_host: bool,

    /// What the guest may store in its copy-on-write layers (all shares
    /// together; past it writes fail with "no space left"): MiB or a size
    /// such as 20G [default: the project's, else 20G].
    #[arg(long, value_name = "SIZE", value_parser = manager::create::parse_disk)]
    disk: Option<u64>,

    /// seccomp on the VMM: on (default), off or log; for debugging only.
    #[arg(long, value_name = "on|off|log", hide = true)]
    seccomp: Option<vmm::seccomp::Seccomp>,

    /// Run the VMM unjailed (this process's own powers): for debugging
    /// only.
    #[arg(long, hide = true)]
    no_jail: bool,
    /// Mount an existing volume (`mvm volume create`) in a project VM at
    /// GUEST_PATH (`:ro`: read-only); it outlives the run. Repeatable.
    #[arg(long = "volume", value_name = "NAME:GUEST_PATH[:ro]", value_parser = manager::volume::parse_mount_arg)]
    volumes: Vec<manager::volume::VolumeMount>,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    if args.initrd.is_none() {
        project::run(args)
    } else {
        raw::run(args)
    }
}
