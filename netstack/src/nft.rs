//! Our nftables rules, through nftables' official JSON interface (`nft -j`)
//! with the typed schema of the `nftables` crate. We own exactly three
//! tables and never read or change any other:
//!
//! ```text
//! table inet mvm {
//!   set peers      { type ipv4_addr }                  # VMs allowed to talk to VMs
//!   set uplinks    { type ifname }                     # uplinks whose forwarding WE enabled
//!   set host_ports { type inet_proto . inet_service }  # forwarded host ports (VMs may use them too)
//!   chain input   { type filter hook input priority filter; policy accept;
//!     iifname BR ct state established,related accept
//!     iifname BR udp dport 67 accept                    # DHCP
//!     iifname BR ip daddr GW udp dport 53 accept        # DNS
//!     iifname BR ip daddr GW tcp dport 53 accept
//!     iifname BR ip daddr GW icmp type echo-request accept  # ping the gateway
//!     iifname BR meta l4proto . th dport @host_ports accept
//!     iifname BR drop }                                 # nothing else of the host
//!   chain forward { type filter hook forward priority filter; policy accept;
//!     iifname BR oifname BR ip saddr @peers accept      # VM <-> VM only if allowed
//!     iifname BR oifname BR ip daddr @peers accept
//!     iifname BR oifname BR drop
//!     iifname BR ip saddr SUBNET accept                 # VM -> world (no spoofed sources)
//!     iifname BR drop
//!     oifname BR ct state established,related accept    # replies
//!     oifname BR ct status dnat accept                  # port forwards
//!     oifname BR drop
//!     iifname @uplinks drop }                           # keep forwarding off elsewhere
//! }
//! table bridge mvm {                                    # source binding on VM ports
//!   set ports { type ifname }                           # bound ports (VM taps)
//!   set bind  { type ifname . ether_addr . ipv4_addr }  # port . MAC . address
//!   set macs  { type ifname . ether_addr }
//!   chain prerouting { type filter hook prerouting priority -200; policy accept;
//!     iifname != @ports accept
//!     ether type arp iifname . ether saddr . arp saddr ip @bind
//!                    iifname . arp saddr ether . arp saddr ip @bind accept
//!     ether type arp iifname . ether saddr @macs iifname . arp saddr ether @macs
//!                    arp saddr ip 0.0.0.0 accept        # ARP probes
//!     ether type ip iifname . ether saddr . ip saddr @bind accept
//!     ether type ip iifname . ether saddr @macs ip saddr 0.0.0.0 udp dport 67 accept
//!     drop }                                            # spoofed, IPv6, VLAN, other
//! }
//! table ip mvm {
//!   map fwd_addr { type inet_proto . inet_service : ipv4_addr }
//!   map fwd_port { type inet_proto . inet_service : inet_service }
//!   chain prerouting  { type nat hook prerouting priority dstnat; policy accept;
//!     iifname != BR fib daddr type local
//!       dnat to meta l4proto . th dport map @fwd_addr : meta l4proto . th dport map @fwd_port }
//!   chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//!     ip saddr SUBNET ip daddr != SUBNET masquerade }
//! }
//! ```
//!
//! Per-VM state is only set/map elements, each with the comment `vm=<id>`:
//! a forward is one element in each of `fwd_addr`, `fwd_port` and
//! `host_ports`; "may talk to other VMs" is one element in `peers`; the
//! tap's source binding is one element in each of `ports`, `bind`, `macs`. Adding or
//! removing a VM or a forward is one atomic `nft` transaction of element
//! commands, and cleanup deletes exactly those elements.

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::Ipv4Addr;

use nftables::expr::{
    Expression, Fib, FibFlag, FibResult, Map as MapExpr, Meta, MetaKey, NamedExpression, Payload,
    PayloadField, Prefix, CT,
};
use nftables::helper::{self, NftablesError};
use nftables::schema::{
    Chain, Element, FlushObject, Map, NfCmd, NfListObject, NfObject, Nftables, Rule, Set, SetType,
    SetTypeValue, Table,
};
use nftables::stmt::{Match, Operator, Statement, NAT};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use serde_json::Value;

use crate::addr::Subnet;
use crate::error::{Error, Result};
use crate::forward::{PortForward, Protocol};
use crate::lease::Lease;

/// Set and map names.
pub const SET_PEERS: &str = "peers";
/// Uplinks whose forwarding setup enabled.
pub const SET_UPLINKS: &str = "uplinks";
/// Forwarded host ports.
pub const SET_HOST_PORTS: &str = "host_ports";
/// DNAT address map.
pub const MAP_ADDR: &str = "fwd_addr";
/// DNAT port map.
pub const MAP_PORT: &str = "fwd_port";
/// Bridge ports bound to one VM (their frames are checked).
pub const SET_PORTS: &str = "ports";
/// `port . MAC . IPv4` allowed as source on a bound port.
pub const SET_BIND: &str = "bind";
/// `port . MAC` allowed on a bound port (DHCP and ARP probes from 0.0.0.0).
pub const SET_MACS: &str = "macs";

fn family_of(set: &str) -> NfFamily {
    match set {
        MAP_ADDR | MAP_PORT => NfFamily::IP,
        SET_PORTS | SET_BIND | SET_MACS => NfFamily::Bridge,
        _ => NfFamily::INet,
    }
}

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

// ---- expression helpers -------------------------------------------------

fn s(v: impl Into<String>) -> Expression<'static> {
    Expression::String(Cow::Owned(v.into()))
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: Cow::Borrowed(protocol),
            field: Cow::Borrowed(field),
        },
    )))
}

fn ct(key: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::CT(CT {
        key: Cow::Borrowed(key),
        family: None,
        dir: None,
    }))
}

fn concat(v: Vec<Expression<'static>>) -> Expression<'static> {
    Expression::Named(NamedExpression::Concat(v))
}

fn prefix(subnet: &Subnet) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(s(subnet.network().to_string())),
        len: u32::from(subnet.prefix_len()),
    }))
}

fn m(left: Expression<'static>, op: Operator, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    m(left, Operator::EQ, right)
}

fn proto_port_key() -> Expression<'static> {
    concat(vec![meta(MetaKey::L4proto), payload("th", "dport")])
}

fn accept() -> Statement<'static> {
    Statement::Accept(None)
}

fn drop_() -> Statement<'static> {
    Statement::Drop(None)
}

fn add(o: NfListObject<'static>) -> NfObject<'static> {
    NfObject::CmdObject(NfCmd::Add(o))
}

fn table(family: NfFamily, name: &str) -> NfListObject<'static> {
    NfListObject::Table(Table {
        family,
        name: Cow::Owned(name.to_string()),
        handle: None,
    })
}

fn base_chain(
    family: NfFamily,
    table: &str,
    name: &'static str,
    ty: NfChainType,
    hook: NfHook,
    prio: i32,
) -> NfListObject<'static> {
    NfListObject::Chain(Chain {
        family,
        table: Cow::Owned(table.to_string()),
        name: Cow::Borrowed(name),
        _type: Some(ty),
        hook: Some(hook),
        prio: Some(prio),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    })
}

fn rule(
    family: NfFamily,
    table: &str,
    chain: &'static str,
    expr: Vec<Statement<'static>>,
) -> NfListObject<'static> {
    NfListObject::Rule(Rule {
        family,
        table: Cow::Owned(table.to_string()),
        chain: Cow::Borrowed(chain),
        expr: Cow::Owned(expr),
        handle: None,
        index: None,
        comment: None,
    })
}

fn set(table: &str, name: &'static str, ty: SetTypeValue<'static>) -> NfListObject<'static> {
    NfListObject::Set(Box::new(Set {
        family: NfFamily::INet,
        table: Cow::Owned(table.to_string()),
        name: Cow::Borrowed(name),
        set_type: ty,
        ..Set::default()
    }))
}

fn map(table: &str, name: &'static str, data: SetType) -> NfListObject<'static> {
    NfListObject::Map(Box::new(Map {
        family: NfFamily::IP,
        table: Cow::Owned(table.to_string()),
        name: Cow::Borrowed(name),
        set_type: SetTypeValue::Concatenated(Cow::Borrowed(&[
            SetType::InetProto,
            SetType::InetService,
        ])),
        map: SetTypeValue::Single(data),
        ..Map::default()
    }))
}

/// The commands that (re)create both tables from scratch, atomically:
/// "add table; delete table" first so a stale table goes away in the same
/// transaction (and a missing one is no error).
fn skeleton(p: &NftParams<'_>) -> Vec<NfObject<'static>> {
    let t = p.table;
    let br = || s(p.bridge);
    let iif = || eq(meta(MetaKey::Iifname), br());
    let oif = || eq(meta(MetaKey::Oifname), br());
    let gw = s(p.subnet.gateway().to_string());
    let inet = NfFamily::INet;
    let ip = NfFamily::IP;
    let mut v = vec![
        add(table(inet, t)),
        NfObject::CmdObject(NfCmd::Delete(table(inet, t))),
        add(table(ip, t)),
        NfObject::CmdObject(NfCmd::Delete(table(ip, t))),
        add(table(inet, t)),
        add(set(t, SET_PEERS, SetTypeValue::Single(SetType::Ipv4Addr))),
        add(set(t, SET_UPLINKS, SetTypeValue::Single(SetType::Ifname))),
        add(set(
            t,
            SET_HOST_PORTS,
            SetTypeValue::Concatenated(Cow::Borrowed(&[SetType::InetProto, SetType::InetService])),
        )),
        add(base_chain(
            inet,
            t,
            "input",
            NfChainType::Filter,
            NfHook::Input,
            0,
        )),
        add(base_chain(
            inet,
            t,
            "forward",
            NfChainType::Filter,
            NfHook::Forward,
            0,
        )),
    ];
    let established = || {
        m(
            ct("state"),
            Operator::IN,
            Expression::List(vec![s("established"), s("related")]),
        )
    };
    let input: Vec<Vec<Statement<'static>>> = vec![
        vec![iif(), established(), accept()],
        vec![
            iif(),
            eq(payload("udp", "dport"), Expression::Number(67)),
            accept(),
        ],
        vec![
            iif(),
            eq(payload("ip", "daddr"), gw.clone()),
            eq(payload("udp", "dport"), Expression::Number(53)),
            accept(),
        ],
        vec![
            iif(),
            eq(payload("ip", "daddr"), gw.clone()),
            eq(payload("tcp", "dport"), Expression::Number(53)),
            accept(),
        ],
        // Ping the gateway: how a guest checks its network.
        vec![
            iif(),
            eq(payload("ip", "daddr"), gw.clone()),
            eq(payload("icmp", "type"), s("echo-request")),
            accept(),
        ],
        vec![
            iif(),
            eq(proto_port_key(), s(format!("@{SET_HOST_PORTS}"))),
            accept(),
        ],
        vec![iif(), drop_()],
    ];
    for r in input {
        v.push(add(rule(inet, t, "input", r)));
    }
    let forward: Vec<Vec<Statement<'static>>> = vec![
        vec![
            iif(),
            oif(),
            eq(payload("ip", "saddr"), s(format!("@{SET_PEERS}"))),
            accept(),
        ],
        vec![
            iif(),
            oif(),
            eq(payload("ip", "daddr"), s(format!("@{SET_PEERS}"))),
            accept(),
        ],
        vec![iif(), oif(), drop_()],
        vec![
            iif(),
            eq(payload("ip", "saddr"), prefix(&p.subnet)),
            accept(),
        ],
        vec![iif(), drop_()],
        vec![oif(), established(), accept()],
        vec![oif(), m(ct("status"), Operator::IN, s("dnat")), accept()],
        vec![oif(), drop_()],
        vec![
            eq(meta(MetaKey::Iifname), s(format!("@{SET_UPLINKS}"))),
            drop_(),
        ],
    ];
    for r in forward {
        v.push(add(rule(inet, t, "forward", r)));
    }

    // Source binding on VM ports: a VM may only send frames with its own
    // MAC, and IPv4/ARP with its own address (no spoofing another VM, no
    // poisoning the host's neighbour table).
    let br_t = NfFamily::Bridge;
    v.push(add(table(br_t, t)));
    v.push(NfObject::CmdObject(NfCmd::Delete(table(br_t, t))));
    v.push(add(table(br_t, t)));
    for (name, ty) in [
        (SET_PORTS, &[SetType::Ifname][..]),
        (
            SET_BIND,
            &[SetType::Ifname, SetType::EtherAddr, SetType::Ipv4Addr][..],
        ),
        (SET_MACS, &[SetType::Ifname, SetType::EtherAddr][..]),
    ] {
        let ty = if ty.len() == 1 {
            SetTypeValue::Single(ty[0])
        } else {
            SetTypeValue::Concatenated(Cow::Owned(ty.to_vec()))
        };
        v.push(add(NfListObject::Set(Box::new(Set {
            family: br_t,
            table: Cow::Owned(t.to_string()),
            name: Cow::Borrowed(name),
            set_type: ty,
            ..Set::default()
        }))));
    }
    v.push(add(base_chain(
        br_t,
        t,
        "prerouting",
        NfChainType::Filter,
        NfHook::Prerouting,
        -200,
    )));
    let iifname = || meta(MetaKey::Iifname);
    let ether_type = |ty: &str| eq(payload("ether", "type"), s(ty));
    let in_set = |key: Expression<'static>, set: &str| eq(key, s(format!("@{set}")));
    let bridge_rules: Vec<Vec<Statement<'static>>> = vec![
        vec![
            m(iifname(), Operator::NEQ, s(format!("@{SET_PORTS}"))),
            accept(),
        ],
        vec![
            ether_type("arp"),
            in_set(
                concat(vec![
                    iifname(),
                    payload("ether", "saddr"),
                    payload("arp", "saddr ip"),
                ]),
                SET_BIND,
            ),
            in_set(
                concat(vec![
                    iifname(),
                    payload("arp", "saddr ether"),
                    payload("arp", "saddr ip"),
                ]),
                SET_BIND,
            ),
            accept(),
        ],
        vec![
            ether_type("arp"),
            in_set(concat(vec![iifname(), payload("ether", "saddr")]), SET_MACS),
            in_set(
                concat(vec![iifname(), payload("arp", "saddr ether")]),
                SET_MACS,
            ),
            eq(payload("arp", "saddr ip"), s("0.0.0.0")),
            accept(),
        ],
        vec![
            ether_type("ip"),
            in_set(
                concat(vec![
                    iifname(),
                    payload("ether", "saddr"),
                    payload("ip", "saddr"),
                ]),
                SET_BIND,
            ),
            accept(),
        ],
        vec![
            ether_type("ip"),
            in_set(concat(vec![iifname(), payload("ether", "saddr")]), SET_MACS),
            eq(payload("ip", "saddr"), s("0.0.0.0")),
            eq(payload("udp", "dport"), Expression::Number(67)),
            accept(),
        ],
        vec![drop_()],
    ];
    for r in bridge_rules {
        v.push(add(rule(br_t, t, "prerouting", r)));
    }

    v.push(add(table(ip, t)));
    v.push(add(map(t, MAP_ADDR, SetType::Ipv4Addr)));
    v.push(add(map(t, MAP_PORT, SetType::InetService)));
    v.push(add(base_chain(
        ip,
        t,
        "prerouting",
        NfChainType::NAT,
        NfHook::Prerouting,
        -100,
    )));
    v.push(add(base_chain(
        ip,
        t,
        "postrouting",
        NfChainType::NAT,
        NfHook::Postrouting,
        100,
    )));
    let lookup = |name: &str| {
        Expression::Named(NamedExpression::Map(Box::new(MapExpr {
            key: proto_port_key(),
            data: s(format!("@{name}")),
        })))
    };
    v.push(add(rule(
        ip,
        t,
        "prerouting",
        vec![
            m(meta(MetaKey::Iifname), Operator::NEQ, br()),
            eq(
                Expression::Named(NamedExpression::Fib(Fib {
                    result: FibResult::Type,
                    flags: HashSet::from([FibFlag::Daddr]),
                })),
                s("local"),
            ),
            Statement::DNAT(Some(NAT {
                addr: Some(lookup(MAP_ADDR)),
                family: Some(nftables::stmt::NATFamily::IP),
                port: Some(lookup(MAP_PORT)),
                flags: None,
            })),
        ],
    )));
    v.push(add(rule(
        ip,
        t,
        "postrouting",
        vec![
            eq(payload("ip", "saddr"), prefix(&p.subnet)),
            m(payload("ip", "daddr"), Operator::NEQ, prefix(&p.subnet)),
            Statement::Masquerade(None),
        ],
    )));
    v
}

fn elem_with_comment(val: Expression<'static>, comment: &str) -> Expression<'static> {
    Expression::Named(NamedExpression::Elem(nftables::expr::Elem {
        val: Box::new(val),
        timeout: None,
        expires: None,
        comment: Some(Cow::Owned(comment.to_string())),
        counter: None,
    }))
}

fn element(
    family: NfFamily,
    table: &str,
    name: &'static str,
    elem: Vec<Expression<'static>>,
) -> NfListObject<'static> {
    NfListObject::Element(Element {
        family,
        table: Cow::Owned(table.to_string()),
        name: Cow::Borrowed(name),
        elem: Cow::Owned(elem),
    })
}

fn fwd_key(f: &PortForward) -> Expression<'static> {
    concat(vec![
        s(f.protocol.as_str()),
        Expression::Number(u32::from(f.host_port)),
    ])
}

fn vm_comment(id: &str) -> String {
    format!("vm={id}")
}

/// Commands adding one forward's elements.
fn forward_add_cmds(t: &str, id: &str, ip: Ipv4Addr, f: &PortForward) -> Vec<NfObject<'static>> {
    let c = vm_comment(id);
    vec![
        add(element(
            NfFamily::IP,
            t,
            MAP_ADDR,
            vec![Expression::List(vec![
                elem_with_comment(fwd_key(f), &c),
                s(ip.to_string()),
            ])],
        )),
        add(element(
            NfFamily::IP,
            t,
            MAP_PORT,
            vec![Expression::List(vec![
                elem_with_comment(fwd_key(f), &c),
                Expression::Number(u32::from(f.guest_port)),
            ])],
        )),
        add(element(
            NfFamily::INet,
            t,
            SET_HOST_PORTS,
            vec![elem_with_comment(fwd_key(f), &c)],
        )),
    ]
}

fn bind_cmds(t: &str, id: &str, port: &str, mac: &str, ip: Ipv4Addr) -> Vec<NfObject<'static>> {
    let c = vm_comment(id);
    let br = NfFamily::Bridge;
    vec![
        add(element(
            br,
            t,
            SET_BIND,
            vec![elem_with_comment(
                concat(vec![s(port), s(mac), s(ip.to_string())]),
                &c,
            )],
        )),
        add(element(
            br,
            t,
            SET_MACS,
            vec![elem_with_comment(concat(vec![s(port), s(mac)]), &c)],
        )),
        add(element(
            br,
            t,
            SET_PORTS,
            vec![elem_with_comment(s(port), &c)],
        )),
    ]
}

fn delete(o: NfListObject<'static>) -> NfObject<'static> {
    NfObject::CmdObject(NfCmd::Delete(o))
}

/// An element found in one of our sets or maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Elem {
    /// Set or map name.
    pub set: String,
    /// `tcp . 8080` (forwards) or `10.77.0.5` (peers) or an ifname.
    pub key: ElemKey,
    /// The VM id from the comment, if any.
    pub vm: Option<String>,
}

/// The key of an element.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ElemKey {
    /// A forwarded host port.
    Port(Protocol, u16),
    /// A string key (address or interface name).
    Str(String),
    /// A concatenation of strings (`port . MAC . address`).
    Strs(Vec<String>),
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

    /// Whether all three tables exist (one `nft list tables`: every nft run
    /// is a process start, which dominates `mvm start` on slow hosts).
    pub fn installed(&self) -> Result<bool> {
        let Some(v) = list(&["list", "tables"])? else {
            return Ok(false);
        };
        let objs = v.get("nftables").and_then(Value::as_array);
        let have = |fam: &str| {
            objs.into_iter().flatten().any(|o| {
                o.get("table").is_some_and(|t| {
                    t.get("family").and_then(Value::as_str) == Some(fam)
                        && t.get("name").and_then(Value::as_str) == Some(self.p.table)
                })
            })
        };
        Ok(have("inet") && have("ip") && have("bridge"))
    }

    /// (Re)create both tables atomically with the elements of `leases` that
    /// are attached, and `uplinks` in the uplinks set.
    pub fn install(&self, uplinks: &[String], leases: &[Lease]) -> Result<()> {
        let t = self.p.table;
        let mut cmds = skeleton(&self.p);
        if !uplinks.is_empty() {
            cmds.push(add(element(
                NfFamily::INet,
                t,
                SET_UPLINKS,
                uplinks.iter().map(|u| s(u.clone())).collect(),
            )));
        }
        for l in leases.iter().filter(|l| l.active.is_some()) {
            cmds.extend(self.vm_add_cmds(l));
        }
        apply(cmds)?;
        tracing::info!(table = t, "nftables tables installed");
        Ok(())
    }

    /// Delete both tables (idempotent).
    pub fn uninstall(&self) -> Result<()> {
        let t = self.p.table;
        apply(vec![
            add(table(NfFamily::INet, t)),
            delete(table(NfFamily::INet, t)),
            add(table(NfFamily::IP, t)),
            delete(table(NfFamily::IP, t)),
            add(table(NfFamily::Bridge, t)),
            delete(table(NfFamily::Bridge, t)),
        ])
    }

    fn vm_add_cmds(&self, l: &Lease) -> Vec<NfObject<'static>> {
        let t = self.p.table;
        let mut cmds = Vec::new();
        if l.allow_vm_to_vm {
            cmds.push(add(element(
                NfFamily::INet,
                t,
                SET_PEERS,
                vec![elem_with_comment(s(l.ip.to_string()), &vm_comment(&l.id))],
            )));
        }
        for f in &l.forwards {
            cmds.extend(forward_add_cmds(t, &l.id, l.ip, f));
        }
        if let Some(a) = &l.active {
            cmds.extend(bind_cmds(t, &l.id, &a.tap, &l.mac.to_string(), l.ip));
        }
        cmds
    }

    /// Bind bridge port `port` to a VM's MAC and address: frames from it
    /// with any other source are dropped. Attach does this for the VM's
    /// tap; tools (and the tests' stand-in ports) may bind other ports.
    pub fn bind_port(&self, id: &str, port: &str, mac: &str, ip: Ipv4Addr) -> Result<()> {
        apply(bind_cmds(self.p.table, id, port, mac, ip))
    }

    /// Add a VM's elements (its forwards, and its peers entry if allowed).
    /// Removes stale elements of the same VM first, so it is idempotent.
    pub fn add_vm(&self, l: &Lease) -> Result<()> {
        let mut cmds = self.vm_delete_cmds(&l.id, Some(l))?;
        cmds.extend(self.vm_add_cmds(l));
        apply(cmds)
    }

    /// Remove every element of VM `id` (by comment), plus the elements its
    /// lease names (idempotent).
    pub fn remove_vm(&self, id: &str, l: Option<&Lease>) -> Result<()> {
        let cmds = self.vm_delete_cmds(id, l)?;
        apply(cmds)
    }

    fn vm_delete_cmds(&self, id: &str, l: Option<&Lease>) -> Result<Vec<NfObject<'static>>> {
        let elems = self.elements()?;
        let mut keys: Vec<(String, ElemKey)> = Vec::new();
        for e in &elems {
            let mine = e.vm.as_deref() == Some(id)
                || l.is_some_and(|l| match (&e.key, e.set.as_str()) {
                    (ElemKey::Str(ip), SET_PEERS) => *ip == l.ip.to_string(),
                    (ElemKey::Str(port), SET_PORTS) => {
                        l.active.as_ref().is_some_and(|a| a.tap == *port)
                    }
                    (ElemKey::Strs(v), SET_BIND | SET_MACS) => {
                        l.active.as_ref().is_some_and(|a| v.first() == Some(&a.tap))
                    }
                    (ElemKey::Port(p, port), _) => l
                        .forwards
                        .iter()
                        .any(|f| f.protocol == *p && f.host_port == *port),
                    _ => false,
                });
            if mine && e.set != SET_UPLINKS {
                keys.push((e.set.clone(), e.key.clone()));
            }
        }
        Ok(keys
            .into_iter()
            .map(|(set, key)| self.delete_elem_cmd(&set, &key))
            .collect())
    }

    fn delete_elem_cmd(&self, set: &str, key: &ElemKey) -> NfObject<'static> {
        let t = self.p.table;
        let name: &'static str = match set {
            MAP_ADDR => MAP_ADDR,
            MAP_PORT => MAP_PORT,
            SET_HOST_PORTS => SET_HOST_PORTS,
            SET_UPLINKS => SET_UPLINKS,
            SET_PORTS => SET_PORTS,
            SET_BIND => SET_BIND,
            SET_MACS => SET_MACS,
            _ => SET_PEERS,
        };
        let family = family_of(name);
        let k = match key {
            ElemKey::Port(p, port) => {
                concat(vec![s(p.as_str()), Expression::Number(u32::from(*port))])
            }
            ElemKey::Str(v) => s(v.clone()),
            ElemKey::Strs(v) => concat(v.iter().map(|x| s(x.clone())).collect()),
        };
        delete(element(family, t, name, vec![k]))
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
        let key = ElemKey::Port(f.protocol, f.host_port);
        let cmds = self
            .elements()?
            .into_iter()
            .filter(|e| e.key == key)
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
    if parts.iter().all(Value::is_string) {
        return Some(ElemKey::Strs(
            parts
                .iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect(),
        ));
    }
    let proto = match parts.first()?.as_str()? {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return None,
    };
    let port = u16::try_from(parts.get(1)?.as_u64()?).ok()?;
    Some(ElemKey::Port(proto, port))
}
