//! Port forwards of a VM: recorded in its lease, and DNAT elements while it
//! is attached (loopback-only forwards are the VMM's proxy's alone).

use crate::error::{Error, Result};
use crate::forward::{check_host_port_free, PortForward};
use crate::lease::Store;
use crate::privilege::require_net_admin;

use super::vm::vm_net;
use super::NetConfig;

/// Add a port forward to VM `id`, now if it is attached (DNAT for other
/// hosts; the VMM's [`crate::PortProxy`] serves the host itself) and on
/// every later attach. Errors, with nothing changed: host port already
/// forwarded (to any VM), host port in use by another process, unknown VM.
pub fn add_forward(config: &NetConfig, id: &str, fwd: &PortForward) -> Result<()> {
    let store = Store::open(&config.state_dir)?;
    let _lock = store.lock()?;
    let all = store.load_all()?;
    let mut l = all
        .iter()
        .find(|l| l.id == id)
        .cloned()
        .ok_or_else(|| Error::UnknownVm(id.into()))?;
    if let Some(o) = all
        .iter()
        .find(|o| o.forwards.iter().any(|f| f.same_host_port(fwd)))
    {
        return Err(Error::DuplicateForward {
            port: fwd.host_port,
            proto: fwd.protocol.as_str(),
            vm: o.name.clone(),
        });
    }
    check_host_port_free(fwd)?;
    // A loopback-only forward is the proxy's alone: no rule, no privilege.
    let rules = l.active.is_some() && fwd.dnat_addr().is_some();
    if rules {
        require_net_admin("adding a port forward on a host address")?;
        config.nft().add_forward(&l.id, l.ip, fwd)?;
    }
    l.forwards.push(*fwd);
    if let Err(e) = store.save(&l) {
        if rules {
            let _ = config.nft().remove_forward(fwd);
        }
        return Err(e);
    }
    tracing::info!(vm = %id, %fwd, "port forward added");
    Ok(())
}

/// Remove VM `id`'s forward of `fwd`'s host port and protocol (the guest
/// port is not compared).
pub fn remove_forward(config: &NetConfig, id: &str, fwd: &PortForward) -> Result<()> {
    let store = Store::open(&config.state_dir)?;
    let _lock = store.lock()?;
    let mut l = store.load(id)?.ok_or_else(|| Error::UnknownVm(id.into()))?;
    let Some(pos) = l.forwards.iter().position(|f| f.same_host_port(fwd)) else {
        return Err(Error::NoSuchForward {
            vm: id.into(),
            port: fwd.host_port,
            proto: fwd.protocol.as_str(),
        });
    };
    if l.active.is_some() && l.forwards[pos].dnat_addr().is_some() {
        require_net_admin("removing a port forward on a host address")?;
        config.nft().remove_forward(fwd)?;
    }
    l.forwards.remove(pos);
    store.save(&l)?;
    tracing::info!(vm = %id, %fwd, "port forward removed");
    Ok(())
}

/// The forwards of VM `id`.
pub fn list_forwards(config: &NetConfig, id: &str) -> Result<Vec<PortForward>> {
    Ok(vm_net(config, id)?.forwards)
}
