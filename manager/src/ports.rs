//! A VM's port forwards: listed, added or removed, also while the VM runs
//! (host rules, then the VMM's loopback proxy); they are kept in vm.toml
//! and come back on restart.

use std::time::Duration;

use netstack::PortForward;
use vmm::api::PortOp;

use crate::error::bail;
use crate::state::{RunState, VmDir, VmLock};
use crate::Report;

/// The forwards of VM `name`.
pub fn list(name: &str) -> crate::Result<Vec<PortForward>> {
    Ok(VmDir::existing(name)?.spec()?.ports)
}

/// Adds forward `fwd` to VM `name`.
pub fn add(name: &str, fwd: PortForward, report: &dyn Report) -> crate::Result<PortForward> {
    change(name, fwd, false, report)
}

/// Removes forward `fwd` from VM `name` (`8080:80` also names a forward
/// on an address); the forward removed.
pub fn remove(name: &str, fwd: PortForward, report: &dyn Report) -> crate::Result<PortForward> {
    change(name, fwd, true, report)
}

fn change(
    name: &str,
    mut fwd: PortForward,
    rm: bool,
    report: &dyn Report,
) -> crate::Result<PortForward> {
    let dir = VmDir::existing(name)?;
    let _lock = VmLock::acquire(&dir.path, &dir.name, report)?;
    let _ports = VmLock::acquire_ports()?;
    let mut spec = dir.spec()?;
    let running = matches!(dir.run_state(), RunState::Running | RunState::Paused);
    if rm {
        // `--rm 8080:80` also names a forward on an address.
        let found = spec.ports.iter().copied().find(|p| {
            *p == fwd
                || (fwd.addr.is_none() && p.same_host_port(&fwd) && p.guest_port == fwd.guest_port)
        });
        let Some(found) = found else {
            bail!("VM '{}' has no forward {fwd}", spec.name);
        };
        fwd = found;
        spec.ports.retain(|p| *p != fwd);
    } else {
        if spec.ports.iter().any(|p| p.same_host_port(&fwd)) {
            bail!(
                "host port {} is already forwarded to VM '{}'",
                fwd.host_port,
                spec.name
            );
        }
        for other in crate::state::all_vms()? {
            if other.name != spec.name {
                if let Ok(o) = other.spec() {
                    if o.ports.iter().any(|p| p.same_host_port(&fwd)) {
                        bail!(
                            "host port {} is already forwarded to VM '{}'",
                            fwd.host_port,
                            o.name
                        );
                    }
                }
            }
        }
        if !running {
            crate::create::check_port_free(&fwd)?;
        }
        spec.ports.push(fwd);
    }
    if running && spec.network {
        // Host rules first (they check the port), then the VMM's proxy.
        crate::net::sync_forwards(&spec)?;
        let forward = fwd.to_string();
        let op = if rm {
            PortOp::PortRemove { forward }
        } else {
            PortOp::PortAdd { forward }
        };
        let resp = vmm::api::call_port(&dir.api_socket(), &op, Duration::from_secs(5))?;
        if !resp.ok {
            bail!(
                "VM '{}' refused the forward: {}",
                spec.name,
                resp.error.unwrap_or_default()
            );
        }
    }
    spec.save(&dir.spec_path())?;
    Ok(fwd)
}
