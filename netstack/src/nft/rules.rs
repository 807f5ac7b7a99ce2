//! The base tables, chains and rules (the layout is drawn in `mod.rs`), and
//! the egress policy: what a VM may reach by default.

use std::collections::HashSet;

use nftables::expr::{
    Expression, Fib, FibFlag, FibResult, Map as MapExpr, MetaKey, NamedExpression,
};
use nftables::schema::{NfObject, SetType};
use nftables::stmt::{Operator, Statement, NAT};
use nftables::types::{NfChainType, NfFamily, NfHook};

use super::expr::*;
use super::*;

/// Destinations refused to VMs unless their `allow` list opens them:
/// RFC 1918 private networks, CGNAT shared space, link-local (with the
/// cloud metadata address 169.254.169.254), and "this network". The VMs'
/// own subnet is inside one of them: VM to VM is bridged and decided by
/// `pairs`; the host itself (the gateway and any of its addresses) is
/// decided by the input chain. IPv6 never leaves a VM at all (the source
/// binding drops it), so ULA and link-local IPv6 are refused with it.
pub const REFUSED_V4: &[(&str, u8)] = &[
    ("0.0.0.0", 8),
    ("10.0.0.0", 8),
    ("100.64.0.0", 10),
    ("169.254.0.0", 16),
    ("172.16.0.0", 12),
    ("192.168.0.0", 16),
];

fn refused_set() -> Expression<'static> {
    Expression::Named(NamedExpression::Set(
        REFUSED_V4
            .iter()
            .map(|(a, len)| {
                nftables::expr::SetItem::Element(prefix(a.parse().expect("constant address"), *len))
            })
            .collect(),
    ))
}

fn in_set(key: Expression<'static>, set: &str) -> Statement<'static> {
    eq(key, s(format!("@{set}")))
}

fn saddr_daddr(proto: &'static str, src: &'static str, dst: &'static str) -> Expression<'static> {
    concat(vec![payload(proto, src), payload(proto, dst)])
}

/// The commands that (re)create the three tables from scratch, atomically:
/// "add table; delete table" first so a stale table goes away in the same
/// transaction (and a missing one is no error).
pub(super) fn skeleton(p: &NftParams<'_>) -> Vec<NfObject<'static>> {
    let mut v = Vec::new();
    for fam in [NfFamily::INet, NfFamily::IP, NfFamily::Bridge] {
        v.push(add(table(fam, p.table)));
        v.push(delete(table(fam, p.table)));
        v.push(add(table(fam, p.table)));
    }
    inet_filter(p, &mut v);
    bridge_filter(p, &mut v);
    ip_nat(p, &mut v);
    v
}

/// `table inet mvm`: what VMs may reach on the host and beyond it.
fn inet_filter(p: &NftParams<'_>, v: &mut Vec<NfObject<'static>>) {
    let (t, inet) = (p.table, NfFamily::INet);
    let iif = || eq(meta(MetaKey::Iifname), s(p.bridge));
    let oif = || eq(meta(MetaKey::Oifname), s(p.bridge));
    let gw = || eq(payload("ip", "daddr"), s(p.subnet.gateway().to_string()));
    v.push(add(set(inet, t, SET_UPLINKS, &[SetType::Ifname], false)));
    v.push(add(set(
        inet,
        t,
        SET_HOST_PORTS,
        &[SetType::InetProto, SetType::InetService],
        false,
    )));
    v.push(add(set(
        inet,
        t,
        SET_ALLOW,
        &[SetType::Ipv4Addr, SetType::Ipv4Addr],
        true,
    )));
    v.push(add(set(
        inet,
        t,
        SET_VM_PAIRS,
        &[SetType::Ipv4Addr, SetType::Ipv4Addr],
        false,
    )));
    for (name, hook) in [("input", NfHook::Input), ("forward", NfHook::Forward)] {
        v.push(add(base_chain(inet, t, name, NfChainType::Filter, hook, 0)));
    }
    let established = || {
        m(
            ct("state"),
            Operator::IN,
            Expression::List(vec![s("established"), s("related")]),
        )
    };
    let udp53 = eq(payload("udp", "dport"), Expression::Number(53));
    let tcp53 = eq(payload("tcp", "dport"), Expression::Number(53));
    let mut input: Vec<Vec<Statement<'static>>> = vec![
        vec![iif(), established(), accept()],
        vec![
            iif(),
            eq(payload("udp", "dport"), Expression::Number(67)),
            accept(),
        ],
        vec![iif(), gw(), udp53, accept()],
        vec![iif(), gw(), tcp53, accept()],
        // Ping the gateway: how a guest checks its network.
        vec![
            iif(),
            gw(),
            eq(payload("icmp", "type"), s("echo-request")),
            accept(),
        ],
        // Forwarded ports on the gateway (another VM's published port).
        vec![
            iif(),
            gw(),
            in_set(proto_port_key(), SET_HOST_PORTS),
            accept(),
        ],
    ];
    // Nothing else of the host, on any of its addresses.
    input.extend(reject_rules(vec![iif()]));
    for r in input {
        v.push(add(rule(inet, t, "input", r)));
    }
    // Replies of the VMs' published ports, also to refused networks.
    let mut forward: Vec<Vec<Statement<'static>>> = vec![vec![iif(), established(), accept()]];
    // VM to VM is bridged and decided in `bridge mvm`. Where br_netfilter
    // is loaded, bridged frames pass here too, as from BR to BR: the same
    // pairs then. Anything else between VMs (routed through the host) is
    // refused.
    forward.push(vec![
        iif(),
        oif(),
        in_set(saddr_daddr("ip", "saddr", "daddr"), SET_VM_PAIRS),
        accept(),
    ]);
    forward.extend(reject_rules(vec![iif(), oif()]));
    forward.push(vec![
        iif(),
        in_set(saddr_daddr("ip", "saddr", "daddr"), SET_ALLOW),
        accept(),
    ]);
    forward.extend(reject_rules(vec![
        iif(),
        eq(payload("ip", "daddr"), refused_set()),
    ]));
    forward.extend([
        // VM -> world, from the subnet only (no spoofed sources).
        vec![
            iif(),
            eq(payload("ip", "saddr"), subnet_prefix(&p.subnet)),
            accept(),
        ],
        vec![iif(), drop_()],
        vec![oif(), established(), accept()],
        vec![oif(), m(ct("status"), Operator::IN, s("dnat")), accept()],
        vec![oif(), drop_()],
        // Keep forwarding off elsewhere on uplinks we turned it on for.
        vec![in_set(meta(MetaKey::Iifname), SET_UPLINKS), drop_()],
    ]);
    for r in forward {
        v.push(add(rule(inet, t, "forward", r)));
    }
}

/// `table bridge mvm`: source binding of VM ports, and VM-to-VM pairs.
fn bridge_filter(p: &NftParams<'_>, v: &mut Vec<NfObject<'static>>) {
    let (t, br) = (p.table, NfFamily::Bridge);
    for (name, key) in [
        (SET_PORTS, &[SetType::Ifname][..]),
        (
            SET_BIND,
            &[SetType::Ifname, SetType::EtherAddr, SetType::Ipv4Addr][..],
        ),
        (SET_MACS, &[SetType::Ifname, SetType::EtherAddr][..]),
        (SET_PAIRS, &[SetType::Ipv4Addr, SetType::Ipv4Addr][..]),
    ] {
        v.push(add(set(br, t, name, key, false)));
    }
    v.push(add(base_chain(
        br,
        t,
        "prerouting",
        NfChainType::Filter,
        NfHook::Prerouting,
        -200,
    )));
    v.push(add(base_chain(
        br,
        t,
        "forward",
        NfChainType::Filter,
        NfHook::Forward,
        0,
    )));
    // Source binding: a VM may only send frames with its own MAC, and
    // IPv4/ARP with its own address (no spoofing another VM, no poisoning
    // the host's neighbour table); IPv6 and anything else is dropped.
    let iifname = || meta(MetaKey::Iifname);
    let ether_type = |ty: &str| eq(payload("ether", "type"), s(ty));
    let prerouting: Vec<Vec<Statement<'static>>> = vec![
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
    for r in prerouting {
        v.push(add(rule(br, t, "prerouting", r)));
    }
    // Port to port is VM to VM (the host's own frames never pass this
    // hook): only between two VMs that both allow it, ARP included, so an
    // unpaired VM cannot even see the other.
    let forward: Vec<Vec<Statement<'static>>> = vec![
        vec![
            ether_type("ip"),
            in_set(saddr_daddr("ip", "saddr", "daddr"), SET_PAIRS),
            accept(),
        ],
        vec![
            ether_type("arp"),
            in_set(saddr_daddr("arp", "saddr ip", "daddr ip"), SET_PAIRS),
            accept(),
        ],
        vec![drop_()],
    ];
    for r in forward {
        v.push(add(rule(br, t, "forward", r)));
    }
}

/// `table ip mvm`: port forwards (DNAT) and NAT to the outside.
fn ip_nat(p: &NftParams<'_>, v: &mut Vec<NfObject<'static>>) {
    let (t, ip) = (p.table, NfFamily::IP);
    let any_key = [SetType::InetProto, SetType::InetService];
    let at_key = [SetType::Ipv4Addr, SetType::InetProto, SetType::InetService];
    v.push(add(map(t, MAP_ADDR, &any_key, SetType::Ipv4Addr)));
    v.push(add(map(t, MAP_PORT, &any_key, SetType::InetService)));
    v.push(add(map(t, MAP_AT_ADDR, &at_key, SetType::Ipv4Addr)));
    v.push(add(map(t, MAP_AT_PORT, &at_key, SetType::InetService)));
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
    let not_from_vms = || m(meta(MetaKey::Iifname), Operator::NEQ, s(p.bridge));
    let dnat = |key: Expression<'static>, addr_map: &str, port_map: &str| {
        let lookup = |name: &str| {
            Expression::Named(NamedExpression::Map(Box::new(MapExpr {
                key: key.clone(),
                data: s(format!("@{name}")),
            })))
        };
        Statement::DNAT(Some(NAT {
            addr: Some(lookup(addr_map)),
            family: Some(nftables::stmt::NATFamily::IP),
            port: Some(lookup(port_map)),
            flags: None,
        }))
    };
    // Forwards on 0.0.0.0: any local address.
    v.push(add(rule(
        ip,
        t,
        "prerouting",
        vec![
            not_from_vms(),
            eq(
                Expression::Named(NamedExpression::Fib(Fib {
                    result: FibResult::Type,
                    flags: HashSet::from([FibFlag::Daddr]),
                })),
                s("local"),
            ),
            dnat(proto_port_key(), MAP_ADDR, MAP_PORT),
        ],
    )));
    // Forwards on one named address. Loopback-only forwards have no rule:
    // the proxy alone serves them.
    v.push(add(rule(
        ip,
        t,
        "prerouting",
        vec![
            not_from_vms(),
            dnat(
                concat(vec![
                    payload("ip", "daddr"),
                    meta(MetaKey::L4proto),
                    payload("th", "dport"),
                ]),
                MAP_AT_ADDR,
                MAP_AT_PORT,
            ),
        ],
    )));
    v.push(add(rule(
        ip,
        t,
        "postrouting",
        vec![
            eq(payload("ip", "saddr"), subnet_prefix(&p.subnet)),
            m(
                payload("ip", "daddr"),
                Operator::NEQ,
                subnet_prefix(&p.subnet),
            ),
            Statement::Masquerade(None),
        ],
    )));
}
