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
    let mut vm = vmm::Vm::new(&config)?;
    if let Err(e) = vmm::dump::dump_on_sigusr1(vm.dumper()) {
        tracing::warn!("no state dump on SIGUSR1: {e}");
    }
    let proxy = std::sync::Arc::new(netstack::PortProxy::new());
    if let Ok(plan) = std::fs::read(crate::net::proxy_plan_path(&dir)) {
        let plan: crate::net::ProxyPlan = serde_json::from_slice(&plan).with_context(|| {
            format!(
                "{} is not a proxy plan",
                crate::net::proxy_plan_path(&dir).display()
            )
        })?;
        for f in &plan.forwards {
            proxy
                .add(f, plan.guest_ip)
                .map_err(|e| crate::error::err!("port forward {f}: {e}"))?;
        }
        let ext_proxy = proxy.clone();
        let guest_ip = plan.guest_ip;
        vm.set_api_extension(Box::new(move |op| port_op(&ext_proxy, guest_ip, op)));
    }
    let reason = vm.run().context("the VM failed")?;
    report.progress(&format!("VM '{}' ended: {reason}", dir.name));
    // Only clean up what is ours: a newer VMM may have been started.
    if dir.pid() == Some(std::process::id() as i32) {
        let _ = dir.clear_runtime();
    }
    Ok(reason)
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
