//! The connection table: dispatches guest packets to connections, accepts
//! host connections on the device's socket, decides what goes into the next
//! rx buffer, enforces the limits, and keeps the event loop's view of every
//! host socket in step with what each connection wants.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Instant;

use event_manager::{EventOps, EventSet, Events};
use tracing::{debug, error};

use super::connection::{connect_nonblocking, ConnKey, Connection, Fatal, RxPacket, State};
use super::packet::{Header, Op, SHUTDOWN_SEND, TYPE_STREAM};
use super::{
    Timeouts, FIRST_LOCAL_PORT, HOST_CID, MAX_CONNECTIONS, MAX_CONNECT_LINE,
    MAX_PENDING_HANDSHAKES, MAX_PKT_PAYLOAD,
};

/// Queued packets not tied to a live connection (RSTs). The guest can make
/// us owe it one per tx packet, so tx processing pauses above the first
/// bound until the guest takes them; the second is a hard cap.
pub(super) const CTL_QUEUE_STALL: usize = 256;
const CTL_QUEUE_MAX: usize = CTL_QUEUE_STALL + MAX_CONNECTIONS;
/// Connections accepted per listener event, so a flood of host clients
/// shares the loop with everything else.
const ACCEPTS_PER_EVENT: usize = 16;

/// A host process that connected to the device's socket and has not sent
/// its whole `CONNECT <port>\n` line yet.
struct Handshake {
    stream: UnixStream,
    line: Vec<u8>,
    deadline: Instant,
    registered: bool,
}

pub(super) struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    pub timeouts: Timeouts,
    conns: HashMap<ConnKey, Connection>,
    conn_by_fd: HashMap<RawFd, ConnKey>,
    handshakes: HashMap<RawFd, Handshake>,
    /// Closed sockets waiting to leave the event loop (which needs the
    /// EventOps only `process` has) before they are dropped.
    graveyard: Vec<(UnixStream, bool)>,
    ctl_queue: VecDeque<Header>,
    /// Connections that may have something for the guest, round-robin.
    rxq: VecDeque<ConnKey>,
    /// Local ports of host-initiated connections.
    local_ports: HashSet<u32>,
    next_local_port: u32,
    /// Payload of the packet `next_rx` produced.
    pub scratch: Vec<u8>,
    /// For accepting when out of descriptors.
    spare: crate::spare_fd::SpareFd,
}

impl Muxer {
    pub fn new(guest_cid: u64, uds_path: PathBuf) -> Self {
        Self {
            guest_cid,
            uds_path,
            timeouts: Timeouts::default(),
            conns: HashMap::new(),
            conn_by_fd: HashMap::new(),
            handshakes: HashMap::new(),
            graveyard: Vec::new(),
            ctl_queue: VecDeque::new(),
            rxq: VecDeque::new(),
            local_ports: HashSet::new(),
            next_local_port: FIRST_LOCAL_PORT,
            scratch: vec![0; MAX_PKT_PAYLOAD],
            spare: crate::spare_fd::SpareFd::new(),
        }
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Guest data held for host peers, over all connections.
    pub fn buffered_bytes(&self) -> usize {
        self.conns.values().map(Connection::buffered).sum()
    }

    /// The state dump's lines: queue lengths, then one per connection.
    pub fn debug_lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "muxer: {} connection(s), {} handshake(s), {} control packet(s) queued, rx work queue {}",
            self.conns.len(),
            self.handshakes.len(),
            self.ctl_queue.len(),
            self.rxq.len()
        )];
        let mut conns: Vec<_> = self.conns.iter().collect();
        conns.sort_by_key(|(k, _)| (k.local_port, k.peer_port));
        lines.extend(conns.into_iter().map(|(k, c)| c.debug_line(k)));
        lines
    }

    pub fn ctl_queue_len(&self) -> usize {
        self.ctl_queue.len()
    }

    /// Drops every connection without telling the guest (it is being reset
    /// and has forgotten them). Pending host handshakes survive.
    pub fn reset(&mut self) {
        let keys: Vec<ConnKey> = self.conns.keys().copied().collect();
        for key in keys {
            self.kill(key, false);
        }
        self.ctl_queue.clear();
        self.rxq.clear();
    }

    fn push_ctl(&mut self, hdr: Header) {
        if self.ctl_queue.len() >= CTL_QUEUE_MAX {
            warn_limited!(
                port = hdr.dst_port,
                "virtio-vsock: control queue full, dropping a RST"
            );
            return;
        }
        self.ctl_queue.push_back(hdr);
    }

    /// Answers `to` with a RST from wherever it was addressed. Never answers
    /// a RST (two devices could otherwise ping-pong forever).
    fn reply_rst(&mut self, to: &Header) {
        if to.op == Op::Rst as u16 {
            return;
        }
        self.push_ctl(Header {
            src_cid: to.dst_cid,
            dst_cid: self.guest_cid,
            src_port: to.dst_port,
            dst_port: to.src_port,
            type_: TYPE_STREAM,
            op: Op::Rst as u16,
            ..Header::default()
        });
    }

    /// Removes a connection and closes its host socket; with `rst`, tells
    /// the guest (if it knows about the connection).
    pub fn kill(&mut self, key: ConnKey, rst: bool) {
        let Some(conn) = self.conns.remove(&key) else {
            return;
        };
        self.conn_by_fd.remove(&conn.fd());
        if conn.host_initiated {
            self.local_ports.remove(&key.local_port);
        }
        if rst && conn.guest_knows() {
            self.push_ctl(Header {
                src_cid: HOST_CID,
                dst_cid: self.guest_cid,
                src_port: key.local_port,
                dst_port: key.peer_port,
                type_: TYPE_STREAM,
                op: Op::Rst as u16,
                ..Header::default()
            });
        }
        self.graveyard
            .push((conn.stream, conn.registered.is_some()));
    }

    /// A guest packet whose length field does not match its buffer: the
    /// stream it belongs to has lost data, so it is reset.
    pub fn on_malformed(&mut self, hdr: &Header) {
        let key = ConnKey {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        if self.conns.contains_key(&key) && hdr.op != Op::Rst as u16 {
            self.kill(key, true);
        } else {
            self.reply_rst(hdr);
        }
    }

    /// A well-formed packet from the guest (its source CID and length
    /// already checked by the device); `payload` is its data for OP_RW.
    pub fn on_guest_packet(&mut self, hdr: &Header, payload: &[u8]) {
        if hdr.dst_cid != HOST_CID {
            warn_limited!(
                dst_cid = hdr.dst_cid,
                "virtio-vsock: packet for a CID other than the host"
            );
            self.reply_rst(hdr);
            return;
        }
        if hdr.type_ != TYPE_STREAM {
            warn_limited!(type_ = hdr.type_, "virtio-vsock: unsupported socket type");
            self.reply_rst(hdr);
            return;
        }
        let Some(op) = hdr.op() else {
            warn_limited!(op = hdr.op, "virtio-vsock: unknown operation");
            self.reply_rst(hdr);
            return;
        };
        let key = ConnKey {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        if op == Op::Request {
            self.on_request(key, hdr);
            return;
        }
        let guest_cid = self.guest_cid;
        let Some(conn) = self.conns.get_mut(&key) else {
            debug!(?op, ?key, "virtio-vsock: packet for no connection");
            self.reply_rst(hdr);
            return;
        };
        if op != Op::Rst {
            conn.update_peer_credit(hdr);
        }
        let result = match op {
            Op::Rst => {
                debug!(?key, "virtio-vsock: guest reset the connection");
                self.kill(key, false);
                return;
            }
            Op::Response => {
                if conn.state != (State::LocalInit { request_sent: true }) {
                    warn_limited!(?key, "virtio-vsock: unexpected RESPONSE");
                    self.kill(key, true);
                    return;
                }
                conn.establish();
                debug!(
                    ?key,
                    guest_cid, "virtio-vsock: guest accepted a host connection"
                );
                conn.send_ok_line(key.local_port)
            }
            _ if !conn.is_established() => {
                warn_limited!(
                    ?key,
                    ?op,
                    "virtio-vsock: packet before the connection was accepted"
                );
                self.kill(key, true);
                return;
            }
            Op::Shutdown => conn.on_peer_shutdown(hdr.flags),
            Op::Rw => {
                if conn.peer_shut_flags() & SHUTDOWN_SEND != 0 {
                    warn_limited!(
                        ?key,
                        "virtio-vsock: data after the guest's SHUTDOWN(SEND) dropped"
                    );
                    return;
                }
                conn.on_peer_data(payload)
            }
            Op::CreditUpdate => Ok(()),
            Op::CreditRequest => {
                conn.request_credit_update();
                Ok(())
            }
            Op::Request => unreachable!("handled above"),
        };
        if let Err(e) = result {
            match e {
                Fatal::CreditExceeded { .. } => {
                    warn_limited!(?key, error = %e, "virtio-vsock: resetting connection")
                }
                _ => debug!(?key, error = %e, "virtio-vsock: resetting connection"),
            }
            self.kill(key, true);
        }
    }

    /// The guest connects to host port `key.local_port`: forward to the
    /// Unix socket `<uds_path>_<port>` if anyone listens there.
    fn on_request(&mut self, key: ConnKey, hdr: &Header) {
        if self.conns.contains_key(&key) {
            warn_limited!(?key, "virtio-vsock: REQUEST for an existing connection");
            // The RST answers the REQUEST too.
            self.kill(key, true);
            return;
        }
        if self.conns.len() >= MAX_CONNECTIONS {
            warn_limited!(
                max = MAX_CONNECTIONS,
                "virtio-vsock: connection limit reached, refusing the guest"
            );
            self.reply_rst(hdr);
            return;
        }
        let mut path = self.uds_path.clone().into_os_string();
        path.push(format!("_{}", key.local_port));
        let path = PathBuf::from(path);
        match connect_nonblocking(&path) {
            Ok(stream) => {
                debug!(?key, path = %path.display(), "virtio-vsock: guest connected to the host");
                let conn = Connection::new_peer(stream, hdr);
                self.conn_by_fd.insert(conn.fd(), key);
                self.conns.insert(key, conn);
            }
            Err(e) => {
                debug!(?key, path = %path.display(), error = %e, "virtio-vsock: nobody listens for the guest");
                self.reply_rst(hdr);
            }
        }
    }

    /// Accepts host clients on the device's socket.
    pub fn accept(&mut self, listener: &UnixListener) {
        for _ in 0..ACCEPTS_PER_EVENT {
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if crate::spare_fd::SpareFd::out_of_fds(&e) => {
                    // Else the listener stays readable and the loop spins.
                    self.spare.shed(|| listener.accept());
                    warn_limited!(
                        "virtio-vsock: out of file descriptors, refusing a host connection"
                    );
                    return;
                }
                Err(e) => {
                    warn_limited!(error = %e, "virtio-vsock: accept failed");
                    return;
                }
            };
            if self.handshakes.len() >= MAX_PENDING_HANDSHAKES
                || self.conns.len() + self.handshakes.len() >= MAX_CONNECTIONS
            {
                warn_limited!("virtio-vsock: too many host connections, closing a new one");
                continue;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                warn_limited!(error = %e, "virtio-vsock: cannot make a host socket non-blocking");
                continue;
            }
            self.handshakes.insert(
                stream.as_raw_fd(),
                Handshake {
                    stream,
                    line: Vec::with_capacity(MAX_CONNECT_LINE),
                    deadline: Instant::now() + self.timeouts.handshake,
                    registered: false,
                },
            );
        }
    }

    /// An event on a host socket: a client still handshaking or a
    /// connection. Sockets closed earlier in this round are ignored.
    pub fn on_fd_event(&mut self, fd: RawFd, events: EventSet) {
        if self.handshakes.contains_key(&fd) {
            self.on_handshake_readable(fd);
            return;
        }
        let Some(&key) = self.conn_by_fd.get(&fd) else {
            debug!(fd, "virtio-vsock: event for a closed socket");
            return;
        };
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        let mut result = Ok(());
        if events.contains(EventSet::IN) {
            conn.on_readable();
        }
        if events.contains(EventSet::OUT) {
            result = conn.flush();
        }
        if result.is_ok() && events.intersects(EventSet::HANG_UP | EventSet::ERROR) {
            if !conn.is_established() {
                debug!(
                    ?key,
                    "virtio-vsock: host client left before the guest answered"
                );
                self.kill(key, true);
                return;
            }
            result = conn.on_hangup();
        }
        if let Err(e) = result {
            debug!(?key, error = %e, "virtio-vsock: host side failed, resetting");
            self.kill(key, true);
        }
    }

    fn on_handshake_readable(&mut self, fd: RawFd) {
        let Some(hs) = self.handshakes.get_mut(&fd) else {
            return;
        };
        // One byte at a time: whatever follows the newline is stream data
        // for the guest and must stay in the socket.
        let complete = loop {
            let mut b = [0u8; 1];
            match hs.stream.read(&mut b) {
                Ok(0) => break false,
                Ok(_) if b[0] == b'\n' => break true,
                Ok(_) => {
                    hs.line.push(b[0]);
                    if hs.line.len() >= MAX_CONNECT_LINE {
                        break false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break false,
            }
        };
        let Some(hs) = self.handshakes.remove(&fd) else {
            return;
        };
        let port = if complete {
            parse_connect_line(&hs.line)
        } else {
            None
        };
        let Some(port) = port else {
            warn_limited!(
                line = %String::from_utf8_lossy(&hs.line).escape_debug(),
                "virtio-vsock: bad CONNECT line from a host client, closing it"
            );
            self.graveyard.push((hs.stream, hs.registered));
            return;
        };
        let Some(local_port) = self.alloc_local_port(port) else {
            warn_limited!(
                port,
                "virtio-vsock: no free local port, closing a host client"
            );
            self.graveyard.push((hs.stream, hs.registered));
            return;
        };
        let key = ConnKey {
            local_port,
            peer_port: port,
        };
        debug!(?key, "virtio-vsock: host connects to the guest");
        let mut conn = Connection::new_local(hs.stream, hs.registered.then_some(EventSet::IN));
        conn.host_initiated = true;
        self.local_ports.insert(local_port);
        self.conn_by_fd.insert(conn.fd(), key);
        self.conns.insert(key, conn);
    }

    /// The next unused local port from Firecracker's range; None if every
    /// candidate tried is taken (cannot happen below MAX_CONNECTIONS).
    fn alloc_local_port(&mut self, peer_port: u32) -> Option<u32> {
        if self.conns.len() >= MAX_CONNECTIONS {
            return None;
        }
        for _ in 0..=MAX_CONNECTIONS {
            let port = self.next_local_port;
            self.next_local_port = port.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            let key = ConnKey {
                local_port: port,
                peer_port,
            };
            if !self.local_ports.contains(&port) && !self.conns.contains_key(&key) {
                return Some(port);
            }
        }
        None
    }

    /// Resets connections and drops handshakes whose time is up.
    pub fn sweep(&mut self, now: Instant) {
        let expired: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            debug!(?key, "virtio-vsock: connection timed out");
            self.kill(key, true);
        }
        let stale: Vec<RawFd> = self
            .handshakes
            .iter()
            .filter(|(_, h)| h.deadline <= now)
            .map(|(fd, _)| *fd)
            .collect();
        for fd in stale {
            if let Some(hs) = self.handshakes.remove(&fd) {
                warn_limited!("virtio-vsock: host client sent no CONNECT line in time, closing it");
                self.graveyard.push((hs.stream, hs.registered));
            }
        }
    }

    /// Applies what follows from the last changes: connections the guest
    /// closed completely get their RST, dead ones a deadline, and those
    /// with something for the guest a place in the rx queue.
    pub fn settle(&mut self, now: Instant) {
        let mut closed = Vec::new();
        for (key, conn) in &mut self.conns {
            if conn.peer_closed() {
                closed.push(*key);
                continue;
            }
            if conn.is_dead() && conn.deadline.is_none() {
                conn.deadline = Some(now + self.timeouts.close);
            }
            if !conn.in_rxq && conn.has_rx_work() {
                conn.in_rxq = true;
                self.rxq.push_back(*key);
            }
        }
        for key in closed {
            debug!(?key, "virtio-vsock: guest closed the connection");
            self.kill(key, true);
        }
    }

    pub fn has_rx_work(&self) -> bool {
        !self.ctl_queue.is_empty() || !self.rxq.is_empty()
    }

    /// The next packet for the guest, its payload (if any) in `scratch`,
    /// for an rx buffer with `room` bytes after the header.
    pub fn next_rx(&mut self, room: usize) -> Option<(Header, usize)> {
        loop {
            if let Some(hdr) = self.ctl_queue.pop_front() {
                return Some((hdr, 0));
            }
            let key = self.rxq.pop_front()?;
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            conn.in_rxq = false;
            match conn.next_rx(room, &mut self.scratch) {
                Ok(Some(pkt)) => {
                    let (op, flags, len) = match pkt {
                        RxPacket::Control { op, flags } => (op, flags, 0),
                        RxPacket::Data { len } => (Op::Rw, 0, len),
                    };
                    if op == Op::Request {
                        conn.deadline = Some(Instant::now() + self.timeouts.connect);
                    }
                    // len <= MAX_PKT_PAYLOAD.
                    let hdr = conn.header(key, self.guest_cid, op, flags, len as u32);
                    if conn.has_rx_work() {
                        conn.in_rxq = true;
                        self.rxq.push_back(key);
                    }
                    return Some((hdr, len));
                }
                // Nothing after all (the socket was empty, or no payload
                // fits); settle() lists it again once there is.
                Ok(None) => {}
                Err(e) => {
                    debug!(?key, error = %e, "virtio-vsock: host side failed, resetting");
                    self.kill(key, true);
                }
            }
        }
    }

    /// Brings the event loop in line with the sockets: closes the dead
    /// ones, registers new ones, updates interest. Returns false if some
    /// connection had to be reset because it cannot be watched.
    pub fn reconcile(&mut self, ops: &mut EventOps) -> bool {
        let mut ok = true;
        let mut failed = Vec::new();
        for (key, conn) in &mut self.conns {
            let want = conn.desired_events();
            if want == conn.registered {
                continue;
            }
            let res = match (conn.registered, want) {
                (None, Some(ev)) => ops.add(Events::new(&conn.stream, ev)),
                (Some(_), Some(ev)) => ops.modify(Events::new(&conn.stream, ev)),
                (Some(_), None) => ops.remove(Events::empty(&conn.stream)),
                (None, None) => Ok(()),
            };
            match res {
                Ok(()) => conn.registered = want,
                Err(e) => {
                    error!(?key, error = ?e, "virtio-vsock: cannot watch a host socket");
                    failed.push(*key);
                }
            }
        }
        for key in failed {
            ok = false;
            self.kill(key, true);
        }
        let mut failed = Vec::new();
        for (fd, hs) in &mut self.handshakes {
            if !hs.registered {
                match ops.add(Events::new(&hs.stream, EventSet::IN)) {
                    Ok(()) => hs.registered = true,
                    Err(e) => {
                        error!(error = ?e, "virtio-vsock: cannot watch a host client");
                        failed.push(*fd);
                    }
                }
            }
        }
        for fd in failed {
            self.handshakes.remove(&fd);
        }
        for (stream, registered) in self.graveyard.drain(..) {
            if registered {
                if let Err(e) = ops.remove(Events::empty(&stream)) {
                    error!(error = ?e, "virtio-vsock: cannot unwatch a closed socket");
                }
            }
        }
        ok
    }

    /// The earliest deadline of any connection or handshake.
    pub fn next_deadline(&self) -> Option<Instant> {
        let conns = self.conns.values().filter_map(|c| c.deadline);
        let hss = self.handshakes.values().map(|h| h.deadline);
        conns.chain(hss).min()
    }
}

/// `CONNECT <port>` (keyword in any case, as Firecracker accepts it).
fn parse_connect_line(line: &[u8]) -> Option<u32> {
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_ascii_whitespace();
    let (Some(cmd), Some(port), None) = (words.next(), words.next(), words.next()) else {
        return None;
    };
    if !cmd.eq_ignore_ascii_case("connect") || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_lines() {
        assert_eq!(parse_connect_line(b"CONNECT 52"), Some(52));
        assert_eq!(parse_connect_line(b"connect 4294967295\r"), Some(u32::MAX));
        assert_eq!(parse_connect_line(b"  CONNECT   7 "), Some(7));
        for bad in [
            &b"CONNECT"[..],
            b"CONNECT 4294967296",
            b"CONNECT -1",
            b"CONNECT +1",
            b"CONNECT 0x10",
            b"CONNECT 1 2",
            b"LISTEN 1",
            b"",
            b"CONNECT \xff",
        ] {
            assert_eq!(parse_connect_line(bad), None, "{bad:?}");
        }
    }
}
