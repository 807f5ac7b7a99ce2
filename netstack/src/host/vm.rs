//! Per-VM attach and detach: the lease (address, MAC), the tap on the
//! bridge (created, or taken from the pool), the VM's nftables elements.

use std::net::Ipv4Addr;

use crate::addr::{tap_name, validate_vm_id, validate_vm_name, MacAddr};
use crate::error::{Error, Result};
use crate::lease::{allocate_ip, peers_of, Active, Lease, Store};
use crate::link::Rtnl;
use crate::privilege::{privileges, require_net_admin};
use crate::tap::create_persistent_tap;

use super::setup::{ensure_host_locked, pool_bindings};
use super::{active_alive, chown_state, NetConfig, VmNet, VmSpec};

pub(super) fn detach_locked(
    cfg: &NetConfig,
    store: &Store,
    rt: &mut Rtnl,
    l: &mut Lease,
) -> Result<()> {
    // Without privilege there is nothing of ours to remove unless the VM
    // was attached with rules (then the nft error says what is missing).
    let has_rules = l.active.is_some()
        && (l.allow_vm_to_vm
            || !l.allow.is_empty()
            || l.forwards.iter().any(|f| f.dnat_addr().is_some()));
    if has_rules || privileges().net_admin {
        cfg.nft().remove_vm(&l.id, Some(l))?;
    }
    if let Some(a) = &l.active {
        // Leases are the users' to write: only a tap of ours is touched,
        // whatever name a lease gives.
        let ours = |link: &crate::link::Link| {
            link.name.starts_with(crate::addr::TAP_PREFIX) && link.kind.as_deref() == Some("tun")
        };
        if let Some(link) = rt.link(&a.tap)?.filter(ours) {
            if a.pooled {
                // Pool taps stay, isolated as setup left them.
                let _ = rt.set_isolated(link.index, true);
            } else {
                rt.delete(link.index)?;
            }
        }
        tracing::info!(vm = %l.id, tap = %a.tap, "detached");
    }
    l.active = None;
    store.save(l)
}

/// Give VM `spec.id` its network: its lease (the same address and MAC as
/// last time, or a new free address), a tap on the bridge (isolated unless
/// `allow_vm_to_vm`) owned by `spec.owner_uid`, and its stored port
/// forwards. With CAP_NET_ADMIN the tap is `mvm-<short id>`, created now;
/// without, a free pool tap of [`crate::setup_host`] is used. Idempotent while the
/// VM's process lives.
pub fn attach_vm(config: &NetConfig, spec: &VmSpec) -> Result<VmNet> {
    validate_vm_id(&spec.id)?;
    validate_vm_name(&spec.name)?;
    config.validate()?;
    let store = Store::open(&config.state_dir)?;
    let _lock = store.lock()?;
    let mut rt = Rtnl::open()?;
    let privileged = privileges().net_admin;
    let bridge = if privileged {
        ensure_host_locked(config, &store, &mut rt, false)?
    } else {
        rt.link(&config.bridge)?
            .ok_or_else(|| Error::NoBridge(config.bridge.clone()))?
            .index
    };
    let leases = store.load_all()?;
    let mut existing = leases.iter().find(|l| l.id == spec.id).cloned();
    if let Some(l) = &mut existing {
        if let Some(a) = &l.active {
            if active_alive(a) && rt.link(&a.tap)?.is_some() {
                return Ok(VmNet::from_lease(l, config.subnet));
            }
            detach_locked(config, &store, &mut rt, l)?;
        }
    }
    let others: Vec<Lease> = leases.iter().filter(|l| l.id != spec.id).cloned().collect();
    let mac = MacAddr::for_vm(&spec.id);
    if let Some(o) = others.iter().find(|l| l.mac == mac) {
        return Err(Error::MacCollision {
            a: o.id.clone(),
            b: spec.id.clone(),
            mac: mac.to_string(),
        });
    }
    let pool = pool_bindings(&mut rt, config, bridge)?;
    let pool_ip = |ip: Ipv4Addr| pool.iter().any(|(_, _, p)| *p == ip);
    let ip = match &existing {
        Some(l)
            if config.subnet.contains(l.ip)
                && l.ip != config.subnet.gateway()
                && !pool_ip(l.ip)
                && !others.iter().any(|o| o.ip == l.ip) =>
        {
            l.ip
        }
        _ => {
            // Addresses someone put on the bridge besides the gateway, and
            // the pool taps' addresses, are in use too.
            let mut used: Vec<Ipv4Addr> = rt
                .addrs()?
                .into_iter()
                .filter(|a| a.index == bridge)
                .map(|a| a.ip)
                .collect();
            used.extend(pool.iter().map(|(_, _, ip)| *ip));
            allocate_ip(&config.subnet, &others, &used)?
        }
    };
    let mut lease = Lease {
        id: spec.id.clone(),
        name: spec.name.to_ascii_lowercase(),
        mac,
        ip,
        allow_vm_to_vm: spec.allow_vm_to_vm,
        allow: spec.allow.clone(),
        forwards: existing.map(|l| l.forwards).unwrap_or_default(),
        active: None,
    };
    let me = std::process::id();
    if !privileged {
        if lease.allows_some_vm(&config.subnet) {
            require_net_admin("letting a VM talk to other VMs")?;
        }
        if !lease.allow.is_empty() {
            require_net_admin("opening networks to a VM (--allow-net)")?;
        }
        if lease.forwards.iter().any(|f| f.dnat_addr().is_some()) {
            require_net_admin("restoring the VM's port forwards on host addresses")?;
        }
        let used: Vec<&str> = others
            .iter()
            .filter_map(|l| l.active.as_ref())
            .filter(|a| a.pooled && active_alive(a))
            .map(|a| a.tap.as_str())
            .collect();
        // Only bound pool taps: an unbound one would let the VM spoof.
        let (tap, pmac, pip) = pool
            .iter()
            .find(|(n, _, _)| !used.contains(&n.as_str()))
            .cloned()
            .ok_or(Error::PoolExhausted {
                uid: spec.owner_uid,
            })?;
        // The VM takes the MAC and address the tap is bound to.
        lease.mac = pmac.parse().map_err(|e: String| Error::Nft(e))?;
        lease.ip = pip;
        lease.active = Some(Active {
            tap,
            pooled: true,
            owner_pid: None,
            attached_by: Some(me),
        });
    } else {
        let taken = |t: &str| {
            others
                .iter()
                .any(|l| l.active.as_ref().is_some_and(|a| a.tap == t))
        };
        let mut tap = tap_name(&spec.id, false);
        if taken(&tap) {
            tap = tap_name(&spec.id, true);
        }
        if let Some(old) = rt.link(&tap)? {
            rt.delete(old.index)?;
        }
        create_persistent_tap(&tap, spec.owner_uid)?;
        lease.active = Some(Active {
            tap: tap.clone(),
            pooled: false,
            owner_pid: None,
            attached_by: Some(me),
        });
        let r = (|| -> Result<()> {
            let l = rt.link(&tap)?.ok_or_else(|| Error::NoBridge(tap.clone()))?;
            rt.set_controller(l.index, bridge)?;
            // Defence in depth: a port that allows no VM is isolated too.
            rt.set_isolated(l.index, !lease.allows_some_vm(&config.subnet))?;
            rt.set_up(l.index)?;
            let mut all = others.clone();
            all.push(lease.clone());
            config.nft().add_vm(&lease, &peers_of(&lease, &all))?;
            Ok(())
        })();
        if let Err(e) = r {
            if let Ok(Some(l)) = rt.link(&tap) {
                let _ = rt.delete(l.index);
            }
            let _ = config.nft().remove_vm(&lease.id, Some(&lease));
            return Err(e);
        }
    }
    store.save(&lease)?;
    chown_state(&store, spec.owner_uid);
    tracing::info!(vm = %lease.id, ip = %lease.ip, mac = %lease.mac, tap = ?lease.active.as_ref().map(|a| &a.tap), "attached");
    Ok(VmNet::from_lease(&lease, config.subnet))
}

/// Record the VMM's pid as the owner of the VM's tap (for reconcile).
pub fn set_owner_pid(config: &NetConfig, id: &str, pid: u32) -> Result<()> {
    let store = Store::open(&config.state_dir)?;
    let _lock = store.lock()?;
    let mut l = store.load(id)?.ok_or_else(|| Error::UnknownVm(id.into()))?;
    let a = l
        .active
        .as_mut()
        .ok_or_else(|| Error::UnknownVm(id.into()))?;
    a.owner_pid = Some(pid);
    store.save(&l)
}

/// Take a VM off the network: its rules, its tap (pool taps stay), its
/// "attached" mark. The lease (address, MAC, forwards) is kept for the
/// next start. Idempotent; unknown VMs are fine.
pub fn detach_vm(config: &NetConfig, id: &str) -> Result<()> {
    validate_vm_id(id)?;
    let store = Store::open(&config.state_dir)?;
    let _lock = store.lock()?;
    let Some(mut l) = store.load(id)? else {
        return Ok(());
    };
    let mut rt = Rtnl::open()?;
    detach_locked(config, &store, &mut rt, &mut l)
}

/// Detach and delete the lease (the VM is removed for good).
pub fn forget_vm(config: &NetConfig, id: &str) -> Result<()> {
    detach_vm(config, id)?;
    let store = Store::open(&config.state_dir)?;
    let _lock = store.lock()?;
    store.remove(id)
}

/// The VM's network as recorded (tap empty when not attached).
pub fn vm_net(config: &NetConfig, id: &str) -> Result<VmNet> {
    let store = Store::open(&config.state_dir)?;
    let l = store.load(id)?.ok_or_else(|| Error::UnknownVm(id.into()))?;
    Ok(VmNet::from_lease(&l, config.subnet))
}

/// Every lease in the state folder.
pub fn leases(config: &NetConfig) -> Result<Vec<Lease>> {
    Store::open(&config.state_dir)?.load_all()
}
