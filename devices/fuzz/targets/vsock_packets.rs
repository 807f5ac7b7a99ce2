//! Feeds a virtio-vsock device arbitrary guest packets, rx buffers, host
//! clients and ring corruption, running its real event loop, and checks
//! that it neither panics nor holds more host memory than its limits.
//!
//! Input: a sequence of operations, each one opcode byte (low 3 bits):
//! - 0 guest packet, mostly valid: op u8, src port u8, dst port u8, flags
//!   u8, buf_alloc u32, fwd_cnt u32, payload len u16 (cut to 8 KiB), then
//!   the payload; CIDs and type are right, ports come from small sets so
//!   packets meet the connections they belong to
//! - 1 guest packet, raw: 44 header bytes, layout u8 (where the header is
//!   split across descriptors), payload len u16 (cut to 8 KiB), payload
//! - 2 post rx buffers: count u8 (& 15), size u8 (index into RX_SIZES)
//! - 3 host client: port u8; writes `CONNECT <port>\n`, or garbage when
//!   bit 7 of the port byte is set
//! - 4 host write: client u8, len u8, bytes
//! - 5 host close: client u8, how u8 (shutdown write / read / close)
//! - 6 run the event loop, accept on the host listener, drain host reads
//! - 7 guest memory write: addr u16, len u8, bytes (rings included)

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use devices::bus::lock;
use devices::virtio::vsock::{CONN_BUF_SIZE, FIRST_LOCAL_PORT, HOST_CID, MAX_CONNECTIONS};
use devices::virtio::{Activated, Interrupt, VirtioDevice, Vsock};
use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const CID: u64 = 3;
const QSIZE: u16 = 16;
const MEM: u64 = 0x4_0000;
/// (descriptor table, available ring, used ring) of rx, tx, event.
const RINGS: [(u64, u64, u64); 3] = [
    (0x0000, 0x1000, 0x2000),
    (0x3000, 0x4000, 0x5000),
    (0x6000, 0x7000, 0x8000),
];
const TX_BASE: u64 = 0x1_0000;
const TX_SLOT: u64 = 0x2000;
const RX_BASE: u64 = 0x3_0000;
const RX_SLOT: u64 = 0x1000;
const RX_SIZES: [u32; 4] = [4096, 44, 10, 100];
const MAX_PAYLOAD: usize = 0x2000 - 0x100;
const LISTEN_PORT: u32 = 80;

#[path = "input.rs"]
mod input;
use input::Input;

/// The driver's side of one split ring.
struct Ring {
    desc: u64,
    avail: u64,
    used: u64,
    avail_idx: u16,
}

impl Ring {
    fn new(mem: &GuestMemoryMmap, (desc, avail, used): (u64, u64, u64)) -> Self {
        let _ = mem.write_slice(&[0; 4], GuestAddress(avail));
        let _ = mem.write_slice(&[0; 4], GuestAddress(used));
        Self {
            desc,
            avail,
            used,
            avail_idx: 0,
        }
    }

    fn set_desc(&self, mem: &GuestMemoryMmap, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        let _ = mem.write_slice(&raw, GuestAddress(self.desc + 16 * u64::from(i % QSIZE)));
    }

    /// Chains the device has not returned yet.
    fn outstanding(&self, mem: &GuestMemoryMmap) -> u16 {
        let used: u16 = mem.read_obj(GuestAddress(self.used + 2)).unwrap_or(0);
        self.avail_idx.wrapping_sub(u16::from_le(used))
    }

    fn push(&mut self, mem: &GuestMemoryMmap, head: u16) {
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % QSIZE);
        let _ = mem.write_obj(head.to_le(), GuestAddress(slot));
        self.avail_idx = self.avail_idx.wrapping_add(1);
        let _ = mem.write_obj(self.avail_idx.to_le(), GuestAddress(self.avail + 2));
    }
}

fn uds_path() -> PathBuf {
    std::env::temp_dir().join(format!("mvm-vsock-fuzz-{}.sock", std::process::id()))
}

fn port_path(port: u32) -> PathBuf {
    let mut p = uds_path().into_os_string();
    p.push(format!("_{port}"));
    p.into()
}

fn header(
    op: u16,
    src_port: u32,
    dst_port: u32,
    len: u32,
    flags: u32,
    buf_alloc: u32,
    fwd_cnt: u32,
) -> [u8; 44] {
    let mut b = [0u8; 44];
    b[0..8].copy_from_slice(&CID.to_le_bytes());
    b[8..16].copy_from_slice(&HOST_CID.to_le_bytes());
    b[16..20].copy_from_slice(&src_port.to_le_bytes());
    b[20..24].copy_from_slice(&dst_port.to_le_bytes());
    b[24..28].copy_from_slice(&len.to_le_bytes());
    b[28..30].copy_from_slice(&1u16.to_le_bytes());
    b[30..32].copy_from_slice(&op.to_le_bytes());
    b[32..36].copy_from_slice(&flags.to_le_bytes());
    b[36..40].copy_from_slice(&buf_alloc.to_le_bytes());
    b[40..44].copy_from_slice(&fwd_cnt.to_le_bytes());
    b
}

struct World {
    mem: GuestMemoryMmap,
    dev: Arc<Mutex<Vsock>>,
    em: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>,
    rx: Ring,
    tx: Ring,
    rx_next: u16,
    tx_next: u16,
    listener: UnixListener,
    clients: Vec<UnixStream>,
}

impl World {
    fn new(event_idx: bool) -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap();
        let _ = std::fs::remove_file(port_path(LISTEN_PORT));
        let listener = UnixListener::bind(port_path(LISTEN_PORT)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let dev = Arc::new(Mutex::new(Vsock::new(CID, uds_path()).unwrap()));
        let rx = Ring::new(&mem, RINGS[0]);
        let tx = Ring::new(&mem, RINGS[1]);
        Ring::new(&mem, RINGS[2]);
        let queues = RINGS
            .iter()
            .map(|&(d, a, u)| {
                let mut q = Queue::new(QSIZE).unwrap();
                q.try_set_desc_table_address(GuestAddress(d)).unwrap();
                q.try_set_avail_ring_address(GuestAddress(a)).unwrap();
                q.try_set_used_ring_address(GuestAddress(u)).unwrap();
                q.set_event_idx(event_idx);
                q.set_ready(true);
                q
            })
            .collect();
        let irq = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        lock(&dev)
            .activate(Activated::new(mem.clone(), irq, queues))
            .unwrap();
        let mut em = EventManager::new().unwrap();
        em.add_subscriber(dev.clone() as Arc<Mutex<dyn MutEventSubscriber + Send>>);
        Self {
            mem,
            dev,
            em,
            rx,
            tx,
            rx_next: 0,
            tx_next: 0,
            listener,
            clients: Vec::new(),
        }
    }

    fn kick(&self, queue: usize) {
        let _ = lock(&self.dev).queue_events()[queue].write(1);
    }

    fn run(&mut self) {
        for _ in 0..64 {
            if self.em.run_with_timeout(0).unwrap_or(0) == 0 {
                break;
            }
        }
        let dev = lock(&self.dev);
        assert!(dev.connection_count() <= MAX_CONNECTIONS);
        assert!(dev.buffered_bytes() <= dev.connection_count() * CONN_BUF_SIZE as usize);
    }

    /// Header (split at `split` bytes when that is inside it) and payload.
    fn send(&mut self, hdr: &[u8], split: usize, payload: &[u8]) {
        if self.tx.outstanding(&self.mem) >= QSIZE {
            return;
        }
        let slot = self.tx_next % (QSIZE / 2);
        self.tx_next = self.tx_next.wrapping_add(1);
        let base = TX_BASE + u64::from(slot) * TX_SLOT;
        let _ = self.mem.write_slice(hdr, GuestAddress(base));
        let _ = self.mem.write_slice(payload, GuestAddress(base + 0x100));
        let d = 2 * slot;
        let hlen = hdr.len() as u32;
        if split > 0 && split < hdr.len() {
            // Descriptor d: the header's first `split` bytes; d + 1: the
            // rest of it followed by the payload, contiguous in memory.
            let tail = (hdr.len() - split) as u64;
            let _ = self
                .mem
                .write_slice(&hdr[split..], GuestAddress(base + 0x100 - tail));
            self.tx.set_desc(&self.mem, d, base, split as u32, 1, d + 1);
            let rest = tail as u32 + payload.len() as u32;
            self.tx
                .set_desc(&self.mem, d + 1, base + 0x100 - tail, rest, 0, 0);
        } else if payload.is_empty() {
            self.tx.set_desc(&self.mem, d, base, hlen, 0, 0);
        } else {
            self.tx.set_desc(&self.mem, d, base, hlen, 1, d + 1);
            self.tx
                .set_desc(&self.mem, d + 1, base + 0x100, payload.len() as u32, 0, 0);
        }
        self.tx.push(&self.mem, d);
        self.kick(1);
    }

    fn post_rx(&mut self, n: u8, size: u32) {
        for _ in 0..n {
            if self.rx.outstanding(&self.mem) >= QSIZE {
                break;
            }
            let i = self.rx_next % QSIZE;
            self.rx_next = self.rx_next.wrapping_add(1);
            self.rx
                .set_desc(&self.mem, i, RX_BASE + u64::from(i) * RX_SLOT, size, 2, 0);
            self.rx.push(&self.mem, i);
        }
        self.kick(0);
    }

    fn client(&mut self, i: u8) -> Option<&mut UnixStream> {
        let n = self.clients.len();
        if n == 0 {
            return None;
        }
        self.clients.get_mut(usize::from(i) % n)
    }
}

fn ports(sel: u8) -> u32 {
    match sel & 3 {
        0 => LISTEN_PORT,
        1 => 81,
        2 => FIRST_LOCAL_PORT + u32::from(sel >> 2 & 7),
        _ => u32::from(sel),
    }
}

pub fn run(data: &[u8]) {
    let mut input = Input(data);
    let Some(first) = input.u8() else {
        return;
    };
    let mut w = World::new(first & 1 != 0);
    while let Some(op) = input.u8() {
        match op & 7 {
            0 => {
                let (Some(gop), Some(sp), Some(dp), Some(flags), Some(ba), Some(fc), Some(len)) = (
                    input.u8(),
                    input.u8(),
                    input.u8(),
                    input.u8(),
                    input.u32(),
                    input.u32(),
                    input.u16(),
                ) else {
                    break;
                };
                let payload = input.bytes(usize::from(len).min(MAX_PAYLOAD)).to_vec();
                // Guest ports: a few fixed ones, or the port of a host client.
                let src = 1000 + u32::from(sp & 7);
                let src = if sp & 8 != 0 { u32::from(sp >> 4) } else { src };
                let dst = ports(dp);
                // Mostly an honest length, sometimes a lie.
                let hlen = if op & 0x80 != 0 {
                    u32::from(len)
                } else {
                    payload.len() as u32
                };
                let hdr = header(u16::from(gop % 9), src, dst, hlen, u32::from(flags), ba, fc);
                w.send(&hdr, 0, &payload);
            }
            1 => {
                let Some(raw) = input.take::<44>() else {
                    break;
                };
                let (Some(layout), Some(len)) = (input.u8(), input.u16()) else {
                    break;
                };
                let payload = input.bytes(usize::from(len).min(MAX_PAYLOAD)).to_vec();
                w.send(&raw, usize::from(layout % 45), &payload);
            }
            2 => {
                let (Some(n), Some(size)) = (input.u8(), input.u8()) else {
                    break;
                };
                w.post_rx(n & 15, RX_SIZES[usize::from(size & 3)]);
            }
            3 => {
                let Some(port) = input.u8() else {
                    break;
                };
                if w.clients.len() < 8 {
                    if let Ok(mut s) = UnixStream::connect(uds_path()) {
                        let line = if port & 0x80 != 0 {
                            b"CONNECT x\n".to_vec()
                        } else {
                            format!("CONNECT {}\n", 1000 + u32::from(port & 7)).into_bytes()
                        };
                        let _ = s.write_all(&line);
                        let _ = s.set_nonblocking(true);
                        w.clients.push(s);
                    }
                }
            }
            4 => {
                let (Some(i), Some(len)) = (input.u8(), input.u8()) else {
                    break;
                };
                let bytes = input.bytes(usize::from(len)).to_vec();
                if let Some(s) = w.client(i) {
                    let _ = s.write(&bytes);
                }
            }
            5 => {
                let (Some(i), Some(how)) = (input.u8(), input.u8()) else {
                    break;
                };
                let n = w.clients.len();
                if n > 0 {
                    let idx = usize::from(i) % n;
                    match how % 3 {
                        0 => {
                            let _ = w.clients[idx].shutdown(std::net::Shutdown::Write);
                        }
                        1 => {
                            let _ = w.clients[idx].shutdown(std::net::Shutdown::Read);
                        }
                        _ => {
                            w.clients.swap_remove(idx);
                        }
                    }
                }
            }
            6 => {
                w.run();
                while let Ok((s, _)) = w.listener.accept() {
                    if w.clients.len() < 16 {
                        let _ = s.set_nonblocking(true);
                        w.clients.push(s);
                    }
                }
                let mut buf = [0u8; 4096];
                for s in &mut w.clients {
                    let _ = s.read(&mut buf);
                }
            }
            _ => {
                let (Some(addr), Some(len)) = (input.u16(), input.u8()) else {
                    break;
                };
                let bytes = input.bytes(usize::from(len));
                let _ = w.mem.write_slice(bytes, GuestAddress(u64::from(addr)));
            }
        }
    }
    w.run();
}
