//! Port forwards: the `[ADDRESS:]HOST_PORT:GUEST_PORT[/tcp|/udp]` spec and
//! the userspace proxy that serves connections made on the host itself.
//!
//! Where a forward listens: without an address, on the host's loopback only
//! (127.0.0.1 and ::1), served by the [`PortProxy`] alone: no DNAT, so no
//! other host reaches it. With an address (`0.0.0.0:8080:80`,
//! `192.168.1.5:8080:80`), packets from other hosts to that address (any
//! local address for `0.0.0.0`) are DNATed in nftables prerouting (see
//! `nft`), so the guest sees the real client address and no process sits in
//! the path, and the proxy listens on that address for connections from the
//! host itself, which never pass prerouting. The proxy's socket also holds
//! the port, so no other host process can take it while the forward exists,
//! and trying to bind it is the "port already in use" check. We chose this
//! over `route_localnet` + output DNAT because route_localnet makes the
//! bridge accept 127/8 packets, which lets a hostile guest reach the host's
//! loopback services (the kube-proxy CVE-2020-8558 class), and because the
//! proxy needs no privilege: the unprivileged VMM process can own it.

use std::collections::HashMap;
use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket,
};
use std::os::fd::AsRawFd;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Transport protocol of a forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// "tcp" or "udp".
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One port forward: host port to guest port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortForward {
    /// The host address it listens on; `None`: loopback only.
    pub addr: Option<IpAddr>,
    /// The port on the host (1..=65535).
    pub host_port: u16,
    /// The port in the guest (1..=65535).
    pub guest_port: u16,
    /// tcp (default) or udp.
    pub protocol: Protocol,
}

impl PortForward {
    /// A TCP forward.
    pub fn tcp(host_port: u16, guest_port: u16) -> Self {
        PortForward {
            addr: None,
            host_port,
            guest_port,
            protocol: Protocol::Tcp,
        }
    }

    /// The IPv4 address other hosts reach it on through DNAT: `None` for
    /// loopback-only and IPv6 forwards (the proxy alone serves those),
    /// `0.0.0.0` for every local address.
    pub fn dnat_addr(&self) -> Option<Ipv4Addr> {
        match self.addr? {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(a) if a.is_unspecified() => Some(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => None,
        }
    }

    /// What `mvm port` and `mvm list` show: `127.0.0.1:8080->80/tcp`.
    pub fn describe(&self) -> String {
        format!(
            "{}->{}/{}",
            self.listen(),
            self.guest_port,
            self.protocol.as_str()
        )
    }

    /// Where it listens:
    /// `127.0.0.1:8080`, `0.0.0.0:8080`, `[fd00::1]:8080`.
    pub fn listen(&self) -> String {
        match self.addr {
            None => format!("127.0.0.1:{}", self.host_port),
            Some(a) => SocketAddr::new(a, self.host_port).to_string(),
        }
    }

    /// Whether two forwards claim the same host port.
    pub fn same_host_port(&self, other: &PortForward) -> bool {
        self.host_port == other.host_port && self.protocol == other.protocol
    }
}

impl fmt::Display for PortForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            Some(IpAddr::V6(a)) => write!(f, "[{a}]:")?,
            Some(a) => write!(f, "{a}:")?,
            None => {}
        }
        write!(
            f,
            "{}:{}/{}",
            self.host_port,
            self.guest_port,
            self.protocol.as_str()
        )
    }
}

impl FromStr for PortForward {
    type Err = Error;

    /// `[ADDRESS:]HOST_PORT:GUEST_PORT[/tcp|/udp]`, e.g. `8080:80`,
    /// `5353:53/udp`, `0.0.0.0:8080:80`, `[::1]:8080:80`.
    fn from_str(spec: &str) -> Result<Self> {
        let bad = |reason: String| Error::InvalidPortSpec {
            spec: spec.to_string(),
            reason,
        };
        let (ports, proto) = match spec.split_once('/') {
            Some((p, proto)) => (p, Some(proto)),
            None => (spec, None),
        };
        let protocol = match proto {
            None => Protocol::Tcp,
            Some(p) if p.eq_ignore_ascii_case("tcp") => Protocol::Tcp,
            Some(p) if p.eq_ignore_ascii_case("udp") => Protocol::Udp,
            Some(p) => return Err(bad(format!("protocol {p:?} is neither tcp nor udp"))),
        };
        let usage = || bad("expected [ADDRESS:]HOST_PORT:GUEST_PORT[/tcp|/udp]".into());
        let (addr, ports) = if let Some(rest) = ports.strip_prefix('[') {
            let (a, rest) = rest.split_once("]:").ok_or_else(usage)?;
            let a: std::net::Ipv6Addr = a
                .parse()
                .map_err(|_| bad(format!("{a:?} is not an IPv6 address")))?;
            (Some(IpAddr::V6(a)), rest)
        } else if ports.matches(':').count() == 2 {
            let (a, rest) = ports.split_once(':').ok_or_else(usage)?;
            let a: Ipv4Addr = a.parse().map_err(|_| {
                bad(format!(
                    "{a:?} is not an IPv4 address (IPv6 goes in brackets: [::1]:8080:80)"
                ))
            })?;
            (Some(IpAddr::V4(a)), rest)
        } else if ports.matches(':').count() > 2 {
            return Err(bad("an IPv6 address goes in brackets: [::1]:8080:80".into()));
        } else {
            (None, ports)
        };
        if addr.is_some_and(|a| a.is_multicast()) {
            return Err(bad("a multicast address cannot be listened on".into()));
        }
        let (host, guest) = ports.split_once(':').ok_or_else(usage)?;
        let port = |what: &str, s: &str| -> Result<u16> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(format!("{what} port {s:?} is not a number")));
            }
            match s.parse::<u32>() {
                Ok(n @ 1..=65535) => Ok(n as u16),
                _ => Err(bad(format!("{what} port {s} is out of range 1..=65535"))),
            }
        };
        Ok(PortForward {
            addr,
            host_port: port("host", host)?,
            guest_port: port("guest", guest)?,
            protocol,
        })
    }
}

impl TryFrom<String> for PortForward {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<PortForward> for String {
    fn from(p: PortForward) -> String {
        p.to_string()
    }
}

/// Try to bind the host port the way the proxy will; `PortInUse` if some
/// process holds it.
pub fn check_host_port_free(fwd: &PortForward) -> Result<()> {
    bind_all(fwd).map(drop)
}

enum Bound {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// The sockets of a forward: its address; for `0.0.0.0` and `::`, `[::]`
/// (dual-stack, so IPv4 too) or `0.0.0.0` where the host has no IPv6; by
/// default 127.0.0.1 and ::1 (skipped where the host has no IPv6).
fn bind_all(fwd: &PortForward) -> Result<Vec<Bound>> {
    let port = fwd.host_port;
    let v6_any = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
    let v4_any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
    let (addrs, need_all): (Vec<SocketAddr>, bool) = match fwd.addr {
        None => (
            vec![
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
            ],
            false,
        ),
        Some(a) if a.is_unspecified() => (vec![v6_any, v4_any], false),
        Some(a) => (vec![SocketAddr::new(a, port)], true),
    };
    let any = fwd.addr.is_some_and(|a| a.is_unspecified());
    let mut out = Vec::new();
    let mut last = None;
    for a in addrs {
        let r = match fwd.protocol {
            Protocol::Tcp => TcpListener::bind(a).map(Bound::Tcp),
            Protocol::Udp => UdpSocket::bind(a).map(Bound::Udp),
        };
        match r {
            Ok(b) => {
                out.push(b);
                if any {
                    break; // [::] took IPv4 too
                }
            }
            Err(e) if e.kind() == ErrorKind::AddrInUse => {
                return Err(Error::PortInUse {
                    port,
                    proto: fwd.protocol.as_str(),
                })
            }
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                return Err(Error::MissingPrivilege {
                    what: format!("listening on host port {port}"),
                    cap: "CAP_NET_BIND_SERVICE",
                    how: "use a host port >= 1024, or lower net.ipv4.ip_unprivileged_port_start",
                })
            }
            Err(e) if need_all => {
                return Err(Error::io(format!("listening on {}", fwd.listen()), e));
            }
            // No IPv6 on this host: IPv4 alone.
            Err(e) => last = Some(e),
        }
    }
    if out.is_empty() {
        return Err(Error::io(
            format!("binding host port {port}"),
            last.unwrap_or_else(|| std::io::Error::other("no address")),
        ));
    }
    Ok(out)
}

/// Most concurrent TCP connections (or UDP flows) per forward.
const MAX_CONNS: usize = 256;
/// How often the proxy threads look at their stop flag.
const TICK: Duration = Duration::from_millis(200);
/// A UDP flow with no traffic for this long is dropped.
const UDP_IDLE: Duration = Duration::from_secs(60);

struct Running {
    fwd: PortForward,
    guest: Ipv4Addr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The userspace side of port forwards, owned by a long-lived process (the
/// VMM of the VM, or the CLI in the foreground). Synchronous: one thread per
/// forward plus one (TCP) or one per flow (UDP) per connection, bounded.
/// Dropping it stops every forward.
#[derive(Default)]
pub struct PortProxy {
    running: Mutex<HashMap<(Protocol, u16), Running>>,
}

impl PortProxy {
    /// An empty proxy.
    pub fn new() -> PortProxy {
        PortProxy::default()
    }

    /// Start relaying `fwd.host_port` on the forward's address (loopback by
    /// default) to `guest:fwd.guest_port`.
    pub fn add(&self, fwd: &PortForward, guest: Ipv4Addr) -> Result<()> {
        let mut map = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = map.get(&(fwd.protocol, fwd.host_port)) {
            if r.fwd == *fwd && r.guest == guest {
                return Ok(());
            }
            return Err(Error::DuplicateForward {
                port: fwd.host_port,
                proto: fwd.protocol.as_str(),
                vm: guest.to_string(),
            });
        }
        let bound = bind_all(fwd)?;
        let stop = Arc::new(AtomicBool::new(false));
        let target = SocketAddr::new(IpAddr::V4(guest), fwd.guest_port);
        let mut running = Running {
            fwd: *fwd,
            guest,
            stop: stop.clone(),
            threads: Vec::new(),
        };
        for b in bound {
            let st = stop.clone();
            let spawn = std::thread::Builder::new().name(format!("mvm-proxy-{}", fwd.host_port));
            let thread = match b {
                Bound::Tcp(l) => spawn.spawn(move || tcp_accept_loop(l, target, st)),
                Bound::Udp(s) => spawn.spawn(move || udp_loop(s, target, st)),
            }
            .map_err(|e| Error::io("spawning proxy thread", e))?;
            running.threads.push(thread);
        }
        tracing::info!(%fwd, %guest, "port proxy started");
        map.insert((fwd.protocol, fwd.host_port), running);
        Ok(())
    }

    /// Stop relaying a host port (idempotent).
    pub fn remove(&self, fwd: &PortForward) {
        let r = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(fwd.protocol, fwd.host_port));
        if r.is_some() {
            tracing::info!(%fwd, "port proxy stopped");
        }
        drop(r);
    }

    /// The forwards being relayed.
    pub fn list(&self) -> Vec<PortForward> {
        let mut v: Vec<_> = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|r| r.fwd)
            .collect();
        v.sort();
        v
    }
}

fn wait_readable(fd: i32, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd on the stack, count 1.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
    n > 0
}

fn tcp_accept_loop(l: TcpListener, target: SocketAddr, stop: Arc<AtomicBool>) {
    let conns = Arc::new(AtomicUsize::new(0));
    let mut spare = SpareFd::new();
    while !stop.load(Ordering::SeqCst) {
        if !wait_readable(l.as_raw_fd(), TICK) {
            continue;
        }
        let (client, peer) = match l.accept() {
            Ok(c) => c,
            Err(e) if is_out_of_fds(&e) => {
                // The pending connection would keep the listener readable
                // and this loop spinning: shed it with the spare fd.
                spare.shed(&l);
                continue;
            }
            Err(e) => {
                tracing::debug!("proxy accept: {e}");
                continue;
            }
        };
        if conns.load(Ordering::SeqCst) >= MAX_CONNS {
            tracing::warn!(%peer, "proxy: too many connections, refusing");
            continue;
        }
        conns.fetch_add(1, Ordering::SeqCst);
        let conns2 = conns.clone();
        let r = std::thread::Builder::new()
            .name("mvm-proxy-conn".into())
            .spawn(move || {
                if let Err(e) = tcp_relay(client, target) {
                    tracing::debug!(%peer, "proxy connection: {e}");
                }
                conns2.fetch_sub(1, Ordering::SeqCst);
            });
        if r.is_err() {
            conns.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn is_out_of_fds(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// A descriptor held in reserve: out of descriptors, the accept loop
/// closes it to accept the waiting connection and close it at once (the
/// client sees a reset, not a hang), then takes it again.
struct SpareFd(Option<std::os::unix::net::UnixDatagram>);

impl SpareFd {
    fn new() -> Self {
        Self(std::os::unix::net::UnixDatagram::unbound().ok())
    }

    fn shed(&mut self, l: &TcpListener) {
        self.0 = None;
        match l.accept() {
            Ok((_, peer)) => tracing::warn!(%peer, "proxy: out of file descriptors, refusing"),
            Err(e) => tracing::debug!("proxy accept: {e}"),
        }
        *self = Self::new();
        // Still out (another thread took the spare's slot): do not spin.
        if self.0.is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn tcp_relay(client: TcpStream, target: SocketAddr) -> std::io::Result<()> {
    let upstream = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (c2, u2) = (client.try_clone()?, upstream.try_clone()?);
    let back = std::thread::Builder::new()
        .name("mvm-proxy-back".into())
        .spawn(move || pipe(u2, c2))?;
    pipe(client, upstream);
    let _ = back.join();
    Ok(())
}

/// Copy until EOF or error, then half-close the writer.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    let _ = from.shutdown(Shutdown::Read);
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

struct Flow {
    sock: Arc<UdpSocket>,
    last: Arc<Mutex<Instant>>,
    done: Arc<AtomicBool>,
}

fn udp_loop(sock: UdpSocket, target: SocketAddr, stop: Arc<AtomicBool>) {
    let sock = Arc::new(sock);
    let _ = sock.set_read_timeout(Some(TICK));
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        flows.retain(|_, f| !f.done.load(Ordering::SeqCst));
        let (n, peer) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue,
        };
        if !flows.contains_key(&peer) {
            if flows.len() >= MAX_CONNS {
                continue;
            }
            match udp_flow(sock.clone(), peer, target, stop.clone()) {
                Ok(f) => {
                    flows.insert(peer, f);
                }
                Err(e) => {
                    tracing::debug!(%peer, "proxy udp flow: {e}");
                    continue;
                }
            }
        }
        if let Some(f) = flows.get(&peer) {
            *f.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
            let _ = f.sock.send(&buf[..n]);
        }
    }
    for f in flows.values() {
        f.done.store(true, Ordering::SeqCst);
    }
}

fn udp_flow(
    front: Arc<UdpSocket>,
    peer: SocketAddr,
    target: SocketAddr,
    stop: Arc<AtomicBool>,
) -> std::io::Result<Flow> {
    let up = UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0))?;
    up.connect(target)?;
    up.set_read_timeout(Some(TICK))?;
    let up = Arc::new(up);
    let last = Arc::new(Mutex::new(Instant::now()));
    let done = Arc::new(AtomicBool::new(false));
    let (up2, last2, done2) = (up.clone(), last.clone(), done.clone());
    std::thread::Builder::new()
        .name("mvm-proxy-udp".into())
        .spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::SeqCst) && !done2.load(Ordering::SeqCst) {
                match up2.recv(&mut buf) {
                    Ok(n) => {
                        *last2.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                        let _ = front.send_to(&buf[..n], peer);
                    }
                    Err(_) => {
                        let idle = last2.lock().unwrap_or_else(|p| p.into_inner()).elapsed();
                        if idle > UDP_IDLE {
                            break;
                        }
                    }
                }
            }
            done2.store(true, Ordering::SeqCst);
        })?;
    Ok(Flow {
        sock: up,
        last,
        done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(
            "8080:80".parse::<PortForward>().unwrap(),
            PortForward::tcp(8080, 80)
        );
        let u: PortForward = "5353:53/udp".parse().unwrap();
        assert_eq!(u.protocol, Protocol::Udp);
        assert_eq!(u.to_string(), "5353:53/udp");
        assert_eq!(
            "1:65535/TCP".parse::<PortForward>().unwrap().guest_port,
            65535
        );
    }

    #[test]
    fn addresses_in_specs() {
        let f: PortForward = "8080:80".parse().unwrap();
        assert_eq!((f.addr, f.dnat_addr()), (None, None));
        assert_eq!(f.listen(), "127.0.0.1:8080");
        assert_eq!(f.describe(), "127.0.0.1:8080->80/tcp");
        for (spec, shown, dnat) in [
            ("0.0.0.0:8080:80", "0.0.0.0:8080:80/tcp", Some("0.0.0.0")),
            (
                "192.168.1.5:8080:80/udp",
                "192.168.1.5:8080:80/udp",
                Some("192.168.1.5"),
            ),
            ("[::1]:8080:80", "[::1]:8080:80/tcp", None),
            ("[::]:8080:80", "[::]:8080:80/tcp", Some("0.0.0.0")),
        ] {
            let f: PortForward = spec.parse().unwrap();
            assert_eq!(f.to_string(), shown);
            assert_eq!(shown.parse::<PortForward>().unwrap(), f);
            assert_eq!(f.dnat_addr(), dnat.map(|a| a.parse().unwrap()), "{spec}");
        }
        assert_eq!(
            "192.168.1.5:8080:80"
                .parse::<PortForward>()
                .unwrap()
                .listen(),
            "192.168.1.5:8080"
        );
    }

    #[test]
    fn rejects_with_one_line_naming_the_value() {
        for (spec, needle) in [
            ("8080", "HOST_PORT:GUEST_PORT"),
            ("lan:8080:80", "\"lan\" is not an IPv4 address"),
            ("::1:8080:80", "in brackets"),
            ("[zz]:8080:80", "\"zz\" is not an IPv6 address"),
            ("[::1]8080:80", "HOST_PORT:GUEST_PORT"),
            ("224.0.0.1:8080:80", "multicast"),
            ("1.2.3.4:0:80", "host port 0"),
            ("0:80", "host port 0 is out of range"),
            ("80:65536", "guest port 65536 is out of range"),
            ("80:99999999999", "out of range"),
            ("x:80", "host port \"x\" is not a number"),
            ("80:-1", "not a number"),
            ("80:80/sctp", "protocol \"sctp\""),
            ("80:80/", "protocol \"\""),
            (":80", "not a number"),
            ("+80:80", "not a number"),
        ] {
            let e = spec.parse::<PortForward>().unwrap_err().to_string();
            assert!(e.contains(needle), "{spec}: {e}");
            assert!(e.contains(&format!("{spec:?}")), "{spec}: {e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn proxy_relays_tcp_and_udp_on_loopback() {
        // An echo "guest" on 127.0.0.1.
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let gport = echo.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in echo.incoming().flatten() {
                let mut r = s.try_clone().unwrap();
                let mut w = s;
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut r, &mut w);
                });
            }
        });
        let uecho = UdpSocket::bind("127.0.0.1:0").unwrap();
        let uport = uecho.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut b = [0u8; 1500];
            while let Ok((n, p)) = uecho.recv_from(&mut b) {
                let _ = uecho.send_to(&b[..n], p);
            }
        });
        // Pick free host ports.
        let hp = TcpListener::bind("[::]:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let up = UdpSocket::bind("[::]:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let proxy = PortProxy::new();
        let f = PortForward::tcp(hp, gport);
        proxy.add(&f, Ipv4Addr::LOCALHOST).unwrap();
        proxy.add(&f, Ipv4Addr::LOCALHOST).unwrap(); // idempotent
        assert!(matches!(
            check_host_port_free(&f),
            Err(Error::PortInUse { .. })
        ));
        let mut c = TcpStream::connect(("127.0.0.1", hp)).unwrap();
        c.write_all(b"hello").unwrap();
        let mut got = [0u8; 5];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        let uf = PortForward {
            addr: None,
            host_port: up,
            guest_port: uport,
            protocol: Protocol::Udp,
        };
        proxy.add(&uf, Ipv4Addr::LOCALHOST).unwrap();
        let cl = UdpSocket::bind("127.0.0.1:0").unwrap();
        cl.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        cl.send_to(b"ping", ("127.0.0.1", up)).unwrap();
        let mut b = [0u8; 16];
        let (n, _) = cl.recv_from(&mut b).unwrap();
        assert_eq!(&b[..n], b"ping");
        assert_eq!(proxy.list().len(), 2);
        proxy.remove(&f);
        proxy.remove(&f);
        assert!(check_host_port_free(&f).is_ok());
    }
}
