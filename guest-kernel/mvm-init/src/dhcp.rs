//! DHCPv4 client: DISCOVER / OFFER / REQUEST / ACK, then renewal.
//!
//! Packets are built and parsed with `dhcproto`. The transport is a UDP
//! socket on port 68 bound to the interface (SO_BINDTODEVICE) with
//! SO_BROADCAST: the kernel sends from 0.0.0.0 to 255.255.255.255 before the
//! interface has an address, and the BROADCAST flag asks the server to
//! broadcast its replies, which that socket receives without an address
//! configured. (Servers that ignore the flag would need a raw AF_PACKET
//! socket; ours, netstack's, honors it.)

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use crate::sys::cvt;

pub const CLIENT_PORT: u16 = 68;
pub const SERVER_PORT: u16 = 67;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub hostname: Option<String>,
    pub mtu: Option<u16>,
    pub server: Ipv4Addr,
    pub lease_secs: u32,
    /// T1: when to renew.
    pub renew_secs: u32,
}

/// Sends and receives DHCP packets (a UDP socket, or a fake in tests).
pub trait Transport {
    fn send(&mut self, pkt: &[u8], dest: Ipv4Addr) -> io::Result<()>;
    /// One datagram, or `None` after `timeout`.
    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>>;
}

fn encode(msg: &Message) -> Vec<u8> {
    let mut buf = Vec::with_capacity(576);
    // Encoding into a Vec cannot fail for the options built here.
    let _ = msg.encode(&mut Encoder::new(&mut buf));
    buf
}

const PARAMS: [OptionCode; 8] = [
    OptionCode::SubnetMask,
    OptionCode::Router,
    OptionCode::DomainNameServer,
    OptionCode::DomainName,
    OptionCode::Hostname,
    OptionCode::InterfaceMtu,
    OptionCode::AddressLeaseTime,
    OptionCode::Renewal,
];

fn base(xid: u32, mac: &[u8; 6], ciaddr: Ipv4Addr, t: MessageType) -> Message {
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(xid, ciaddr, z, z, z, mac);
    m.set_opcode(Opcode::BootRequest);
    if ciaddr.is_unspecified() {
        // No address yet: the reply must be broadcast to reach us.
        m.set_flags(Flags::default().set_broadcast());
    }
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(t));
    let mut id = vec![1u8];
    id.extend_from_slice(mac);
    o.insert(DhcpOption::ClientIdentifier(id));
    o.insert(DhcpOption::ParameterRequestList(PARAMS.to_vec()));
    o.insert(DhcpOption::MaxMessageSize(1500));
    m
}

pub fn discover(xid: u32, mac: &[u8; 6]) -> Vec<u8> {
    encode(&base(
        xid,
        mac,
        Ipv4Addr::UNSPECIFIED,
        MessageType::Discover,
    ))
}

/// REQUEST for an offer (SELECTING: server id + requested address).
pub fn request(xid: u32, mac: &[u8; 6], offer: &Lease) -> Vec<u8> {
    let mut m = base(xid, mac, Ipv4Addr::UNSPECIFIED, MessageType::Request);
    m.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(offer.addr));
    m.opts_mut()
        .insert(DhcpOption::ServerIdentifier(offer.server));
    encode(&m)
}

/// REQUEST to extend a lease (RENEWING: ciaddr set, no server id).
pub fn renew_request(xid: u32, mac: &[u8; 6], lease: &Lease) -> Vec<u8> {
    encode(&base(xid, mac, lease.addr, MessageType::Request))
}

/// Parses a server reply meant for us (`xid` and `mac` match).
pub fn parse_reply(pkt: &[u8], xid: u32, mac: &[u8; 6]) -> Option<(MessageType, Lease)> {
    let m = Message::decode(&mut Decoder::new(pkt)).ok()?;
    if m.opcode() != Opcode::BootReply || m.xid() != xid || m.chaddr().get(..6)? != mac {
        return None;
    }
    let o = m.opts();
    let t = o.msg_type()?;
    let mut lease = Lease {
        addr: m.yiaddr(),
        prefix: 24,
        router: None,
        dns: Vec::new(),
        domain: None,
        hostname: None,
        mtu: None,
        server: m.siaddr(),
        lease_secs: 3600,
        renew_secs: 0,
    };
    for (_, opt) in o.iter() {
        match opt {
            DhcpOption::SubnetMask(mask) => lease.prefix = u32::from(*mask).count_ones() as u8,
            DhcpOption::Router(r) => lease.router = r.first().copied(),
            DhcpOption::DomainNameServer(d) => lease.dns = d.clone(),
            DhcpOption::DomainName(d) if !d.is_empty() => lease.domain = Some(d.clone()),
            DhcpOption::Hostname(h) if !h.is_empty() => lease.hostname = Some(h.clone()),
            DhcpOption::InterfaceMtu(m) if *m >= 576 => lease.mtu = Some(*m),
            DhcpOption::ServerIdentifier(s) => lease.server = *s,
            DhcpOption::AddressLeaseTime(t) => lease.lease_secs = *t,
            DhcpOption::Renewal(t) => lease.renew_secs = *t,
            _ => {}
        }
    }
    if lease.renew_secs == 0 || lease.renew_secs > lease.lease_secs {
        lease.renew_secs = lease.lease_secs / 2;
    }
    Some((t, lease))
}

/// Waits for a reply of type `want` to `xid`; a NAK is an error.
fn await_reply<T: Transport>(
    t: &mut T,
    xid: u32,
    mac: &[u8; 6],
    want: MessageType,
    timeout: Duration,
) -> io::Result<Option<Lease>> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 1500];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        let Some(n) = t.recv(&mut buf, deadline - now)? else {
            return Ok(None);
        };
        match parse_reply(&buf[..n], xid, mac) {
            Some((ty, lease)) if ty == want && !lease.addr.is_unspecified() => {
                return Ok(Some(lease))
            }
            Some((MessageType::Nak, _)) => {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "server sent DHCPNAK",
                ))
            }
            // Someone else's transaction, or noise.
            _ => {}
        }
    }
}

/// The whole exchange, with `tries` rounds whose timeouts double from
/// `first_timeout`.
pub fn acquire<T: Transport>(
    t: &mut T,
    mac: &[u8; 6],
    xid: u32,
    tries: u32,
    first_timeout: Duration,
) -> Result<Lease, String> {
    let mut timeout = first_timeout;
    let mut last = String::from("no reply");
    for round in 0..tries {
        let xid = xid.wrapping_add(round);
        let step = (|| -> io::Result<Option<Lease>> {
            t.send(&discover(xid, mac), Ipv4Addr::BROADCAST)?;
            let Some(offer) = await_reply(t, xid, mac, MessageType::Offer, timeout)? else {
                return Ok(None);
            };
            t.send(&request(xid, mac, &offer), Ipv4Addr::BROADCAST)?;
            await_reply(t, xid, mac, MessageType::Ack, timeout)
        })();
        match step {
            Ok(Some(lease)) => return Ok(lease),
            Ok(None) => last = format!("no reply within {}s", timeout.as_secs_f32()),
            Err(e) => last = e.to_string(),
        }
        timeout = timeout.saturating_mul(2);
    }
    Err(format!("DHCP failed after {tries} tries: {last}"))
}

/// Extends `lease` (unicast to its server).
pub fn renew<T: Transport>(
    t: &mut T,
    mac: &[u8; 6],
    xid: u32,
    lease: &Lease,
) -> Result<Lease, String> {
    let r = (|| {
        t.send(&renew_request(xid, mac, lease), lease.server)?;
        await_reply(t, xid, mac, MessageType::Ack, Duration::from_secs(5))
    })();
    match r {
        Ok(Some(l)) => Ok(l),
        Ok(None) => Err("no reply to the renewal".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The real transport.
pub struct UdpTransport {
    sock: UdpSocket,
}

impl UdpTransport {
    pub fn new(iface: &str) -> io::Result<Self> {
        // SAFETY: plain socket(2) call.
        let fd =
            cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: socket succeeded; we own the descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let one: libc::c_int = 1;
        for opt in [libc::SO_REUSEADDR, libc::SO_BROADCAST] {
            // SAFETY: the option value is one int, passed with its size.
            cvt(unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            })?;
        }
        // SAFETY: the option value is the interface name, passed with its
        // length.
        cvt(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                iface.as_ptr().cast(),
                iface.len() as libc::socklen_t,
            )
        })?;
        let sock = UdpSocket::from(fd);
        // std cannot bind an existing socket; do it by hand.
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: CLIENT_PORT.to_be(),
            sin_addr: libc::in_addr { s_addr: 0 },
            sin_zero: [0; 8],
        };
        // SAFETY: addr is a valid sockaddr_in and its size is passed.
        cvt(unsafe {
            libc::bind(
                sock.as_raw_fd(),
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        })?;
        Ok(UdpTransport { sock })
    }
}

impl Transport for UdpTransport {
    fn send(&mut self, pkt: &[u8], dest: Ipv4Addr) -> io::Result<()> {
        self.sock
            .send_to(pkt, SocketAddrV4::new(dest, SERVER_PORT))
            .map(|_| ())
    }

    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        self.sock
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        match self.sock.recv_from(buf) {
            Ok((n, _)) => Ok(Some(n)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A transaction id that differs per boot (time-based is enough: it only
/// has to tell our transaction from others on the segment).
pub fn new_xid(mac: &[u8; 6]) -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() ^ d.as_secs() as u32);
    t ^ u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    type Responder = Box<dyn Fn(&Message) -> Option<Vec<u8>>>;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    /// A scripted server: answers each client packet with the next reply
    /// (built from the client's own xid), and records what it got.
    struct FakeServer {
        replies: VecDeque<Responder>,
        inbox: VecDeque<Vec<u8>>,
        seen: Vec<(Message, Ipv4Addr)>,
    }

    impl Transport for FakeServer {
        fn send(&mut self, pkt: &[u8], dest: Ipv4Addr) -> io::Result<()> {
            let m = Message::decode(&mut Decoder::new(pkt)).unwrap();
            if let Some(f) = self.replies.pop_front() {
                if let Some(r) = f(&m) {
                    self.inbox.push_back(r);
                }
            }
            self.seen.push((m, dest));
            Ok(())
        }
        fn recv(&mut self, buf: &mut [u8], _t: Duration) -> io::Result<Option<usize>> {
            Ok(self.inbox.pop_front().map(|p| {
                buf[..p.len()].copy_from_slice(&p);
                p.len()
            }))
        }
    }

    fn reply(to: &Message, t: MessageType, yiaddr: Ipv4Addr) -> Vec<u8> {
        let z = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(to.xid(), z, yiaddr, z, z, &to.chaddr()[..6]);
        m.set_opcode(Opcode::BootReply);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(t));
        o.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)));
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 2, 2)]));
        o.insert(DhcpOption::DomainNameServer(vec![
            Ipv4Addr::new(10, 0, 2, 3),
            Ipv4Addr::new(10, 0, 2, 4),
        ]));
        o.insert(DhcpOption::AddressLeaseTime(7200));
        o.insert(DhcpOption::Hostname("web".into()));
        o.insert(DhcpOption::DomainName("mvm.internal".into()));
        encode(&m)
    }

    fn offer_ip() -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 2, 15)
    }

    #[test]
    fn full_exchange() {
        let mut s = FakeServer {
            replies: VecDeque::from([
                Box::new(|m: &Message| Some(reply(m, MessageType::Offer, offer_ip()))) as Responder,
                Box::new(|m: &Message| Some(reply(m, MessageType::Ack, offer_ip()))),
            ]),
            inbox: VecDeque::new(),
            seen: Vec::new(),
        };
        let lease = acquire(&mut s, &MAC, 0x1234, 3, Duration::from_millis(10)).unwrap();
        assert_eq!(
            lease,
            Lease {
                addr: offer_ip(),
                prefix: 24,
                router: Some(Ipv4Addr::new(10, 0, 2, 2)),
                dns: vec![Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(10, 0, 2, 4)],
                domain: Some("mvm.internal".into()),
                hostname: Some("web".into()),
                mtu: None,
                server: Ipv4Addr::new(10, 0, 2, 2),
                lease_secs: 7200,
                renew_secs: 3600,
            }
        );
        let (disc, d1) = &s.seen[0];
        assert_eq!(disc.opts().msg_type(), Some(MessageType::Discover));
        assert!(disc.flags().broadcast());
        assert_eq!(*d1, Ipv4Addr::BROADCAST);
        let (req, _) = &s.seen[1];
        assert_eq!(req.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(
            req.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(offer_ip()))
        );
        assert_eq!(
            req.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)))
        );
        assert_eq!(req.xid(), disc.xid());

        // Renewal: unicast to the server, ciaddr set, no broadcast flag.
        s.replies
            .push_back(Box::new(|m| Some(reply(m, MessageType::Ack, offer_ip()))));
        let l2 = renew(&mut s, &MAC, 99, &lease).unwrap();
        assert_eq!(l2.addr, offer_ip());
        let (rn, dest) = &s.seen[2];
        assert_eq!(*dest, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(rn.ciaddr(), offer_ip());
        assert!(!rn.flags().broadcast());
    }

    #[test]
    fn retries_after_silence_and_ignores_strangers() {
        let mut s = FakeServer {
            replies: VecDeque::from([
                // First round: silence.
                Box::new(|_: &Message| None) as Responder,
                // Second round: an offer for another transaction, which must
                // be ignored, so the round times out too.
                Box::new(|m: &Message| {
                    let mut other = m.clone();
                    other.set_xid(m.xid() ^ 1);
                    Some(reply(&other, MessageType::Offer, offer_ip()))
                }),
                Box::new(|m: &Message| Some(reply(m, MessageType::Offer, offer_ip()))),
                Box::new(|m: &Message| Some(reply(m, MessageType::Ack, offer_ip()))),
            ]),
            inbox: VecDeque::new(),
            seen: Vec::new(),
        };
        let lease = acquire(&mut s, &MAC, 7, 3, Duration::from_millis(5)).unwrap();
        assert_eq!(lease.addr, offer_ip());
        assert_eq!(s.seen.len(), 4);
    }

    #[test]
    fn nak_and_give_up() {
        let mut s = FakeServer {
            replies: VecDeque::from([
                Box::new(|m: &Message| Some(reply(m, MessageType::Offer, offer_ip()))) as Responder,
                Box::new(|m: &Message| Some(reply(m, MessageType::Nak, Ipv4Addr::UNSPECIFIED))),
            ]),
            inbox: VecDeque::new(),
            seen: Vec::new(),
        };
        let err = acquire(&mut s, &MAC, 7, 2, Duration::from_millis(5)).unwrap_err();
        assert!(err.contains("DHCP failed after 2 tries"), "{err}");
    }

    /// The real socket (SO_BINDTODEVICE, broadcast, port 68) against a
    /// fake server on port 67, over loopback in a private network namespace
    /// of this thread, when the test runs as root.
    #[test]
    fn udp_transport_in_a_private_netns() {
        std::thread::spawn(|| {
            // SAFETY: unshare affects only this thread's network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                eprintln!("skipped: cannot unshare the network namespace (not root?)");
                return;
            }
            crate::net::set_up("lo").unwrap();
            let server = UdpSocket::bind("0.0.0.0:67").unwrap();
            server.set_broadcast(true).unwrap();
            // Like a real server on its bridge: bound to the link, so the
            // limited broadcast has a way out without a route.
            // SAFETY: the option value is the name, passed with its length.
            let r = unsafe {
                libc::setsockopt(
                    server.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_BINDTODEVICE,
                    b"lo".as_ptr().cast(),
                    2,
                )
            };
            assert_eq!(r, 0);
            server
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            // Threads start in the namespace of the thread that creates them.
            let srv = std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                for t in [MessageType::Offer, MessageType::Ack] {
                    let (n, from) = server.recv_from(&mut buf).unwrap();
                    assert_eq!(from.port(), CLIENT_PORT);
                    let m = Message::decode(&mut Decoder::new(&buf[..n])).unwrap();
                    let r = reply(&m, t, offer_ip());
                    server
                        .send_to(&r, SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT))
                        .unwrap();
                }
            });
            let mut t = UdpTransport::new("lo").unwrap();
            let lease = acquire(&mut t, &MAC, 42, 3, Duration::from_secs(2)).unwrap();
            assert_eq!(lease.addr, offer_ip());
            assert_eq!(lease.server, Ipv4Addr::new(10, 0, 2, 2));
            srv.join().unwrap();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn garbage_is_not_a_reply() {
        assert!(parse_reply(b"", 1, &MAC).is_none());
        assert!(parse_reply(&[0xff; 300], 1, &MAC).is_none());
        // Our own request is not a reply.
        assert!(parse_reply(&discover(1, &MAC), 1, &MAC).is_none());
    }
}
