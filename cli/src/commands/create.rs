//! `mvm create` (see `manager::create`).

use std::path::PathBuf;

use clap::Args;
use manager::create::{parse_disk, parse_env, parse_memory, parse_service, CreateOptions};
use netstack::PortForward;

use crate::args::NetArg;
use crate::report::Stderr;

#[derive(Args)]
pub struct CreateArgs {
    /// The VM's name: lowercase letters, digits and '-' (it becomes NAME.mvm).
    pub name: String,
    /// The project folder the VM works on (shared at /project); what it
    /// declares (mvm.toml, devenv, Procfile, package.json, manage.py) is
    /// the base that the other options add to or override.
    #[arg(long, value_name = "DIR")]
    pub project: Option<PathBuf>,
    /// Number of vCPUs [default: the project's, else 2].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=254))]
    pub cpus: Option<u8>,
    /// Guest memory: MiB, or with a unit (512M, 2G) [default: the project's, else 1G].
    #[arg(long, value_name = "SIZE", value_parser = parse_memory)]
    pub memory: Option<u64>,
    /// Forward a host port to the guest: [ADDRESS:]HOST:GUEST[/tcp|/udp],
    /// on the host's loopback unless ADDRESS is given (0.0.0.0: every
    /// interface); repeatable.
    #[arg(long = "port", short = 'p', value_name = "[ADDRESS:]HOST:GUEST")]
    pub ports: Vec<PortForward>,
    /// Environment for commands in the VM: KEY=VALUE; repeatable.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Pass the host's variable KEY (or every one matching 'PREFIX*') to
    /// services, shells and execs, read when they start; repeatable.
    #[arg(long = "env-host", value_name = "KEY")]
    pub env_host: Vec<String>,
    /// A supervised process: NAME=COMMAND (run by `sh -c` in /project,
    /// restarted when it fails); repeatable.
    #[arg(long = "service", value_name = "NAME=COMMAND", value_parser = parse_service)]
    pub services: Vec<agent_proto::ServiceSpec>,
    /// Keep the guest's changes across restarts (default: dropped at stop).
    #[arg(long)]
    pub persistent: bool,
    /// Boot into the minimal initramfs root (busybox) instead of the host's
    /// own root under a copy-on-write layer.
    #[arg(long)]
    pub no_host_root: bool,
    /// The network interface's data path: `tap` (the VMM moves the frames),
    /// `vhost` (the kernel's vhost-net does; the tap path, with a warning,
    /// where /dev/vhost-net cannot be used), or `none`.
    #[arg(long, value_enum, value_name = "tap|vhost|none", default_value = "tap")]
    pub net: NetArg,
    /// No network interface (same as --net none).
    #[arg(long)]
    pub no_net: bool,
    /// Let this VM talk to every other VM that allows it too (VMs are
    /// isolated from each other by default; it takes both).
    #[arg(long)]
    pub allow_vm_to_vm: bool,
    /// Let the VM reach a network refused by default (RFC 1918, CGNAT,
    /// link-local with the cloud metadata address): an IPv4 ADDRESS or
    /// ADDRESS/PREFIX, e.g. 10.1.0.0/16; another VM's address lets it talk
    /// to that VM if that VM allows it too. Repeatable; added to the
    /// project's `network.allow`.
    #[arg(long = "allow-net", value_name = "CIDR")]
    pub allow_net: Vec<netstack::Cidr>,
    /// Guest kernel for this VM [default: $MVM_KERNEL, then the cached build].
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Share a file or folder of your home with the guest (~/PATH, e.g.
    /// ~/.gitconfig), at the same place under the guest's home (/root),
    /// copy-on-write: the host's never changes. Repeatable.
    #[arg(long = "share-home", value_name = "PATH")]
    pub share_home: Vec<String>,
    /// What the guest may store in its copy-on-write layers (root and
    /// project together; past it writes fail with "no space left"): MiB or
    /// a size such as 20G [default: the project's, else 20G].
    #[arg(long, value_name = "SIZE", value_parser = parse_disk)]
    pub disk: Option<u64>,
    /// seccomp on the VMM: on (default), off or log; for debugging only.
    #[arg(long, value_name = "on|off|log", hide = true)]
    pub seccomp: Option<vmm::seccomp::Seccomp>,
    /// Run the VMM unjailed (as mvm's own user, all its privileges): for
    /// debugging only.
    #[arg(long, hide = true)]
    pub no_jail: bool,
    /// Mount an existing volume (`mvm volume create`) at GUEST_PATH,
    /// read-only with `:ro`; formatted (ext4) on first use; over the
    /// project's volume of the same name or path. Repeatable.
    #[arg(long = "volume", value_name = "NAME:GUEST_PATH[:ro]", value_parser = manager::volume::parse_mount_arg)]
    pub volumes: Vec<manager::volume::VolumeMount>,
}

impl CreateArgs {
    fn options(self) -> CreateOptions {
        CreateOptions {
            name: self.name,
            project: self.project,
            cpus: self.cpus,
            memory_mib: self.memory,
            ports: self.ports,
            env: self.env,
            env_host: self.env_host,
            services: self.services,
            persistent: self.persistent,
            no_host_root: self.no_host_root,
            net: self.net.mode(self.no_net),
            allow_vm_to_vm: self.allow_vm_to_vm,
            allow_net: self.allow_net,
            kernel: self.kernel,
            share_home: self.share_home,
            disk_mib: self.disk,
            seccomp: self.seccomp,
            no_jail: self.no_jail,
            volumes: self.volumes,
        }
    }
}

pub fn create(args: CreateArgs) -> anyhow::Result<()> {
    let spec = manager::create::create(&args.options(), &Stderr)?;
    println!(
        "created VM '{}' ({} vCPUs, {} MiB{})",
        spec.name,
        spec.cpus,
        spec.memory_mib,
        spec.project
            .as_ref()
            .map(|p| format!(", project {}", p.display()))
            .unwrap_or_default()
    );
    Ok(())
}
