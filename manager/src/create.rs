//! A new VM's spec from a project's configuration and options over it:
//! validate everything, then write the VM folder at once.

use std::path::PathBuf;

use crate::error::{bail, Context};

use netstack::PortForward;

use crate::net::NetMode;
use crate::project::config::{GuestRoot, ProjectConfig};
use crate::state::{self, VmDir, VmSpec};
use crate::Report;

/// What `create` is asked for: each `None` or empty field takes the
/// project's value, else the default.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// The VM's name: lowercase letters, digits and '-' (it becomes NAME.mvm).
    pub name: String,
    /// The project folder the VM works on (shared at /project).
    pub project: Option<PathBuf>,
    pub cpus: Option<u8>,
    /// Guest memory in MiB (see [`parse_memory`]).
    pub memory_mib: Option<u64>,
    /// Host port forwards; they replace the project's on the same host port.
    pub ports: Vec<PortForward>,
    pub env: Vec<(String, String)>,
    /// Host variables (or 'PREFIX*' patterns) passed to the guest.
    pub env_host: Vec<String>,
    pub services: Vec<agent_proto::ServiceSpec>,
    /// Keep the guest's changes across restarts.
    pub persistent: bool,
    /// Boot into the minimal initramfs root instead of the host's root.
    pub no_host_root: bool,
    /// The network interface's data path, or none.
    pub net: NetMode,
    pub allow_vm_to_vm: bool,
    /// Networks refused by default that the VM may reach.
    pub allow_net: Vec<netstack::Cidr>,
    /// Guest kernel [default: $MVM_KERNEL, then the cached build].
    pub kernel: Option<PathBuf>,
    /// Home paths (~/PATH) shared copy-on-write.
    pub share_home: Vec<String>,
    /// The copy-on-write layers' byte budget in MiB (see [`parse_disk`]).
    pub disk_mib: Option<u64>,
    /// seccomp on the VMM (default on); off or log only for debugging.
    pub seccomp: Option<vmm::seccomp::Seccomp>,
    /// No jail for the VMM: for debugging only.
    pub no_jail: bool,
    /// `--volume NAME:GUEST_PATH[:ro]`: existing volumes, over the project's.
    pub volumes: Vec<crate::volume::VolumeMount>,
}

impl CreateOptions {
    /// A VM for project folder `project` with nothing but the project's own
    /// configuration (which `validate` adds).
    pub fn for_project(name: String, project: PathBuf) -> CreateOptions {
        CreateOptions {
            name,
            project: Some(project),
            ..Default::default()
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

/// `mvm create`: the project's configuration (if any) under `opts`,
/// validated, written as a new VM folder; its spec.
pub fn create(opts: &CreateOptions, report: &dyn Report) -> crate::Result<VmSpec> {
    let dir = VmDir::of(&opts.name)?;
    let base = match &opts.project {
        Some(p) => {
            let detected = crate::project::load(&crate::project::folder(Some(p))?, report)?;
            crate::up::report_detected(&detected, report);
            detected.config
        }
        None => Default::default(),
    };
    // Ports are picked and written under one lock: copies created at once
    // never pick the same free port.
    let _ports = state::VmLock::acquire_ports()?;
    let spec = validate(opts, &dir, &base, report)?;
    write_vm(&dir, &spec)?;
    Ok(spec)
}

/// Writes a validated VM's folder atomically.
pub fn write_vm(dir: &VmDir, spec: &VmSpec) -> crate::Result<()> {
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
                crate::Error::VmExists(spec.name.clone())
            } else {
                crate::error::err!("cannot create {}: {e}", dir.path.display())
            }
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// The spec of a new VM: the project's configuration `base`, with the
/// command line's options over it (the caller holds
/// [`state::VmLock::acquire_ports`] until the spec is written).
pub fn validate(
    opts: &CreateOptions,
    dir: &VmDir,
    base: &ProjectConfig,
    report: &dyn Report,
) -> crate::Result<VmSpec> {
    if dir.spec_path().exists() {
        return Err(crate::Error::VmExists(opts.name.clone()));
    }
    spec_for(opts, base, None, report)
}

/// A VM's spec from `base` and `opts`; `own`: the VM's current spec when it
/// exists (its own forwards may be bound by it already). The project's
/// ports that are taken move to free ones (see [`move_taken_ports`]).
pub fn spec_for(
    opts: &CreateOptions,
    base: &ProjectConfig,
    own: Option<&VmSpec>,
    report: &dyn Report,
) -> crate::Result<VmSpec> {
    let project = match &opts.project {
        Some(p) => Some(crate::project::folder(Some(p))?),
        None => None,
    };
    let cpus = opts.cpus.or(base.cpus).unwrap_or(2);
    let memory = opts.memory_mib.or(base.memory.map(|m| m.0)).unwrap_or(1024);
    check_memory(memory)?;
    let host_cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if usize::from(cpus) > host_cpus * 4 {
        bail!("cpus {cpus} is more than 4x this host's {host_cpus} CPUs");
    }
    if let Some(k) = &opts.kernel {
        vmm::loader::probe_kernel(k)?;
    }
    // The command line's forwards replace the project's on the same host port.
    let declared: Vec<PortForward> = base
        .ports
        .iter()
        .map(|p| p.0)
        .filter(|p| !opts.ports.iter().any(|q| q.same_host_port(p)))
        .collect();
    let others = if declared.is_empty() {
        Vec::new()
    } else {
        forwards_of_others(&opts.name)?
    };
    let (mut ports, moves) = move_taken_ports(&opts.name, &declared, &opts.ports, own, &others)?;
    ports.extend(opts.ports.iter().copied());
    for p in &opts.env_host {
        crate::project::config::EnvPattern::try_from(p.clone())
            .map_err(|e| crate::error::err!("--env-host: {e}"))?;
    }
    let (mut services, depends_on) = crate::project::services(base)?;
    for svc in &opts.services {
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
    let declared_volumes: Vec<crate::volume::VolumeMount> =
        base.volumes.iter().map(|v| v.mount()).collect();
    let volumes = crate::volume::merge(&declared_volumes, &opts.volumes)?;
    let host_root = !opts.no_host_root && base.root != Some(GuestRoot::Minimal);
    let home = home_shares(opts, base, host_root)?;
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
        if other.name == opts.name {
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
    let network = opts.net != NetMode::None && base.network.as_ref().is_none_or(|n| n.enabled());
    if !opts.allow_net.is_empty() && !network {
        bail!(
            "--allow-net needs a network interface (it is off: --net none, --no-net or the project's `network`)"
        );
    }
    let mut allow_net = base.network.as_ref().map(|n| n.allow()).unwrap_or_default();
    for a in &opts.allow_net {
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
    env.extend(opts.env.iter().cloned());
    let mut env_host: Vec<String> = base.env_host.iter().map(|p| p.0.clone()).collect();
    env_host.extend(opts.env_host.iter().cloned());
    let id = crate::state::spec_new_id()?;
    // Said once all else passed: a refused VM moved nothing.
    for m in &moves {
        report.progress(m);
    }
    Ok(VmSpec {
        id,
        name: opts.name.clone(),
        project,
        cpus,
        memory_mib: memory,
        persistent: opts.persistent || base.persistent,
        disk_mib: opts
            .disk_mib
            .or(base.disk.map(|d| d.0))
            .unwrap_or(DEFAULT_DISK_MIB),
        host_root,
        network,
        net_backend: opts.net.backend().unwrap_or_default(),
        allow_vm_to_vm: opts.allow_vm_to_vm,
        allow_net,
        kernel: opts
            .kernel
            .as_ref()
            .map(|k| std::fs::canonicalize(k).unwrap_or_else(|_| k.clone())),
        ports,
        env,
        env_host,
        services,
        depends_on,
        shares,
        volumes,
        home,
        shell: base.shell.as_ref().map(|c| c.argv()),
        created,
        seccomp: opts.seccomp.unwrap_or(vmm::seccomp::Seccomp::Kill),
        jail: !opts.no_jail,
    })
}

/// How far above a taken declared port the search for a free one goes.
const MOVE_SPAN: u16 = 100;

/// Every forward in the specs of VMs other than `name`, with its VM's name.
pub fn forwards_of_others(name: &str) -> crate::Result<Vec<(String, PortForward)>> {
    let mut others = Vec::new();
    for other in state::all_vms()? {
        if other.name == name {
            continue;
        }
        if let Ok(o) = other.spec() {
            others.extend(o.ports.iter().map(|p| (o.name.clone(), *p)));
        }
    }
    Ok(others)
}

/// The project's declared forwards of VM `name`, each taken one (`others`,
/// other VMs' forwards, has its host port, or a host process holds it) moved to
/// a free host port: the one the VM had moved it to before (`own`), else
/// the first free one above it, skipping ports any VM's spec forwards.
/// Also one line per new move, to report. `explicit` (the command line's
/// forwards) are never moved; a taken one stays an error (in `spec_for`).
pub fn move_taken_ports(
    name: &str,
    declared: &[PortForward],
    explicit: &[PortForward],
    own: Option<&VmSpec>,
    others: &[(String, PortForward)],
) -> crate::Result<(Vec<PortForward>, Vec<String>)> {
    let mut moves = Vec::new();
    let held_by = |p: &PortForward| {
        others
            .iter()
            .find(|(_, q)| q.same_host_port(p))
            .map(|(n, _)| n.clone())
    };
    let owns = |p: &PortForward| own.is_some_and(|o| o.ports.iter().any(|q| q.same_host_port(p)));
    // Why `p` cannot be used, if it cannot.
    let taken = |p: &PortForward| -> Option<String> {
        if let Some(n) = held_by(p) {
            return Some(format!("VM '{n}'"));
        }
        if !owns(p) && check_port_free(p).is_err() {
            return Some("in use on the host".into());
        }
        None
    };
    let mut out: Vec<PortForward> = declared.to_vec();
    for i in 0..out.len() {
        let p = out[i];
        let Some(why) = taken(&p) else { continue };
        // Not one this VM forwards otherwise (declared, explicit or moved).
        let in_list = |q: &PortForward, out: &[PortForward]| {
            out.iter()
                .chain(declared)
                .chain(explicit)
                .any(|r| r.same_host_port(q))
        };
        let before = own.and_then(|o| {
            o.ports
                .iter()
                .find(|q| {
                    q.guest_port == p.guest_port
                        && q.protocol == p.protocol
                        && q.addr == p.addr
                        && q.host_port != p.host_port
                        && !declared.iter().any(|d| d.same_host_port(q))
                })
                .copied()
        });
        let scan = (1..=MOVE_SPAN).filter_map(|d| {
            p.host_port
                .checked_add(d)
                .map(|h| PortForward { host_port: h, ..p })
        });
        let found = before
            .into_iter()
            .chain(scan)
            .find(|q| !in_list(q, &out) && taken(q).is_none());
        let Some(q) = found else {
            bail!(
                "host port {} is taken ({why}) and none of {}..{} is free; pass -p HOST:{} to choose one",
                p.host_port,
                p.host_port.saturating_add(1),
                p.host_port.saturating_add(MOVE_SPAN),
                p.guest_port
            );
        };
        if !own.is_some_and(|o| o.ports.contains(&q)) {
            let udp = if q.protocol == netstack::Protocol::Udp {
                "/udp"
            } else {
                ""
            };
            moves.push(format!(
                "host port {} is taken ({why}); VM '{name}' forwards {}:{}{udp} instead",
                p.host_port, q.host_port, q.guest_port
            ));
        }
        out[i] = q;
    }
    Ok((out, moves))
}

/// The project's `home` entries and `--share-home`, resolved in the host
/// user's home; they need the host root (it holds the guest's home).
fn home_shares(
    opts: &CreateOptions,
    base: &ProjectConfig,
    host_root: bool,
) -> crate::Result<Option<state::HomeShares>> {
    if base.home.is_empty() && opts.share_home.is_empty() {
        return Ok(None);
    }
    if !host_root {
        bail!("home paths (--share-home, mvm.toml home) need the host root; they cannot go with --no-host-root or root = \"minimal\"");
    }
    let home = state::host_home().map_err(|e| crate::error::err!("{e}"))?;
    let mut paths = Vec::new();
    for (entries, what) in [(&base.home, "home"), (&opts.share_home, "--share-home")] {
        let found =
            state::resolve_home(entries, &home, what).map_err(|e| crate::error::err!("{e}"))?;
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
pub fn check_port_free(p: &PortForward) -> crate::Result<()> {
    netstack::check_host_port_free(p).map_err(|e| crate::error::err!("{e}"))
}

/// A memory size as `--memory` and mvm.toml's `memory` take it: MiB, or
/// with a unit (512M, 2G); at least what a Linux guest needs.
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

/// What a VM's copy-on-write layers may hold unless told otherwise: room
/// for a toolchain's build folders, and a bound on a runaway guest.
pub const DEFAULT_DISK_MIB: u64 = 20 * 1024;
/// The smallest budget: a guest's first writes (shell history, caches).
pub const MIN_DISK_MIB: u64 = 64;

/// Parses the upper-layer budget ("20G", "512M", MiB as an integer).
pub fn parse_disk(s: &str) -> Result<u64, String> {
    let mib = vmm::parse_memory_mib(s).map_err(|_| {
        format!("invalid disk size '{s}': use MiB or a size such as 512M, 20G or 1T")
    })?;
    if mib < MIN_DISK_MIB {
        return Err(format!(
            "disk size '{s}' is too small: use at least {MIN_DISK_MIB}M"
        ));
    }
    Ok(mib)
}

/// The one check of a managed VM's memory (create, run and up): no more
/// than the host has (the size itself was checked by [`parse_memory`]).
pub fn check_memory(mib: u64) -> crate::Result<()> {
    let host_mib = vmm::memory::host_ram_mib()?;
    if mib > host_mib {
        bail!("memory {mib} MiB is more than this host has ({host_mib} MiB)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(host: u16, guest: u16) -> PortForward {
        PortForward::tcp(host, guest)
    }

    fn held(name: &str, ports: impl IntoIterator<Item = u16>) -> Vec<(String, PortForward)> {
        ports
            .into_iter()
            .map(|h| (name.to_string(), fwd(h, 80)))
            .collect()
    }

    #[test]
    fn a_taken_declared_port_moves_to_the_next_free_one() {
        let (ports, moves) = move_taken_ports(
            "web-2",
            &[fwd(47100, 3000)],
            &[],
            None,
            &held("web", [47100]),
        )
        .unwrap();
        assert_eq!(ports, [fwd(47101, 3000)]);
        assert_eq!(
            moves,
            ["host port 47100 is taken (VM 'web'); VM 'web-2' forwards 47101:3000 instead"]
        );
        // Free: it stays, nothing said.
        let (ports, moves) = move_taken_ports("web", &[fwd(47110, 3000)], &[], None, &[]).unwrap();
        assert_eq!((ports, moves.len()), (vec![fwd(47110, 3000)], 0));
    }

    #[test]
    fn a_move_skips_the_vms_own_other_ports_and_others_ports() {
        // 47301 is declared too, 47302 given on the command line, 47303 another VM's.
        let mut others = held("web", [47300]);
        others.extend(held("web-3", [47303]));
        let (ports, _) = move_taken_ports(
            "web-2",
            &[fwd(47300, 3000), fwd(47301, 4000)],
            &[fwd(47302, 5000)],
            None,
            &others,
        )
        .unwrap();
        assert_eq!(ports, [fwd(47304, 3000), fwd(47301, 4000)]);
    }

    #[test]
    fn a_port_moved_before_is_kept_and_not_said_again() {
        let own = spec_for(
            &CreateOptions {
                name: "web-2".into(),
                memory_mib: Some(64),
                ports: vec![fwd(47509, 3000)],
                ..Default::default()
            },
            &ProjectConfig::default(),
            None,
            &crate::report::Silent,
        )
        .unwrap();
        let (ports, moves) = move_taken_ports(
            "web-2",
            &[fwd(47500, 3000)],
            &[],
            Some(&own),
            &held("web", [47500]),
        )
        .unwrap();
        assert_eq!((ports, moves.len()), (vec![fwd(47509, 3000)], 0));
    }

    #[test]
    fn a_port_held_on_the_host_moves_and_a_full_range_is_an_error() {
        let _l = std::net::TcpListener::bind(("127.0.0.1", 47700)).unwrap();
        let (ports, moves) = move_taken_ports("web", &[fwd(47700, 3000)], &[], None, &[]).unwrap();
        assert_eq!(ports, [fwd(47701, 3000)]);
        assert_eq!(
            moves,
            ["host port 47700 is taken (in use on the host); VM 'web' forwards 47701:3000 instead"]
        );
        let e = move_taken_ports(
            "web-2",
            &[fwd(47900, 3000)],
            &[],
            None,
            &held("web", 47900..=48000),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "host port 47900 is taken (VM 'web') and none of 47901..48000 is free; pass -p HOST:3000 to choose one"
        );
    }
}
