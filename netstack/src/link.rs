//! Links, addresses and routes over rtnetlink, synchronously: the message
//! types come from `netlink-packet-route`, the socket from `netlink-sys`
//! (its plain blocking `Socket`), so no async runtime is involved.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoBridgePort, InfoKind, InfoPortData, InfoPortKind, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::addr::MacAddr;
use crate::error::{Error, Result};

/// A link as seen in a dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// ifindex.
    pub index: u32,
    /// Name.
    pub name: String,
    /// `IFLA_INFO_KIND` ("bridge", "tun", "veth", ...).
    pub kind: Option<String>,
    /// The bridge (or other controller) it is attached to.
    pub controller: Option<u32>,
    /// IFF_UP.
    pub up: bool,
    /// Hardware address.
    pub mac: Option<Vec<u8>>,
}

/// An IPv4 address on a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addr {
    /// ifindex.
    pub index: u32,
    /// Address.
    pub ip: Ipv4Addr,
    /// Prefix length.
    pub prefix_len: u8,
}

/// An IPv4 route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Destination network.
    pub dst: Ipv4Addr,
    /// Prefix length (0 for default routes).
    pub dst_len: u8,
    /// Output interface.
    pub oif: Option<u32>,
    /// Routing table.
    pub table: u32,
}

/// A route netlink socket.
pub struct Rtnl {
    sock: Socket,
    seq: u32,
}

impl Rtnl {
    /// Open a socket in the calling thread's network namespace.
    pub fn open() -> Result<Rtnl> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| Error::netlink("socket", e))?;
        sock.bind_auto().map_err(|e| Error::netlink("bind", e))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| Error::netlink("connect", e))?;
        let _ = sock.set_ext_ack(true);
        Ok(Rtnl { sock, seq: 1 })
    }

    /// Send one request and collect its answers (for dumps) until DONE, or
    /// its ACK.
    fn request(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | flags;
        hdr.sequence_number = seq;
        let mut nl = NetlinkMessage::new(hdr, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        self.sock
            .send(&buf, 0)
            .map_err(|e| Error::netlink(op.to_string(), e))?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        loop {
            let (data, _) = self
                .sock
                .recv_from_full()
                .map_err(|e| Error::netlink(op.to_string(), e))?;
            let mut off = 0;
            while off < data.len() {
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..]).map_err(
                    |e| Error::netlink(op.to_string(), std::io::Error::other(e.to_string())),
                )?;
                let len = m.header.length as usize;
                if len == 0 {
                    break;
                }
                off += (len + 3) & !3;
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(_) => Err(Error::netlink(op.to_string(), e.to_io())),
                        }
                    }
                    NetlinkPayload::InnerMessage(inner) => {
                        out.push(inner);
                        if !dump && flags & NLM_F_ACK == 0 {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Every link.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let msgs = self.request(
            "dump links",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(to_link(&l)),
                _ => None,
            })
            .collect())
    }

    /// A link by name.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>> {
        Ok(self.links()?.into_iter().find(|l| l.name == name))
    }

    /// Create a bridge (fails if the name exists).
    pub fn create_bridge(&mut self, name: &str) -> Result<()> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        // A fixed MAC: otherwise the kernel may give the bridge the lowest
        // MAC of its ports, which changes as taps come and go and leaves
        // the guests' ARP entry for the gateway pointing nowhere.
        let mac = crate::addr::MacAddr::for_vm(&format!("bridge-{name}"));
        m.attributes
            .push(LinkAttribute::Address(mac.octets().to_vec()));
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.request(
            &format!("create bridge {name}"),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(())
    }

    fn set_link(&mut self, op: &str, index: u32, f: impl FnOnce(&mut LinkMessage)) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        f(&mut m);
        self.request(op, RouteNetlinkMessage::NewLink(m), NLM_F_ACK)?;
        Ok(())
    }

    /// Bring a link up.
    pub fn set_up(&mut self, index: u32) -> Result<()> {
        self.set_link(&format!("set link {index} up"), index, |m| {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
        })
    }

    /// Attach a link to a bridge (`ip link set dev X master BR`).
    pub fn set_controller(&mut self, index: u32, bridge: u32) -> Result<()> {
        self.set_link(
            &format!("attach link {index} to bridge {bridge}"),
            index,
            |m| {
                m.attributes.push(LinkAttribute::Controller(bridge));
            },
        )
    }

    /// `bridge link set dev X isolated on|off`: isolated ports cannot send
    /// to each other, only to non-isolated ports and the bridge itself.
    pub fn set_isolated(&mut self, index: u32, isolated: bool) -> Result<()> {
        self.set_link(
            &format!("set bridge port {index} isolated={isolated}"),
            index,
            |m| {
                m.attributes.push(LinkAttribute::LinkInfo(vec![
                    LinkInfo::PortKind(InfoPortKind::Bridge),
                    LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::Isolated(
                        isolated,
                    )])),
                ]));
            },
        )
    }

    /// Set a link's hardware address.
    pub fn set_mac(&mut self, index: u32, mac: MacAddr) -> Result<()> {
        self.set_link(&format!("set link {index} address {mac}"), index, |m| {
            m.attributes
                .push(LinkAttribute::Address(mac.octets().to_vec()));
        })
    }

    /// Delete a link.
    pub fn delete(&mut self, index: u32) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.request(
            &format!("delete link {index}"),
            RouteNetlinkMessage::DelLink(m),
            NLM_F_ACK,
        )?;
        Ok(())
    }

    /// Every IPv4 address.
    pub fn addrs(&mut self) -> Result<Vec<Addr>> {
        let mut req = AddressMessage::default();
        req.header.family = AddressFamily::Inet;
        let msgs = self.request(
            "dump addresses",
            RouteNetlinkMessage::GetAddress(req),
            NLM_F_DUMP,
        )?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            let ip = a.attributes.iter().find_map(|at| match at {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            let ip = ip.or_else(|| {
                a.attributes.iter().find_map(|at| match at {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(ip) = ip {
                out.push(Addr {
                    index: a.header.index,
                    ip,
                    prefix_len: a.header.prefix_len,
                });
            }
        }
        Ok(out)
    }

    /// Add an IPv4 address to a link.
    pub fn add_addr(
        &mut self,
        index: u32,
        ip: Ipv4Addr,
        prefix_len: u8,
        brd: Ipv4Addr,
    ) -> Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = prefix_len;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(IpAddr::V4(ip)));
        m.attributes.push(AddressAttribute::Address(IpAddr::V4(ip)));
        m.attributes.push(AddressAttribute::Broadcast(brd));
        self.request(
            &format!("add address {ip}/{prefix_len}"),
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(())
    }

    /// Every IPv4 route of every table.
    pub fn routes(&mut self) -> Result<Vec<Route>> {
        let mut req = RouteMessage::default();
        req.header.address_family = AddressFamily::Inet;
        let msgs = self.request(
            "dump routes",
            RouteNetlinkMessage::GetRoute(req),
            NLM_F_DUMP,
        )?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewRoute(r) = m else {
                continue;
            };
            let mut dst = Ipv4Addr::UNSPECIFIED;
            let mut oif = None;
            let mut table = u32::from(r.header.table);
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::Table(t) => table = *t,
                    _ => {}
                }
            }
            out.push(Route {
                dst,
                dst_len: r.header.destination_prefix_length,
                oif,
                table,
            });
        }
        Ok(out)
    }
}

fn to_link(l: &LinkMessage) -> Link {
    let mut link = Link {
        index: l.header.index,
        name: String::new(),
        kind: None,
        controller: None,
        up: l.header.flags.contains(LinkFlags::Up),
        mac: None,
    };
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Controller(c) => link.controller = Some(*c),
            LinkAttribute::Address(m) => link.mac = Some(m.clone()),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        link.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    link
}

/// Write a sysctl under /proc/sys, given as `net/ipv4/...` (in the calling thread's namespace for
/// net.*). Returns the previous value.
pub fn sysctl_set(path: &str, value: &str) -> Result<String> {
    let p = format!("/proc/sys/{path}");
    let old = std::fs::read_to_string(&p)
        .map_err(|e| Error::io(format!("reading {p}"), e))?
        .trim()
        .to_string();
    if old != value {
        std::fs::write(&p, value).map_err(|e| Error::io(format!("writing {value} to {p}"), e))?;
    }
    Ok(old)
}

/// Read a sysctl.
pub fn sysctl_get(path: &str) -> Result<String> {
    let p = format!("/proc/sys/{path}");
    Ok(std::fs::read_to_string(&p)
        .map_err(|e| Error::io(format!("reading {p}"), e))?
        .trim()
        .to_string())
}
