//! virtio-vsock driven through the MMIO transport and the event manager the
//! way Linux's virtio_transport does it (4 KiB rx buffers holding header and
//! payload, tx packets as header + payload descriptors), with real guest
//! memory and real Unix sockets on the host side, plus hostile guests.

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::packet::{
    Header, Op, HDR_SIZE, SHUTDOWN_BOTH, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};
use super::{
    Timeouts, Vsock, VsockError, CONN_BUF_SIZE, FIRST_LOCAL_PORT, HOST_CID, MAX_CONNECTIONS,
    MAX_PKT_PAYLOAD,
};
use crate::bus::{lock, BusDevice};
use crate::virtio::features::VIRTIO_F_VERSION_1;
use crate::virtio::status::{DEVICE_NEEDS_RESET, DRIVER_OK};
use crate::virtio::test_utils::*;
use crate::virtio::{Activated, Interrupt, MmioTransport, VirtioDevice, TYPE_VSOCK};

const CID: u64 = 3;
const QSIZE: u16 = 128;
const MEM: u64 = 0x80_0000;
/// (descriptor table, available ring, used ring) of rx, tx, event.
const RINGS: [(u64, u64, u64); 3] = [
    (0x1000, 0x2000, 0x3000),
    (0x4000, 0x5000, 0x6000),
    (0x7000, 0x8000, 0x9000),
];
/// Linux posts 4 KiB rx buffers (header and payload together).
const RX_BUF: u32 = 4096;
const RX_BASE: u64 = 0x10_0000;
const TX_BASE: u64 = 0x20_0000;
/// Per tx slot: header at +0, payload at +0x100.
const TX_SLOT: u64 = 0x1_1000;
const TX_SLOTS: u16 = 32;
/// What our guest advertises as its receive buffer (Linux's default).
const GUEST_BUF: u32 = 256 * 1024;

static DIR_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let n = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("mvm-vsock-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

type Em = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

/// A guest driver, its memory and the device's event loop.
struct Guest {
    dir: TempDir,
    uds: PathBuf,
    mem: GuestMemoryMmap,
    irq: Arc<Interrupt>,
    dev: Arc<Mutex<Vsock>>,
    t: MmioTransport,
    em: Em,
    rx: GuestRing,
    tx: GuestRing,
    rx_seen: u16,
    rx_posted: u16,
    tx_next: u16,
}

fn hdr(op: Op, src_port: u32, dst_port: u32) -> Header {
    Header {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len: 0,
        type_: TYPE_STREAM,
        op: op as u16,
        flags: 0,
        buf_alloc: GUEST_BUF,
        fwd_cnt: 0,
    }
}

impl Guest {
    fn new() -> Self {
        Self::with_rx_buffers(64)
    }

    /// A probed, activated device with `rx_bufs` buffers posted.
    fn with_rx_buffers(rx_bufs: u16) -> Self {
        let dir = TempDir::new();
        let uds = dir.0.join("v.sock");
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap();
        let irq = interrupt();
        let dev = shared(Vsock::new(CID, uds.clone()).unwrap());
        let t = MmioTransport::new(mem.clone(), irq.clone(), dev.clone()).unwrap();
        let mut em: Em = EventManager::new().unwrap();
        em.add_subscriber(dev.clone());
        let rx = GuestRing::new(&mem, QSIZE, RINGS[0]);
        let tx = GuestRing::new(&mem, QSIZE, RINGS[1]);
        let _ev = GuestRing::new(&mem, QSIZE, RINGS[2]);
        let mut g = Self {
            dir,
            uds,
            mem,
            irq,
            dev,
            t,
            em,
            rx,
            tx,
            rx_seen: 0,
            rx_posted: 0,
            tx_next: 0,
        };
        let queues: Vec<_> = RINGS.iter().map(|&r| (u32::from(QSIZE), r)).collect();
        linux_probe(&mut g.t, &queues);
        assert_eq!(
            rd(&mut g.t, STATUS) & (DRIVER_OK | DEVICE_NEEDS_RESET),
            DRIVER_OK
        );
        assert!(lock(&g.dev).is_activated());
        g.post_rx(rx_bufs);
        g.pump();
        g
    }

    /// Posts `n` more 4 KiB rx buffers (descriptor i <-> buffer i).
    fn post_rx(&mut self, n: u16) {
        for _ in 0..n {
            let i = self.rx_posted;
            assert!(i < QSIZE);
            self.rx.set_desc(
                i,
                RX_BASE + u64::from(i) * u64::from(RX_BUF),
                RX_BUF,
                F_WRITE,
                0,
            );
            self.rx.push_avail(i);
            self.rx_posted += 1;
        }
        wr(&mut self.t, QUEUE_NOTIFY, 0);
    }

    /// Runs the device's event loop until nothing is ready.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            if self.em.run_with_timeout(0).unwrap() == 0 {
                return;
            }
        }
        panic!("event loop does not settle");
    }

    /// Runs the event loop, waiting up to `limit` for `done`.
    fn pump_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Self) -> bool) {
        let end = Instant::now() + limit;
        while !done(self) {
            assert!(Instant::now() < end, "condition not reached in {limit:?}");
            self.em.run_with_timeout(20).unwrap();
        }
    }

    /// Puts a packet in the tx queue as header + payload descriptors.
    fn queue_tx(&mut self, h: Header, payload: &[u8]) {
        let slot = self.tx_next % TX_SLOTS;
        self.tx_next = self.tx_next.wrapping_add(1);
        let base = TX_BASE + u64::from(slot) * TX_SLOT;
        self.mem
            .write_slice(&h.to_bytes(), GuestAddress(base))
            .unwrap();
        let (d0, d1) = (2 * slot, 2 * slot + 1);
        if payload.is_empty() {
            self.tx.set_desc(d0, base, HDR_SIZE as u32, 0, 0);
        } else {
            self.mem
                .write_slice(payload, GuestAddress(base + 0x100))
                .unwrap();
            self.tx.set_desc(d0, base, HDR_SIZE as u32, F_NEXT, d1);
            self.tx
                .set_desc(d1, base + 0x100, payload.len() as u32, 0, 0);
        }
        self.tx.push_avail(d0);
    }

    fn send(&mut self, h: Header, payload: &[u8]) {
        let mut h = h;
        if h.op == Op::Rw as u16 && h.len == 0 {
            h.len = payload.len() as u32;
        }
        self.queue_tx(h, payload);
        wr(&mut self.t, QUEUE_NOTIFY, 1);
        self.pump();
    }

    /// Packets the device put in the rx queue since the last call; their
    /// buffers go straight back to the device.
    fn recv(&mut self) -> Vec<(Header, Vec<u8>)> {
        let mut out = Vec::new();
        let used = self.rx.used_idx();
        let mut reposted = false;
        while self.rx_seen != used {
            let (id, len) = self.rx.used_elem(self.rx_seen);
            self.rx_seen = self.rx_seen.wrapping_add(1);
            let id = id as u16;
            let addr = RX_BASE + u64::from(id) * u64::from(RX_BUF);
            assert!(len as usize >= HDR_SIZE, "short rx packet: {len}");
            let raw = self.rx.read(addr, len as usize);
            let h = Header::parse(raw[..HDR_SIZE].try_into().unwrap());
            assert_eq!(
                h.len as usize,
                len as usize - HDR_SIZE,
                "len field vs used len"
            );
            assert_eq!((h.dst_cid, h.type_), (CID, TYPE_STREAM));
            out.push((h, raw[HDR_SIZE..].to_vec()));
            self.rx.push_avail(id);
            reposted = true;
        }
        if reposted {
            wr(&mut self.t, QUEUE_NOTIFY, 0);
        }
        out
    }

    /// Pumps and returns what arrived.
    fn pump_recv(&mut self) -> Vec<(Header, Vec<u8>)> {
        self.pump();
        self.recv()
    }

    fn host_path(&self, port: u32) -> PathBuf {
        let mut p = self.uds.clone().into_os_string();
        p.push(format!("_{port}"));
        p.into()
    }

    fn set_timeouts(&mut self, ms: u64) {
        let d = Duration::from_millis(ms);
        lock(&self.dev).set_timeouts(Timeouts {
            connect: d,
            close: d,
            handshake: d,
        });
    }

    fn conns(&self) -> usize {
        lock(&self.dev).connection_count()
    }

    /// Guest-initiated connection from `gport` to a host listener on
    /// `hport`; returns the host's end.
    fn guest_connect(&mut self, listener: &UnixListener, gport: u32, hport: u32) -> UnixStream {
        self.send(hdr(Op::Request, gport, hport), &[]);
        let pkts = self.pump_recv();
        assert_eq!(pkts.len(), 1, "{pkts:?}");
        let (h, _) = &pkts[0];
        assert_eq!(h.op, Op::Response as u16);
        assert_eq!((h.src_port, h.dst_port), (hport, gport));
        assert_eq!(h.buf_alloc, CONN_BUF_SIZE);
        let (s, _) = listener.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        s
    }

    /// Host-initiated connection to guest `gport`, accepted by the guest;
    /// returns the host's end and the local port.
    fn host_connect(&mut self, gport: u32) -> (UnixStream, u32) {
        let mut s = UnixStream::connect(&self.uds).unwrap();
        s.write_all(format!("CONNECT {gport}\n").as_bytes())
            .unwrap();
        let pkts = self.pump_recv();
        assert_eq!(pkts.len(), 1, "{pkts:?}");
        let (h, _) = pkts[0];
        assert_eq!(h.op, Op::Request as u16);
        assert_eq!(h.dst_port, gport);
        assert!(h.src_port >= FIRST_LOCAL_PORT);
        self.send(hdr(Op::Response, gport, h.src_port), &[]);
        let line = format!("OK {}\n", h.src_port);
        let mut got = vec![0u8; line.len()];
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.read_exact(&mut got).unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), line);
        s.set_nonblocking(true).unwrap();
        (s, h.src_port)
    }
}

fn read_available(s: &mut UnixStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (out, false),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return (out, true),
            Err(e) => panic!("host read: {e}"),
        }
    }
}

fn ops(pkts: &[(Header, Vec<u8>)]) -> Vec<u16> {
    pkts.iter().map(|(h, _)| h.op).collect()
}

fn pattern(offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn identifies_as_vsock_with_the_guest_cid_in_config() {
    let mut g = Guest::new();
    assert_eq!(rd(&mut g.t, DEVICE_ID), TYPE_VSOCK);
    let mut b = [0u8; 8];
    g.t.read(0x100, &mut b);
    assert_eq!(u64::from_le_bytes(b), CID);
    let mut w = [0u8; 4];
    g.t.read(0x104, &mut w);
    assert_eq!(w, [0; 4]);
    g.t.read(0x108, &mut w);
    assert_eq!(w, [0; 4], "beyond the config space");
    let dev = lock(&g.dev);
    assert_eq!(dev.queue_max_sizes().len(), 3);
    assert_ne!(dev.avail_features() & (1 << VIRTIO_F_VERSION_1), 0);
    assert_eq!(dev.guest_cid(), CID);
    assert_eq!(dev.uds_path(), g.uds);
}

#[test]
fn constructor_checks_cid_and_path() {
    let dir = TempDir::new();
    let p = dir.0.join("s");
    for cid in [0, 1, 2, u64::from(u32::MAX), 1 << 32] {
        assert!(matches!(
            Vsock::new(cid, p.clone()),
            Err(VsockError::InvalidCid(c)) if c == cid
        ));
    }
    std::fs::write(&p, b"not a socket").unwrap();
    let e = Vsock::new(3, p.clone()).err().unwrap();
    assert!(matches!(e, VsockError::NotASocket(_)), "{e}");
    assert!(e.to_string().contains("not a Unix socket"));
    assert_eq!(std::fs::read(&p).unwrap(), b"not a socket");
    std::fs::remove_file(&p).unwrap();

    // A stale socket (nobody listening) is replaced; drop removes ours.
    drop(UnixListener::bind(&p).unwrap());
    assert!(p.exists());
    let v = Vsock::new(3, p.clone()).unwrap();
    UnixStream::connect(&p).unwrap();
    drop(v);
    assert!(!p.exists());

    let e = Vsock::new(3, dir.0.join("missing/dir/s")).err().unwrap();
    assert!(matches!(e, VsockError::Bind { .. }), "{e}");
}

#[test]
fn guest_connects_to_a_host_listener() {
    let mut g = Guest::new();
    let listener = UnixListener::bind(g.host_path(1234)).unwrap();
    let mut host = g.guest_connect(&listener, 5000, 1234);
    assert_eq!(g.conns(), 1);

    // Guest -> host.
    g.send(hdr(Op::Rw, 5000, 1234), b"hello host");
    assert_eq!(read_available(&mut host).0, b"hello host");

    // Host -> guest.
    host.write_all(b"hello guest").unwrap();
    let pkts = g.pump_recv();
    assert_eq!(ops(&pkts), [Op::Rw as u16]);
    let (h, data) = &pkts[0];
    assert_eq!((h.src_port, h.dst_port), (1234, 5000));
    assert_eq!(data, b"hello guest");
    // What the host forwarded shows up in our credit.
    assert_eq!(h.fwd_cnt, 10);

    // An interrupt was raised for the used buffers.
    assert_ne!(g.irq.status(), 0);

    // Guest closes: SHUTDOWN(both), the host sees EOF, the device resets
    // the connection as the spec's clean close demands.
    let mut sd = hdr(Op::Shutdown, 5000, 1234);
    sd.flags = SHUTDOWN_BOTH;
    g.send(sd, &[]);
    let pkts = g.pump_recv();
    assert_eq!(ops(&pkts), [Op::Rst as u16]);
    assert_eq!((pkts[0].0.src_port, pkts[0].0.dst_port), (1234, 5000));
    assert!(read_available(&mut host).1, "host sees EOF");
    assert_eq!(g.conns(), 0);
}

#[test]
fn unknown_ports_and_connections_get_rst() {
    let mut g = Guest::new();
    // Nobody listens on 77.
    g.send(hdr(Op::Request, 5000, 77), &[]);
    let pkts = g.recv();
    assert_eq!(ops(&pkts), [Op::Rst as u16]);
    assert_eq!((pkts[0].0.src_port, pkts[0].0.dst_port), (77, 5000));
    assert_eq!(g.conns(), 0);

    // A socket file that is not listening is as good as none.
    drop(UnixListener::bind(g.host_path(78)).unwrap());
    g.send(hdr(Op::Request, 5000, 78), &[]);
    assert_eq!(ops(&g.recv()), [Op::Rst as u16]);

    // Packets for connections that do not exist.
    for op in [
        Op::Rw,
        Op::Response,
        Op::Shutdown,
        Op::CreditUpdate,
        Op::CreditRequest,
    ] {
        g.send(hdr(op, 5001, 99), b"x");
        assert_eq!(ops(&g.recv()), [Op::Rst as u16], "{op:?}");
    }
    // A RST is never answered.
    g.send(hdr(Op::Rst, 5001, 99), &[]);
    assert!(g.recv().is_empty());
}

#[test]
fn host_connect_request_response_and_data() {
    let mut g = Guest::new();
    let (mut host, lport) = g.host_connect(52);
    assert_eq!(lport, FIRST_LOCAL_PORT);
    host.write_all(b"ping").unwrap();
    let pkts = g.pump_recv();
    assert_eq!(ops(&pkts), [Op::Rw as u16]);
    assert_eq!((pkts[0].0.src_port, pkts[0].0.dst_port), (lport, 52));
    assert_eq!(pkts[0].1, b"ping");
    g.send(hdr(Op::Rw, 52, lport), b"pong");
    assert_eq!(read_available(&mut host).0, b"pong");

    // A second one gets the next local port.
    let (_host2, lport2) = g.host_connect(52);
    assert_eq!(lport2, lport + 1);
    assert_eq!(g.conns(), 2);
}

#[test]
fn host_data_sent_with_the_connect_line_waits_for_the_guest() {
    let mut g = Guest::new();
    let mut s = UnixStream::connect(&g.uds).unwrap();
    s.write_all(b"CONNECT 9\nearly bytes").unwrap();
    let pkts = g.pump_recv();
    assert_eq!(ops(&pkts), [Op::Request as u16]);
    let lport = pkts[0].0.src_port;
    g.send(hdr(Op::Response, 9, lport), &[]);
    let pkts = g.pump_recv();
    assert_eq!(ops(&pkts), [Op::Rw as u16]);
    assert_eq!(pkts[0].1, b"early bytes");
    s.set_nonblocking(true).unwrap();
    assert_eq!(read_available(&mut s).0, format!("OK {lport}\n").as_bytes());
}

#[test]
fn guest_rst_or_refusal_closes_the_host_socket() {
    let mut g = Guest::new();
    let mut s = UnixStream::connect(&g.uds).unwrap();
    s.write_all(b"CONNECT 1\n").unwrap();
    let pkts = g.pump_recv();
    let lport = pkts[0].0.src_port;
    g.send(hdr(Op::Rst, 1, lport), &[]);
    s.set_nonblocking(true).unwrap();
    assert_eq!(read_available(&mut s), (vec![], true));
    assert_eq!(g.conns(), 0);

    // A guest that answers with something else than RESPONSE/RST.
    let mut s = UnixStream::connect(&g.uds).unwrap();
    s.write_all(b"CONNECT 1\n").unwrap();
    let pkts = g.pump_recv();
    let lport = pkts[0].0.src_port;
    g.send(hdr(Op::Rw, 1, lport), b"data");
    assert_eq!(ops(&g.recv()), [Op::Rst as u16]);
    s.set_nonblocking(true).unwrap();
    assert_eq!(read_available(&mut s), (vec![], true));
}

#[test]
fn bad_connect_lines_close_the_socket() {
    let mut g = Guest::new();
    let too_long = vec![b'9'; 64];
    for line in [
        &b"CONNECT abc\n"[..],
        b"HELLO 5\n",
        b"CONNECT 99999999999\n",
        b"CONNECT\n",
        &too_long,
    ] {
        let mut s = UnixStream::connect(&g.uds).unwrap();
        s.write_all(line).unwrap();
        g.pump();
        s.set_nonblocking(true).unwrap();
        assert_eq!(
            read_available(&mut s),
            (vec![], true),
            "{}",
            String::from_utf8_lossy(line)
        );
    }
    // EOF before the newline.
    let mut s = UnixStream::connect(&g.uds).unwrap();
    s.write_all(b"CONNECT 5").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    g.pump();
    s.set_nonblocking(true).unwrap();
    assert_eq!(read_available(&mut s), (vec![], true));
    assert!(g.recv().is_empty(), "the guest heard nothing");
    assert_eq!(g.conns(), 0);
}

#[test]
fn connect_line_split_over_several_writes() {
    let mut g = Guest::new();
    let mut s = UnixStream::connect(&g.uds).unwrap();
    for part in [&b"CONN"[..], b"ECT 4", b"2\n"] {
        s.write_all(part).unwrap();
        g.pump();
    }
    let pkts = g.recv();
    assert_eq!(ops(&pkts), [Op::Request as u16]);
    assert_eq!(pkts[0].0.dst_port, 42);
}

#[test]
fn unanswered_requests_and_silent_clients_time_out() {
    let mut g = Guest::new();
    g.set_timeouts(30);
    let mut s = UnixStream::connect(&g.uds).unwrap();
    s.write_all(b"CONNECT 7\n").unwrap();
    // The request and, 30 ms later, the reset: on a loaded machine both
    // can come out of one pump, so they are collected together.
    let mut pkts = g.pump_recv();
    s.set_nonblocking(true).unwrap();
    g.pump_until(Duration::from_secs(10), |g| g.conns() == 0);
    assert_eq!(read_available(&mut s), (vec![], true));
    pkts.extend(g.pump_recv());
    assert_eq!(ops(&pkts), [Op::Request as u16, Op::Rst as u16]);
    let lport = pkts[0].0.src_port;
    assert_eq!((pkts[1].0.src_port, pkts[1].0.dst_port), (lport, 7));

    // A client that never finishes its line.
    let mut s = UnixStream::connect(&g.uds).unwrap();
    s.write_all(b"CONN").unwrap();
    s.set_nonblocking(true).unwrap();
    g.pump_until(Duration::from_secs(10), |_| {
        read_available(&mut s) == (vec![], true)
    });
    assert!(g.recv().is_empty());
}

#[test]
fn requests_wait_for_rx_buffers_and_timeout_counts_from_delivery() {
    let mut g = Guest::with_rx_buffers(0);
    g.set_timeouts(30);
    let mut s = UnixStream::connect(&g.uds).unwrap();
    s.write_all(b"CONNECT 7\n").unwrap();
    g.pump();
    // No buffers: nothing delivered, and no timeout running yet (twice
    // the timeout has passed: a sleep here is the time that must pass).
    std::thread::sleep(Duration::from_millis(60));
    g.pump();
    assert_eq!(g.conns(), 1);
    // The answer below must beat the timeout that starts at delivery: a
    // long one, so a loaded machine cannot make the test late.
    g.set_timeouts(30_000);
    g.post_rx(4);
    let pkts = g.pump_recv();
    assert_eq!(ops(&pkts), [Op::Request as u16]);
    g.send(hdr(Op::Response, 7, pkts[0].0.src_port), &[]);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut ok = [0u8; 3];
    s.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"OK ");
}

/// Streams `total` bytes host -> guest through 4 KiB rx buffers, with the
/// guest returning credit as it consumes.
fn stream_host_to_guest(
    g: &mut Guest,
    host: &mut UnixStream,
    gport: u32,
    hport: u32,
    total: usize,
) {
    let mut sent = 0usize;
    let mut got = Vec::with_capacity(total);
    let mut fwd_cnt = 0u32;
    let mut rounds = 0;
    while got.len() < total {
        rounds += 1;
        assert!(rounds < 100_000, "stalled at {} of {total}", got.len());
        if sent < total {
            let chunk = pattern(sent, (total - sent).min(64 * 1024));
            match host.write(&chunk) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        let pkts = g.pump_recv();
        let mut consumed = 0u32;
        for (h, data) in pkts {
            match Op::from_raw(h.op) {
                Some(Op::Rw) => {
                    assert_eq!((h.src_port, h.dst_port), (hport, gport));
                    assert!(data.len() <= RX_BUF as usize - HDR_SIZE);
                    // Never more than the credit we gave.
                    let in_flight = (got.len() + data.len()) as u32 - fwd_cnt;
                    assert!(in_flight <= GUEST_BUF, "credit overrun: {in_flight}");
                    got.extend_from_slice(&data);
                    consumed += data.len() as u32;
                }
                Some(Op::CreditUpdate) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        if consumed > 0 {
            fwd_cnt = fwd_cnt.wrapping_add(consumed);
            let mut cu = hdr(Op::CreditUpdate, gport, hport);
            cu.fwd_cnt = fwd_cnt;
            g.send(cu, &[]);
        }
    }
    assert_eq!(got.len(), total);
    assert!(got == pattern(0, total), "stream corrupted");
}

/// Streams `total` bytes guest -> host in 64 KiB packets, honouring the
/// device's credit, the host reading as it goes.
fn stream_guest_to_host(
    g: &mut Guest,
    host: &mut UnixStream,
    gport: u32,
    hport: u32,
    total: usize,
) {
    let mut sent = 0usize;
    let mut got = Vec::with_capacity(total);
    let (mut buf_alloc, mut dev_fwd) = (CONN_BUF_SIZE, 0u32);
    let mut rounds = 0;
    while got.len() < total {
        rounds += 1;
        assert!(rounds < 100_000, "stalled at {} of {total}", got.len());
        let credit = buf_alloc - (sent as u32).wrapping_sub(dev_fwd);
        let n = (total - sent).min(MAX_PKT_PAYLOAD).min(credit as usize);
        if n > 0 {
            g.send(hdr(Op::Rw, gport, hport), &pattern(sent, n));
            sent += n;
        } else {
            g.pump();
        }
        got.extend(read_available(host).0);
        for (h, _) in g.pump_recv() {
            assert_eq!(h.op, Op::CreditUpdate as u16);
            buf_alloc = h.buf_alloc;
            dev_fwd = h.fwd_cnt;
        }
        assert!(lock(&g.dev).buffered_bytes() <= CONN_BUF_SIZE as usize);
    }
    assert!(got == pattern(0, total), "stream corrupted");
}

#[test]
fn multi_megabyte_streams_both_ways_with_credit_updates() {
    const TOTAL: usize = 4 << 20;
    let mut g = Guest::new();
    let listener = UnixListener::bind(g.host_path(80)).unwrap();
    let mut host = g.guest_connect(&listener, 6000, 80);
    stream_host_to_guest(&mut g, &mut host, 6000, 80, TOTAL);
    stream_guest_to_host(&mut g, &mut host, 6000, 80, TOTAL);

    // And on a host-initiated connection.
    let (mut host, lport) = g.host_connect(53);
    stream_host_to_guest(&mut g, &mut host, 53, lport, TOTAL);
    stream_guest_to_host(&mut g, &mut host, 53, lport, TOTAL);
}

#[test]
fn a_guest_that_never_reads_stops_the_host_writer() {
    let mut g = Guest::new();
    let listener = UnixListener::bind(g.host_path(81)).unwrap();
    // Small window, never returned.
    let mut req = hdr(Op::Request, 6001, 81);
    req.buf_alloc = 64 * 1024;
    g.send(req, &[]);
    assert_eq!(ops(&g.pump_recv()), [Op::Response as u16]);
    let (mut host, _) = listener.accept().unwrap();
    host.set_nonblocking(true).unwrap();

    let chunk = vec![0x5au8; 64 * 1024];
    let mut accepted = 0usize;
    let mut delivered = 0usize;
    let mut blocked_rounds = 0;
    while blocked_rounds < 20 {
        match host.write(&chunk) {
            Ok(n) => {
                accepted += n;
                blocked_rounds = 0;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => blocked_rounds += 1,
            Err(e) => panic!("{e}"),
        }
        for (h, data) in g.pump_recv() {
            assert_eq!(h.op, Op::Rw as u16);
            delivered += data.len();
        }
        assert!(accepted < 16 << 20, "host writes never stop");
    }
    assert_eq!(delivered, 64 * 1024, "exactly the guest's window");
    // The rest sits in the kernel's socket buffers, not in the VMM.
    assert_eq!(lock(&g.dev).buffered_bytes(), 0);
    assert!(accepted > delivered);

    // Returning the window lets exactly one more window through.
    let mut cu = hdr(Op::CreditUpdate, 6001, 81);
    cu.buf_alloc = 64 * 1024;
    cu.fwd_cnt = 64 * 1024;
    g.send(cu, &[]);
    let more: usize = g.pump_recv().iter().map(|(_, d)| d.len()).sum();
    assert_eq!(more, 64 * 1024);
}

#[test]
fn a_host_that_never_reads_bounds_the_buffer_and_credit_cheats_get_rst() {
    let mut g = Guest::new();
    let listener = UnixListener::bind(g.host_path(82)).unwrap();
    let _host = g.guest_connect(&listener, 6002, 82);
    let chunk = vec![0xa5u8; MAX_PKT_PAYLOAD];
    // Far more than the socket buffer plus our window, all at full speed,
    // ignoring credit.
    let mut reset = false;
    for _ in 0..256 {
        g.send(hdr(Op::Rw, 6002, 82), &chunk);
        assert!(lock(&g.dev).buffered_bytes() <= CONN_BUF_SIZE as usize);
        let pkts = g.recv();
        if ops(&pkts).contains(&(Op::Rst as u16)) {
            reset = true;
            break;
        }
    }
    assert!(
        reset,
        "overrunning the advertised credit resets the connection"
    );
    assert_eq!(lock(&g.dev).buffered_bytes(), 0);
    assert_eq!(g.conns(), 0);
}

#[test]
fn credit_request_and_credit_update_when_the_host_drains() {
    let mut g = Guest::new();
    let listener = UnixListener::bind(g.host_path(83)).unwrap();
    let mut host = g.guest_connect(&listener, 6003, 83);
    g.send(hdr(Op::CreditRequest, 6003, 83), &[]);
    let pkts = g.recv();
    assert_eq!(ops(&pkts), [Op::CreditUpdate as u16]);
    assert_eq!((pkts[0].0.buf_alloc, pkts[0].0.fwd_cnt), (CONN_BUF_SIZE, 0));

    // Use up all credit while the host does not read, as a well-behaved
    // guest would: the socket fills, then the device's buffer.
    let (mut sent, mut last_fwd) = (0u32, 0u32);
    for round in 0.. {
        assert!(round < 1000, "credit never runs out");
        let credit = CONN_BUF_SIZE - sent.wrapping_sub(last_fwd);
        if credit == 0 {
            break;
        }
        let n = credit.min(MAX_PKT_PAYLOAD as u32);
        g.send(hdr(Op::Rw, 6003, 83), &vec![1u8; n as usize]);
        sent += n;
        for (h, _) in g.recv() {
            assert_eq!(h.op, Op::CreditUpdate as u16);
            last_fwd = h.fwd_cnt;
        }
    }
    assert!(lock(&g.dev).buffered_bytes() > 0, "the device holds data");
    assert!(lock(&g.dev).buffered_bytes() <= CONN_BUF_SIZE as usize);

    // The guest is now blocked on credit; once the host reads, updates
    // must follow by themselves until it can send a full packet again.
    let mut drained = 0usize;
    g.pump_until(Duration::from_secs(10), |g| {
        drained += read_available(&mut host).0.len();
        for (h, _) in g.pump_recv() {
            assert_eq!(h.op, Op::CreditUpdate as u16);
            last_fwd = h.fwd_cnt;
        }
        drained == sent as usize
            && CONN_BUF_SIZE - sent.wrapping_sub(last_fwd) >= MAX_PKT_PAYLOAD as u32
    });
    assert_eq!(lock(&g.dev).buffered_bytes(), 0);
}

#[test]
fn shutdown_in_each_direction() {
    let mut g = Guest::new();
    let listener = UnixListener::bind(g.host_path(84)).unwrap();
    let mut host = g.guest_connect(&listener, 6004, 84);

    // Guest shuts its send side: the host reads EOF but can still answer.
    g.send(hdr(Op::Rw, 6004, 84), b"request");
    let mut sd = hdr(Op::Shutdown, 6004, 84);
    sd.flags = SHUTDOWN_SEND;
    g.send(sd, &[]);
    assert_eq!(read_available(&mut host), (b"request".to_vec(), true));
    host.write_all(b"response").unwrap();
    let pkts = g.pump_recv();
    assert_eq!(ops(&pkts), [Op::Rw as u16]);
    assert_eq!(pkts[0].1, b"response");
    // Data after the guest's SHUTDOWN(SEND) is dropped, not forwarded.
    g.send(hdr(Op::Rw, 6004, 84), b"late");
    assert_eq!(read_available(&mut host).0, b"");

    // Host closes: the guest gets SHUTDOWN after the last byte.
    host.write_all(b"bye").unwrap();
    drop(host);
    let pkts = g.pump_recv();
    assert_eq!(ops(&pkts), [Op::Rw as u16, Op::Shutdown as u16]);
    assert_eq!(pkts[0].1, b"bye");
    assert_eq!(pkts[1].0.flags & SHUTDOWN_SEND, SHUTDOWN_SEND);
    // The guest's RST completes the close.
    g.send(hdr(Op::Rst, 6004, 84), &[]);
    assert_eq!(g.conns(), 0);
    assert!(g.recv().is_empty());
}

#[test]
fn host_half_close_keeps_the_other_direction() {
    let mut g = Guest::new();
    let (mut host, lport) = g.host_connect(60);
    host.write_all(b"question").unwrap();
    host.shutdown(std::net::Shutdown::Write).unwrap();
    let pkts = g.pump_recv();
    assert_eq!(ops(&pkts), [Op::Rw as u16, Op::Shutdown as u16]);
    assert_eq!(pkts[1].0.flags, SHUTDOWN_SEND);
    // The guest still answers; the host still reads.
    g.send(hdr(Op::Rw, 60, lport), b"answer");
    assert_eq!(read_available(&mut host).0, b"answer");
    // Guest closes fully: RST, host socket closed.
    let mut sd = hdr(Op::Shutdown, 60, lport);
    sd.flags = SHUTDOWN_BOTH;
    g.send(sd, &[]);
    assert_eq!(ops(&g.pump_recv()), [Op::Rst as u16]);
    assert!(read_available(&mut host).1);
    assert_eq!(g.conns(), 0);
}

#[test]
fn a_guest_that_never_acknowledges_a_close_is_reset() {
    let mut g = Guest::new();
    g.set_timeouts(30);
    let listener = UnixListener::bind(g.host_path(85)).unwrap();
    let host = g.guest_connect(&listener, 6005, 85);
    drop(host);
    // The shutdown and, 30 ms later, the reset: collected together, as a
    // loaded machine can bring both out of one pump.
    let mut pkts = g.pump_recv();
    g.pump_until(Duration::from_secs(10), |g| g.conns() == 0);
    pkts.extend(g.pump_recv());
    assert_eq!(ops(&pkts), [Op::Shutdown as u16, Op::Rst as u16]);
    assert_eq!(pkts[0].0.flags, SHUTDOWN_BOTH);
}

#[test]
fn guest_data_to_a_closed_host_resets() {
    let mut g = Guest::new();
    let listener = UnixListener::bind(g.host_path(86)).unwrap();
    let host = g.guest_connect(&listener, 6006, 86);
    drop(host);
    g.pump();
    g.send(hdr(Op::Rw, 6006, 86), b"anyone?");
    let o = ops(&g.recv());
    assert_eq!(o.last(), Some(&(Op::Rst as u16)), "{o:?}");
    assert_eq!(g.conns(), 0);
}

#[test]
fn guest_shutdown_rcv_stops_host_to_guest_data() {
    let mut g = Guest::new();
    let listener = UnixListener::bind(g.host_path(87)).unwrap();
    let mut host = g.guest_connect(&listener, 6007, 87);
    let mut sd = hdr(Op::Shutdown, 6007, 87);
    sd.flags = SHUTDOWN_RCV;
    g.send(sd, &[]);
    host.write_all(b"unwanted").unwrap();
    assert!(g.pump_recv().is_empty());
    // The other direction still works.
    g.send(hdr(Op::Rw, 6007, 87), b"still here");
    assert_eq!(read_available(&mut host).0, b"still here");
}

#[test]
fn rx_waits_for_buffers_and_loses_nothing() {
    let mut g = Guest::with_rx_buffers(1);
    let listener = UnixListener::bind(g.host_path(88)).unwrap();
    let mut host = g.guest_connect(&listener, 6008, 88);
    // The one buffer went back to the device; use it, then none left.
    let data = pattern(0, 20_000);
    host.write_all(&data).unwrap();
    g.pump();
    // Only what one buffer holds came through; the rest waits.
    let used_before = g.rx.used_idx();
    let first = g.recv();
    assert_eq!(first.len(), 1);
    g.pump();
    let mut got: Vec<u8> = first.into_iter().flat_map(|(_, d)| d).collect();
    // recv() re-posted one buffer at a time: each pump delivers one more.
    for _ in 0..10 {
        got.extend(g.pump_recv().into_iter().flat_map(|(_, d)| d));
    }
    assert!(g.rx.used_idx().wrapping_sub(used_before) > 1);
    assert_eq!(got, data);
}

#[test]
fn malformed_and_hostile_packets() {
    let mut g = Guest::new();
    let listener = UnixListener::bind(g.host_path(89)).unwrap();
    let mut host = g.guest_connect(&listener, 6009, 89);

    // Spoofed source CID: dropped without a word, connection unharmed.
    for cid in [0u64, 2, 4, u64::MAX] {
        let mut h = hdr(Op::Rw, 6009, 89);
        h.src_cid = cid;
        g.send(h, b"spoof");
        let mut rst = hdr(Op::Rst, 6009, 89);
        rst.src_cid = cid;
        g.send(rst, &[]);
    }
    assert!(g.recv().is_empty());
    assert_eq!(read_available(&mut host).0, b"");
    assert_eq!(g.conns(), 1);

    // Wrong type, unknown ops, other destination CID: RST, no connection.
    let mut h = hdr(Op::Request, 7000, 89);
    h.type_ = 2;
    g.send(h, &[]);
    for op in [0u16, 8, 0xffff] {
        let mut h = hdr(Op::Request, 7001, 89);
        h.op = op;
        g.send(h, &[]);
    }
    let mut h = hdr(Op::Request, 7002, 89);
    h.dst_cid = 42;
    g.send(h, &[]);
    let pkts = g.recv();
    assert_eq!(ops(&pkts), [Op::Rst as u16; 5]);
    assert!(pkts[..4].iter().all(|(h, _)| h.src_cid == HOST_CID));
    // The RST comes from whoever the guest tried to reach.
    assert_eq!((pkts[4].0.src_cid, pkts[4].0.src_port), (42, 89));
    assert_eq!(g.conns(), 1);

    // Header shorter than 44 bytes, or outside guest memory: dropped.
    let slot = TX_BASE + 0x30_0000;
    g.mem
        .write_slice(&hdr(Op::Request, 7003, 89).to_bytes(), GuestAddress(slot))
        .unwrap();
    g.tx.set_desc(100, slot, 40, 0, 0);
    g.tx.push_avail(100);
    g.tx.set_desc(101, MEM - 20, 44, 0, 0);
    g.tx.push_avail(101);
    // A chain that starts writable has no readable header.
    g.tx.set_desc(102, slot, 44, F_WRITE, 0);
    g.tx.push_avail(102);
    wr(&mut g.t, QUEUE_NOTIFY, 1);
    g.pump();
    assert!(g.recv().is_empty());

    assert_eq!(g.conns(), 1);

    // A header split over descriptors is still a header.
    g.tx.set_desc(103, slot, 10, F_NEXT, 104);
    g.tx.set_desc(104, slot + 10, 34, 0, 0);
    g.tx.push_avail(103);
    wr(&mut g.t, QUEUE_NOTIFY, 1);
    g.pump();
    let pkts = g.recv();
    assert_eq!(ops(&pkts), [Op::Response as u16]);
    assert_eq!(pkts[0].0.dst_port, 7003);
    assert_eq!(g.conns(), 2);
}

#[test]
fn length_fields_that_lie_reset_the_stream() {
    let mut g = Guest::new();
    let listener = UnixListener::bind(g.host_path(90)).unwrap();
    let mut host = g.guest_connect(&listener, 6010, 90);
    // len larger than the buffer behind the header.
    let mut h = hdr(Op::Rw, 6010, 90);
    h.len = 100;
    g.send(h, b"only ten b");
    let pkts = g.recv();
    assert_eq!(ops(&pkts), [Op::Rst as u16]);
    assert_eq!(g.conns(), 0);
    assert_eq!(read_available(&mut host), (vec![], true));

    // len beyond the maximum packet, with a huge buffer behind it.
    let mut host = g.guest_connect(&listener, 6011, 90);
    let mut h = hdr(Op::Rw, 6011, 90);
    h.len = u32::MAX;
    g.send(h, &vec![0u8; 70_000]);
    assert_eq!(ops(&g.recv()), [Op::Rst as u16]);
    assert_eq!(read_available(&mut host), (vec![], true));

    // Lying lengths without a connection: RST, but never for a RST.
    let mut h = hdr(Op::Rw, 6012, 90);
    h.len = 1 << 20;
    g.send(h, &[]);
    let mut r = hdr(Op::Rst, 6012, 90);
    r.len = 1 << 20;
    g.send(r, &[]);
    assert_eq!(ops(&g.recv()), [Op::Rst as u16]);

    // Control packets with a payload: the payload is ignored.
    let mut host = g.guest_connect(&listener, 6013, 90);
    let mut h = hdr(Op::CreditUpdate, 6013, 90);
    h.len = 3;
    g.send(h, b"abc");
    assert!(g.recv().is_empty());
    assert_eq!(read_available(&mut host).0, b"");
    assert_eq!(g.conns(), 1);
}

#[test]
fn protocol_violations_reset_the_connection() {
    let mut g = Guest::new();
    let listener = UnixListener::bind(g.host_path(91)).unwrap();
    // REQUEST for a connection that exists.
    let mut host = g.guest_connect(&listener, 6014, 91);
    g.send(hdr(Op::Request, 6014, 91), &[]);
    assert_eq!(ops(&g.recv()), [Op::Rst as u16]);
    assert_eq!(read_available(&mut host), (vec![], true));
    // RESPONSE on an established connection.
    let mut host = g.guest_connect(&listener, 6015, 91);
    g.send(hdr(Op::Response, 6015, 91), &[]);
    assert_eq!(ops(&g.recv()), [Op::Rst as u16]);
    assert_eq!(read_available(&mut host), (vec![], true));
    assert_eq!(g.conns(), 0);
}

#[test]
fn a_guest_lying_about_credit_gets_nothing_extra() {
    let mut g = Guest::new();
    let listener = UnixListener::bind(g.host_path(92)).unwrap();
    let mut host = g.guest_connect(&listener, 6016, 92);
    // fwd_cnt ahead of what it was ever sent: no credit at all.
    let mut cu = hdr(Op::CreditUpdate, 6016, 92);
    cu.fwd_cnt = 1000;
    g.send(cu, &[]);
    host.write_all(b"data").unwrap();
    assert!(g.pump_recv().is_empty());
    // buf_alloc of u32::MAX: data flows, bounded by rx buffers.
    cu.fwd_cnt = 0;
    cu.buf_alloc = u32::MAX;
    g.send(cu, &[]);
    let pkts = g.pump_recv();
    assert_eq!(ops(&pkts), [Op::Rw as u16]);
    assert_eq!(pkts[0].1, b"data");
}

#[test]
fn connection_limit() {
    let mut g = Guest::new();
    let listener = UnixListener::bind(g.host_path(93)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut hosts = Vec::new();
    for i in 0..MAX_CONNECTIONS as u32 {
        g.send(hdr(Op::Request, 10_000 + i, 93), &[]);
        let pkts = g.recv();
        assert_eq!(ops(&pkts), [Op::Response as u16], "connection {i}");
        hosts.push(listener.accept().unwrap().0);
    }
    g.send(hdr(Op::Request, 20_000, 93), &[]);
    assert_eq!(ops(&g.recv()), [Op::Rst as u16]);
    assert!(listener.accept().is_err(), "nothing reached the host");
    // Host clients are refused too.
    let mut s = UnixStream::connect(&g.uds).unwrap();
    s.write_all(b"CONNECT 1\n").unwrap();
    g.pump();
    s.set_nonblocking(true).unwrap();
    assert_eq!(read_available(&mut s), (vec![], true));
    assert_eq!(g.conns(), MAX_CONNECTIONS);
    // Freeing one admits one.
    g.send(hdr(Op::Rst, 10_000, 93), &[]);
    g.send(hdr(Op::Request, 20_000, 93), &[]);
    assert_eq!(ops(&g.recv()), [Op::Response as u16]);
}

#[test]
fn tx_pauses_while_the_guest_does_not_take_replies() {
    let mut g = Guest::with_rx_buffers(0);
    // 300 packets that each earn a RST, with nowhere to put the RSTs.
    let mut queued = 0u16;
    for round in 0..10u32 {
        for i in 0..30u32 {
            g.queue_tx(hdr(Op::Rw, 30_000 + round * 30 + i, 1), b"x");
            queued += 1;
        }
        wr(&mut g.t, QUEUE_NOTIFY, 1);
        g.pump();
        // Consumed tx slots are reused: keep within what was processed.
        let used = g.tx.used_idx();
        assert!(queued.wrapping_sub(used) <= TX_SLOTS, "slots overrun");
        if used != queued {
            break;
        }
    }
    let used = g.tx.used_idx();
    assert!(used < queued, "tx kept going without the guest taking RSTs");
    assert!(usize::from(used) >= super::muxer::CTL_QUEUE_STALL);
    // Buffers arrive: RSTs flow, tx resumes and finishes.
    let mut rsts = 0;
    g.post_rx(QSIZE);
    g.pump_until(Duration::from_secs(10), |g| {
        rsts += g.pump_recv().len();
        rsts == usize::from(queued)
    });
    assert_eq!(g.tx.used_idx(), queued);
}

#[test]
fn reset_closes_every_connection_and_the_device_comes_back() {
    let mut g = Guest::new();
    let listener = UnixListener::bind(g.host_path(94)).unwrap();
    let mut h1 = g.guest_connect(&listener, 6020, 94);
    let (mut h2, _) = g.host_connect(61);
    wr(&mut g.t, STATUS, 0);
    assert!(!lock(&g.dev).is_activated());
    g.pump();
    assert_eq!(g.conns(), 0);
    assert!(read_available(&mut h1).1);
    assert!(read_available(&mut h2).1);

    // Probe again on fresh rings.
    for r in RINGS {
        GuestRing::new(&g.mem, QSIZE, r);
    }
    g.rx = GuestRing::new(&g.mem, QSIZE, RINGS[0]);
    g.tx = GuestRing::new(&g.mem, QSIZE, RINGS[1]);
    g.rx_seen = 0;
    g.rx_posted = 0;
    g.tx_next = 0;
    let queues: Vec<_> = RINGS.iter().map(|&r| (u32::from(QSIZE), r)).collect();
    linux_probe(&mut g.t, &queues);
    assert!(lock(&g.dev).is_activated());
    g.post_rx(16);
    let mut h = g.guest_connect(&listener, 6021, 94);
    g.send(hdr(Op::Rw, 6021, 94), b"again");
    assert_eq!(read_available(&mut h).0, b"again");
}

#[test]
fn activation_needs_three_ready_queues() {
    use virtio_queue::{Queue, QueueT};
    let dir = TempDir::new();
    let mut v = Vsock::new(CID, dir.0.join("s")).unwrap();
    let mem = guest_memory();
    let irq = interrupt();
    let q = || {
        let mut q = Queue::new(QSIZE).unwrap();
        q.set_ready(true);
        q
    };
    assert!(matches!(
        v.activate(Activated::new(mem.clone(), irq.clone(), vec![q(), q()])),
        Err(crate::virtio::ActivateError::QueueCount {
            expected: 3,
            got: 2
        })
    ));
    let idle = Queue::new(QSIZE).unwrap();
    assert!(matches!(
        v.activate(Activated::new(
            mem.clone(),
            irq.clone(),
            vec![q(), q(), idle]
        )),
        Err(crate::virtio::ActivateError::QueueNotReady(2))
    ));
    v.activate(Activated::new(
        mem.clone(),
        irq.clone(),
        vec![q(), q(), q()],
    ))
    .unwrap();
    assert!(matches!(
        v.activate(Activated::new(mem, irq, vec![q(), q(), q()])),
        Err(crate::virtio::ActivateError::AlreadyActive)
    ));
    assert!(v.reset());
    assert!(!v.is_activated());
}

#[test]
fn socket_path_of_the_guest_port_is_uds_path_underscore_port() {
    let g = Guest::new();
    let p = g.host_path(5);
    assert_eq!(p, Path::new(&format!("{}_5", g.uds.display())));
    assert!(p.starts_with(&g.dir.0));
}

#[test]
fn a_host_listener_that_never_accepts_cannot_block_the_loop() {
    use std::os::fd::AsRawFd;
    let mut g = Guest::new();
    let listener = UnixListener::bind(g.host_path(95)).unwrap();
    // SAFETY: listen(2) on a socket we own, integer arguments only; it just
    // shrinks the backlog so it fills after a couple of connections.
    assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 1) }, 0);
    let mut answers = Vec::new();
    for i in 0..8u32 {
        g.send(hdr(Op::Request, 40_000 + i, 95), &[]);
        answers.extend(ops(&g.recv()));
    }
    // Some made it into the backlog; once it is full the rest are refused
    // right away instead of the connect(2) waiting for an accept.
    assert_eq!(answers.len(), 8);
    assert_eq!(answers[0], Op::Response as u16);
    assert_eq!(answers[7], Op::Rst as u16);
}
