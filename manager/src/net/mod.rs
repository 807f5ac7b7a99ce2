//! Managed VMs on the host network plane (netstack): a tap on the
//! `virbr-mvm` bridge, an address from our DHCP server, names from our DNS,
//! NAT, and port forwards (nftables DNAT for other hosts, a proxy in the
//! VMM process for the host's own loopback).

use std::path::PathBuf;
use std::time::Duration;

use crate::error::Context;
use netstack::{NetConfig, PortForward, VmNet};

use crate::state::{self, VmDir, VmSpec};
use crate::Report;

mod raw;
pub use raw::RawRunNet;

/// A VM's network interface: its data path, or none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NetMode {
    #[default]
    Tap,
    Vhost,
    None,
}

impl NetMode {
    /// The data path, or `None` for no network.
    pub fn backend(self) -> Option<vmm::NetBackend> {
        match self {
            NetMode::Tap => Some(vmm::NetBackend::Tap),
            NetMode::Vhost => Some(vmm::NetBackend::Vhost),
            NetMode::None => None,
        }
    }
}

/// The VMM's view of an attached VM's interface. vhost-net only where this
/// process can use it; otherwise one line says why and the tap path is
/// taken (the VMM runs as this user on this host, so it could not either).
pub fn vmm_net(n: &VmNet, backend: vmm::NetBackend, report: &dyn Report) -> vmm::NetConfig {
    let backend = match backend {
        vmm::NetBackend::Vhost => match vmm::vhost_net_usable() {
            Ok(()) => backend,
            Err(why) => {
                report.warn(&format!(
                    "vhost-net unavailable ({why}); using the tap path"
                ));
                vmm::NetBackend::Tap
            }
        },
        vmm::NetBackend::Tap => backend,
    };
    vmm::NetConfig {
        tap: n.tap.clone(),
        mac: n.mac.0,
        backend,
    }
}

/// The network plane's state (config, leases, netd): `$MVM_NET_DIR`, else
/// `$MVM_HOME/net`. A host where several users share one bridge (the NixOS
/// module) points every user's mvm at one folder, so there is one DHCP
/// server and one lease table.
pub fn state_dir() -> crate::Result<PathBuf> {
    match std::env::var_os("MVM_NET_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => Ok(state::home()?.join("net")),
    }
}

pub fn config() -> crate::Result<NetConfig> {
    let dir = state_dir()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    NetConfig::load(&dir).map_err(|e| crate::error::err!("{e}"))
}

pub fn uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

/// Attaches the VM: `None` (after saying why) when this host does not let
/// this user create VM networks.
pub fn attach(spec: &VmSpec, report: &dyn Report) -> crate::Result<Option<VmNet>> {
    match attach_id(&spec.id, &spec.name, spec.allow_vm_to_vm, &spec.allow_net)? {
        Ok(n) => Ok(Some(n)),
        Err(e @ (netstack::Error::MissingPrivilege { .. } | netstack::Error::NoBridge(_))) => {
            report.progress(&format!("VM '{}' starts without a network: {e}", spec.name));
            Ok(None)
        }
        Err(e) => Err(crate::error::err!(
            "cannot attach VM '{}' to the network: {e}",
            spec.name
        )),
    }
}

/// Attaches VM `id` for this user.
fn attach_id(
    id: &str,
    name: &str,
    allow_vm_to_vm: bool,
    allow: &[netstack::Cidr],
) -> crate::Result<netstack::Result<VmNet>> {
    let cfg = config()?;
    let vm = netstack::VmSpec {
        id: id.into(),
        name: name.into(),
        allow_vm_to_vm,
        allow: allow.to_vec(),
        owner_uid: uid(),
    };
    Ok(netstack::attach_vm(&cfg, &vm))
}

/// The port forwards of `spec` that the host plane does not have yet.
pub fn sync_forwards(spec: &VmSpec) -> crate::Result<()> {
    let cfg = config()?;
    let have = netstack::list_forwards(&cfg, &spec.id).unwrap_or_default();
    for f in &spec.ports {
        if !have.contains(f) {
            netstack::add_forward(&cfg, &spec.id, f).map_err(|e| crate::error::err!("{e}"))?;
        }
    }
    for f in have.iter().filter(|f| !spec.ports.contains(f)) {
        netstack::remove_forward(&cfg, &spec.id, f).map_err(|e| crate::error::err!("{e}"))?;
    }
    Ok(())
}

pub fn detach(spec: &VmSpec) {
    if let Ok(cfg) = config() {
        if let Err(e) = netstack::detach_vm(&cfg, &spec.id) {
            tracing::debug!("detach {}: {e}", spec.name);
        }
    }
}

pub fn forget(spec: &VmSpec) {
    if let Ok(cfg) = config() {
        let _ = netstack::forget_vm(&cfg, &spec.id);
    }
}

pub fn set_owner(spec: &VmSpec, pid: u32) {
    set_owner_pid(&spec.id, pid);
}

fn set_owner_pid(id: &str, pid: u32) {
    if let Ok(cfg) = config() {
        let _ = netstack::set_owner_pid(&cfg, id, pid);
    }
}

/// The VM's address, if it has a lease.
pub fn ip(spec: &VmSpec) -> Option<String> {
    let cfg = config().ok()?;
    netstack::vm_net(&cfg, &spec.id)
        .ok()
        .map(|n| n.ip.to_string())
}

/// Removes taps and rules left by VMs whose VMM died, and the leases of
/// killed `mvm run --initrd` VMs.
pub fn reconcile() {
    if let Ok(dir) = state_dir() {
        if dir.join("network.json").exists() || dir.join("leases").exists() {
            if let Err(e) = netstack::reconcile(&dir) {
                tracing::debug!("network reconcile: {e}");
            }
            raw::forget_stale();
        }
    }
}

/// What the VMM process needs to serve forwards on the host's loopback.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ProxyPlan {
    pub guest_ip: std::net::Ipv4Addr,
    pub forwards: Vec<PortForward>,
}

pub fn proxy_plan_path(dir: &VmDir) -> PathBuf {
    dir.path.join("net.json")
}

/// Starts the host's DHCP and DNS servers (`mvm _netd`) unless running.
pub fn ensure_daemon() -> crate::Result<()> {
    let dir = state_dir()?;
    let pid_file = dir.join("netd.pid");
    if let Some(pid) = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.split(|&b| b == 0).any(|a| a == b"_netd") {
            return Ok(());
        }
    }
    let child = crate::lifecycle::spawn_detached(&["_netd".as_ref()], &dir.join("netd.log"))
        .context("cannot start the network daemon")?;
    std::fs::write(&pid_file, format!("{}\n", child.id()))?;
    // Give it a moment to bind; a failure shows in netd.log.
    std::thread::sleep(Duration::from_millis(100));
    Ok(())
}

/// The host's DHCP and DNS servers for all VMs (`mvm _netd`), serving
/// until dropped.
pub struct NetDaemon {
    /// The bridge they serve.
    pub bridge: String,
    _dhcp: netstack::DhcpServer,
    _dns: netstack::DnsServer,
}

/// Starts the DHCP and DNS servers and records this process as netd.
pub fn start_daemon() -> crate::Result<NetDaemon> {
    let cfg = config()?;
    let dir = state_dir()?;
    let dhcp = netstack::DhcpServer::start(&cfg.bridge, cfg.dhcp_params(), &dir)
        .map_err(|e| crate::error::err!("DHCP server: {e}"))?;
    let dns = netstack::DnsServer::start(cfg.dns_config(), &dir)
        .map_err(|e| crate::error::err!("DNS server: {e}"))?;
    // Whoever started it (ensure_daemon or a service manager), later mvm
    // runs find it by this file.
    std::fs::write(dir.join("netd.pid"), format!("{}\n", std::process::id()))
        .context("cannot write netd.pid")?;
    Ok(NetDaemon {
        bridge: cfg.bridge.to_string(),
        _dhcp: dhcp,
        _dns: dns,
    })
}
