//! One-time host set-up and its undoing: the bridge and its address, IPv4
//! forwarding, our nftables tables, the pool of persistent taps.

use std::net::Ipv4Addr;

use crate::addr::{pool_binding, pool_tap_name, Subnet, POOL_PREFIX, TAP_PREFIX};
use crate::error::{Error, Result};
use crate::lease::{write_json, Store};
use crate::link::{sysctl_get, sysctl_set, Rtnl};
use crate::privilege::require_net_admin;
use crate::tap::create_persistent_tap;

use super::vm::detach_locked;
use super::{chown_state, NetConfig};

/// What [`setup_host`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSetup {
    /// The bridge.
    pub bridge: String,
    /// Its subnet.
    pub subnet: Subnet,
    /// Uplinks (default-route interfaces) whose forwarding setup turned on.
    pub forwarding_enabled: Vec<String>,
    /// The pool taps owned by the user.
    pub pool: Vec<String>,
}

/// Err if `subnet` overlaps an address or route on any interface but
/// `skip` (our bridge).
fn check_overlap(rt: &mut Rtnl, cfg: &NetConfig, skip: Option<u32>) -> Result<()> {
    let links = rt.links()?;
    let name = |i: Option<u32>| {
        i.and_then(|i| links.iter().find(|l| l.index == i))
            .map(|l| l.name.clone())
            .unwrap_or_else(|| "-".into())
    };
    for a in rt.addrs()? {
        if Some(a.index) == skip || a.ip.is_loopback() {
            continue;
        }
        if cfg.subnet.overlaps(a.ip, a.prefix_len) {
            return Err(Error::SubnetOverlap {
                subnet: cfg.subnet.cidr(),
                existing: format!("address {}/{}", a.ip, a.prefix_len),
                dev: name(Some(a.index)),
            });
        }
    }
    for r in rt.routes()? {
        // Default routes overlap everything; the local table mirrors addresses.
        if r.dst_len == 0 || r.table == 255 || (r.oif.is_some() && r.oif == skip) {
            continue;
        }
        if cfg.subnet.overlaps(r.dst, r.dst_len) {
            return Err(Error::SubnetOverlap {
                subnet: cfg.subnet.cidr(),
                existing: format!("route {}/{}", r.dst, r.dst_len),
                dev: name(r.oif),
            });
        }
    }
    Ok(())
}

/// Interfaces of the main table's default routes (the way to "the internet").
fn uplinks(rt: &mut Rtnl, bridge: u32) -> Result<Vec<String>> {
    let links = rt.links()?;
    let mut out: Vec<String> = Vec::new();
    for r in rt.routes()? {
        if r.dst_len != 0 || r.table != 254 || r.oif == Some(bridge) {
            continue;
        }
        if let Some(l) = r.oif.and_then(|i| links.iter().find(|l| l.index == i)) {
            if !out.contains(&l.name) {
                out.push(l.name.clone());
            }
        }
    }
    Ok(out)
}

/// The pool taps on the bridge, each with the MAC and address bound to it.
pub(super) fn pool_bindings(
    rt: &mut Rtnl,
    cfg: &NetConfig,
    bridge: u32,
) -> Result<Vec<(String, String, Ipv4Addr)>> {
    Ok(rt
        .links()?
        .into_iter()
        .filter(|l| l.controller == Some(bridge))
        .filter_map(|l| {
            pool_binding(&cfg.subnet, &l.name).map(|(mac, ip)| (l.name, mac.to_string(), ip))
        })
        .collect())
}

/// Bridge, address, forwarding and rules, each created only if missing
/// (`reinstall_rules` rebuilds the tables in any case). Returns the bridge
/// index. Rolls back a bridge it created if a later step fails.
pub(super) fn ensure_host_locked(
    cfg: &NetConfig,
    store: &Store,
    rt: &mut Rtnl,
    reinstall_rules: bool,
) -> Result<u32> {
    cfg.validate()?;
    require_net_admin(&format!("setting up bridge {}", cfg.bridge))?;
    let mut created = false;
    let index = match rt.link(&cfg.bridge)? {
        Some(l) => {
            if l.kind.as_deref() != Some("bridge") {
                return Err(Error::InvalidName {
                    what: "bridge",
                    value: cfg.bridge.clone(),
                    reason: "an interface of that name exists and is not a bridge",
                });
            }
            l.index
        }
        None => {
            check_overlap(rt, cfg, None)?;
            rt.create_bridge(&cfg.bridge)?;
            created = true;
            rt.link(&cfg.bridge)?
                .ok_or_else(|| Error::NoBridge(cfg.bridge.clone()))?
                .index
        }
    };
    let r = (|| -> Result<()> {
        let gw = cfg.subnet.gateway();
        let has = rt
            .addrs()?
            .iter()
            .any(|a| a.index == index && a.ip == gw && a.prefix_len == cfg.subnet.prefix_len());
        if !has {
            check_overlap(rt, cfg, Some(index))?;
            rt.add_addr(index, gw, cfg.subnet.prefix_len(), cfg.subnet.broadcast())?;
        }
        rt.set_up(index)?;
        write_json(&store.dir().join("network.json"), cfg)?;
        // Forwarding: on for the bridge, and for each uplink where it was
        // off (replies and forwarded connections come in there; the
        // `uplinks` set keeps everything else from being forwarded).
        sysctl_set(&format!("net/ipv4/conf/{}/forwarding", cfg.bridge), "1")?;
        let mut host = store.load_host()?;
        let nft = cfg.nft();
        if sysctl_get("net/ipv4/ip_forward")? == "1" {
            // Someone turned forwarding on globally (a router, Docker): it
            // is not ours to guard or to turn off again.
            if !host.forwarding_enabled.is_empty() {
                host.forwarding_enabled.clear();
                if nft.installed()? {
                    nft.set_uplinks(&[])?;
                }
            }
        }
        for up in uplinks(rt, index)? {
            let key = format!("net/ipv4/conf/{up}/forwarding");
            if sysctl_get(&key)? == "0" {
                sysctl_set(&key, "1")?;
                if !host.forwarding_enabled.contains(&up) {
                    host.forwarding_enabled.push(up.clone());
                }
                tracing::info!(uplink = %up, "enabled IPv4 forwarding");
            }
        }
        store.save_host(&host)?;
        if reinstall_rules || !nft.installed()? {
            let leases = store.load_all()?;
            let pool = pool_bindings(rt, cfg, index)?;
            nft.install(&host.forwarding_enabled, &leases, &pool)?;
        }
        Ok(())
    })();
    if let Err(e) = r {
        if created {
            let _ = rt.delete(index);
        }
        return Err(e);
    }
    Ok(index)
}

/// One-time host setup (as root, `mvm net setup`): the bridge with the
/// gateway address, IPv4 forwarding for it (and for the uplinks, guarded by
/// our rules), our nftables tables, and `pool_size` persistent taps
/// `mvmp-N` owned by `owner_uid`, already on the bridge and isolated, so
/// that later VMs of that user need no privilege. Idempotent; rebuilds our
/// tables (with the elements of attached VMs).
pub fn setup_host(config: &NetConfig, owner_uid: u32, pool_size: u16) -> Result<HostSetup> {
    if pool_size > 0 && pool_binding(&config.subnet, &pool_tap_name(pool_size - 1)).is_none() {
        return Err(Error::InvalidSubnet {
            spec: config.subnet.to_string(),
            reason: format!(
                "too small for a pool of {pool_size} taps (at most half its addresses)"
            ),
        });
    }
    let store = Store::open(&config.state_dir)?;
    let _lock = store.lock()?;
    store.drop_untrusted_config()?;
    let mut rt = Rtnl::open()?;
    let br = ensure_host_locked(config, &store, &mut rt, true)?;
    let mut pool = Vec::new();
    for n in 0..pool_size {
        let name = pool_tap_name(n);
        if rt.link(&name)?.is_none() {
            create_persistent_tap(&name, owner_uid)?;
        }
        let l = rt
            .link(&name)?
            .ok_or_else(|| Error::NoBridge(name.clone()))?;
        rt.set_controller(l.index, br)?;
        rt.set_isolated(l.index, true)?;
        rt.set_up(l.index)?;
        pool.push(name);
    }
    // Bind the pool taps: their VMs are attached without privilege, so
    // this is the one chance to.
    config
        .nft()
        .bind_pool(&pool_bindings(&mut rt, config, br)?)?;
    chown_state(&store, owner_uid);
    let host = store.load_host()?;
    tracing::info!(bridge = %config.bridge, subnet = %config.subnet, pool = pool.len(), "host network set up");
    Ok(HostSetup {
        bridge: config.bridge.clone(),
        subnet: config.subnet,
        forwarding_enabled: host.forwarding_enabled,
        pool,
    })
}

/// Undo [`setup_host`]: detach every VM, delete our taps, the bridge and our
/// tables, and turn forwarding off again where setup turned it on. Leases
/// (addresses, forwards) are kept. Idempotent.
pub fn teardown_host(config: &NetConfig) -> Result<()> {
    require_net_admin("removing the mvm network")?;
    let store = Store::open(&config.state_dir)?;
    let _lock = store.lock()?;
    let mut rt = Rtnl::open()?;
    for mut l in store.load_all()? {
        if l.active.is_some() {
            detach_locked(config, &store, &mut rt, &mut l)?;
        }
    }
    for l in rt.links()? {
        let ours = l.name.starts_with(TAP_PREFIX) || l.name.starts_with(POOL_PREFIX);
        if ours && l.kind.as_deref() == Some("tun") {
            rt.delete(l.index)?;
        }
    }
    if let Some(b) = rt.link(&config.bridge)? {
        rt.delete(b.index)?;
    }
    config.nft().uninstall()?;
    let mut host = store.load_host()?;
    if sysctl_get("net/ipv4/ip_forward").is_ok_and(|v| v == "1") {
        host.forwarding_enabled.clear(); // someone else wants it on now
    }
    for up in &host.forwarding_enabled {
        let key = format!("net/ipv4/conf/{up}/forwarding");
        if let Err(e) = sysctl_set(&key, "0") {
            tracing::debug!("restoring {key}: {e}");
        }
    }
    store.save_host(&Default::default())?;
    Ok(())
}
