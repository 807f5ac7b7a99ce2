//! Test harness: network namespaces created per test (unique names, always
//! deleted, also on panic), a way to run code inside one (a thread that
//! `setns`es into it), and the stand-ins for the VMs and "the internet".
//! No packet ever leaves the namespaces the tests create.

#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use netstack::lowlevel::{Nft, NftParams, Rtnl};
use netstack::{NetConfig, VmNet};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Whether the tests can run here (root, `ip netns`, nft).
pub fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("netns tests skipped: not root");
        return false;
    }
    true
}

/// Run a shell command; panic with its output unless it succeeds.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("bash").arg("-c").arg(cmd).output().unwrap();
    if !out.status.success() {
        panic!(
            "command failed: {cmd}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a shell command; (success, stdout + stderr).
pub fn sh_status(cmd: &str) -> (bool, String) {
    let out = Command::new("bash").arg("-c").arg(cmd).output().unwrap();
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

/// A network namespace, deleted on drop.
pub struct Ns {
    pub name: String,
}

impl Ns {
    pub fn new(prefix: &str, tag: &str) -> Ns {
        let name = format!("{prefix}-{tag}");
        let _ = sh_status(&format!("ip netns del {name}"));
        sh(&format!("ip netns add {name}"));
        sh(&format!("ip -n {name} link set lo up"));
        Ns { name }
    }

    /// Run `cmd` inside (via `ip netns exec`).
    pub fn exec(&self, cmd: &str) -> String {
        sh(&format!("ip netns exec {} {cmd}", self.name))
    }

    pub fn exec_status(&self, cmd: &str) -> (bool, String) {
        sh_status(&format!("ip netns exec {} {cmd}", self.name))
    }

    /// Run `f` in a thread inside this namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = sh_status(&format!("ip netns del {}", self.name));
    }
}

fn enter(path: &str) {
    let f = File::open(path).unwrap();
    // SAFETY: setns on a namespace fd we own; affects only this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// A fresh tag for a test's namespaces and state folder.
pub fn tag(test: &str) -> String {
    format!(
        "{test}-{}-{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// The world of one test: a "host" namespace (where netstack runs) with an
/// uplink veth to an "internet" namespace (198.51.100.1 <-> 198.51.100.2,
/// a public address as far as the egress policy goes; default route through
/// it), a state folder, and the config.
pub struct World {
    pub tag: String,
    pub host: Ns,
    pub inet: Ns,
    pub cfg: NetConfig,
    pub vms: Vec<Ns>,
}

pub const HOST_UP: &str = "198.51.100.1";
pub const INET: &str = "198.51.100.2";
/// The host's address on its "LAN" (see [`World::lan`]).
pub const HOST_LAN: &str = "10.1.0.1";
/// A machine on the host's LAN.
pub const LAN: &str = "10.1.0.2";
/// The cloud metadata address, in the internet namespace.
pub const METADATA: &str = "169.254.169.254";

impl World {
    pub fn new(test: &str) -> World {
        let tag = tag(test);
        let host = Ns::new("nsh", &tag);
        let inet = Ns::new("nsi", &tag);
        sh(&format!(
            "ip -n {h} link add up0 type veth peer name up1 netns {i} && \
             ip -n {h} addr add {HOST_UP}/24 dev up0 && ip -n {h} link set up0 up && \
             ip -n {i} addr add {INET}/24 dev up1 && ip -n {i} link set up1 up && \
             ip -n {h} route add default via {INET}",
            h = host.name,
            i = inet.name
        ));
        let dir = std::env::temp_dir().join(format!("netstack-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = NetConfig::new(dir);
        World {
            tag,
            host,
            inet,
            cfg,
            vms: Vec::new(),
        }
    }

    /// A "LAN" namespace on a second host interface `lan0` (the host is
    /// 10.1.0.1/24 there, the LAN machine 10.1.0.2), and the metadata
    /// address 169.254.169.254 in the internet namespace, routed there.
    /// lan0 has a backup default route, so setup counts it as an uplink
    /// (forwarding on) as a host on its LAN would be. Call before setup.
    pub fn lan(&self) -> Ns {
        let lan = Ns::new("nsl", &self.tag);
        sh(&format!(
            "ip -n {h} link add lan0 type veth peer name eth0 netns {l} && \
             ip -n {h} addr add {HOST_LAN}/24 dev lan0 && ip -n {h} link set lan0 up && \
             ip -n {l} addr add {LAN}/24 dev eth0 && ip -n {l} link set eth0 up && \
             ip -n {l} route add default via {HOST_LAN} && \
             ip -n {h} route add default via {LAN} metric 100 && \
             ip -n {i} addr add {METADATA}/32 dev lo && \
             ip -n {h} route add {METADATA}/32 via {INET}",
            h = self.host.name,
            l = lan.name,
            i = self.inet.name
        ));
        lan
    }

    /// A VM stand-in: a namespace whose eth0 (with the VM's MAC) is a veth
    /// whose other end is a port of the bridge, isolated unless `allow`.
    /// With `static_ip`, eth0 gets the lease address and a default route.
    pub fn plug_vm(&mut self, net: &VmNet, allow: bool, static_ip: bool) -> usize {
        let n = self.vms.len();
        let vm = Ns::new(&format!("nsv{n}"), &self.tag);
        let port = format!("vp{n}");
        sh(&format!(
            "ip -n {h} link add {port} type veth peer name eth0 netns {v} && \
             ip -n {v} link set eth0 address {mac} && ip -n {v} link set eth0 up",
            h = self.host.name,
            v = vm.name,
            mac = net.mac
        ));
        let bridge = self.cfg.bridge.clone();
        self.host.run(move || {
            let mut rt = Rtnl::open().unwrap();
            let br = rt.link(&bridge).unwrap().unwrap().index;
            let p = rt.link(&port).unwrap().unwrap().index;
            rt.set_controller(p, br).unwrap();
            rt.set_isolated(p, !allow).unwrap();
            rt.set_up(p).unwrap();
        });
        // Bind the stand-in's port like attach binds the VM's tap.
        let (table, bridge, subnet) = (
            self.cfg.table.clone(),
            self.cfg.bridge.clone(),
            self.cfg.subnet,
        );
        let (id, port, mac, ip) = (
            net.id.clone(),
            format!("vp{n}"),
            net.mac.to_string(),
            net.ip,
        );
        self.host.run(move || {
            Nft::new(NftParams {
                table: &table,
                bridge: &bridge,
                subnet,
            })
            .bind_port(&id, &port, &mac, ip)
            .unwrap();
        });
        if static_ip {
            sh(&format!(
                "ip -n {v} addr add {ip}/{len} dev eth0 && ip -n {v} route add default via {gw}",
                v = vm.name,
                ip = net.ip,
                len = net.subnet.prefix_len(),
                gw = net.gateway()
            ));
        }
        self.vms.push(vm);
        n
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.vms.clear();
        let _ = std::fs::remove_dir_all(&self.cfg.state_dir);
    }
}

/// A TCP server in a namespace that answers each connection with the
/// client's address and closes. Stops when the guard drops.
pub struct TcpEcho {
    stop: Arc<AtomicBool>,
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

pub fn tcp_whoami(ns: &Ns, addr: &str) -> TcpEcho {
    let addr: SocketAddr = addr.parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let l = ns.run(move || TcpListener::bind(addr).unwrap());
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !st.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((mut s, peer)) => {
                    let _ = s.write_all(peer.ip().to_string().as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    TcpEcho { stop }
}

/// Connect from a namespace and read the answer. The deadlines are for a
/// hang, not for timing: a busy machine may take seconds to answer.
pub fn tcp_get(ns: &Ns, addr: &str) -> std::io::Result<String> {
    tcp_probe(ns, addr, Duration::from_secs(20))
}

/// A connection that must not succeed (a dropped SYN waits out the short
/// deadline; a busy machine can only make this pass, never fail).
pub fn tcp_blocked(ns: &Ns, addr: &str) -> std::io::Result<String> {
    tcp_probe(ns, addr, Duration::from_secs(2))
}

fn tcp_probe(ns: &Ns, addr: &str, connect: Duration) -> std::io::Result<String> {
    let addr: SocketAddr = addr.parse().unwrap();
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&addr, connect)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
}

/// `nft list ruleset` and the link names of a namespace (for "as it was").
pub fn snapshot(ns: &Ns) -> (String, String) {
    let rules = ns.exec("nft list ruleset");
    let links = ns.exec("ip -o link show");
    let names: Vec<String> = links
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|s| s.trim().to_string()))
        .collect();
    (rules, names.join(","))
}
