//! What this process may do: the capabilities netstack needs, read from
//! `/proc/thread-self/status`, and one-line errors saying how to get them.

use crate::error::{Error, Result};

/// CAP_NET_BIND_SERVICE.
pub const CAP_NET_BIND_SERVICE: u32 = 10;
/// CAP_NET_ADMIN.
pub const CAP_NET_ADMIN: u32 = 12;
/// CAP_NET_RAW.
pub const CAP_NET_RAW: u32 = 13;

/// The network capabilities of the calling thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Privileges {
    /// Bridges, taps, addresses, sysctls, nftables.
    pub net_admin: bool,
    /// Ports below 1024 (DHCP 67, DNS 53, low forwarded ports).
    pub net_bind_service: bool,
    /// Raw sockets (not needed; reported for `mvm doctor`).
    pub net_raw: bool,
}

/// Read the effective capabilities.
pub fn privileges() -> Privileges {
    let eff = std::fs::read_to_string("/proc/thread-self/status")
        .or_else(|_| std::fs::read_to_string("/proc/self/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0);
    let has = |c: u32| eff & (1u64 << c) != 0;
    Privileges {
        net_admin: has(CAP_NET_ADMIN),
        net_bind_service: has(CAP_NET_BIND_SERVICE),
        net_raw: has(CAP_NET_RAW),
    }
}

/// Err with the exact missing capability and the way to get it, unless the
/// process has CAP_NET_ADMIN.
pub fn require_net_admin(what: &str) -> Result<()> {
    if privileges().net_admin {
        return Ok(());
    }
    Err(Error::MissingPrivilege {
        what: what.to_string(),
        cap: "CAP_NET_ADMIN",
        how: "run `sudo mvm net setup` once (it creates the bridge, NAT rules and a pool of taps owned by you), or run mvm as root",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_cap_and_fix() {
        let e = Error::MissingPrivilege {
            what: "creating bridge virbr-mvm".into(),
            cap: "CAP_NET_ADMIN",
            how: "run `sudo mvm net setup` once",
        }
        .to_string();
        assert!(e.contains("CAP_NET_ADMIN") && e.contains("mvm net setup") && !e.contains('\n'));
        let _ = privileges();
    }
}
