//! The host side as the CLI sees it: one-time setup (bridge, forwarding,
//! nftables, tap pool: `setup.rs`), attaching and detaching VMs (`vm.rs`),
//! port forwards (`forwards.rs`) and crash clean-up (`reconcile.rs`).
//! Every call takes the state folder's lock, so concurrent `mvm` processes
//! see consistent leases. This file has the configuration and the types the
//! callers pass and get back.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::addr::{Cidr, MacAddr, Subnet};
use crate::dhcp::DhcpParams;
use crate::dns::DnsConfig;
use crate::error::{Error, Result};
use crate::forward::PortForward;
use crate::lease::{Active, Lease, Store};
use crate::nft::{Nft, NftParams};

mod forwards;
mod reconcile;
mod setup;
mod vm;

pub use forwards::{add_forward, list_forwards, remove_forward};
pub use reconcile::{reconcile, ReconcileReport};
pub use setup::{setup_host, teardown_host, HostSetup};
pub use vm::{attach_vm, detach_vm, forget_vm, leases, set_owner_pid, vm_net};

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
        let mut c = crate::lease::read_trusted_json::<NetConfig>(&state_dir.join("network.json"))?
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
    // network.json and host.json stay root's: root acts on them.
    let mut paths = vec![store.dir().to_path_buf(), store.leases_dir()];
    paths.push(store.dir().join("lock"));
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
