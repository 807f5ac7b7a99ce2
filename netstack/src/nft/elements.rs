//! Set and map elements: the per-VM state (bindings, pairs, allowed
//! networks, forwards), the commands that add and delete them, and reading
//! them back from `nft -j list ruleset`. Pure: nothing here runs nft.

use std::net::Ipv4Addr;

use nftables::expr::Expression;
use nftables::schema::NfObject;
use nftables::types::NfFamily;
use serde_json::Value;

use crate::addr::Cidr;
use crate::forward::{PortForward, Protocol};
use crate::lease::Lease;

use super::expr::*;
use super::*;

pub(super) fn vm_comment(id: &str) -> String {
    format!("vm={id}")
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
pub(super) fn forward_add_cmds(
    t: &str,
    id: &str,
    ip: Ipv4Addr,
    f: &PortForward,
) -> Vec<NfObject<'static>> {
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

pub(super) fn bind_cmds(
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
    pub(super) fn port(&self) -> Option<(Protocol, u16)> {
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

/// `uplinks` in the uplinks set (nothing when empty).
pub(super) fn uplinks_cmds(t: &str, uplinks: &[String]) -> Vec<NfObject<'static>> {
    if uplinks.is_empty() {
        return Vec::new();
    }
    vec![add(element(
        NfFamily::INet,
        t,
        SET_UPLINKS,
        uplinks.iter().map(|u| s(u.clone())).collect(),
    ))]
}

/// Commands adding attached VM `l`'s elements, with a pair for each of
/// `peers`.
pub(super) fn vm_add_cmds(t: &str, l: &Lease, peers: &[Ipv4Addr]) -> Vec<NfObject<'static>> {
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

/// Commands deleting, of `elems`, VM `id`'s (by comment) and those its
/// lease names (another VM's pairs with it, a forward's port, its tap's
/// binding). Pool bindings and uplinks stay.
pub(super) fn vm_delete_cmds(
    t: &str,
    elems: &[Elem],
    id: &str,
    l: Option<&Lease>,
) -> Vec<NfObject<'static>> {
    let mut keys: Vec<(String, ElemKey)> = Vec::new();
    for e in elems {
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
    keys.into_iter()
        .map(|(set, key)| delete_elem_cmd(t, &set, &key))
        .collect()
}

/// The command deleting the element `key` of set or map `set`.
pub(super) fn delete_elem_cmd(t: &str, set: &str, key: &ElemKey) -> NfObject<'static> {
    let (name, family) = SETS
        .iter()
        .find(|(n, _)| *n == set)
        .copied()
        .unwrap_or((SET_HOST_PORTS, NfFamily::INet));
    delete(element(family, t, name, vec![key.expr()]))
}

/// The elements of table `t`'s sets and maps in `nft -j list ruleset`'s
/// output.
pub(super) fn parse_elements(t: &str, ruleset: &Value) -> Vec<Elem> {
    let mut out = Vec::new();
    let objs = ruleset
        .get("nftables")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for o in objs {
        let body = o.get("set").or_else(|| o.get("map"));
        let Some(body) = body else { continue };
        let ours = body.get("table").and_then(Value::as_str) == Some(t)
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
    out
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
