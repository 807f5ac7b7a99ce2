//! `mvm create`: validate everything, then write the VM folder at once.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use netstack::PortForward;

use crate::project::config::{GuestRoot, ProjectConfig};
use crate::state::{self, VmDir, VmSpec};

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
    #[arg(long, value_name = "SIZE", value_parser = super::run::parse_memory)]
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
    pub net: crate::net::NetMode,
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
}

impl CreateArgs {
    /// A VM for project folder `project` with nothing but the project's own
    /// configuration (which `validate` adds).
    pub fn for_project(name: String, project: PathBuf) -> CreateArgs {
        CreateArgs {
            name,
            project: Some(project),
            cpus: None,
            memory: None,
            ports: Vec::new(),
            env: Vec::new(),
            env_host: Vec::new(),
            services: Vec::new(),
            persistent: false,
            no_host_root: false,
            no_net: false,
            net: crate::net::NetMode::Tap,
            allow_vm_to_vm: false,
            allow_net: Vec::new(),
            kernel: None,
            share_home: Vec::new(),
        }
    }
}

pub fn parse_service(s: &str) -> Result<agent_proto::ServiceSpec, String> {
    let (name, command) = s
        .split_once('=')
        .filter(|(n, c)| !n.is_empty() && !c.trim().is_empty())
        .ok_or_else(|| {
            format!("invalid service '{s}': expected NAME=COMMAND, e.g. web='npm run dev'")
        })?;
    let spec = agent_proto::ServiceSpec {
        name: name.to_string(),
        argv: vec!["/bin/sh".into(), "-c".into(), command.to_string()],
        env: Default::default(),
        cwd: None,
        user: None,
        restart: agent_proto::RestartPolicy::OnFailure,
        readiness: None,
    };
    spec.validate()
        .map_err(|e| format!("invalid service '{s}': {e}"))?;
    Ok(spec)
}

pub fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v))
            if !k.is_empty()
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !k.as_bytes()[0].is_ascii_digit() =>
        {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(format!(
            "invalid environment entry '{s}': expected KEY=VALUE with KEY made of letters, digits and '_'"
        )),
    }
}

pub fn create(args: CreateArgs) -> anyhow::Result<()> {
    let dir = VmDir::of(&args.name)?;
    let base = match &args.project {
        Some(p) => {
            let detected = crate::project::load(&crate::project::folder(Some(p))?)?;
            crate::commands::up::report(&detected);
            detected.config
        }
        None => Default::default(),
    };
    let spec = validate(&args, &dir, &base)?;
    write_vm(&dir, &spec)?;
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

/// Writes a validated VM's folder atomically.
pub fn write_vm(dir: &VmDir, spec: &VmSpec) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let vms = state::vms_dir()?;
    std::fs::create_dir_all(&vms).with_context(|| format!("cannot create {}", vms.display()))?;
    // Build the folder under a temporary name and rename it into place, so
    // a failure leaves nothing and a concurrent create of the same name
    // loses cleanly.
    let tmp = vms.join(format!(".{}.{}.tmp", spec.name, std::process::id()));
    let result = (|| {
        // Owner only: the VM's state, logs and upper layers are the
        // guest's writes.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        spec.save(&tmp.join("vm.toml"))?;
        std::fs::rename(&tmp, &dir.path).map_err(|e| {
            if dir.path.exists() {
                anyhow::anyhow!("a VM named '{}' already exists", spec.name)
            } else {
                anyhow::anyhow!("cannot create {}: {e}", dir.path.display())
            }
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// The spec of a new VM: the project's configuration `base`, with the
/// command line's options over it.
pub fn validate(args: &CreateArgs, dir: &VmDir, base: &ProjectConfig) -> anyhow::Result<VmSpec> {
    if dir.spec_path().exists() {
        bail!("a VM named '{}' already exists", args.name);
    }
    spec_for(args, base, None)
}

/// A VM's spec from `base` and `args`; `own`: the VM's current spec when it
/// exists (its own forwards may be bound by it already).
pub fn spec_for(
    args: &CreateArgs,
    base: &ProjectConfig,
    own: Option<&VmSpec>,
) -> anyhow::Result<VmSpec> {
    let project = match &args.project {
        Some(p) => Some(crate::project::folder(Some(p))?),
        None => None,
    };
    let cpus = args.cpus.or(base.cpus).unwrap_or(2);
    let memory = args.memory.or(base.memory.map(|m| m.0)).unwrap_or(1024);
    let host_mib = vmm::memory::host_ram_mib()?;
    if memory > host_mib {
        bail!("memory {memory} MiB is more than this host has ({host_mib} MiB)");
    }
    let host_cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if usize::from(cpus) > host_cpus * 4 {
        bail!("cpus {cpus} is more than 4x this host's {host_cpus} CPUs");
    }
    if let Some(k) = &args.kernel {
        vmm::loader::probe_kernel(k)?;
    }
    // The command line's forwards replace the project's on the same host port.
    let mut ports: Vec<PortForward> = base
        .ports
        .iter()
        .map(|p| p.0)
        .filter(|p| !args.ports.iter().any(|q| q.same_host_port(p)))
        .collect();
    ports.extend(args.ports.iter().copied());
    for p in &args.env_host {
        crate::project::config::EnvPattern::try_from(p.clone())
            .map_err(|e| anyhow::anyhow!("--env-host: {e}"))?;
    }
    let (mut services, depends_on) = crate::project::services(base)?;
    for svc in &args.services {
        services.retain(|s| s.name != svc.name);
        let mut svc = svc.clone();
        if project.is_some() {
            svc.cwd = Some("/project".into());
        }
        services.push(svc);
    }
    let shares = match &project {
        Some(p) => crate::project::shares(p, base)?,
        None => Vec::new(),
    };
    let host_root = !args.no_host_root && base.root != Some(GuestRoot::Minimal);
    let home = home_shares(args, base, host_root)?;
    let mut seen = std::collections::HashSet::new();
    for p in &ports {
        if !seen.insert((p.host_port, p.protocol)) {
            bail!("host port {} is forwarded twice", p.host_port);
        }
        if !own.is_some_and(|o| o.ports.iter().any(|q| q.same_host_port(p))) {
            check_port_free(p)?;
        }
    }
    for other in state::all_vms()? {
        if other.name == args.name {
            continue;
        }
        if let Ok(o) = other.spec() {
            for p in &ports {
                if o.ports.iter().any(|q| q.same_host_port(p)) {
                    bail!(
                        "host port {} is already forwarded to VM '{}'",
                        p.host_port,
                        o.name
                    );
                }
            }
        }
    }
    let network = !args.no_net
        && args.net != crate::net::NetMode::None
        && base.network.as_ref().is_none_or(|n| n.enabled());
    if !args.allow_net.is_empty() && !network {
        bail!(
            "--allow-net needs a network interface (it is off: --net none, --no-net or the project's `network`)"
        );
    }
    let mut allow_net = base.network.as_ref().map(|n| n.allow()).unwrap_or_default();
    for a in &args.allow_net {
        if !allow_net.contains(a) {
            allow_net.push(*a);
        }
    }
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut env: std::collections::BTreeMap<String, String> = base
        .env
        .iter()
        .map(|(k, v)| (k.0.clone(), v.clone()))
        .collect();
    env.extend(args.env.iter().cloned());
    let mut env_host: Vec<String> = base.env_host.iter().map(|p| p.0.clone()).collect();
    env_host.extend(args.env_host.iter().cloned());
    Ok(VmSpec {
        id: crate::state::spec_new_id()?,
        name: args.name.clone(),
        project,
        cpus,
        memory_mib: memory,
        persistent: args.persistent || base.persistent,
        host_root,
        network,
        net_backend: args.net.backend().unwrap_or_default(),
        allow_vm_to_vm: args.allow_vm_to_vm,
        allow_net,
        kernel: args
            .kernel
            .as_ref()
            .map(|k| std::fs::canonicalize(k).unwrap_or_else(|_| k.clone())),
        ports,
        env,
        env_host,
        services,
        depends_on,
        shares,
        home,
        shell: base.shell.as_ref().map(|c| c.argv()),
        created,
    })
}

/// The project's `home` entries and `--share-home`, resolved in the host
/// user's home; they need the host root (it holds the guest's home).
fn home_shares(
    args: &CreateArgs,
    base: &ProjectConfig,
    host_root: bool,
) -> anyhow::Result<Option<state::HomeShares>> {
    if base.home.is_empty() && args.share_home.is_empty() {
        return Ok(None);
    }
    if !host_root {
        bail!("home paths (--share-home, mvm.toml home) need the host root; they cannot go with --no-host-root or root = \"minimal\"");
    }
    let home = state::host_home().map_err(|e| anyhow::anyhow!(e))?;
    let mut paths = Vec::new();
    for (entries, what) in [(&base.home, "home"), (&args.share_home, "--share-home")] {
        let found = state::resolve_home(entries, &home, what).map_err(|e| anyhow::anyhow!(e))?;
        for p in found.into_iter().flat_map(|h| h.paths) {
            if !paths.contains(&p) {
                paths.push(p);
            }
        }
    }
    Ok(Some(state::HomeShares { dir: home, paths }))
}

/// A host port must be free to bind now (it may still be taken later: the
/// forward itself checks again).
pub fn check_port_free(p: &PortForward) -> anyhow::Result<()> {
    netstack::check_host_port_free(p).map_err(|e| anyhow::anyhow!("{e}"))
}
