//! The DHCP server on the bridge: it answers only the MACs of known VMs
//! (their leases in the state folder) with their fixed address, and ignores
//! everything else, malformed packets included.
//!
//! [`handle_packet`] is the whole protocol as a pure function (the fuzz
//! target); [`DhcpServer`] is the socket around it.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};

use crate::addr::{MacAddr, Subnet};
use crate::error::{Error, Result};
use crate::lease::Registry;

/// What the server hands out besides the address.
#[derive(Clone, Debug)]
pub struct DhcpParams {
    /// The subnet (its gateway is the router, DNS server and server id).
    pub subnet: Subnet,
    /// Lease time in seconds.
    pub lease_secs: u32,
    /// DNS domain for the guests (`mvm`).
    pub domain: String,
}

/// Where a reply goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    /// 255.255.255.255:68 on the bridge.
    Broadcast,
    /// The client's configured address.
    Unicast(Ipv4Addr),
    /// The address being handed out, not configured yet: needs an ARP entry
    /// (`mac`) before unicasting, else broadcast.
    NewLease(Ipv4Addr, MacAddr),
}

/// A reply to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The encoded DHCP message.
    pub bytes: Vec<u8>,
    /// Where to.
    pub dest: Dest,
    /// The message type (for logs and tests).
    pub kind: MessageType,
}

/// Handle one packet received on port 67. `None`: ignore it (malformed, not
/// a request, unknown MAC, relayed, for another server, or needing no
/// answer).
pub fn handle_packet(p: &DhcpParams, reg: &Registry, packet: &[u8]) -> Option<Reply> {
    if !options_sane(packet) {
        return None;
    }
    let req = Message::from_bytes(packet).ok()?;
    if req.opcode() != Opcode::BootRequest || req.htype() != HType::Eth || req.hlen() != 6 {
        return None;
    }
    if !req.giaddr().is_unspecified() {
        return None; // no relays on our bridge
    }
    let chaddr = req.chaddr();
    let mac = MacAddr([
        chaddr[0], chaddr[1], chaddr[2], chaddr[3], chaddr[4], chaddr[5],
    ]);
    let msg_type = req.opts().msg_type()?;
    let Some((ip, hostname)) = reg.by_mac(&mac) else {
        tracing::debug!(%mac, ?msg_type, "dhcp: unknown MAC, ignored");
        return None;
    };
    let server = p.subnet.gateway();
    let requested = match req.opts().get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(a)) => Some(*a),
        _ => None,
    };
    let server_id = match req.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(a)) => Some(*a),
        _ => None,
    };
    let ciaddr = req.ciaddr();
    let kind = match msg_type {
        MessageType::Discover => MessageType::Offer,
        MessageType::Request => {
            if let Some(sid) = server_id {
                if sid != server {
                    return None; // the client chose another server
                }
            }
            let wanted = requested.or((!ciaddr.is_unspecified()).then_some(ciaddr));
            match wanted {
                Some(w) if w == ip => MessageType::Ack,
                Some(_) => MessageType::Nak,
                None => return None,
            }
        }
        MessageType::Inform => MessageType::Ack,
        MessageType::Release => {
            tracing::debug!(%mac, %ip, "dhcp: release (the address stays reserved)");
            return None;
        }
        MessageType::Decline => {
            tracing::warn!(%mac, %ip, "dhcp: client declined its address (in use by someone else?)");
            return None;
        }
        _ => return None,
    };
    let inform = msg_type == MessageType::Inform;
    if inform && ciaddr.is_unspecified() {
        return None;
    }
    let yiaddr = if kind == MessageType::Nak || inform {
        Ipv4Addr::UNSPECIFIED
    } else {
        ip
    };
    let mut rep = Message::new_with_id(
        req.xid(),
        if inform {
            ciaddr
        } else {
            Ipv4Addr::UNSPECIFIED
        },
        yiaddr,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac.octets(),
    );
    rep.set_opcode(Opcode::BootReply);
    rep.set_htype(HType::Eth);
    rep.set_flags(req.flags());
    let o = rep.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    o.insert(DhcpOption::ServerIdentifier(server));
    if kind == MessageType::Nak {
        o.insert(DhcpOption::Message(
            "requested address is not this VM's".into(),
        ));
    } else {
        o.insert(DhcpOption::SubnetMask(p.subnet.netmask()));
        o.insert(DhcpOption::BroadcastAddr(p.subnet.broadcast()));
        o.insert(DhcpOption::Router(vec![server]));
        o.insert(DhcpOption::DomainNameServer(vec![server]));
        o.insert(DhcpOption::DomainName(p.domain.clone()));
        o.insert(DhcpOption::Hostname(hostname.to_string()));
        if !inform {
            o.insert(DhcpOption::AddressLeaseTime(p.lease_secs));
            o.insert(DhcpOption::Renewal(p.lease_secs / 2));
            o.insert(DhcpOption::Rebinding(p.lease_secs / 8 * 7));
        }
    }
    let bytes = rep.to_vec().ok()?;
    let dest = if kind == MessageType::Nak || req.flags().broadcast() {
        Dest::Broadcast
    } else if !ciaddr.is_unspecified() {
        Dest::Unicast(ciaddr)
    } else {
        Dest::NewLease(ip, mac)
    };
    tracing::debug!(%mac, %ip, ?msg_type, reply = ?kind, "dhcp");
    Some(Reply { bytes, dest, kind })
}

/// Options whose decoding in dhcproto 0.15 assumes a length (it asserts
/// it in debug builds, or subtracts from it): (code, min, max). Found by
/// fuzzing; packets that break these are dropped before decoding.
const CHECKED_OPTIONS: &[(u8, usize, usize)] = &[
    (80, 0, 0),    // rapid commit
    (81, 3, 255),  // client FQDN
    (94, 3, 3),    // client network interface
    (151, 1, 255), // bulk lease query status code
    (152, 4, 4),   // bulk lease query times
    (153, 4, 4),
    (154, 4, 4),
    (155, 4, 4),
];

/// Walk the options area (after the 236-byte header and the magic cookie):
/// every option must fit in the packet, and the options of
/// [`CHECKED_OPTIONS`] must appear once at most, with a length in range.
/// Repeated options are concatenated by the decoder (RFC 3396), which is
/// why a repeat of a checked option is refused.
fn options_sane(packet: &[u8]) -> bool {
    let Some(mut opts) = packet.get(240..) else {
        return true; // too short: the decoder rejects it
    };
    let mut seen = [false; 256];
    while let Some((&code, rest)) = opts.split_first() {
        match code {
            0 => opts = rest,
            255 => break,
            _ => {
                let Some((&len, rest)) = rest.split_first() else {
                    return false;
                };
                let len = usize::from(len);
                if rest.len() < len {
                    return false;
                }
                if let Some(&(_, min, max)) = CHECKED_OPTIONS.iter().find(|c| c.0 == code) {
                    if seen[usize::from(code)] || len < min || len > max {
                        return false;
                    }
                }
                seen[usize::from(code)] = true;
                opts = &rest[len..];
            }
        }
    }
    true
}

/// A running DHCP server (one thread). Stops when dropped.
pub struct DhcpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DhcpServer {
    /// Bind UDP 67 on `bridge` (SO_BINDTODEVICE) and serve the VMs whose
    /// leases are in `state_dir`. Needs CAP_NET_BIND_SERVICE (port 67) and,
    /// to unicast offers, CAP_NET_ADMIN (ARP entries); without it replies
    /// are broadcast.
    pub fn start(bridge: &str, params: DhcpParams, state_dir: &Path) -> Result<DhcpServer> {
        let sock = bind_device_udp(bridge, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 67), true)?;
        sock.set_read_timeout(Some(Duration::from_millis(250)))
            .map_err(|e| Error::io("dhcp socket timeout", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let bridge = bridge.to_string();
        let state_dir = state_dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("mvm-dhcp".into())
            .spawn(move || serve(sock, &bridge, params, Registry::new(&state_dir), st))
            .map_err(|e| Error::io("spawning dhcp thread", e))?;
        tracing::info!("dhcp server started");
        Ok(DhcpServer {
            stop,
            thread: Some(thread),
        })
    }

    /// Stop and wait for the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DhcpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve(sock: UdpSocket, bridge: &str, p: DhcpParams, mut reg: Registry, stop: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 1500];
    while !stop.load(Ordering::SeqCst) {
        let n = match sock.recv_from(&mut buf) {
            Ok((n, _)) => n,
            Err(_) => continue,
        };
        reg.refresh();
        let Some(rep) = handle_packet(&p, &reg, &buf[..n]) else {
            continue;
        };
        let bcast = SocketAddr::from((Ipv4Addr::BROADCAST, 68));
        let to = match rep.dest {
            Dest::Broadcast => bcast,
            Dest::Unicast(ip) => SocketAddr::from((ip, 68)),
            Dest::NewLease(ip, mac) => match set_arp(&sock, bridge, ip, mac) {
                Ok(()) => SocketAddr::from((ip, 68)),
                Err(_) => bcast,
            },
        };
        if let Err(e) = sock.send_to(&rep.bytes, to) {
            tracing::debug!("dhcp send to {to}: {e}");
        }
    }
}

/// A UDP socket bound to `addr` on device `dev` only, with SO_REUSEADDR (so
/// it coexists with other servers bound to other devices).
pub(crate) fn bind_device_udp(dev: &str, addr: SocketAddrV4, broadcast: bool) -> Result<UdpSocket> {
    // SAFETY: plain socket(2) call; the fd is checked and then owned by the
    // UdpSocket below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::io("socket", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh socket we own; UdpSocket closes it on drop.
    let sock = unsafe { UdpSocket::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    let setopt = |level, name, val: *const libc::c_void, len: usize, what: &str| -> Result<()> {
        // SAFETY: `val` points to `len` readable bytes that outlive the call.
        let rc = unsafe { libc::setsockopt(fd, level, name, val, len as libc::socklen_t) };
        if rc < 0 {
            return Err(Error::io(what.to_string(), std::io::Error::last_os_error()));
        }
        Ok(())
    };
    let onep = &one as *const libc::c_int as *const libc::c_void;
    let isz = std::mem::size_of::<libc::c_int>();
    setopt(
        libc::SOL_SOCKET,
        libc::SO_REUSEADDR,
        onep,
        isz,
        "SO_REUSEADDR",
    )?;
    if broadcast {
        setopt(
            libc::SOL_SOCKET,
            libc::SO_BROADCAST,
            onep,
            isz,
            "SO_BROADCAST",
        )?;
    }
    setopt(
        libc::SOL_SOCKET,
        libc::SO_BINDTODEVICE,
        dev.as_ptr() as *const libc::c_void,
        dev.len(),
        &format!("SO_BINDTODEVICE {dev}"),
    )?;
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `sa` is a valid sockaddr_in of the given size.
    let rc = unsafe {
        libc::bind(
            fd,
            &sa as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            return Err(Error::MissingPrivilege {
                what: format!("binding {addr} on {dev}"),
                cap: "CAP_NET_BIND_SERVICE",
                how: "run the network services as root (or give the binary cap_net_bind_service)",
            });
        }
        return Err(Error::io(format!("binding {addr} on {dev}"), e));
    }
    Ok(sock)
}

#[repr(C)]
struct ArpReq {
    arp_pa: libc::sockaddr,
    arp_ha: libc::sockaddr,
    arp_flags: libc::c_int,
    arp_netmask: libc::sockaddr,
    arp_dev: [u8; 16],
}

const SIOCSARP: libc::c_ulong = 0x8955;
const ATF_COM: libc::c_int = 0x02;

/// Install a neighbour entry so a unicast reply can reach a client that has
/// no address yet (what dnsmasq does). Needs CAP_NET_ADMIN.
fn set_arp(sock: &UdpSocket, dev: &str, ip: Ipv4Addr, mac: MacAddr) -> std::io::Result<()> {
    // SAFETY: all-zero is a valid bit pattern for this plain C struct.
    let mut req: ArpReq = unsafe { std::mem::zeroed() };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes); we
    // copy the bytes of one into the other.
    req.arp_pa = unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) };
    req.arp_ha.sa_family = libc::ARPHRD_ETHER;
    for (d, s) in req.arp_ha.sa_data.iter_mut().zip(mac.octets()) {
        *d = s as libc::c_char;
    }
    req.arp_flags = ATF_COM;
    let n = dev.len().min(15);
    req.arp_dev[..n].copy_from_slice(&dev.as_bytes()[..n]);
    // SAFETY: SIOCSARP reads a `struct arpreq`, which ArpReq mirrors; it
    // lives across the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCSARP as _, &req as *const ArpReq) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::Flags;

    fn params() -> DhcpParams {
        DhcpParams {
            subnet: Subnet::default(),
            lease_secs: 3600,
            domain: "mvm".into(),
        }
    }

    fn reg() -> Registry {
        Registry::fixed(&[(
            MacAddr::for_vm("web"),
            Ipv4Addr::new(10, 77, 0, 2),
            "web",
            true,
        )])
    }

    fn request(
        kind: MessageType,
        mac: MacAddr,
        opts: Vec<DhcpOption>,
        ciaddr: Ipv4Addr,
    ) -> Vec<u8> {
        let mut m = Message::new_with_id(
            0x1234,
            ciaddr,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &mac.octets(),
        );
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        for o in opts {
            m.opts_mut().insert(o);
        }
        m.to_vec().unwrap()
    }

    fn decode(r: &Reply) -> Message {
        Message::from_bytes(&r.bytes).unwrap()
    }

    #[test]
    fn discover_request_ack() {
        let mac = MacAddr::for_vm("web");
        let off = handle_packet(
            &params(),
            &reg(),
            &request(MessageType::Discover, mac, vec![], Ipv4Addr::UNSPECIFIED),
        )
        .unwrap();
        assert_eq!(off.kind, MessageType::Offer);
        assert_eq!(off.dest, Dest::NewLease(Ipv4Addr::new(10, 77, 0, 2), mac));
        let m = decode(&off);
        assert_eq!(m.yiaddr(), Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!(m.xid(), 0x1234);
        assert!(
            matches!(m.opts().get(OptionCode::Hostname), Some(DhcpOption::Hostname(h)) if h == "web")
        );
        assert!(
            matches!(m.opts().get(OptionCode::Router), Some(DhcpOption::Router(r)) if r == &vec![Ipv4Addr::new(10,77,0,1)])
        );
        let ack = handle_packet(
            &params(),
            &reg(),
            &request(
                MessageType::Request,
                mac,
                vec![
                    DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 77, 0, 2)),
                    DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 77, 0, 1)),
                ],
                Ipv4Addr::UNSPECIFIED,
            ),
        )
        .unwrap();
        assert_eq!(ack.kind, MessageType::Ack);
        // Renewal: unicast to ciaddr.
        let renew = handle_packet(
            &params(),
            &reg(),
            &request(
                MessageType::Request,
                mac,
                vec![],
                Ipv4Addr::new(10, 77, 0, 2),
            ),
        )
        .unwrap();
        assert_eq!(renew.kind, MessageType::Ack);
        assert_eq!(renew.dest, Dest::Unicast(Ipv4Addr::new(10, 77, 0, 2)));
    }

    #[test]
    fn nak_other_server_unknown_release_inform() {
        let mac = MacAddr::for_vm("web");
        let nak = handle_packet(
            &params(),
            &reg(),
            &request(
                MessageType::Request,
                mac,
                vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 77, 0, 9))],
                Ipv4Addr::UNSPECIFIED,
            ),
        )
        .unwrap();
        assert_eq!(nak.kind, MessageType::Nak);
        assert_eq!(nak.dest, Dest::Broadcast);
        assert_eq!(decode(&nak).yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(handle_packet(
            &params(),
            &reg(),
            &request(
                MessageType::Request,
                mac,
                vec![
                    DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 77, 0, 2)),
                    DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 77, 0, 99))
                ],
                Ipv4Addr::UNSPECIFIED
            )
        )
        .is_none());
        assert!(handle_packet(
            &params(),
            &reg(),
            &request(
                MessageType::Discover,
                MacAddr::for_vm("evil"),
                vec![],
                Ipv4Addr::UNSPECIFIED
            )
        )
        .is_none());
        assert!(handle_packet(
            &params(),
            &reg(),
            &request(
                MessageType::Release,
                mac,
                vec![],
                Ipv4Addr::new(10, 77, 0, 2)
            )
        )
        .is_none());
        let inf = handle_packet(
            &params(),
            &reg(),
            &request(
                MessageType::Inform,
                mac,
                vec![],
                Ipv4Addr::new(10, 77, 0, 2),
            ),
        )
        .unwrap();
        assert_eq!(inf.kind, MessageType::Ack);
        let m = decode(&inf);
        assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(m.opts().get(OptionCode::AddressLeaseTime).is_none());
    }

    #[test]
    fn broadcast_flag_and_garbage() {
        let mac = MacAddr::for_vm("web");
        let mut m = Message::from_bytes(&request(
            MessageType::Discover,
            mac,
            vec![],
            Ipv4Addr::UNSPECIFIED,
        ))
        .unwrap();
        m.set_flags(Flags::default().set_broadcast());
        let r = handle_packet(&params(), &reg(), &m.to_vec().unwrap()).unwrap();
        assert_eq!(r.dest, Dest::Broadcast);
        for junk in [&b""[..], &[1u8; 3][..], &[0xffu8; 300][..]] {
            assert!(handle_packet(&params(), &reg(), junk).is_none());
        }
        // Options dhcproto would assert on (found by fuzzing) are dropped.
        for opt in [
            &[80u8, 1, 0][..],
            &[81, 1, 0],
            &[94, 2, 0, 0],
            &[152, 2, 0, 0],
            &[151, 0],
            &[81, 3, 0, 0, 0, 81, 1, 0],
        ] {
            let mut raw = request(MessageType::Discover, mac, vec![], Ipv4Addr::UNSPECIFIED);
            let end = raw.len() - 1; // before End
            raw.splice(end..end, opt.iter().copied());
            assert!(!options_sane(&raw), "{opt:?}");
            assert!(handle_packet(&params(), &reg(), &raw).is_none());
        }
        // hlen > 16 must not panic.
        let mut raw = request(MessageType::Discover, mac, vec![], Ipv4Addr::UNSPECIFIED);
        raw[2] = 200;
        assert!(handle_packet(&params(), &reg(), &raw).is_none());
    }
}
