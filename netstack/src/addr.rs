//! Addresses: the VM subnet, MAC addresses derived from VM ids, tap names.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// An IPv4 subnet given by its gateway address and prefix length, as in
/// `10.77.0.1/24`: the host address is the bridge's (the VMs' gateway, DHCP
/// and DNS server).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subnet {
    gateway: Ipv4Addr,
    prefix_len: u8,
}

impl Subnet {
    /// A subnet from its gateway and prefix length (8..=30).
    pub fn new(gateway: Ipv4Addr, prefix_len: u8) -> Result<Self> {
        let spec = format!("{gateway}/{prefix_len}");
        let bad = |reason: &str| Error::InvalidSubnet {
            spec: spec.clone(),
            reason: reason.to_string(),
        };
        if !(8..=30).contains(&prefix_len) {
            return Err(bad("prefix length must be 8..=30"));
        }
        let s = Subnet {
            gateway,
            prefix_len,
        };
        if gateway == s.network() || gateway == s.broadcast() {
            return Err(bad(
                "the gateway must be a host address, not the network or broadcast address",
            ));
        }
        if gateway.is_loopback()
            || gateway.is_multicast()
            || gateway.is_unspecified()
            || gateway.is_link_local()
        {
            return Err(bad("not a usable unicast range"));
        }
        Ok(s)
    }

    /// The gateway (bridge) address.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The netmask.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask(self.prefix_len))
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.gateway) & mask(self.prefix_len))
    }

    /// The broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) | !mask(self.prefix_len))
    }

    /// Whether `ip` is inside the subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix_len) == u32::from(self.network())
    }

    /// Whether the prefix `net/len` overlaps this subnet.
    pub fn overlaps(&self, net: Ipv4Addr, len: u8) -> bool {
        let len = len.min(32);
        let common = mask(len.min(self.prefix_len));
        u32::from(net) & common == u32::from(self.gateway) & common
    }

    /// Addresses a VM may get: every host address but the gateway.
    pub fn vm_addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let first = u32::from(self.network()) + 1;
        let last = u32::from(self.broadcast()) - 1;
        (first..=last)
            .map(Ipv4Addr::from)
            .filter(move |ip| *ip != self.gateway)
    }

    /// `10.77.0.0/24`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.network(), self.prefix_len)
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

impl Default for Subnet {
    fn default() -> Self {
        Subnet {
            gateway: Ipv4Addr::new(10, 77, 0, 1),
            prefix_len: 24,
        }
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.gateway, self.prefix_len)
    }
}

impl FromStr for Subnet {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidSubnet {
            spec: s.to_string(),
            reason: reason.to_string(),
        };
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| bad("expected GATEWAY/PREFIX, e.g. 10.77.0.1/24"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad("not an IPv4 address"))?;
        let len: u8 = len
            .parse()
            .map_err(|_| bad("prefix length is not a number"))?;
        Subnet::new(ip, len).map_err(|e| match e {
            Error::InvalidSubnet { reason, .. } => bad(&reason),
            e => e,
        })
    }
}

impl TryFrom<String> for Subnet {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Subnet> for String {
    fn from(s: Subnet) -> String {
        s.to_string()
    }
}

/// An IPv4 destination a VM may reach although it is refused by default
/// (`network.allow`, `--allow-net`): `10.1.0.0/16`, or one address
/// `10.1.2.3` (= `/32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    net: Ipv4Addr,
    len: u8,
}

impl Cidr {
    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.net
    }

    /// The prefix length (0..=32).
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.len) == u32::from(self.net)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.len)
    }
}

impl FromStr for Cidr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: String| Error::InvalidAllow {
            spec: s.to_string(),
            reason,
        };
        let (ip, len) = match s.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (s, None),
        };
        let net: Ipv4Addr = match ip.parse() {
            Ok(a) => a,
            Err(_) if ip.parse::<std::net::Ipv6Addr>().is_ok() => {
                return Err(bad(
                    "VMs have no IPv6 (every IPv6 packet from a VM is refused), so only IPv4 can be allowed".into(),
                ))
            }
            Err(_) => {
                return Err(bad(
                    "expected an IPv4 ADDRESS or ADDRESS/PREFIX, e.g. 10.1.0.0/16".into(),
                ))
            }
        };
        let len = match len {
            None => 32,
            Some(l) => match l.parse::<u8>() {
                Ok(n @ 0..=32) if l.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(bad(format!("prefix length {l:?} is not 0..=32"))),
            },
        };
        let c = Cidr {
            net: Ipv4Addr::from(u32::from(net) & mask(len)),
            len,
        };
        if c.net != net {
            return Err(bad(format!(
                "host bits set after the prefix; did you mean {c}?"
            )));
        }
        Ok(c)
    }
}

impl TryFrom<String> for Cidr {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

/// An Ethernet MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The stable, locally administered, unicast MAC of a VM id: `02:` and
    /// five bytes of the FNV-1a hash of the id.
    pub fn for_vm(id: &str) -> MacAddr {
        let h = fnv1a(id.as_bytes()).to_be_bytes();
        MacAddr([0x02, h[0], h[1], h[2], h[3], h[4]])
    }

    /// The bytes.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts.next().ok_or_else(|| format!("bad MAC {s:?}"))?;
            if p.len() != 2 {
                return Err(format!("bad MAC {s:?}"));
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| format!("bad MAC {s:?}"))?;
        }
        if parts.next().is_some() {
            return Err(format!("bad MAC {s:?}"));
        }
        Ok(MacAddr(out))
    }
}

impl TryFrom<String> for MacAddr {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<MacAddr> for String {
    fn from(m: MacAddr) -> String {
        m.to_string()
    }
}

/// FNV-1a, 64 bits: stable across releases and platforms (unlike std's
/// hasher), which is what a MAC kept across restarts needs.
pub(crate) fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Check a VM id: 1..=64 of `[A-Za-z0-9._-]`, not starting with a dot (it
/// names a state file).
pub fn validate_vm_id(id: &str) -> Result<()> {
    let bad = |reason| Error::InvalidName {
        what: "id",
        value: id.to_string(),
        reason,
    };
    if id.is_empty() || id.len() > 64 {
        return Err(bad("must be 1 to 64 characters"));
    }
    if id.starts_with('.') {
        return Err(bad("must not start with a dot"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(bad("only letters, digits, '.', '_' and '-' are allowed"));
    }
    Ok(())
}

/// Check a VM name, which is its DNS label under `.mvm` and its DHCP
/// hostname: 1..=63 of `[a-z0-9-]` (case-insensitive), not starting or ending
/// with '-'.
pub fn validate_vm_name(name: &str) -> Result<()> {
    let bad = |reason| Error::InvalidName {
        what: "name",
        value: name.to_string(),
        reason,
    };
    if name.is_empty() || name.len() > 63 {
        return Err(bad("must be 1 to 63 characters"));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(bad("must not start or end with '-'"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(bad(
            "only letters, digits and '-' are allowed (it is a DNS label)",
        ));
    }
    Ok(())
}

/// Prefix of every per-VM tap.
pub const TAP_PREFIX: &str = "mvm-";
/// Prefix of the taps of the pre-created pool (unprivileged use).
pub const POOL_PREFIX: &str = "mvmp-";

/// The tap name of a VM: `mvm-` and the first 11 characters of its id
/// (lowercased, only `[a-z0-9]`), or of the id's hash if `hashed` (used when
/// two ids share a prefix). At most 15 bytes (IFNAMSIZ - 1).
pub fn tap_name(id: &str, hashed: bool) -> String {
    let short: String = if hashed {
        format!("{:011x}", fnv1a(id.as_bytes()) >> 20)
    } else {
        id.chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .take(11)
            .collect()
    };
    if short.is_empty() {
        return tap_name(id, true);
    }
    format!("{TAP_PREFIX}{short}")
}

/// The name of pool tap number `n`.
pub fn pool_tap_name(n: u16) -> String {
    format!("{POOL_PREFIX}{n}")
}

/// The MAC and address bound to pool tap `name` (`mvmp-N`): the N-th
/// address from the top of the subnet, and the MAC of id `mvmp-N`. Pool
/// taps are bound once by setup, which runs with privilege; the VM that
/// takes the tap takes this MAC and address. `None` for other names and
/// for N beyond the subnet's upper half.
pub fn pool_binding(subnet: &Subnet, name: &str) -> Option<(MacAddr, Ipv4Addr)> {
    let n: u32 = name.strip_prefix(POOL_PREFIX)?.parse().ok()?;
    let hosts = u32::from(subnet.broadcast()) - u32::from(subnet.network()) - 1;
    if n >= hosts / 2 {
        return None;
    }
    let ip = Ipv4Addr::from(u32::from(subnet.broadcast()) - 1 - n);
    (ip != subnet.gateway()).then(|| (MacAddr::for_vm(name), ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_math() {
        let s: Subnet = "10.77.0.1/24".parse().unwrap();
        assert_eq!(s.network(), Ipv4Addr::new(10, 77, 0, 0));
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 77, 0, 255));
        assert_eq!(s.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(s.cidr(), "10.77.0.0/24");
        let v: Vec<_> = s.vm_addresses().collect();
        assert_eq!(v.len(), 253);
        assert_eq!(v[0], Ipv4Addr::new(10, 77, 0, 2));
        assert!(s.overlaps(Ipv4Addr::new(10, 0, 0, 0), 8));
        assert!(s.overlaps(Ipv4Addr::new(10, 77, 0, 128), 25));
        assert!(!s.overlaps(Ipv4Addr::new(10, 78, 0, 0), 24));
        assert!(s.overlaps(Ipv4Addr::new(0, 0, 0, 0), 0));
    }

    #[test]
    fn subnet_errors_are_one_line() {
        for bad in [
            "10.77.0.0/24",
            "10.77.0.1",
            "x/24",
            "10.77.0.1/31",
            "10.77.0.255/24",
            "127.0.0.1/8",
        ] {
            let e = bad.parse::<Subnet>().unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn cidrs_parse_and_bad_ones_say_why() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains(Ipv4Addr::new(10, 1, 200, 3)));
        assert!(!c.contains(Ipv4Addr::new(10, 2, 0, 1)));
        assert_eq!(
            "10.1.2.3".parse::<Cidr>().unwrap().to_string(),
            "10.1.2.3/32"
        );
        assert_eq!("0.0.0.0/0".parse::<Cidr>().unwrap().prefix_len(), 0);
        for (bad, needle) in [
            ("10.1.2.3/16", "did you mean 10.1.0.0/16"),
            ("10.1.0.0/33", "prefix length \"33\""),
            ("10.1.0.0/+8", "prefix length"),
            ("fc00::/7", "only IPv4"),
            ("lan", "expected an IPv4"),
            ("", "expected an IPv4"),
        ] {
            let e = bad.parse::<Cidr>().unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")) && e.contains(needle), "{e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn macs_are_stable_and_local() {
        let a = MacAddr::for_vm("web");
        assert_eq!(a, MacAddr::for_vm("web"));
        assert_ne!(a, MacAddr::for_vm("db"));
        assert_eq!(a.0[0] & 0x03, 0x02);
        assert_eq!(a.to_string().parse::<MacAddr>().unwrap(), a);
    }

    #[test]
    fn pool_taps_take_addresses_from_the_top() {
        let s = Subnet::default();
        let (mac, ip) = pool_binding(&s, "mvmp-0").unwrap();
        assert_eq!(ip, Ipv4Addr::new(10, 77, 0, 254));
        assert_eq!(mac, MacAddr::for_vm("mvmp-0"));
        assert_eq!(
            pool_binding(&s, "mvmp-3").unwrap().1,
            Ipv4Addr::new(10, 77, 0, 251)
        );
        assert!(pool_binding(&s, "mvmp-127").is_none());
        assert!(pool_binding(&s, "mvm-3").is_none());
    }

    #[test]
    fn tap_names_fit() {
        assert_eq!(tap_name("web", false), "mvm-web");
        assert_eq!(tap_name("0123456789abcdefXYZ", false), "mvm-0123456789a");
        assert!(tap_name("0123456789abcdef", true).len() <= 15);
        assert!(tap_name("---", false).len() <= 15);
    }

    #[test]
    fn names() {
        assert!(validate_vm_name("web-1").is_ok());
        assert!(validate_vm_name("-web").is_err());
        assert!(validate_vm_name("we.b").is_err());
        assert!(validate_vm_id("abc_1.2").is_ok());
        assert!(validate_vm_id("../x").is_err());
        assert!(validate_vm_id(".x").is_err());
    }
}
