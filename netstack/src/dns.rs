//! The DNS forwarder on the gateway address (UDP and TCP 53): `<vm>.mvm` A
//! queries are answered from the VM registry (NXDOMAIN for unknown names
//! under `.mvm`), everything else is forwarded to the host's resolvers.
//! Malformed queries get FORMERR when they have a header to answer, and are
//! dropped otherwise. Wire format: `hickory-proto`.
//!
//! [`handle_query`] is the decision as a pure function (the fuzz target);
//! [`DnsServer`] is the sockets, the upstream forwarding (timeouts, a bound
//! on queries in flight) around it.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::error::{Error, Result};
use crate::lease::Registry;

/// What to do with a query.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this answer back.
    Reply(Vec<u8>),
    /// Forward the query, as received, to the upstream resolvers.
    Forward,
    /// Say nothing.
    Drop,
}

/// TTL of `.mvm` answers: short, addresses follow VM restarts.
pub const LOCAL_TTL: u32 = 5;

/// Decide on one query (UDP payload or TCP message without its length).
pub fn handle_query(domain: &Name, reg: &Registry, bytes: &[u8]) -> Action {
    if bytes.len() < 12 {
        return Action::Drop;
    }
    // Never answer a response (no loops, no reflection).
    if bytes[2] & 0x80 != 0 {
        return Action::Drop;
    }
    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
    let msg = match Message::from_vec(bytes) {
        Ok(m) => m,
        Err(_) => return error_reply(id, OpCode::Query, ResponseCode::FormErr, None),
    };
    if msg.metadata.op_code != OpCode::Query {
        return error_reply(id, msg.metadata.op_code, ResponseCode::NotImp, None);
    }
    if msg.queries.len() != 1 {
        return error_reply(id, OpCode::Query, ResponseCode::FormErr, None);
    }
    let q = &msg.queries[0];
    let name = q.name().to_lowercase();
    let mut fqdn = name.clone();
    fqdn.set_fqdn(true);
    if !domain.zone_of(&fqdn) {
        return Action::Forward;
    }
    let mut resp = Message::response(id, OpCode::Query);
    resp.metadata.authoritative = true;
    resp.metadata.recursion_desired = msg.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.add_query(q.clone());
    let labels = fqdn.num_labels().saturating_sub(domain.num_labels());
    let vm = if labels == 1 {
        fqdn.iter()
            .next()
            .and_then(|l| std::str::from_utf8(l).ok())
            .and_then(|l| reg.by_name(l))
    } else {
        None
    };
    match (labels, vm) {
        (0, _) => {} // the domain itself: NOERROR, no data
        (1, Some(ip)) => {
            if q.query_type() == RecordType::A {
                resp.add_answer(Record::from_rdata(
                    q.name().clone(),
                    LOCAL_TTL,
                    RData::A(A(ip)),
                ));
            }
            // Other types of a known name: NOERROR, no data.
        }
        _ => resp.metadata.response_code = ResponseCode::NXDomain,
    }
    match resp.to_vec() {
        Ok(b) => Action::Reply(b),
        Err(_) => error_reply(id, OpCode::Query, ResponseCode::ServFail, None),
    }
}

fn error_reply(id: u16, op: OpCode, code: ResponseCode, q: Option<Query>) -> Action {
    let mut m = Message::error_msg(id, op, code);
    if let Some(q) = q {
        m.add_query(q);
    }
    match m.to_vec() {
        Ok(b) => Action::Reply(b),
        Err(_) => Action::Drop,
    }
}

/// The forwarder's settings.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Address to listen on (the gateway).
    pub listen: Ipv4Addr,
    /// Port (53).
    pub port: u16,
    /// Upstream resolvers, tried in order (the last one that answered first).
    pub upstreams: Vec<SocketAddr>,
    /// The local domain (`mvm`).
    pub domain: String,
    /// Per-upstream timeout.
    pub timeout: Duration,
    /// Most forwarded queries in flight; more are dropped (clients retry).
    pub max_inflight: usize,
}

impl DnsConfig {
    /// Listen on `listen:53`, forward to the resolvers of `resolv_conf`
    /// (usually `/etc/resolv.conf`).
    pub fn new(listen: Ipv4Addr, resolv_conf: &Path) -> DnsConfig {
        let mut upstreams = upstreams_from_resolv_conf(resolv_conf);
        upstreams.retain(|u| u.ip() != IpAddr::V4(listen));
        DnsConfig {
            listen,
            port: 53,
            upstreams,
            domain: "mvm".into(),
            timeout: Duration::from_secs(2),
            max_inflight: 64,
        }
    }
}

/// The `nameserver` lines of a resolv.conf, as port-53 addresses. Loopback
/// stubs (127.0.0.53 and the like) are kept: the forwarder runs on the host,
/// where they are reachable; if one is not, its timeout moves the forwarder
/// on to the next resolver, which is then tried first.
pub fn upstreams_from_resolv_conf(path: &Path) -> Vec<SocketAddr> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "nameserver").then_some(())?;
            let ip: IpAddr = w.next()?.split('%').next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// A running forwarder (UDP and TCP threads). Stops when dropped.
pub struct DnsServer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    addr: SocketAddr,
}

struct Shared {
    cfg: DnsConfig,
    domain: Name,
    reg: Mutex<Registry>,
    inflight: AtomicUsize,
    tcp_conns: AtomicUsize,
    preferred: AtomicUsize,
    stop: Arc<AtomicBool>,
}

impl DnsServer {
    /// Bind `cfg.listen:cfg.port` (UDP and TCP) and serve, reading VM names
    /// from the leases in `state_dir`.
    pub fn start(cfg: DnsConfig, state_dir: &Path) -> Result<DnsServer> {
        let addr = SocketAddr::V4(SocketAddrV4::new(cfg.listen, cfg.port));
        let perm = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                Error::MissingPrivilege {
                    what: format!("binding DNS on {addr}"),
                    cap: "CAP_NET_BIND_SERVICE",
                    how:
                        "run the network services as root (or give the binary cap_net_bind_service)",
                }
            } else {
                Error::io(format!("binding DNS on {addr}"), e)
            }
        };
        let udp = UdpSocket::bind(addr).map_err(perm)?;
        let tcp = TcpListener::bind(addr).map_err(perm)?;
        let addr = udp
            .local_addr()
            .map_err(|e| Error::io("dns local addr", e))?;
        udp.set_read_timeout(Some(Duration::from_millis(250)))
            .map_err(|e| Error::io("dns socket", e))?;
        let domain = Name::from_ascii(format!("{}.", cfg.domain))
            .map_err(|e| Error::io("dns domain", std::io::Error::other(e.to_string())))?;
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            cfg,
            domain,
            reg: Mutex::new(Registry::new(state_dir)),
            inflight: AtomicUsize::new(0),
            tcp_conns: AtomicUsize::new(0),
            preferred: AtomicUsize::new(0),
            stop: stop.clone(),
        });
        let udp = Arc::new(udp);
        let (s1, s2) = (shared.clone(), shared);
        let t1 = std::thread::Builder::new()
            .name("mvm-dns-udp".into())
            .spawn(move || udp_loop(udp, s1))
            .map_err(|e| Error::io("spawning dns thread", e))?;
        let t2 = std::thread::Builder::new()
            .name("mvm-dns-tcp".into())
            .spawn(move || tcp_loop(tcp, s2))
            .map_err(|e| Error::io("spawning dns thread", e))?;
        tracing::info!(%addr, "dns forwarder started");
        Ok(DnsServer {
            stop,
            threads: vec![t1, t2],
            addr,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop and wait for the threads.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Shared {
    fn decide(&self, q: &[u8]) -> Action {
        let mut reg = self.reg.lock().unwrap_or_else(|p| p.into_inner());
        reg.refresh();
        handle_query(&self.domain, &reg, q)
    }

    /// Take an in-flight slot, or None when at the bound.
    fn slot(self: &Arc<Self>) -> Option<Slot> {
        let n = self.inflight.fetch_add(1, Ordering::SeqCst);
        if n >= self.cfg.max_inflight {
            self.inflight.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Slot(self.clone()))
    }

    /// Ask the upstreams in turn; the raw answer of the first that gives a
    /// matching one.
    fn forward(&self, q: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let ups = &self.cfg.upstreams;
        if ups.is_empty() {
            return None;
        }
        let start = self.preferred.load(Ordering::Relaxed) % ups.len();
        for i in 0..ups.len() {
            let idx = (start + i) % ups.len();
            let r = if tcp {
                forward_tcp(ups[idx], q, self.cfg.timeout)
            } else {
                forward_udp(ups[idx], q, self.cfg.timeout)
            };
            match r {
                Ok(a) if a.len() >= 12 && a[..2] == q[..2] && a[2] & 0x80 != 0 => {
                    self.preferred.store(idx, Ordering::Relaxed);
                    return Some(a);
                }
                Ok(_) => tracing::debug!(upstream = %ups[idx], "dns: mismatched answer"),
                Err(e) => tracing::debug!(upstream = %ups[idx], "dns: {e}"),
            }
        }
        None
    }
}

struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn servfail(q: &[u8]) -> Option<Vec<u8>> {
    let id = u16::from_be_bytes([q[0], q[1]]);
    let mut m = Message::error_msg(id, OpCode::Query, ResponseCode::ServFail);
    if let Ok(orig) = Message::from_vec(q) {
        for x in orig.queries {
            m.add_query(x);
        }
    }
    m.metadata.message_type = MessageType::Response;
    m.to_vec().ok()
}

fn forward_udp(up: SocketAddr, q: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = match up {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = UdpSocket::bind(bind)?;
    s.connect(up)?;
    s.set_read_timeout(Some(timeout))?;
    s.send(q)?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = s.recv(&mut buf)?;
        if n >= 2 && buf[..2] == q[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

fn forward_tcp(up: SocketAddr, q: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&up, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write_framed(&mut s, q)?;
    read_framed(&mut s)
}

fn write_framed(s: &mut TcpStream, m: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(m.len()).map_err(|_| std::io::Error::other("message too long"))?;
    let mut out = Vec::with_capacity(m.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(m);
    s.write_all(&out)
}

fn read_framed(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut l = [0u8; 2];
    s.read_exact(&mut l)?;
    let mut m = vec![0u8; usize::from(u16::from_be_bytes(l))];
    s.read_exact(&mut m)?;
    Ok(m)
}

fn udp_loop(sock: Arc<UdpSocket>, sh: Arc<Shared>) {
    let mut buf = vec![0u8; 4096];
    while !sh.stop.load(Ordering::SeqCst) {
        let (n, peer) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue,
        };
        let q = &buf[..n];
        match sh.decide(q) {
            Action::Drop => {}
            Action::Reply(r) => {
                let _ = sock.send_to(&r, peer);
            }
            Action::Forward => {
                let Some(slot) = sh.slot() else {
                    tracing::debug!("dns: too many queries in flight, dropping one");
                    continue;
                };
                let q = q.to_vec();
                let sock = sock.clone();
                let r = std::thread::Builder::new()
                    .name("mvm-dns-fwd".into())
                    .spawn(move || {
                        let sh = slot.0.clone();
                        if let Some(a) = sh.forward(&q, false).or_else(|| servfail(&q)) {
                            let _ = sock.send_to(&a, peer);
                        }
                        drop(slot);
                    });
                if let Err(e) = r {
                    tracing::warn!("dns: cannot spawn forwarder: {e}");
                }
            }
        }
    }
}

fn tcp_loop(l: TcpListener, sh: Arc<Shared>) {
    while !sh.stop.load(Ordering::SeqCst) {
        let mut pfd = libc::pollfd {
            fd: l.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd on the stack, count 1.
        if unsafe { libc::poll(&mut pfd, 1, 250) } <= 0 {
            continue;
        }
        let Ok((s, _)) = l.accept() else { continue };
        // TCP connections have their own, smaller bound, so slow TCP
        // clients cannot starve UDP forwarding.
        let max_tcp = (sh.cfg.max_inflight / 4).max(1);
        if sh.tcp_conns.fetch_add(1, Ordering::SeqCst) >= max_tcp {
            sh.tcp_conns.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let sh2 = sh.clone();
        let r = std::thread::Builder::new()
            .name("mvm-dns-tcp-conn".into())
            .spawn(move || {
                let _ = tcp_conn(s, &sh2);
                sh2.tcp_conns.fetch_sub(1, Ordering::SeqCst);
            });
        if r.is_err() {
            sh.tcp_conns.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn tcp_conn(mut s: TcpStream, sh: &Arc<Shared>) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    // A few queries per connection at most (pipelining), then close.
    for _ in 0..16 {
        if sh.stop.load(Ordering::SeqCst) {
            break;
        }
        let q = read_framed(&mut s)?;
        let answer = match sh.decide(&q) {
            Action::Drop => return Ok(()),
            Action::Reply(r) => r,
            Action::Forward => {
                let answer = match sh.slot() {
                    Some(_slot) => sh.forward(&q, true).or_else(|| sh.forward(&q, false)),
                    None => None,
                };
                match answer.or_else(|| servfail(&q)) {
                    Some(a) => a,
                    None => return Ok(()),
                }
            }
        };
        write_framed(&mut s, &answer)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::MacAddr;

    fn reg() -> Registry {
        Registry::fixed(&[
            (
                MacAddr::for_vm("web"),
                Ipv4Addr::new(10, 77, 0, 2),
                "web",
                true,
            ),
            (
                MacAddr::for_vm("off"),
                Ipv4Addr::new(10, 77, 0, 3),
                "off",
                false,
            ),
        ])
    }

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 77;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    fn answer(a: Action) -> Message {
        match a {
            Action::Reply(b) => Message::from_vec(&b).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn local_names() {
        let d = Name::from_ascii("mvm.").unwrap();
        let r = answer(handle_query(&d, &reg(), &query("WEB.mvm.", RecordType::A)));
        assert_eq!(r.metadata.id, 77);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].data, RData::A(A(Ipv4Addr::new(10, 77, 0, 2))));
        let r = answer(handle_query(
            &d,
            &reg(),
            &query("web.mvm", RecordType::AAAA),
        ));
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.answers.is_empty());
        for n in ["nope.mvm.", "off.mvm.", "a.web.mvm."] {
            let r = answer(handle_query(&d, &reg(), &query(n, RecordType::A)));
            assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{n}");
        }
        assert_eq!(
            handle_query(&d, &reg(), &query("example.com.", RecordType::A)),
            Action::Forward
        );
        assert_eq!(
            handle_query(&d, &reg(), &query("notmvm.", RecordType::A)),
            Action::Forward
        );
    }

    #[test]
    fn malformed() {
        let d = Name::from_ascii("mvm.").unwrap();
        assert_eq!(handle_query(&d, &reg(), b"short"), Action::Drop);
        let mut q = query("web.mvm.", RecordType::A);
        q.truncate(q.len() - 3);
        let r = answer(handle_query(&d, &reg(), &q));
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(r.metadata.id, 77);
        // A response is never answered.
        let mut resp = query("web.mvm.", RecordType::A);
        resp[2] |= 0x80;
        assert_eq!(handle_query(&d, &reg(), &resp), Action::Drop);
        // Two questions: FORMERR.
        let mut m = Message::query();
        m.add_query(Query::query(
            Name::from_ascii("a.mvm.").unwrap(),
            RecordType::A,
        ));
        m.add_query(Query::query(
            Name::from_ascii("b.mvm.").unwrap(),
            RecordType::A,
        ));
        let r = answer(handle_query(&d, &reg(), &m.to_vec().unwrap()));
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    }

    #[test]
    fn resolv_conf() {
        let p = std::env::temp_dir().join(format!("netstack-resolv-{}", std::process::id()));
        std::fs::write(&p, "# x\nnameserver 127.0.0.53\nsearch lan\nnameserver fe80::1%eth0\nnameserver 10.77.0.1\n").unwrap();
        let c = DnsConfig::new(Ipv4Addr::new(10, 77, 0, 1), &p);
        assert_eq!(c.upstreams.len(), 2);
        assert_eq!(c.upstreams[0], "127.0.0.53:53".parse().unwrap());
        std::fs::remove_file(p).unwrap();
    }
}
