//! Our nftables rules, through nftables' official JSON interface (`nft -j`)
//! with the typed schema of the `nftables` crate. We own exactly three
//! tables and never read or change any other (`rules.rs` builds them):
//!
//! ```text
//! table inet mvm {
//!   set uplinks    { type ifname }                     # uplinks whose forwarding WE enabled
//!   set host_ports { type inet_proto . inet_service }  # forwarded host ports (VMs may use them too)
//!   set allow      { type ipv4_addr . ipv4_addr; flags interval }  # VM . network it may reach
//!   set vm_pairs   { type ipv4_addr . ipv4_addr }      # = bridge pairs (br_netfilter)
//!   chain input   { type filter hook input priority filter; policy accept;
//!     iifname BR ct state established,related accept
//!     iifname BR udp dport 67 accept                    # DHCP
//!     iifname BR ip daddr GW udp dport 53 accept        # DNS
//!     iifname BR ip daddr GW tcp dport 53 accept
//!     iifname BR ip daddr GW icmp type echo-request accept  # ping the gateway
//!     iifname BR ip daddr GW meta l4proto . th dport @host_ports accept
//!     iifname BR reject }                               # nothing else of the host (TCP reset / ICMP)
//!   chain forward { type filter hook forward priority filter; policy accept;
//!     iifname BR ct state established,related accept    # replies of published ports
//!     iifname BR oifname BR ip saddr . ip daddr @vm_pairs accept  # bridged, with br_netfilter
//!     iifname BR oifname BR reject                      # VM <-> VM is bridged, never routed
//!     iifname BR ip saddr . ip daddr @allow accept      # opened per VM
//!     iifname BR ip daddr { 0/8, 10/8, 100.64/10, 169.254/16, 172.16/12, 192.168/16 } reject
//!     iifname BR ip saddr SUBNET accept                 # VM -> internet (no spoofed sources)
//!     iifname BR drop
//!     oifname BR ct state established,related accept    # replies
//!     oifname BR ct status dnat accept                  # port forwards
//!     oifname BR drop
//!     iifname @uplinks drop }                           # keep forwarding off elsewhere
//! }
//! table bridge mvm {
//!   set ports { type ifname }                           # bound ports (VM taps, pool taps)
//!   set bind  { type ifname . ether_addr . ipv4_addr }  # port . MAC . address
//!   set macs  { type ifname . ether_addr }
//!   set pairs { type ipv4_addr . ipv4_addr }            # VM . VM, both allowing each other
//!   chain prerouting { type filter hook prerouting priority -200; policy accept;
//!     iifname != @ports accept
//!     ether type arp iifname . ether saddr . arp saddr ip @bind
//!                    iifname . arp saddr ether . arp saddr ip @bind accept
//!     ether type arp iifname . ether saddr @macs iifname . arp saddr ether @macs
//!                    arp saddr ip 0.0.0.0 accept        # ARP probes
//!     ether type ip iifname . ether saddr . ip saddr @bind accept
//!     ether type ip iifname . ether saddr @macs ip saddr 0.0.0.0 udp dport 67 accept
//!     drop }                                            # spoofed, IPv6, VLAN, other
//!   chain forward { type filter hook forward priority filter; policy accept;  # port to port
//!     ether type ip ip saddr . ip daddr @pairs accept
//!     ether type arp arp saddr ip . arp daddr ip @pairs accept
//!     drop }
//! }
//! table ip mvm {
//!   map fwd_addr    { type inet_proto . inet_service : ipv4_addr }              # on 0.0.0.0
//!   map fwd_port    { type inet_proto . inet_service : inet_service }
//!   map fwd_at_addr { type ipv4_addr . inet_proto . inet_service : ipv4_addr }  # on one address
//!   map fwd_at_port { type ipv4_addr . inet_proto . inet_service : inet_service }
//!   chain prerouting  { type nat hook prerouting priority dstnat; policy accept;
//!     iifname != BR fib daddr type local
//!       dnat to meta l4proto . th dport map @fwd_addr : meta l4proto . th dport map @fwd_port
//!     iifname != BR dnat to ip daddr . meta l4proto . th dport map @fwd_at_addr : ... @fwd_at_port }
//!   chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//!     ip saddr SUBNET ip daddr != SUBNET masquerade }
//! }
//! ```
//!
//! Per-VM state is only set/map elements, each with the comment `vm=<id>`:
//! a forward on an address is one element in each DNAT map of its kind and
//! in `host_ports` (a loopback-only forward has none: the proxy serves it);
//! each allowed network is one `allow` element; each VM it may talk to is
//! two `pairs` elements; its tap's source binding is one element in each of
//! `ports`, `bind`, `macs`. Pool taps are bound once by setup, with the
//! comment `pool`, and stay bound. Adding or removing a VM or a forward is
//! one atomic `nft` transaction of element commands, and cleanup deletes
//! exactly those elements.

use std::borrow::Cow;
use std::net::Ipv4Addr;

use nftables::expr::Expression;
use nftables::helper::{self, NftablesError};
use nftables::schema::{FlushObject, NfCmd, NfObject, Nftables, Set, SetType, SetTypeValue};
use nftables::types::NfFamily;
use serde_json::Value;

use crate::addr::{Cidr, Subnet};
use crate::error::{Error, Result};
use crate::forward::{PortForward, Protocol};
use crate::lease::Lease;

mod expr;
mod rules;

use expr::*;
pub use rules::REFUSED_V4;

/// Uplinks whose forwarding setup enabled.
pub const SET_UPLINKS: &str = "uplinks";
/// Forwarded host ports.
pub const SET_HOST_PORTS: &str = "host_ports";
/// `VM address . network` a VM may reach although refused by default.
pub const SET_ALLOW: &str = "allow";
/// DNAT address map of forwards on 0.0.0.0.
pub const MAP_ADDR: &str = "fwd_addr";
/// DNAT port map of forwards on 0.0.0.0.
pub const MAP_PORT: &str = "fwd_port";
/// DNAT address map of forwards on one host address.
pub const MAP_AT_ADDR: &str = "fwd_at_addr";
/// DNAT port map of forwards on one host address.
pub const MAP_AT_PORT: &str = "fwd_at_port";
/// Bridge ports bound to one VM (their frames are checked).
pub const SET_PORTS: &str = "ports";
/// `port . MAC . IPv4` allowed as source on a bound port.
pub const SET_BIND: &str = "bind";
/// `port . MAC` allowed on a bound port (DHCP and ARP probes from 0.0.0.0).
pub const SET_MACS: &str = "macs";
/// `VM . VM` addresses that may talk (both allow each other).
pub const SET_PAIRS: &str = "pairs";
/// The same pairs for `inet mvm`, which sees bridged frames too where
/// br_netfilter is loaded (Docker loads it).
pub const SET_VM_PAIRS: &str = "vm_pairs";
/// The comment of pool taps' binding elements (kept across VMs).
pub const POOL_COMMENT: &str = "pool";

/// Every set and map, with its family.
const SETS: &[(&str, NfFamily)] = &[
    (SET_UPLINKS, NfFamily::INet),
    (SET_HOST_PORTS, NfFamily::INet),
    (SET_ALLOW, NfFamily::INet),
    (SET_VM_PAIRS, NfFamily::INet),
    (MAP_ADDR, NfFamily::IP),
    (MAP_PORT, NfFamily::IP),
    (MAP_AT_ADDR, NfFamily::IP),
    (MAP_AT_PORT, NfFamily::IP),
    (SET_PORTS, NfFamily::Bridge),
    (SET_BIND, NfFamily::Bridge),
    (SET_MACS, NfFamily::Bridge),
    (SET_PAIRS, NfFamily::Bridge),
];

/// What the rules are built from.
#[derive(Clone, Debug)]
pub struct NftParams<'a> {
    /// Table name (both families).
    pub table: &'a str,
    /// Bridge name.
    pub bridge: &'a str,
    /// VM subnet.
    pub subnet: Subnet,
}

fn nft_program() -> &'static str {
    for p in ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"] {
        if std::path::Path::new(p).exists() {
            return p;
        }
    }
    "nft"
}

fn map_err(e: NftablesError) -> Error {
    match e {
        NftablesError::NftFailed { stderr, .. } => {
            let line = stderr
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("nft failed")
                .to_string();
            if line.contains("Operation not permitted") {
                Error::MissingPrivilege {
                    what: "changing nftables rules".into(),
                    cap: "CAP_NET_ADMIN",
                    how: "run `sudo mvm net setup` once, or run this as root",
                }
            } else {
                Error::Nft(line)
            }
        }
        NftablesError::NftExecution { inner, .. } => Error::io("running nft", inner),
        other => Error::Nft(other.to_string().lines().next().unwrap_or("").to_string()),
    }
}

fn apply(cmds: Vec<NfObject<'_>>) -> Result<()> {
    if cmds.is_empty() {
        return Ok(());
    }
    let doc = Nftables {
        objects: Cow::Owned(cmds),
    };
    tracing::trace!(json = %serde_json::to_string(&doc).unwrap_or_default(), "nft");
    helper::apply_ruleset_with_args(&doc, Some(nft_program()), helper::DEFAULT_ARGS)
        .map_err(map_err)
}

fn list(args: &[&str]) -> Result<Option<Value>> {
    match helper::get_current_ruleset_raw(Some(nft_program()), args) {
        Ok(out) => serde_json::from_str(&out)
            .map(Some)
            .map_err(|e| Error::Nft(format!("unreadable nft output: {e}"))),
        Err(NftablesError::NftFailed { stderr, .. })
            if stderr.contains("No such file or directory") =>
        {
            Ok(None)
        }
        Err(e) => Err(map_err(e)),
    }
}

fn vm_comment(id: &str) -> String {
    format!("vm={id}")
}

fn num(n: u16) -> Expression<'static> {
    Expression::Number(u32::from(n))
}

/// `[key, value]` of a map element.
fn pair(
    key: Expression<'static>,
    comment: &str,
    value: Expression<'static>,
) -> Expression<'static> {
    Expression::List(vec![elem_with_comment(key, comment), value])
}

/// Commands adding one forward's elements (none for a loopback-only one).
fn forward_add_cmds(t: &str, id: &str, ip: Ipv4Addr, f: &PortForward) -> Vec<NfObject<'static>> {
    let Some(at) = f.dnat_addr() else {
        return Vec::new();
    };
    let c = vm_comment(id);
    let proto_port = || vec![s(f.protocol.as_str()), num(f.host_port)];
    let (key, addr_map, port_map) = if at.is_unspecified() {
        (concat(proto_port()), MAP_ADDR, MAP_PORT)
    } else {
        let mut k = vec![s(at.to_string())];
        k.extend(proto_port());
        (concat(k), MAP_AT_ADDR, MAP_AT_PORT)
    };
    vec![
        add(element(
            NfFamily::IP,
            t,
            addr_map,
            vec![pair(key.clone(), &c, s(ip.to_string()))],
        )),
        add(element(
            NfFamily::IP,
            t,
            port_map,
            vec![pair(key, &c, num(f.guest_port))],
        )),
        add(element(
            NfFamily::INet,
            t,
            SET_HOST_PORTS,
            vec![elem_with_comment(concat(proto_port()), &c)],
        )),
    ]
}

fn bind_cmds(
    t: &str,
    comment: &str,
    port: &str,
    mac: &str,
    ip: Ipv4Addr,
) -> Vec<NfObject<'static>> {
    let br = NfFamily::Bridge;
    vec![
        add(element(
            br,
            t,
            SET_BIND,
            vec![elem_with_comment(
                concat(vec![s(port), s(mac), s(ip.to_string())]),
                comment,
            )],
        )),
        add(element(
            br,
            t,
            SET_MACS,
            vec![elem_with_comment(concat(vec![s(port), s(mac)]), comment)],
        )),
        add(element(
            br,
            t,
            SET_PORTS,
            vec![elem_with_comment(s(port), comment)],
        )),
    ]
}

/// The networks of `allow`, without those inside another one (interval
/// sets refuse overlapping elements).
fn outermost(allow: &[Cidr]) -> Vec<Cidr> {
    let mut v = allow.to_vec();
    v.sort_by_key(|c| c.prefix_len());
    let mut out: Vec<Cidr> = Vec::new();
    for c in v {
        if !out.iter().any(|o| o.contains(c.network())) {
            out.push(c);
        }
    }
    out
}

fn cidr_expr(c: &Cidr) -> Expression<'static> {
    if c.prefix_len() == 32 {
        s(c.network().to_string())
    } else {
        prefix(c.network(), c.prefix_len())
    }
}

/// An element found in one of our sets or maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Elem {
    /// Set or map name.
    pub set: String,
    /// `tcp . 8080` (forwards), an interface name, or a concatenation.
    pub key: ElemKey,
    /// The VM id from the comment, if any.
    pub vm: Option<String>,
    /// A pool tap's binding (comment `pool`): kept when VMs go.
    pub pool: bool,
}

/// The key of an element.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ElemKey {
    /// A forwarded host port (on 0.0.0.0).
    Port(Protocol, u16),
    /// A forwarded host port on one address.
    AddrPort(Ipv4Addr, Protocol, u16),
    /// A string key (address or interface name).
    Str(String),
    /// A concatenation of strings (`port . MAC . address`,
    /// `10.77.0.2 . 10.1.0.0/16`).
    Strs(Vec<String>),
}

impl ElemKey {
    /// The forwarded port this key is of, if it is one.
    fn port(&self) -> Option<(Protocol, u16)> {
        match self {
            ElemKey::Port(p, n) | ElemKey::AddrPort(_, p, n) => Some((*p, *n)),
            _ => None,
        }
    }

    fn expr(&self) -> Expression<'static> {
        let part = |x: &str| match x.parse::<Cidr>() {
            Ok(c) if x.contains('/') => cidr_expr(&c),
            _ => s(x.to_string()),
        };
        match self {
            ElemKey::Port(p, port) => concat(vec![s(p.as_str()), num(*port)]),
            ElemKey::AddrPort(a, p, port) => {
                concat(vec![s(a.to_string()), s(p.as_str()), num(*port)])
            }
            ElemKey::Str(v) => s(v.clone()),
            ElemKey::Strs(v) => concat(v.iter().map(|x| part(x)).collect()),
        }
    }
}

/// Our rules, as a handle.
pub struct Nft<'a> {
    p: NftParams<'a>,
}

impl<'a> Nft<'a> {
    /// Rules for these parameters.
    pub fn new(p: NftParams<'a>) -> Self {
        Nft { p }
    }

    /// Whether our tables exist as this version builds them: the three are
    /// created in one transaction, so the newest set standing means all do
    /// (one nft run: every run is a process start, which dominates `mvm
    /// start` on slow hosts). Tables of an older version are rebuilt.
    pub fn installed(&self) -> Result<bool> {
        Ok(list(&["list", "set", "bridge", self.p.table, SET_PAIRS])?.is_some())
    }

    /// (Re)create the tables atomically with the elements of `leases` that
    /// are attached, the bindings of the pool taps `pool` (name, MAC,
    /// address), and `uplinks` in the uplinks set.
    pub fn install(
        &self,
        uplinks: &[String],
        leases: &[Lease],
        pool: &[(String, String, Ipv4Addr)],
    ) -> Result<()> {
        let t = self.p.table;
        let mut cmds = rules::skeleton(&self.p);
        if !uplinks.is_empty() {
            cmds.push(add(element(
                NfFamily::INet,
                t,
                SET_UPLINKS,
                uplinks.iter().map(|u| s(u.clone())).collect(),
            )));
        }
        for (tap, mac, ip) in pool {
            cmds.extend(bind_cmds(t, POOL_COMMENT, tap, mac, *ip));
        }
        let active: Vec<&Lease> = leases.iter().filter(|l| l.active.is_some()).collect();
        for l in &active {
            cmds.extend(self.vm_add_cmds(l, &crate::lease::peers_of(l, leases)));
        }
        apply(cmds)?;
        tracing::info!(table = t, "nftables tables installed");
        Ok(())
    }

    /// Delete the tables (idempotent).
    pub fn uninstall(&self) -> Result<()> {
        let t = self.p.table;
        let mut cmds = Vec::new();
        for fam in [NfFamily::INet, NfFamily::IP, NfFamily::Bridge] {
            cmds.push(add(table(fam, t)));
            cmds.push(delete(table(fam, t)));
        }
        apply(cmds)
    }

    fn vm_add_cmds(&self, l: &Lease, peers: &[Ipv4Addr]) -> Vec<NfObject<'static>> {
        let t = self.p.table;
        let c = vm_comment(&l.id);
        let ip = || s(l.ip.to_string());
        let mut cmds = Vec::new();
        let allow: Vec<_> = outermost(&l.allow)
            .iter()
            .map(|n| elem_with_comment(concat(vec![ip(), cidr_expr(n)]), &c))
            .collect();
        if !allow.is_empty() {
            cmds.push(add(element(NfFamily::INet, t, SET_ALLOW, allow)));
        }
        let pairs: Vec<_> = peers
            .iter()
            .flat_map(|p| {
                let p = s(p.to_string());
                [
                    elem_with_comment(concat(vec![ip(), p.clone()]), &c),
                    elem_with_comment(concat(vec![p, ip()]), &c),
                ]
            })
            .collect();
        if !pairs.is_empty() {
            cmds.push(add(element(NfFamily::INet, t, SET_VM_PAIRS, pairs.clone())));
            cmds.push(add(element(NfFamily::Bridge, t, SET_PAIRS, pairs)));
        }
        for f in &l.forwards {
            cmds.extend(forward_add_cmds(t, &l.id, l.ip, f));
        }
        // A pool tap is bound by setup already.
        if let Some(a) = l.active.as_ref().filter(|a| !a.pooled) {
            cmds.extend(bind_cmds(t, &c, &a.tap, &l.mac.to_string(), l.ip));
        }
        cmds
    }

    /// Bind bridge port `port` to a VM's MAC and address: frames from it
    /// with any other source are dropped. Attach does this for the VM's
    /// tap; tools (and the tests' stand-in ports) may bind other ports.
    pub fn bind_port(&self, id: &str, port: &str, mac: &str, ip: Ipv4Addr) -> Result<()> {
        apply(bind_cmds(self.p.table, &vm_comment(id), port, mac, ip))
    }

    /// Bind pool taps (name, MAC, address) for good (comment `pool`).
    pub fn bind_pool(&self, pool: &[(String, String, Ipv4Addr)]) -> Result<()> {
        apply(
            pool.iter()
                .flat_map(|(tap, mac, ip)| bind_cmds(self.p.table, POOL_COMMENT, tap, mac, *ip))
                .collect(),
        )
    }

    /// Add a VM's elements: its forwards, allowed networks, binding, and a
    /// pair with each VM of `peers` (attached VMs that it and that allow
    /// each other). Removes stale elements of the same VM first, so it is
    /// idempotent.
    pub fn add_vm(&self, l: &Lease, peers: &[Ipv4Addr]) -> Result<()> {
        let mut cmds = self.vm_delete_cmds(&l.id, Some(l))?;
        cmds.extend(self.vm_add_cmds(l, peers));
        apply(cmds)
    }

    /// Remove every element of VM `id` (by comment), plus the elements its
    /// lease names (idempotent). Pool bindings stay.
    pub fn remove_vm(&self, id: &str, l: Option<&Lease>) -> Result<()> {
        let cmds = self.vm_delete_cmds(id, l)?;
        apply(cmds)
    }

    fn vm_delete_cmds(&self, id: &str, l: Option<&Lease>) -> Result<Vec<NfObject<'static>>> {
        let elems = self.elements()?;
        let mut keys: Vec<(String, ElemKey)> = Vec::new();
        for e in &elems {
            let tap = l.and_then(|l| l.active.as_ref()).map(|a| a.tap.as_str());
            let mine = e.vm.as_deref() == Some(id)
                || l.is_some_and(|l| match (&e.key, e.set.as_str()) {
                    (ElemKey::Str(port), SET_PORTS) => tap == Some(port.as_str()),
                    (ElemKey::Strs(v), SET_BIND | SET_MACS) => {
                        tap.is_some() && v.first().map(String::as_str) == tap
                    }
                    // Another VM's pairs with this one.
                    (ElemKey::Strs(v), SET_PAIRS | SET_VM_PAIRS) => v.contains(&l.ip.to_string()),
                    (k, _) => k.port().is_some_and(|(p, port)| {
                        l.forwards
                            .iter()
                            .any(|f| f.protocol == p && f.host_port == port)
                    }),
                });
            if mine && !e.pool && e.set != SET_UPLINKS {
                keys.push((e.set.clone(), e.key.clone()));
            }
        }
        Ok(keys
            .into_iter()
            .map(|(set, key)| self.delete_elem_cmd(&set, &key))
            .collect())
    }

    fn delete_elem_cmd(&self, set: &str, key: &ElemKey) -> NfObject<'static> {
        let (name, family) = SETS
            .iter()
            .find(|(n, _)| *n == set)
            .copied()
            .unwrap_or((SET_HOST_PORTS, NfFamily::INet));
        delete(element(family, self.p.table, name, vec![key.expr()]))
    }

    /// Delete specific elements (reconcile).
    pub fn delete_elems(&self, elems: &[Elem]) -> Result<()> {
        apply(
            elems
                .iter()
                .map(|e| self.delete_elem_cmd(&e.set, &e.key))
                .collect(),
        )
    }

    /// Add one forward of VM `id` at `ip`.
    pub fn add_forward(&self, id: &str, ip: Ipv4Addr, f: &PortForward) -> Result<()> {
        apply(forward_add_cmds(self.p.table, id, ip, f))
    }

    /// Remove one forward (idempotent).
    pub fn remove_forward(&self, f: &PortForward) -> Result<()> {
        let key = (f.protocol, f.host_port);
        let cmds = self
            .elements()?
            .into_iter()
            .filter(|e| e.key.port() == Some(key))
            .map(|e| self.delete_elem_cmd(&e.set, &e.key))
            .collect();
        apply(cmds)
    }

    /// Every element of our sets and maps.
    pub fn elements(&self) -> Result<Vec<Elem>> {
        let mut out = Vec::new();
        // One nft run for the three tables: the whole ruleset, ours picked out.
        if let Some(v) = list(&["list", "ruleset"])? {
            let objs = v
                .get("nftables")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for o in objs {
                let body = o.get("set").or_else(|| o.get("map"));
                let Some(body) = body else { continue };
                let ours = body.get("table").and_then(Value::as_str) == Some(self.p.table)
                    && matches!(
                        body.get("family").and_then(Value::as_str),
                        Some("inet" | "ip" | "bridge")
                    );
                if !ours {
                    continue;
                }
                let name = body
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let Some(elems) = body.get("elem").and_then(Value::as_array) else {
                    continue;
                };
                for e in elems {
                    // Map elements are [key, value]; set elements are the key.
                    let k = match e.as_array() {
                        Some(pair) if o.get("map").is_some() => {
                            pair.first().cloned().unwrap_or(Value::Null)
                        }
                        _ => e.clone(),
                    };
                    let (val, comment) = match k.get("elem") {
                        Some(inner) => (
                            inner.get("val").cloned().unwrap_or(Value::Null),
                            inner
                                .get("comment")
                                .and_then(Value::as_str)
                                .map(str::to_string),
                        ),
                        None => (k.clone(), None),
                    };
                    let Some(key) = parse_key(&val) else { continue };
                    out.push(Elem {
                        set: name.clone(),
                        key,
                        pool: comment.as_deref() == Some(POOL_COMMENT),
                        vm: comment.and_then(|c| c.strip_prefix("vm=").map(str::to_string)),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Flush the uplinks set and put `uplinks` in it.
    pub fn set_uplinks(&self, uplinks: &[String]) -> Result<()> {
        let t = self.p.table;
        let mut cmds = vec![NfObject::CmdObject(NfCmd::Flush(FlushObject::Set(
            Box::new(Set {
                family: NfFamily::INet,
                table: Cow::Owned(t.to_string()),
                name: Cow::Borrowed(SET_UPLINKS),
                set_type: SetTypeValue::Single(SetType::Ifname),
                ..Set::default()
            }),
        )))];
        if !uplinks.is_empty() {
            cmds.push(add(element(
                NfFamily::INet,
                t,
                SET_UPLINKS,
                uplinks.iter().map(|u| s(u.clone())).collect(),
            )));
        }
        apply(cmds)
    }
}

fn parse_key(v: &Value) -> Option<ElemKey> {
    if let Some(s) = v.as_str() {
        return Some(ElemKey::Str(s.to_string()));
    }
    let parts = v.get("concat")?.as_array()?;
    // Strings, and prefixes of interval sets (`{"prefix": {"addr", "len"}}`).
    let text = |p: &Value| -> Option<String> {
        if let Some(s) = p.as_str() {
            return Some(s.to_string());
        }
        let pre = p.get("prefix")?;
        Some(format!(
            "{}/{}",
            pre.get("addr")?.as_str()?,
            pre.get("len")?.as_u64()?
        ))
    };
    if let Some(v) = parts.iter().map(text).collect::<Option<Vec<_>>>() {
        return Some(ElemKey::Strs(v));
    }
    let (addr, rest) = match parts.first()?.as_str()?.parse::<Ipv4Addr>() {
        Ok(a) => (Some(a), &parts[1..]),
        Err(_) => (None, &parts[..]),
    };
    let proto = match rest.first()?.as_str()? {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return None,
    };
    let port = u16::try_from(rest.get(1)?.as_u64()?).ok()?;
    Some(match addr {
        Some(a) => ElemKey::AddrPort(a, proto, port),
        None => ElemKey::Port(proto, port),
    })
}
