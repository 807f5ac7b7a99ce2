//! The generated ruleset, checked without root (nothing here runs nft):
//! the one `install` transaction for a representative host, rendered as
//! nft-like text (one line per command) and compared whole.

use serde_json::Value;

use super::*;
use crate::addr::MacAddr;
use crate::lease::Active;

/// One command as text, close to `nft list` syntax; `==` is left out as
/// nft does.
fn render_cmd(cmd: &Value) -> String {
    let (verb, body) = cmd
        .as_object()
        .and_then(|o| o.iter().next())
        .expect("a command");
    let (kind, o) = body
        .as_object()
        .and_then(|o| o.iter().next())
        .expect("an object");
    let f = |k: &str| o.get(k).map(expr).unwrap_or_default();
    let head = format!("{verb} {kind} {} {}", f("family"), f("table"));
    match kind.as_str() {
        "table" => format!("{verb} table {} {}", f("family"), f("name")),
        "set" | "map" => {
            let ty = match &o["type"] {
                Value::Array(v) => v.iter().map(expr).collect::<Vec<_>>().join(" . "),
                v => expr(v),
            };
            let data = o
                .get("map")
                .map(|m| format!(" : {}", expr(m)))
                .unwrap_or_default();
            let flags = o
                .get("flags")
                .map(|v| format!("; flags {}", expr(v)))
                .unwrap_or_default();
            format!("{head} {} {{ type {ty}{data}{flags} }}", f("name"))
        }
        "chain" => format!(
            "{head} {} {{ type {} hook {} priority {}; policy {} }}",
            f("name"),
            f("type"),
            f("hook"),
            f("prio"),
            f("policy")
        ),
        "rule" => {
            let stmts: Vec<String> = o["expr"].as_array().unwrap().iter().map(expr).collect();
            format!("{head} {} {}", f("chain"), stmts.join(" "))
        }
        "element" => {
            let elems: Vec<String> = o["elem"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| match e {
                    // A map element: [key, value].
                    Value::Array(kv) => format!("{} : {}", expr(&kv[0]), expr(&kv[1])),
                    e => expr(e),
                })
                .collect();
            format!("{head} {} {{ {} }}", f("name"), elems.join(", "))
        }
        _ => panic!("unexpected command {cmd}"),
    }
}

fn expr(v: &Value) -> String {
    let o = match v {
        Value::String(s) => return s.clone(),
        Value::Number(n) => return n.to_string(),
        Value::Array(v) => return v.iter().map(expr).collect::<Vec<_>>().join(","),
        Value::Object(o) => o,
        _ => return String::new(),
    };
    let Some((k, inner)) = o.iter().next().filter(|_| o.len() == 1) else {
        panic!("unexpected expression {v}");
    };
    let g = |k: &str| inner.get(k).map(expr).unwrap_or_default();
    match k.as_str() {
        "match" => match g("op").as_str() {
            "==" | "in" => format!("{} {}", g("left"), g("right")),
            op => format!("{} {op} {}", g("left"), g("right")),
        },
        "meta" => match g("key").as_str() {
            k @ ("iifname" | "oifname") => k.to_string(),
            k => format!("meta {k}"),
        },
        "payload" => format!("{} {}", g("protocol"), g("field")),
        "ct" => format!("ct {}", g("key")),
        "concat" => inner
            .as_array()
            .unwrap()
            .iter()
            .map(expr)
            .collect::<Vec<_>>()
            .join(" . "),
        "prefix" => format!("{}/{}", g("addr"), g("len")),
        "set" => format!(
            "{{ {} }}",
            inner
                .as_array()
                .unwrap()
                .iter()
                .map(expr)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        "fib" => format!("fib {} {}", g("flags"), g("result")),
        "map" => format!("{} map {}", g("key"), g("data")),
        "accept" | "drop" | "masquerade" => k.clone(),
        "reject" => match inner.get("expr") {
            Some(e) => format!("reject with {} {}", g("type"), expr(e)),
            None => format!("reject with {}", g("type")),
        },
        "dnat" => format!("dnat {} to {} : {}", g("family"), g("addr"), g("port")),
        "elem" => format!("{} comment \"{}\"", g("val"), g("comment")),
        _ => panic!("unexpected expression {v}"),
    }
}

fn render(cmds: &[NfObject<'static>]) -> Vec<String> {
    cmds.iter()
        .map(|c| render_cmd(&serde_json::to_value(c).unwrap()))
        .collect()
}

fn attached(id: &str, ip: [u8; 4]) -> Lease {
    Lease {
        id: id.into(),
        name: id.into(),
        mac: MacAddr::for_vm(id),
        ip: ip.into(),
        allow_vm_to_vm: true,
        allow: vec![],
        forwards: vec![],
        active: Some(Active {
            tap: format!("mvm-{id}"),
            pooled: false,
            owner_pid: None,
            attached_by: None,
        }),
    }
}

/// The host of the tests: bridge `virbr-test` on 10.88.0.1/24 and an
/// uplink whose forwarding setup turned on; VM `aaaa` with an allow-list
/// entry, a loopback-only forward and one on every address; VM `bbbb`;
/// both allow each other.
fn host() -> (Nft<'static>, Vec<Lease>) {
    let nft = Nft::new(NftParams {
        table: "mvm",
        bridge: "virbr-test",
        subnet: "10.88.0.1/24".parse().unwrap(),
    });
    let mut a = attached("aaaa", [10, 88, 0, 2]);
    a.allow = vec!["192.168.1.0/24".parse().unwrap()];
    a.forwards = vec![
        "8080:80".parse().unwrap(),
        "0.0.0.0:2222:22".parse().unwrap(),
    ];
    (nft, vec![a, attached("bbbb", [10, 88, 0, 3])])
}

/// The whole `install` transaction: the tables of the picture in `mod.rs`
/// for this bridge and subnet, then the elements of the two VMs.
const INSTALL: &str = r#"
add table inet mvm
delete table inet mvm
add table inet mvm
add table ip mvm
delete table ip mvm
add table ip mvm
add table bridge mvm
delete table bridge mvm
add table bridge mvm
add set inet mvm uplinks { type ifname }
add set inet mvm host_ports { type inet_proto . inet_service }
add set inet mvm allow { type ipv4_addr . ipv4_addr; flags interval }
add set inet mvm vm_pairs { type ipv4_addr . ipv4_addr }
add chain inet mvm input { type filter hook input priority 0; policy accept }
add chain inet mvm forward { type filter hook forward priority 0; policy accept }
add rule inet mvm input iifname virbr-test ct state established,related accept
add rule inet mvm input iifname virbr-test udp dport 67 accept
add rule inet mvm input iifname virbr-test ip daddr 10.88.0.1 udp dport 53 accept
add rule inet mvm input iifname virbr-test ip daddr 10.88.0.1 tcp dport 53 accept
add rule inet mvm input iifname virbr-test ip daddr 10.88.0.1 icmp type echo-request accept
add rule inet mvm input iifname virbr-test ip daddr 10.88.0.1 meta l4proto . th dport @host_ports accept
add rule inet mvm input iifname virbr-test meta l4proto tcp reject with tcp reset
add rule inet mvm input iifname virbr-test reject with icmpx admin-prohibited
add rule inet mvm forward iifname virbr-test ct state established,related accept
add rule inet mvm forward iifname virbr-test oifname virbr-test ip saddr . ip daddr @vm_pairs accept
add rule inet mvm forward iifname virbr-test oifname virbr-test meta l4proto tcp reject with tcp reset
add rule inet mvm forward iifname virbr-test oifname virbr-test reject with icmpx admin-prohibited
add rule inet mvm forward iifname virbr-test ip saddr . ip daddr @allow accept
add rule inet mvm forward iifname virbr-test ip daddr { 0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 169.254.0.0/16, 172.16.0.0/12, 192.168.0.0/16 } meta l4proto tcp reject with tcp reset
add rule inet mvm forward iifname virbr-test ip daddr { 0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 169.254.0.0/16, 172.16.0.0/12, 192.168.0.0/16 } reject with icmpx admin-prohibited
add rule inet mvm forward iifname virbr-test ip saddr 10.88.0.0/24 accept
add rule inet mvm forward iifname virbr-test drop
add rule inet mvm forward oifname virbr-test ct state established,related accept
add rule inet mvm forward oifname virbr-test ct status dnat accept
add rule inet mvm forward oifname virbr-test drop
add rule inet mvm forward iifname @uplinks drop
add set bridge mvm ports { type ifname }
add set bridge mvm bind { type ifname . ether_addr . ipv4_addr }
add set bridge mvm macs { type ifname . ether_addr }
add set bridge mvm pairs { type ipv4_addr . ipv4_addr }
add chain bridge mvm prerouting { type filter hook prerouting priority -200; policy accept }
add chain bridge mvm forward { type filter hook forward priority 0; policy accept }
add rule bridge mvm prerouting iifname != @ports accept
add rule bridge mvm prerouting ether type arp iifname . ether saddr . arp saddr ip @bind iifname . arp saddr ether . arp saddr ip @bind accept
add rule bridge mvm prerouting ether type arp iifname . ether saddr @macs iifname . arp saddr ether @macs arp saddr ip 0.0.0.0 accept
add rule bridge mvm prerouting ether type ip iifname . ether saddr . ip saddr @bind accept
add rule bridge mvm prerouting ether type ip iifname . ether saddr @macs ip saddr 0.0.0.0 udp dport 67 accept
add rule bridge mvm prerouting drop
add rule bridge mvm forward ether type ip ip saddr . ip daddr @pairs accept
add rule bridge mvm forward ether type arp arp saddr ip . arp daddr ip @pairs accept
add rule bridge mvm forward drop
add map ip mvm fwd_addr { type inet_proto . inet_service : ipv4_addr }
add map ip mvm fwd_port { type inet_proto . inet_service : inet_service }
add map ip mvm fwd_at_addr { type ipv4_addr . inet_proto . inet_service : ipv4_addr }
add map ip mvm fwd_at_port { type ipv4_addr . inet_proto . inet_service : inet_service }
add chain ip mvm prerouting { type nat hook prerouting priority -100; policy accept }
add chain ip mvm postrouting { type nat hook postrouting priority 100; policy accept }
add rule ip mvm prerouting iifname != virbr-test fib daddr type local dnat ip to meta l4proto . th dport map @fwd_addr : meta l4proto . th dport map @fwd_port
add rule ip mvm prerouting iifname != virbr-test dnat ip to ip daddr . meta l4proto . th dport map @fwd_at_addr : ip daddr . meta l4proto . th dport map @fwd_at_port
add rule ip mvm postrouting ip saddr 10.88.0.0/24 ip daddr != 10.88.0.0/24 masquerade
add element inet mvm uplinks { eth0 }
add element inet mvm allow { 10.88.0.2 . 192.168.1.0/24 comment "vm=aaaa" }
add element inet mvm vm_pairs { 10.88.0.2 . 10.88.0.3 comment "vm=aaaa", 10.88.0.3 . 10.88.0.2 comment "vm=aaaa" }
add element bridge mvm pairs { 10.88.0.2 . 10.88.0.3 comment "vm=aaaa", 10.88.0.3 . 10.88.0.2 comment "vm=aaaa" }
add element ip mvm fwd_addr { tcp . 2222 comment "vm=aaaa" : 10.88.0.2 }
add element ip mvm fwd_port { tcp . 2222 comment "vm=aaaa" : 22 }
add element inet mvm host_ports { tcp . 2222 comment "vm=aaaa" }
add element bridge mvm bind { mvm-aaaa . 02:f5:21:61:83:ea . 10.88.0.2 comment "vm=aaaa" }
add element bridge mvm macs { mvm-aaaa . 02:f5:21:61:83:ea comment "vm=aaaa" }
add element bridge mvm ports { mvm-aaaa comment "vm=aaaa" }
add element inet mvm vm_pairs { 10.88.0.3 . 10.88.0.2 comment "vm=bbbb", 10.88.0.2 . 10.88.0.3 comment "vm=bbbb" }
add element bridge mvm pairs { 10.88.0.3 . 10.88.0.2 comment "vm=bbbb", 10.88.0.2 . 10.88.0.3 comment "vm=bbbb" }
add element bridge mvm bind { mvm-bbbb . 02:b3:66:53:9b:b8 . 10.88.0.3 comment "vm=bbbb" }
add element bridge mvm macs { mvm-bbbb . 02:b3:66:53:9b:b8 comment "vm=bbbb" }
add element bridge mvm ports { mvm-bbbb comment "vm=bbbb" }
"#;

#[test]
fn install_transaction() {
    let (nft, leases) = host();
    let got = render(&nft.install_cmds(&["eth0".into()], &leases, &[]));
    let want: Vec<&str> = INSTALL.trim().lines().collect();
    // Line by line first, so a failure names the first difference.
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "command {i}");
    }
    assert_eq!(got.len(), want.len());
    // The loopback-only forward is the VMM's proxy's alone: no element.
    assert!(!INSTALL.contains("8080"));
}

#[test]
fn every_set_is_declared_in_its_family() {
    // `delete_elem_cmd` finds a set's family in SETS; skeleton declares them.
    let (nft, _) = host();
    let mut declared: Vec<String> = render(&rules::skeleton(&nft.p))
        .into_iter()
        .filter(|l| l.starts_with("add set ") || l.starts_with("add map "))
        .map(|l| l.split(' ').skip(2).take(3).collect::<Vec<_>>().join(" "))
        .collect();
    let mut listed: Vec<String> = SETS
        .iter()
        .map(|(name, fam)| {
            let fam = serde_json::to_value(fam).unwrap();
            format!("{} mvm {name}", expr(&fam))
        })
        .collect();
    declared.sort();
    listed.sort();
    assert_eq!(declared, listed);
}

/// `nft -j list ruleset` as it would read after `cmds`: each set and map
/// with its elements, a key that is there already not added again.
fn listed(cmds: &[NfObject<'static>]) -> Value {
    let mut sets: Vec<(String, Value)> = Vec::new();
    for c in cmds {
        let v = serde_json::to_value(c).unwrap();
        let Some(e) = v.get("add").and_then(|a| a.get("element")) else {
            continue;
        };
        let name = e["name"].as_str().unwrap().to_string();
        let kind = if name.starts_with("fwd_") {
            "map"
        } else {
            "set"
        };
        let pos = match sets.iter().position(|(n, _)| *n == name) {
            Some(p) => p,
            None => {
                let mut body = e.clone();
                body["elem"] = Value::Array(vec![]);
                sets.push((name, serde_json::json!({ kind: body })));
                sets.len() - 1
            }
        };
        let body = &mut sets[pos].1[kind];
        let key = |x: &Value| {
            let k = x.as_array().map_or(x, |kv| &kv[0]);
            k.get("elem").map_or(k, |i| &i["val"]).clone()
        };
        for x in e["elem"].as_array().unwrap() {
            let have = body["elem"].as_array().unwrap();
            if !have.iter().any(|h| key(h) == key(x)) {
                body["elem"].as_array_mut().unwrap().push(x.clone());
            }
        }
    }
    serde_json::json!({ "nftables": sets.into_iter().map(|(_, v)| v).collect::<Vec<_>>() })
}

#[test]
fn removing_a_vm_deletes_its_elements_and_its_pairs() {
    let (nft, leases) = host();
    let elems = parse_elements(
        "mvm",
        &listed(&nft.install_cmds(&["eth0".into()], &leases, &[])),
    );
    assert_eq!(elems.len(), 15);
    // bbbb: its binding (by comment) and the pairs with it, which carry
    // aaaa's comment (aaaa added them first); aaaa's own elements and the
    // uplinks stay.
    let got = render(&vm_delete_cmds("mvm", &elems, "bbbb", Some(&leases[1])));
    assert_eq!(
        got,
        [
            "delete element inet mvm vm_pairs { 10.88.0.2 . 10.88.0.3 }",
            "delete element inet mvm vm_pairs { 10.88.0.3 . 10.88.0.2 }",
            "delete element bridge mvm pairs { 10.88.0.2 . 10.88.0.3 }",
            "delete element bridge mvm pairs { 10.88.0.3 . 10.88.0.2 }",
            "delete element bridge mvm bind { mvm-bbbb . 02:b3:66:53:9b:b8 . 10.88.0.3 }",
            "delete element bridge mvm macs { mvm-bbbb . 02:b3:66:53:9b:b8 }",
            "delete element bridge mvm ports { mvm-bbbb }",
        ]
    );
    // aaaa: every element of its own, the forward's in both maps and in
    // host_ports too (the loopback-only one has none).
    let got = render(&vm_delete_cmds("mvm", &elems, "aaaa", Some(&leases[0])));
    assert_eq!(
        got,
        [
            "delete element inet mvm allow { 10.88.0.2 . 192.168.1.0/24 }",
            "delete element inet mvm vm_pairs { 10.88.0.2 . 10.88.0.3 }",
            "delete element inet mvm vm_pairs { 10.88.0.3 . 10.88.0.2 }",
            "delete element bridge mvm pairs { 10.88.0.2 . 10.88.0.3 }",
            "delete element bridge mvm pairs { 10.88.0.3 . 10.88.0.2 }",
            "delete element ip mvm fwd_addr { tcp . 2222 }",
            "delete element ip mvm fwd_port { tcp . 2222 }",
            "delete element inet mvm host_ports { tcp . 2222 }",
            "delete element bridge mvm bind { mvm-aaaa . 02:f5:21:61:83:ea . 10.88.0.2 }",
            "delete element bridge mvm macs { mvm-aaaa . 02:f5:21:61:83:ea }",
            "delete element bridge mvm ports { mvm-aaaa }",
        ]
    );
}
