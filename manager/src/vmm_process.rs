//! The body of `mvm _vmm DIR`, the detached VMM process of a managed VM:
//! it boots the VM described by DIR/vmm.json, serves the loopback side of
//! its port forwards, and cleans its runtime files up when the guest ends.

use std::path::Path;

use crate::error::Context;

use crate::state::VmDir;
use crate::Report;

/// Runs the VM of folder `dir` until its guest ends; why it ended.
pub fn run(dir: &Path, report: &dyn Report) -> crate::Result<vmm::ExitReason> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = VmDir {
        name,
        path: dir.to_path_buf(),
    };
    let json = std::fs::read(dir.vmm_config())
        .with_context(|| format!("cannot read {}", dir.vmm_config().display()))?;
    let config: vmm::VmConfig = serde_json::from_slice(&json)
        .with_context(|| format!("{} is not a VM config", dir.vmm_config().display()))?;
    // In its cgroup before guest memory is taken, so all of it counts.
    let mut cgroup = enter_cgroup(&crate::cgroup::key(&dir), &config);
    // A VMM that drops root cannot clean up after itself: a root parent
    // waits for it and does (the parent never returns from this).
    if config.jail.as_ref().is_some_and(|j| j.drops_root()) {
        crate::supervisor::fork_and_supervise(&dir, cgroup.take())?;
    }
    // Namespaces are per thread: taken while this is the only one.
    let mut jail = config.jail.clone();
    // SAFETY: geteuid has no preconditions.
    let as_root = unsafe { libc::geteuid() } == 0;
    let plan = proxy_plan(&dir)?;
    // In a user namespace the VMM could no longer bind a privileged port
    // (CAP_NET_BIND_SERVICE, which a NixOS unit grants) for a forward.
    let low_port = plan
        .as_ref()
        .and_then(|p| p.forwards.iter().map(|f| f.host_port).find(|&p| p < 1024));
    if let (Some(port), false, Some(_)) = (low_port, as_root, &jail) {
        report.progress(&format!(
            "VM '{}': the VMM runs without its jail (forwarded host port {port} is below 1024: binding it takes a capability a user namespace would drop)",
            dir.name
        ));
        jail = None;
    }
    if jail.is_some() {
        let refused = vmm::jail::unshare_namespaces_or_refusal().map_err(vmm::Error::from)?;
        if let Some(e) = refused {
            report.progress(&format!(
                "VM '{}': the VMM runs without its jail ({e})",
                dir.name
            ));
            jail = None;
        }
    }
    raise_fd_limit(config.shares.len());
    let mut vm = vmm::Vm::new(&config)?;
    // Everything is open: from here on the VMM needs no host path but its
    // own folder, and none of root's powers but serving files.
    if let Some(jail) = &jail {
        jail.enter().map_err(vmm::Error::from)?;
        crate::supervisor::die_with_parent();
    }
    if let Err(e) = vmm::dump::dump_on_sigusr1(vm.dumper()) {
        tracing::warn!("no state dump on SIGUSR1: {e}");
    }
    let proxy = std::sync::Arc::new(netstack::PortProxy::new());
    if let Some(plan) = plan {
        for f in &plan.forwards {
            proxy
                .add(f, plan.guest_ip)
                .map_err(|e| crate::error::err!("port forward {f}: {e}"))?;
        }
        let ext_proxy = proxy.clone();
        let guest_ip = plan.guest_ip;
        vm.set_api_extension(Box::new(move |op| port_op(&ext_proxy, guest_ip, op)));
    }
    let reason = vm.run().context("the VM failed");
    if let Some(cg) = cgroup {
        if let Err(e) = cg.leave_and_remove() {
            tracing::warn!("{e}");
        }
    }
    let reason = reason?;
    report.progress(&format!("VM '{}' ended: {reason}", dir.name));
    // Only clean up what is ours: a newer VMM may have been started.
    if dir.pid() == Some(std::process::id() as i32) {
        let _ = dir.clear_runtime();
    }
    Ok(reason)
}

/// The loopback side of the VM's port forwards (`net.json`), if it has
/// any network.
fn proxy_plan(dir: &VmDir) -> crate::Result<Option<crate::net::ProxyPlan>> {
    let path = crate::net::proxy_plan_path(dir);
    let Ok(plan) = std::fs::read(&path) else {
        return Ok(None);
    };
    let plan = serde_json::from_slice(&plan)
        .with_context(|| format!("{} is not a proxy plan", path.display()))?;
    Ok(Some(plan))
}

/// The VM's cgroup, entered; None (logged) where there is none to make.
fn enter_cgroup(name: &str, config: &vmm::VmConfig) -> Option<crate::cgroup::VmCgroup> {
    let limits = crate::cgroup::CgroupLimits {
        cpus: config.cpus,
        memory_mib: config.memory_mib,
    };
    let cg = crate::cgroup::VmCgroup::create(name, limits)
        .map_err(|e| tracing::warn!("no cgroup: {e}"))
        .ok()?;
    match cg.enter() {
        Ok(()) => Some(cg),
        Err(e) => {
            tracing::warn!("no cgroup: {e}");
            let _ = cg.leave_and_remove();
            None
        }
    }
}

/// Raises the soft limit on open files to what the shares' file servers
/// may hold (each up to its handle limit) plus the rest of the VMM, within
/// the hard limit; past it a guest gets EMFILE and the listeners shed.
fn raise_fd_limit(shares: usize) {
    let want = (shares as u64) * (cowfs::Limits::default().max_handles as u64) + 1024;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur >= want {
        return;
    }
    // Root may raise the hard limit too; others stay within theirs.
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max.max(want),
    };
    // SAFETY: setrlimit reads the struct we pass and nothing else.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return;
    }
    lim.rlim_cur = want.min(lim.rlim_max);
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 || lim.rlim_cur < want {
        tracing::warn!(
            "open-file limit {} is below the {want} the shares may use",
            lim.rlim_cur
        );
    }
}

/// The API's port operations: the loopback side of a forward lives here,
/// in the VM's own process, so it ends with the VM.
fn port_op(
    proxy: &netstack::PortProxy,
    guest_ip: std::net::Ipv4Addr,
    op: &vmm::api::PortOp,
) -> Result<serde_json::Value, String> {
    use vmm::api::PortOp;
    let parse = |f: &str| -> Result<netstack::PortForward, String> {
        f.parse().map_err(|e: netstack::Error| e.to_string())
    };
    match op {
        PortOp::PortAdd { forward } => {
            proxy
                .add(&parse(forward)?, guest_ip)
                .map_err(|e| e.to_string())?;
            Ok(serde_json::Value::Null)
        }
        PortOp::PortRemove { forward } => {
            proxy.remove(&parse(forward)?);
            Ok(serde_json::Value::Null)
        }
        PortOp::PortList => Ok(serde_json::json!(proxy
            .list()
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>())),
    }
}
