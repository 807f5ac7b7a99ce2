//! The host side as the CLI sees it: one-time setup (bridge, forwarding,
//! nftables, tap pool), attaching and detaching VMs, and port forwards.
//! Every call takes the state folder's lock, so concurrent `mvm` processes
//! see consistent leases.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::addr::{
    pool_binding, pool_tap_name, tap_name, validate_vm_id, validate_vm_name, Cidr, MacAddr, Subnet,
    POOL_PREFIX,
};
use crate::dhcp::DhcpParams;
use crate::dns::DnsConfig;
use crate::error::{Error, Result};
use crate::forward::{check_host_port_free, PortForward};
use crate::lease::{allocate_ip, peers_of, read_json, write_json, Active, Lease, Store};
use crate::link::{sysctl_get, sysctl_set, Rtnl};
use crate::nft::{Nft, NftParams};
use crate::privilege::{privileges, require_net_admin};
use crate::tap::create_persistent_tap;

/// The host network plane's configuration. Stored in
/// `<state_dir>/network.json` by setup and attach, so later calls (and
/// [`crate::reconcile`]) use the same one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetConfig {
    /// Bridge name (`virbr-mvm`).
    pub bridge: String,
    /// Gateway address and prefix (`10.77.0.1/24`).
    pub subnet: Subnet,
    /// The state folder (leases, lock).
    pub state_dir: PathBuf,
    /// Name of our nftables tables (`inet mvm` and `ip mvm`).
    pub table: String,
    /// DNS domain of the VMs (`mvm`).
    pub domain: String,
    /// DHCP lease time in seconds.
    pub lease_secs: u32,
}

impl NetConfig {
    /// Defaults: `virbr-mvm`, `10.77.0.1/24`, tables `mvm`, domain `mvm`.
    pub fn new(state_dir: impl Into<PathBuf>) -> NetConfig {
        NetConfig {
            bridge: "virbr-mvm".into(),
            subnet: Subnet::default(),
            state_dir: state_dir.into(),
            table: "mvm".into(),
            domain: "mvm".into(),
            lease_secs: 3600,
        }
    }

    /// The configuration stored in `state_dir`, or the defaults.
    pub fn load(state_dir: &Path) -> Result<NetConfig> {
        let mut c = read_json::<NetConfig>(&state_dir.join("network.json"))?
            .unwrap_or_else(|| NetConfig::new(state_dir));
        c.state_dir = state_dir.to_path_buf();
        Ok(c)
    }

    pub(crate) fn nft(&self) -> Nft<'_> {
        Nft::new(NftParams {
            table: &self.table,
            bridge: &self.bridge,
            subnet: self.subnet,
        })
    }

    /// Parameters for [`crate::DhcpServer::start`].
    pub fn dhcp_params(&self) -> DhcpParams {
        DhcpParams {
            subnet: self.subnet,
            lease_secs: self.lease_secs,
            domain: self.domain.clone(),
        }
    }

    /// Settings for [`crate::DnsServer::start`]: the gateway, port 53, the
    /// resolvers of /etc/resolv.conf.
    pub fn dns_config(&self) -> DnsConfig {
        let mut c = DnsConfig::new(self.subnet.gateway(), Path::new("/etc/resolv.conf"));
        c.domain = self.domain.clone();
        c
    }

    fn validate(&self) -> Result<()> {
        if self.bridge.is_empty() || self.bridge.len() > 15 || self.bridge.contains(['/', ' ', '.'])
        {
            return Err(Error::InvalidName {
                what: "bridge",
                value: self.bridge.clone(),
                reason: "must be 1 to 15 characters without '/', '.' or spaces",
            });
        }
        if self.table.is_empty()
            || !self
                .table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(Error::InvalidName {
                what: "table",
                value: self.table.clone(),
                reason: "only letters, digits, '_' and '-'",
            });
        }
        Ok(())
    }
}

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

/// What a VM needs from the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmSpec {
    /// Stable VM id (names the lease file, derives the MAC and tap name).
    pub id: String,
    /// VM name: hostname and `<name>.mvm`.
    pub name: String,
    /// Does this VM allow every other VM? (Traffic between two VMs needs
    /// both to allow it.)
    pub allow_vm_to_vm: bool,
    /// Networks it may reach although refused by default (RFC 1918, CGNAT,
    /// link-local); VMs whose address is inside are allowed too.
    pub allow: Vec<Cidr>,
    /// The user that runs the VMM (owner of the tap).
    pub owner_uid: u32,
}

/// A VM's network, as the VMM and the guest need it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmNet {
    /// VM id.
    pub id: String,
    /// VM name.
    pub name: String,
    /// The tap the VMM opens (`open_tap`).
    pub tap: String,
    /// The guest's MAC (virtio-net config).
    pub mac: MacAddr,
    /// The guest's address.
    pub ip: Ipv4Addr,
    /// The subnet (gateway = router = DNS).
    pub subnet: Subnet,
    /// Port forwards in force.
    pub forwards: Vec<PortForward>,
}

impl VmNet {
    fn from_lease(l: &Lease, subnet: Subnet) -> VmNet {
        VmNet {
            id: l.id.clone(),
            name: l.name.clone(),
            tap: l.active.as_ref().map(|a| a.tap.clone()).unwrap_or_default(),
            mac: l.mac,
            ip: l.ip,
            subnet,
            forwards: l.forwards.clone(),
        }
    }

    /// The gateway (router and DNS server).
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet.gateway()
    }

    /// The kernel's `ip=` argument for a static configuration without DHCP:
    /// `ip=CLIENT::GW:MASK:HOST:eth0:off:DNS`.
    pub fn kernel_ip_arg(&self) -> String {
        format!(
            "ip={}::{}:{}:{}:eth0:off:{}",
            self.ip,
            self.gateway(),
            self.subnet.netmask(),
            self.name,
            self.gateway()
        )
    }
}

pub(crate) fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence; no signal is sent.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether the owner of an attached VM still runs: the VMM if recorded,
/// else the process that attached it (between attach and spawn).
pub(crate) fn active_alive(a: &Active) -> bool {
    match (a.owner_pid, a.attached_by) {
        (Some(p), _) => pid_alive(p),
        (None, Some(p)) => pid_alive(p),
        (None, None) => false,
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Give the state files to the user when root works on their folder.
fn chown_state(store: &Store, uid: u32) {
    if !is_root() || uid == 0 {
        return;
    }
    let mut paths = vec![store.dir().to_path_buf(), store.leases_dir()];
    for f in ["network.json", "host.json", "lock"] {
        paths.push(store.dir().join(f));
    }
    if let Ok(rd) = std::fs::read_dir(store.leases_dir()) {
        paths.extend(rd.flatten().map(|e| e.path()));
    }
    for p in paths {
        if p.exists() {
            if let Err(e) = std::os::unix::fs::chown(&p, Some(uid), None) {
                tracing::warn!("chown {}: {e}", p.display());
            }
        }
    }
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
fn pool_bindings(
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
fn ensure_host_locked(
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
        let ours = l.name.starts_with(crate::addr::TAP_PREFIX) || l.name.starts_with(POOL_PREFIX);
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

fn detach_locked(cfg: &NetConfig, store: &Store, rt: &mut Rtnl, l: &mut Lease) -> Result<()> {
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
        if let Some(link) = rt.link(&a.tap)? {
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
/// without, a free pool tap of [`setup_host`] is used. Idempotent while the
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

/// What [`reconcile`] cleaned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// VMs whose owner was gone, now detached.
    pub detached: Vec<String>,
    /// Taps with no attached VM, deleted.
    pub taps_removed: Vec<String>,
    /// Set/map elements with no attached VM, deleted.
    pub elements_removed: usize,
}

/// Remove what VMs that crashed left behind: detach VMs whose owner process
/// is gone, delete `mvm-*` taps that no attached VM uses, and delete rule
/// elements of VMs that are not attached. Uses the configuration stored in
/// `state_dir`. Pool taps and leases stay.
pub fn reconcile(state_dir: &Path) -> Result<ReconcileReport> {
    let cfg = NetConfig::load(state_dir)?;
    let store = Store::open(state_dir)?;
    let _lock = store.lock()?;
    let mut rt = Rtnl::open()?;
    let mut rep = ReconcileReport::default();
    for mut l in store.load_all()? {
        if let Some(a) = &l.active {
            if !active_alive(a) {
                detach_locked(&cfg, &store, &mut rt, &mut l)?;
                rep.detached.push(l.id.clone());
            }
        }
    }
    let leases = store.load_all()?;
    let in_use: Vec<&str> = leases
        .iter()
        .filter_map(|l| l.active.as_ref().map(|a| a.tap.as_str()))
        .collect();
    if privileges().net_admin {
        for link in rt.links()? {
            if link.name.starts_with(crate::addr::TAP_PREFIX)
                && link.kind.as_deref() == Some("tun")
                && !in_use.contains(&link.name.as_str())
            {
                rt.delete(link.index)?;
                rep.taps_removed.push(link.name);
            }
        }
        let nft = cfg.nft();
        if nft.installed()? {
            let attached: Vec<&Lease> = leases.iter().filter(|l| l.active.is_some()).collect();
            let stale: Vec<_> = nft
                .elements()?
                .into_iter()
                .filter(|e| e.set != crate::nft::SET_UPLINKS && !e.pool)
                .filter(|e| match &e.vm {
                    Some(vm) => !attached.iter().any(|l| &l.id == vm),
                    None => true,
                })
                .collect();
            rep.elements_removed = stale.len();
            nft.delete_elems(&stale)?;
        }
    }
    if !rep.detached.is_empty() || !rep.taps_removed.is_empty() || rep.elements_removed > 0 {
        tracing::info!(?rep, "reconciled");
    }
    Ok(rep)
}
