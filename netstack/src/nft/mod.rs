//! Our nftables rules, through nftables' official JSON interface (`nft -j`)
//! with the typed schema of the `nftables` crate. We own exactly three
//! tables and never read or change any other. `rules.rs` builds the ruleset,
//! `elements.rs` the per-VM elements, `expr.rs` the expressions both use,
//! `run.rs` runs `nft`; this file names the sets and holds the handle:
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

use nftables::schema::{FlushObject, NfCmd, NfObject, Set, SetType, SetTypeValue};
use nftables::types::NfFamily;

use crate::addr::Subnet;
use crate::error::Result;
use crate::forward::PortForward;
use crate::lease::Lease;

mod elements;
mod expr;
mod rules;
mod run;
#[cfg(test)]
mod tests;

use elements::*;
pub use elements::{Elem, ElemKey};
use expr::*;
pub use rules::REFUSED_V4;
use run::{apply, list};

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
        apply(self.install_cmds(uplinks, leases, pool))?;
        tracing::info!(table = self.p.table, "nftables tables installed");
        Ok(())
    }

    /// The one transaction of [`Nft::install`] (pure, for the tests too).
    fn install_cmds(
        &self,
        uplinks: &[String],
        leases: &[Lease],
        pool: &[(String, String, Ipv4Addr)],
    ) -> Vec<NfObject<'static>> {
        let t = self.p.table;
        let mut cmds = rules::skeleton(&self.p);
        cmds.extend(uplinks_cmds(t, uplinks));
        for (tap, mac, ip) in pool {
            cmds.extend(bind_cmds(t, POOL_COMMENT, tap, mac, *ip));
        }
        for l in leases.iter().filter(|l| l.active.is_some()) {
            cmds.extend(vm_add_cmds(t, l, &crate::lease::peers_of(l, leases)));
        }
        cmds
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
        let t = self.p.table;
        let mut cmds = vm_delete_cmds(t, &self.elements()?, &l.id, Some(l));
        cmds.extend(vm_add_cmds(t, l, peers));
        apply(cmds)
    }

    /// Remove every element of VM `id` (by comment), plus the elements its
    /// lease names (idempotent). Pool bindings stay.
    pub fn remove_vm(&self, id: &str, l: Option<&Lease>) -> Result<()> {
        apply(vm_delete_cmds(self.p.table, &self.elements()?, id, l))
    }

    /// Delete specific elements (reconcile).
    pub fn delete_elems(&self, elems: &[Elem]) -> Result<()> {
        apply(
            elems
                .iter()
                .map(|e| delete_elem_cmd(self.p.table, &e.set, &e.key))
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
            .map(|e| delete_elem_cmd(self.p.table, &e.set, &e.key))
            .collect();
        apply(cmds)
    }

    /// Every element of our sets and maps (one nft run for the three
    /// tables: the whole ruleset, ours picked out).
    pub fn elements(&self) -> Result<Vec<Elem>> {
        Ok(list(&["list", "ruleset"])?
            .map(|v| parse_elements(self.p.table, &v))
            .unwrap_or_default())
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
        cmds.extend(uplinks_cmds(t, uplinks));
        apply(cmds)
    }
}
