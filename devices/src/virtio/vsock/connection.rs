//! One stream connection between a guest port and a host Unix socket: its
//! state machine, both directions of credit flow control, and the host-side
//! buffering (bounded by the credit the device advertises).

use std::collections::VecDeque;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Instant;

use event_manager::EventSet;

use super::packet::{Header, Op, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use super::{CONN_BUF_SIZE, HOST_CID, MAX_PKT_PAYLOAD};

/// Connections are named by the host-side port and the guest-side port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct ConnKey {
    pub local_port: u32,
    pub peer_port: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// Host-initiated; the guest has not answered our REQUEST yet.
    LocalInit {
        request_sent: bool,
    },
    Established,
}

/// Why a connection has to be reset.
#[derive(Debug, thiserror::Error)]
pub(super) enum Fatal {
    #[error("guest sent {len} bytes with only {free} bytes of credit left")]
    CreditExceeded { len: usize, free: usize },
    #[error("guest sent data the host side can no longer receive")]
    HostGone,
    #[error("host socket write failed: {0}")]
    HostWrite(#[source] io::Error),
    #[error("host socket read failed: {0}")]
    HostRead(#[source] io::Error),
}

/// What the connection wants to put in the next rx buffer.
pub(super) enum RxPacket {
    /// A packet without payload.
    Control { op: Op, flags: u32 },
    /// An OP_RW with `len` bytes of payload, already in the scratch buffer.
    Data { len: usize },
}

pub(super) struct Connection {
    pub stream: UnixStream,
    /// What the fd is registered for in the event loop (None: not at all).
    pub registered: Option<EventSet>,
    pub state: State,
    /// Guest-initiated: our RESPONSE still has to go out, before anything else.
    pub send_response: bool,
    /// Created from a `CONNECT` line; owns its local port.
    pub host_initiated: bool,
    /// When the connection gets reset if nothing happens: an unanswered
    /// REQUEST, or a connection on which no more data can flow.
    pub deadline: Option<Instant>,
    /// Listed in the device's rx work queue.
    pub in_rxq: bool,

    // The guest's receive window, from the last header it sent.
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Payload bytes sent to the guest (wrapping, like the counters above).
    rx_cnt: u32,

    // Our receive window: guest data forwarded to the host socket, and
    // what we last told the guest about it.
    fwd_cnt: u32,
    last_fwd_cnt_sent: u32,
    credit_requested: bool,
    /// Guest data the host socket did not take yet; never more than
    /// CONN_BUF_SIZE as long as the guest honours the credit we advertise.
    tx_buf: VecDeque<u8>,

    /// The host socket may have data for the guest.
    data_pending: bool,
    /// The fd reported HUP/ERR and was taken out of the event loop.
    pub hup: bool,
    /// The host will send nothing more (read returned 0).
    local_eof: bool,
    /// The host can receive nothing more (it closed its socket).
    local_gone: bool,
    host_write_shut: bool,
    /// SHUTDOWN flags the guest sent us, and those we sent it.
    peer_shut: u32,
    shut_sent: u32,
}

impl Connection {
    fn new(stream: UnixStream, registered: Option<EventSet>, state: State) -> Self {
        Self {
            stream,
            registered,
            state,
            send_response: false,
            host_initiated: false,
            deadline: None,
            in_rxq: false,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            rx_cnt: 0,
            fwd_cnt: 0,
            last_fwd_cnt_sent: 0,
            credit_requested: false,
            tx_buf: VecDeque::new(),
            data_pending: false,
            hup: false,
            local_eof: false,
            local_gone: false,
            host_write_shut: false,
            peer_shut: 0,
            shut_sent: 0,
        }
    }

    /// A host process asked for the guest's port; REQUEST not sent yet.
    pub fn new_local(stream: UnixStream, registered: Option<EventSet>) -> Self {
        Self::new(
            stream,
            registered,
            State::LocalInit {
                request_sent: false,
            },
        )
    }

    /// The guest's REQUEST reached a host listener; RESPONSE pending.
    pub fn new_peer(stream: UnixStream, request: &Header) -> Self {
        let mut c = Self::new(stream, None, State::Established);
        c.send_response = true;
        c.update_peer_credit(request);
        c
    }

    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    pub fn update_peer_credit(&mut self, hdr: &Header) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = hdr.fwd_cnt;
    }

    /// Bytes the guest can still take. A guest that claims to have consumed
    /// more than we sent gets no credit rather than a wrapped-around lot.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = self.rx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    pub fn buffered(&self) -> usize {
        self.tx_buf.len()
    }

    /// One line for the state dump: state, flags and both credit windows.
    pub fn debug_line(&self, key: &ConnKey) -> String {
        format!(
            "conn host:{} <-> guest:{} {:?}{}{} | to guest: sent {} acked {} window {} credit {}{} | from guest: forwarded {} told {} buffered {}{} | eof {} gone {} hup {} shut in {:#x} out {:#x}",
            key.local_port,
            key.peer_port,
            self.state,
            if self.send_response { " response-owed" } else { "" },
            if self.in_rxq { " in-rxq" } else { "" },
            self.rx_cnt,
            self.peer_fwd_cnt,
            self.peer_buf_alloc,
            self.peer_credit(),
            if self.data_pending { " data-pending" } else { "" },
            self.fwd_cnt,
            self.last_fwd_cnt_sent,
            self.tx_buf.len(),
            if self.credit_requested { " credit-requested" } else { "" },
            self.local_eof,
            self.local_gone,
            self.hup,
            self.peer_shut,
            self.shut_sent,
        )
    }

    pub fn request_credit_update(&mut self) {
        self.credit_requested = true;
    }

    /// The guest's REQUEST was answered: from now on data flows.
    pub fn establish(&mut self) {
        self.state = State::Established;
        self.deadline = None;
    }

    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// Host-initiated connection whose REQUEST the guest has seen.
    pub fn guest_knows(&self) -> bool {
        self.state
            != State::LocalInit {
                request_sent: false,
            }
    }

    fn wants_to_read(&self) -> bool {
        self.is_established()
            && !self.local_eof
            && self.peer_shut & SHUTDOWN_RCV == 0
            && self.peer_credit() > 0
    }

    /// Whether to tell the guest our fwd_cnt without waiting for a packet
    /// that carries it anyway: on request, or when the guest believes our
    /// buffer is nearly full but we have drained some of it (Linux's rule
    /// too, so a sender blocked on credit always hears back).
    fn needs_credit_update(&self) -> bool {
        if !self.is_established() {
            return false;
        }
        if self.credit_requested {
            return true;
        }
        if self.fwd_cnt == self.last_fwd_cnt_sent {
            return false;
        }
        let received = self.fwd_cnt.wrapping_add(self.tx_buf.len() as u32);
        let guest_view_used = received.wrapping_sub(self.last_fwd_cnt_sent);
        CONN_BUF_SIZE.saturating_sub(guest_view_used) < MAX_PKT_PAYLOAD as u32
    }

    /// SHUTDOWN flags we owe the guest. SEND only after the host's EOF,
    /// i.e. after every byte before it went to the guest.
    fn shutdown_due(&self) -> u32 {
        let mut flags = 0;
        if self.local_eof {
            flags |= SHUTDOWN_SEND;
        }
        if self.local_gone {
            flags |= SHUTDOWN_RCV;
        }
        flags & !self.shut_sent
    }

    pub fn has_rx_work(&self) -> bool {
        match self.state {
            State::LocalInit { request_sent } => !request_sent,
            State::Established => {
                self.send_response
                    || (self.data_pending && self.wants_to_read())
                    || self.needs_credit_update()
                    || self.shutdown_due() != 0
            }
        }
    }

    /// The event-loop interest for the host socket; None once it hung up.
    pub fn desired_events(&self) -> Option<EventSet> {
        if self.hup {
            return None;
        }
        let mut ev = EventSet::empty();
        if !self.data_pending && self.wants_to_read() {
            ev |= EventSet::IN;
        }
        if !self.tx_buf.is_empty() {
            ev |= EventSet::OUT;
        }
        Some(ev)
    }

    /// Neither direction can carry data any more: all that is left is the
    /// RST that ends it (spec 5.10.6.5).
    pub fn is_dead(&self) -> bool {
        let nothing_to_guest = self.local_eof || self.peer_shut & SHUTDOWN_RCV != 0;
        // Guest data still buffered keeps the connection alive however long
        // the host takes to read it.
        let nothing_to_host =
            self.local_gone || (self.peer_shut & SHUTDOWN_SEND != 0 && self.tx_buf.is_empty());
        self.is_established() && nothing_to_guest && nothing_to_host
    }

    pub fn peer_shut_flags(&self) -> u32 {
        self.peer_shut
    }

    /// The guest sent everything it will send and wants nothing more:
    /// reply with RST once its data reached the host.
    pub fn peer_closed(&self) -> bool {
        self.peer_shut == SHUTDOWN_RCV | SHUTDOWN_SEND && self.tx_buf.is_empty()
    }

    pub fn on_readable(&mut self) {
        self.data_pending = true;
    }

    /// The host socket reported HUP: the host closed it (or shut its write
    /// side after we shut ours). Whatever it wrote before is still there to
    /// read; the fd leaves the event loop, so keep reading until EOF.
    pub fn on_hangup(&mut self) -> Result<(), Fatal> {
        self.hup = true;
        self.data_pending = true;
        if self.peer_shut & SHUTDOWN_RCV != 0 {
            self.local_eof = true;
        }
        if !self.host_write_shut {
            self.local_gone = true;
            if !self.tx_buf.is_empty() {
                return Err(Fatal::HostGone);
            }
        }
        Ok(())
    }

    /// A SHUTDOWN from the guest; unknown flag bits are ignored.
    pub fn on_peer_shutdown(&mut self, flags: u32) -> Result<(), Fatal> {
        self.peer_shut |= flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
        if self.peer_shut & SHUTDOWN_RCV != 0 {
            self.data_pending = false;
        }
        self.flush()
    }

    /// An OP_RW payload from the guest. Written straight to the host socket
    /// when nothing is queued before it, buffered otherwise.
    pub fn on_peer_data(&mut self, data: &[u8]) -> Result<(), Fatal> {
        if self.local_gone {
            return Err(Fatal::HostGone);
        }
        let free = (CONN_BUF_SIZE as usize).saturating_sub(self.tx_buf.len());
        if data.len() > free {
            return Err(Fatal::CreditExceeded {
                len: data.len(),
                free,
            });
        }
        let mut written = 0;
        if self.tx_buf.is_empty() {
            written = self.write_host(data)?;
        }
        self.tx_buf.extend(&data[written..]);
        Ok(())
    }

    /// Moves buffered guest data to the host socket and applies the guest's
    /// shutdown once everything is through.
    pub fn flush(&mut self) -> Result<(), Fatal> {
        let fd = self.fd();
        while !self.tx_buf.is_empty() {
            let (front, _) = self.tx_buf.as_slices();
            match send_retrying(fd, front) {
                Ok(0) => break,
                Ok(n) => {
                    self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
                    self.tx_buf.drain(..n);
                }
                Err(e) => return Err(self.host_write_failed(e)),
            }
        }
        if self.tx_buf.is_empty() {
            // An idle connection should not pin a full buffer's worth.
            if self.tx_buf.capacity() > MAX_PKT_PAYLOAD {
                self.tx_buf = VecDeque::new();
            }
            if self.peer_shut & SHUTDOWN_SEND != 0 && !self.host_write_shut {
                self.host_write_shut = true;
                // The host may be gone already; nothing to do about that.
                let _ = self.stream.shutdown(std::net::Shutdown::Write);
            }
        }
        Ok(())
    }

    /// Writes as much of `data` as the socket takes now.
    fn write_host(&mut self, data: &[u8]) -> Result<usize, Fatal> {
        let mut done = 0;
        while done < data.len() {
            match send_retrying(self.fd(), &data[done..]) {
                Ok(0) => break,
                Ok(n) => {
                    self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
                    done += n;
                }
                Err(e) => return Err(self.host_write_failed(e)),
            }
        }
        Ok(done)
    }

    /// The host cannot take data any more: what we hold for it is lost.
    fn host_write_failed(&mut self, e: io::Error) -> Fatal {
        self.local_gone = true;
        self.tx_buf.clear();
        Fatal::HostWrite(e)
    }

    /// Produces the next packet for the guest into an rx buffer with `room`
    /// payload bytes at most (data goes into `scratch`). None: nothing to
    /// send right now.
    pub fn next_rx(&mut self, room: usize, scratch: &mut [u8]) -> Result<Option<RxPacket>, Fatal> {
        if let State::LocalInit { request_sent } = &mut self.state {
            if *request_sent {
                return Ok(None);
            }
            *request_sent = true;
            return Ok(Some(RxPacket::Control {
                op: Op::Request,
                flags: 0,
            }));
        }
        if self.send_response {
            self.send_response = false;
            return Ok(Some(RxPacket::Control {
                op: Op::Response,
                flags: 0,
            }));
        }
        if self.data_pending && self.wants_to_read() && room > 0 {
            let want = room
                .min(scratch.len())
                .min(MAX_PKT_PAYLOAD)
                .min(self.peer_credit() as usize);
            match read_retrying(&mut self.stream, &mut scratch[..want]) {
                Ok(0) => {
                    self.data_pending = false;
                    self.local_eof = true;
                }
                Ok(n) => {
                    // A short read most likely emptied the socket; if not,
                    // the re-armed EPOLLIN says so. After a hangup there is
                    // no EPOLLIN any more: read on until EOF.
                    if n < want && !self.hup {
                        self.data_pending = false;
                    }
                    self.rx_cnt = self.rx_cnt.wrapping_add(n as u32);
                    return Ok(Some(RxPacket::Data { len: n }));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // After a hangup the socket cannot fill up again.
                    self.data_pending = false;
                    if self.hup {
                        self.local_eof = true;
                    }
                }
                Err(e) => {
                    self.data_pending = false;
                    self.local_eof = true;
                    return Err(Fatal::HostRead(e));
                }
            }
        }
        if self.needs_credit_update() {
            return Ok(Some(RxPacket::Control {
                op: Op::CreditUpdate,
                flags: 0,
            }));
        }
        let flags = self.shutdown_due();
        if flags != 0 {
            // Cumulative, as Linux reads them.
            self.shut_sent |= flags;
            return Ok(Some(RxPacket::Control {
                op: Op::Shutdown,
                flags: self.shut_sent,
            }));
        }
        Ok(None)
    }

    /// The header for a packet to the guest; every one carries our credit,
    /// so it also counts as a credit update.
    pub fn header(&mut self, key: ConnKey, guest_cid: u64, op: Op, flags: u32, len: u32) -> Header {
        self.last_fwd_cnt_sent = self.fwd_cnt;
        self.credit_requested = false;
        Header {
            src_cid: HOST_CID,
            dst_cid: guest_cid,
            src_port: key.local_port,
            dst_port: key.peer_port,
            len,
            type_: TYPE_STREAM,
            op: op as u16,
            flags,
            buf_alloc: CONN_BUF_SIZE,
            fwd_cnt: self.fwd_cnt,
        }
    }

    /// Sends `OK <port>\n` to the host process once the guest accepted its
    /// connection. The socket is fresh and empty, so a line that does not
    /// fit means the host is gone.
    pub fn send_ok_line(&mut self, local_port: u32) -> Result<(), Fatal> {
        let line = format!("OK {local_port}\n");
        loop {
            match send_nosignal(self.fd(), line.as_bytes()) {
                Ok(n) if n == line.len() => return Ok(()),
                Ok(_) => return Err(Fatal::HostWrite(io::Error::from(io::ErrorKind::WriteZero))),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Fatal::HostWrite(e)),
            }
        }
    }
}

/// One send(2); 0 when the socket is full.
fn send_retrying(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    loop {
        match send_nosignal(fd, data) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            r => return r,
        }
    }
}

fn read_retrying(stream: &mut UnixStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// send(2) with MSG_NOSIGNAL: a host peer that closed its socket must not
/// SIGPIPE the VMM, whatever the embedding process does with that signal.
pub(super) fn send_nosignal(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is a live byte slice and the kernel reads at most
    // `data.len()` bytes from it; `fd` is only used as a socket descriptor.
    let ret = unsafe {
        libc::send(
            fd,
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        // Non-negative and at most data.len().
        Ok(ret as usize)
    }
}

/// Connects to a Unix stream socket without blocking: std's connect waits
/// when the listener's backlog is full, which would stall the event loop on
/// a host process that does not accept. A full backlog is an error here.
pub(super) fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain integers and arrays; all zeroes is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path too long or contains NUL",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    // SAFETY: plain syscall without pointer arguments.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;
    // SAFETY: `addr` is a valid sockaddr_un that outlives the call, and
    // `len` (path plus its NUL) does not exceed its size.
    let ret = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            len as libc::socklen_t,
        )
    };
    // Non-blocking AF_UNIX connects never sleep, so never see EINTR: any
    // failure (no listener, full backlog) is final.
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixStream::from(fd))
}
