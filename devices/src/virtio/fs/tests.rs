//! virtio-fs driven through the MMIO transport the way a Linux guest does,
//! with real guest memory and real layer directories, plus hostile chains.

use std::sync::{Arc, Mutex};

use cowfs::abi::{self, op, ROOT_ID};
use cowfs::client::{cstr, request};
use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use vm_memory::GuestMemoryMmap;
use zerocopy::{FromBytes, IntoBytes};

use super::{Fs, FsError, ShareConfig, ShareMode, MAX_REQUEST};
use crate::bus::lock;
use crate::virtio::features::{VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};
use crate::virtio::status::{DEVICE_NEEDS_RESET, DRIVER_OK};
use crate::virtio::test_utils::*;
use crate::virtio::{Interrupt, MmioTransport, VirtioDevice, TYPE_FS};

const REQ: u64 = 0x10000;
const REP: u64 = 0x40000;
const SIZE: u16 = 16;
const HIPRIO: usize = 0;
const REQUESTS: usize = 1;

struct Fixture {
    _dirs: tempfile::TempDir,
    lower: std::path::PathBuf,
    upper: std::path::PathBuf,
    mem: GuestMemoryMmap,
    irq: Arc<Interrupt>,
    fs: Arc<Mutex<Fs>>,
    t: MmioTransport,
    rings: Vec<GuestRing>,
    next_desc: u16,
}

fn fixture() -> Fixture {
    let dirs = tempfile::tempdir().unwrap();
    let lower = dirs.path().join("lower");
    let upper = dirs.path().join("upper");
    std::fs::create_dir_all(lower.join("dir")).unwrap();
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::write(lower.join("a.txt"), b"hello from the host").unwrap();
    let share = ShareConfig {
        lower: lower.clone(),
        upper: Some(upper.clone()),
        mode: ShareMode::Cow,
        masked: Vec::new(),
        visible: None,
        hidden: Vec::new(),
    };
    let mem = guest_memory();
    let irq = interrupt();
    let fs = shared(Fs::new("project", share).unwrap());
    let t = MmioTransport::new(mem.clone(), irq.clone(), fs.clone()).unwrap();
    let rings = vec![
        GuestRing::new(&mem, SIZE, QUEUE_ADDRS[0]),
        GuestRing::new(&mem, SIZE, QUEUE_ADDRS[1]),
    ];
    Fixture {
        _dirs: dirs,
        lower,
        upper,
        mem,
        irq,
        fs,
        t,
        rings,
        next_desc: 0,
    }
}

impl Fixture {
    fn bring_up(&mut self) {
        self.bring_up_with(1 << VIRTIO_F_VERSION_1);
    }

    fn bring_up_with(&mut self, features: u64) {
        linux_probe_with(
            &mut self.t,
            features,
            &[
                (u32::from(SIZE), QUEUE_ADDRS[0]),
                (u32::from(SIZE), QUEUE_ADDRS[1]),
            ],
        );
        assert_eq!(
            rd(&mut self.t, STATUS) & (DRIVER_OK | DEVICE_NEEDS_RESET),
            DRIVER_OK
        );
        assert!(lock(&self.fs).is_activated());
    }

    fn desc(&mut self) -> u16 {
        let d = self.next_desc % SIZE;
        self.next_desc += 1;
        d
    }

    /// Publishes a chain of (addr, len, writable) buffers on queue `q`.
    fn push_chain(&mut self, q: usize, bufs: &[(u64, u32, bool)]) -> u16 {
        let ids: Vec<u16> = bufs.iter().map(|_| self.desc()).collect();
        for (i, &(addr, len, w)) in bufs.iter().enumerate() {
            let mut flags = if w { F_WRITE } else { 0 };
            let next = ids.get(i + 1).copied().unwrap_or(0);
            if i + 1 < bufs.len() {
                flags |= F_NEXT;
            }
            self.rings[q].set_desc(ids[i], addr, len, flags, next);
        }
        self.rings[q].push_avail(ids[0]);
        ids[0]
    }

    fn serve(&mut self, q: usize) {
        wr(&mut self.t, QUEUE_NOTIFY, q as u32);
        let mut fs = lock(&self.fs);
        let _ = fs.queue_events()[q].read();
        fs.process_queue(q);
    }

    /// Sends one request in a two-descriptor chain and returns the used
    /// length and the reply bytes.
    fn call(&mut self, req: &[u8], reply_room: u32) -> (u32, Vec<u8>) {
        self.mem_write(REQ, req);
        let head = self.push_chain(
            REQUESTS,
            &[(REQ, req.len() as u32, false), (REP, reply_room, true)],
        );
        self.serve(REQUESTS);
        self.last_used(REQUESTS, head)
    }

    fn last_used(&self, q: usize, head: u16) -> (u32, Vec<u8>) {
        let ring = &self.rings[q];
        let (id, len) = ring.used_elem(ring.used_idx().wrapping_sub(1));
        assert_eq!(id, u32::from(head));
        (len, ring.read(REP, len as usize))
    }

    fn mem_write(&self, addr: u64, data: &[u8]) {
        use vm_memory::{Bytes, GuestAddress};
        self.mem.write_slice(data, GuestAddress(addr)).unwrap();
    }

    fn init(&mut self) {
        let i = abi::InitInCompat {
            major: 7,
            minor: 41,
            max_readahead: 65536,
            flags: abi::init::DO_READDIRPLUS as u32,
        };
        let req = request(op::INIT, 0, 1, &[i.as_bytes(), &[0u8; 48]]);
        let (len, rep) = self.call(&req, 4096);
        assert_eq!(len as usize, 16 + 64);
        let (h, _) = abi::OutHeader::read_from_prefix(&rep).unwrap();
        assert_eq!((h.error, h.unique), (0, 1));
        let (out, _) = abi::InitOut::read_from_prefix(&rep[16..]).unwrap();
        assert_eq!(out.max_write, cowfs::MAX_WRITE);
    }
}

fn header(rep: &[u8]) -> abi::OutHeader {
    abi::OutHeader::read_from_prefix(rep).unwrap().0
}

#[test]
fn config_space_has_the_tag_and_queue_count() {
    let mut f = fixture();
    assert_eq!(rd(&mut f.t, DEVICE_ID), TYPE_FS);
    let mut cfg = [0u8; 40];
    for (i, chunk) in cfg.chunks_mut(4).enumerate() {
        chunk.copy_from_slice(&rd(&mut f.t, 0x100 + 4 * i as u64).to_le_bytes());
    }
    assert_eq!(&cfg[..7], b"project");
    assert!(cfg[7..36].iter().all(|&b| b == 0));
    assert_eq!(u32::from_le_bytes(cfg[36..].try_into().unwrap()), 1);
    // Past the end reads as zero.
    assert_eq!(rd(&mut f.t, 0x100 + 40), 0);
}

#[test]
fn bad_tags_and_shares_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let share = |mode, upper: Option<&std::path::Path>| ShareConfig {
        lower: d.path().to_path_buf(),
        upper: upper.map(|u| u.to_path_buf()),
        mode,
        masked: Vec::new(),
        visible: None,
        hidden: Vec::new(),
    };
    for tag in ["", "a\0b", &"x".repeat(37)] {
        let e = Fs::new(tag, share(ShareMode::Ro, None)).err().unwrap();
        assert!(matches!(e, FsError::Tag(_)), "{e}");
    }
    assert!(Fs::new(&"x".repeat(36), share(ShareMode::Ro, None)).is_ok());
    let e = Fs::new("t", share(ShareMode::Cow, None)).err().unwrap();
    assert!(e.to_string().contains("upper"), "{e}");
}

#[test]
fn end_to_end_with_event_manager() {
    let mut f = fixture();
    let mut em: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
        EventManager::new().unwrap();
    em.add_subscriber(f.fs.clone());
    f.bring_up();
    em.run_with_timeout(100).unwrap();

    let i = abi::InitInCompat {
        major: 7,
        minor: 41,
        max_readahead: 65536,
        flags: 0,
    };
    let req = request(op::INIT, 0, 7, &[i.as_bytes(), &[0u8; 48]]);
    f.mem_write(REQ, &req);
    f.push_chain(
        REQUESTS,
        &[(REQ, req.len() as u32, false), (REP, 4096, true)],
    );
    wr(&mut f.t, QUEUE_NOTIFY, REQUESTS as u32);
    em.run_with_timeout(100).unwrap();
    let ring = &f.rings[REQUESTS];
    assert_eq!(ring.used_idx(), 1);
    assert_eq!(ring.used_elem(0).1, 80);
    assert_eq!(header(&ring.read(REP, 16)).unique, 7);
    assert!(f.irq.irqfd().read().unwrap() >= 1);

    // LOOKUP, OPEN, READ of a host file.
    let (_, rep) = f.call(&request(op::LOOKUP, ROOT_ID, 8, &[&cstr(b"a.txt")]), 4096);
    assert_eq!(header(&rep).error, 0);
    let (entry, _) = abi::EntryOut::read_from_prefix(&rep[16..]).unwrap();
    assert_eq!(entry.attr.size, 19);
    let open = abi::OpenIn::default();
    let (_, rep) = f.call(
        &request(op::OPEN, entry.nodeid, 9, &[open.as_bytes()]),
        4096,
    );
    let (o, _) = abi::OpenOut::read_from_prefix(&rep[16..]).unwrap();
    let read = abi::ReadIn {
        fh: o.fh,
        size: 4096,
        ..Default::default()
    };
    let (len, rep) = f.call(
        &request(op::READ, entry.nodeid, 10, &[read.as_bytes()]),
        8192,
    );
    assert_eq!(len, 16 + 19);
    assert_eq!(&rep[16..], b"hello from the host");
}

#[test]
fn requests_and_replies_split_over_descriptors() {
    let mut f = fixture();
    f.bring_up();
    f.init();
    // A 32 KiB write: header split mid-way, data over several buffers.
    let mut created = abi::CreateIn {
        flags: 2,
        mode: 0o100644,
        ..Default::default()
    }
    .as_bytes()
    .to_vec();
    created.extend_from_slice(&cstr(b"new.bin"));
    let (_, rep) = f.call(&request(op::CREATE, ROOT_ID, 2, &[&created]), 4096);
    assert_eq!(header(&rep).error, 0);
    let (o, _) = abi::OpenOut::read_from_prefix(&rep[16 + abi::ENTRY_OUT_SIZE..]).unwrap();
    let data: Vec<u8> = (0..32768u32).map(|i| (i % 251) as u8).collect();
    let w = abi::WriteIn {
        fh: o.fh,
        size: data.len() as u32,
        ..Default::default()
    };
    let req = request(op::WRITE, 0, 3, &[w.as_bytes(), &data]);
    f.mem_write(REQ, &req);
    let total = req.len() as u32;
    let head = f.push_chain(
        REQUESTS,
        &[
            (REQ, 20, false),
            (REQ + 20, 60, false),
            (REQ + 80, total - 80, false),
            (REP, 10, true),
            (REP + 10, 100, true),
        ],
    );
    f.serve(REQUESTS);
    let (len, rep) = f.last_used(REQUESTS, head);
    assert_eq!(len, 24);
    assert_eq!(header(&rep).error, 0);
    assert_eq!(u32::from_le_bytes(rep[16..20].try_into().unwrap()), 32768);
    assert_eq!(std::fs::read(f.upper.join("new.bin")).unwrap(), data);
    assert!(!f.lower.join("new.bin").exists());

    // Read it back into three writable buffers.
    let r = abi::ReadIn {
        fh: o.fh,
        size: 32768,
        ..Default::default()
    };
    let req = request(op::READ, 0, 4, &[r.as_bytes()]);
    f.mem_write(REQ, &req);
    let head = f.push_chain(
        REQUESTS,
        &[
            (REQ, req.len() as u32, false),
            (REP, 16, true),
            (REP + 16, 4096, true),
            (REP + 4112, 65536, true),
        ],
    );
    f.serve(REQUESTS);
    let (len, rep) = f.last_used(REQUESTS, head);
    assert_eq!(len, 16 + 32768);
    assert_eq!(&rep[16..], &data[..]);
}

#[test]
fn hostile_chains_fail_safe() {
    let mut f = fixture();
    f.bring_up();
    f.init();
    let lookup = request(op::LOOKUP, ROOT_ID, 5, &[&cstr(b"a.txt")]);

    // Readable after writable: malformed, no reply.
    f.mem_write(REQ, &lookup);
    let head = f.push_chain(
        REQUESTS,
        &[(REP, 4096, true), (REQ, lookup.len() as u32, false)],
    );
    f.serve(REQUESTS);
    assert_eq!(f.last_used(REQUESTS, head).0, 0);

    // Buffers outside guest memory.
    for bufs in [
        [
            (REQ, lookup.len() as u32, false),
            (MEM_SIZE - 8, 4096, true),
        ],
        [(MEM_SIZE + 0x1000, 64, false), (REP, 4096, true)],
        [(u64::MAX - 8, 64, false), (REP, 4096, true)],
    ] {
        let head = f.push_chain(REQUESTS, &bufs);
        f.serve(REQUESTS);
        assert_eq!(f.last_used(REQUESTS, head).0, 0, "{bufs:?}");
    }

    // No room for even a header: no reply. Room for a header only: ENOMEM.
    assert_eq!(f.call(&lookup, 8).0, 0);
    let (len, rep) = f.call(&lookup, 20);
    assert_eq!(len, 16);
    assert_eq!(header(&rep).error, -12);

    // A header claiming more than the chain carries: EINVAL.
    let mut short = lookup.clone();
    short[0..4].copy_from_slice(&200u32.to_le_bytes());
    let (len, rep) = f.call(&short, 4096);
    assert_eq!((len, header(&rep).error), (16, -22));

    // A chain longer than MAX_REQUEST is cut and refused; the device is
    // still fine afterwards.
    let mut big = request(op::WRITE, 0, 6, &[&[0u8; 40]]);
    big[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    f.mem_write(REQ, &big);
    let head = f.push_chain(
        REQUESTS,
        &[
            (REQ, 0x8_0000, false),
            (REQ, 0x8_0000, false),
            (REQ, 0x8_0000, false),
            (REP, 4096, true),
        ],
    );
    f.serve(REQUESTS);
    let (len, rep) = f.last_used(REQUESTS, head);
    assert_eq!((len, header(&rep).error), (16, -22));
    const { assert!(3 * 0x8_0000 > MAX_REQUEST) };

    // Garbage that is not even a header: no reply.
    f.mem_write(REQ, &[0xff; 16]);
    let head = f.push_chain(REQUESTS, &[(REQ, 16, false), (REP, 4096, true)]);
    f.serve(REQUESTS);
    assert_eq!(f.last_used(REQUESTS, head).0, 0);

    let (len, rep) = f.call(&lookup, 4096);
    assert_eq!(
        (len as usize, header(&rep).error),
        (16 + abi::ENTRY_OUT_SIZE, 0)
    );
}

#[test]
fn hiprio_queue_takes_forgets() {
    let mut f = fixture();
    f.bring_up();
    f.init();
    let (_, rep) = f.call(&request(op::LOOKUP, ROOT_ID, 2, &[&cstr(b"dir")]), 4096);
    let (e, _) = abi::EntryOut::read_from_prefix(&rep[16..]).unwrap();
    let count = lock(&f.fs).server().filesystem().inode_count();
    let forget = request(op::FORGET, e.nodeid, 3, &[&1u64.to_le_bytes()]);
    f.mem_write(REQ, &forget);
    let head = f.push_chain(HIPRIO, &[(REQ, forget.len() as u32, false)]);
    f.serve(HIPRIO);
    let ring = &f.rings[HIPRIO];
    assert_eq!(ring.used_elem(0), (u32::from(head), 0));
    assert_eq!(lock(&f.fs).server().filesystem().inode_count(), count - 1);
}

#[test]
fn forgets_wait_for_the_next_request_with_event_idx() {
    use vm_memory::{Bytes, GuestAddress};
    let mut f = fixture();
    f.bring_up_with((1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX));
    f.init();
    let avail_event = |f: &Fixture| -> u16 {
        let r = &f.rings[HIPRIO];
        f.mem
            .read_obj(GuestAddress(r.used + 4 + 8 * u64::from(SIZE)))
            .unwrap()
    };
    let (_, rep) = f.call(&request(op::LOOKUP, ROOT_ID, 2, &[&cstr(b"dir")]), 4096);
    let (e, _) = abi::EntryOut::read_from_prefix(&rep[16..]).unwrap();
    // Every request drained the (empty) high-priority queue and asked the
    // driver to notify it only after half the ring (16 entries here).
    assert_eq!(avail_event(&f), 7);
    let count = lock(&f.fs).server().filesystem().inode_count();
    // The driver queues a FORGET and, below the threshold, does not notify.
    let forget = request(op::FORGET, e.nodeid, 3, &[&1u64.to_le_bytes()]);
    f.mem_write(0x30000, &forget);
    let head = f.push_chain(HIPRIO, &[(0x30000, forget.len() as u32, false)]);
    assert_eq!(lock(&f.fs).server().filesystem().inode_count(), count);
    // The next request serves it, and one interrupt covers both queues.
    let _ = f.irq.irqfd().read();
    let getattr = request(op::GETATTR, ROOT_ID, 4, &[&[0u8; 16]]);
    assert_eq!(header(&f.call(&getattr, 4096).1).error, 0);
    assert_eq!(lock(&f.fs).server().filesystem().inode_count(), count - 1);
    assert_eq!(f.rings[HIPRIO].used_idx(), 1);
    assert_eq!(f.rings[HIPRIO].used_elem(0), (u32::from(head), 0));
    assert_eq!(avail_event(&f), 8);
    assert_eq!(f.irq.irqfd().read().unwrap(), 1);
}

#[test]
fn a_lying_high_priority_ring_does_not_spin() {
    let mut f = fixture();
    f.bring_up_with((1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX));
    f.init();
    // avail->idx of the high-priority queue far ahead of anything
    // published: every request drains that queue, and must not loop.
    f.rings[HIPRIO].set_avail_idx(1000);
    let getattr = request(op::GETATTR, ROOT_ID, 2, &[&[0u8; 16]]);
    assert_eq!(header(&f.call(&getattr, 4096).1).error, 0);
    f.serve(HIPRIO);
    assert_eq!(f.rings[HIPRIO].used_idx(), 0);
    // And no self-kick loop was left behind.
    assert!(lock(&f.fs).queue_events()[HIPRIO].read().is_err());
}

#[test]
fn reset_forgets_the_session() {
    let mut f = fixture();
    f.bring_up();
    f.init();
    let getattr = request(op::GETATTR, ROOT_ID, 2, &[&[0u8; 16]]);
    assert_eq!(header(&f.call(&getattr, 4096).1).error, 0);
    wr(&mut f.t, STATUS, 0);
    assert!(!lock(&f.fs).is_activated());
    // Notifications after reset are ignored.
    f.serve(REQUESTS);
    for r in &mut f.rings {
        *r = GuestRing::new(&f.mem, SIZE, (r.desc, r.avail, r.used));
    }
    f.next_desc = 0;
    f.bring_up();
    assert_eq!(
        header(&f.call(&getattr, 4096).1).error,
        -5,
        "INIT needed again"
    );
    f.init();
    assert_eq!(header(&f.call(&getattr, 4096).1).error, 0);
}

#[test]
fn activation_needs_the_request_queue() {
    let mut f = fixture();
    linux_probe(&mut f.t, &[(u32::from(SIZE), QUEUE_ADDRS[0])]);
    assert!(!lock(&f.fs).is_activated());
}

/// Where the data pages of the chains below live: one page every two, so
/// no two are adjacent in guest memory.
const PAGES: u64 = 0x8_0000;
const REPLY_PAGES: u64 = 0xc_0000;

fn page(base: u64, i: usize) -> u64 {
    base + 0x2000 * i as u64
}

impl Fixture {
    /// LOOKUP + OPEN of `name` in the root with open(2) `flags`: (node, fh).
    fn open(&mut self, name: &[u8], flags: u32) -> (u64, u64) {
        let (_, rep) = self.call(&request(op::LOOKUP, ROOT_ID, 50, &[&cstr(name)]), 4096);
        assert_eq!(header(&rep).error, 0);
        let (e, _) = abi::EntryOut::read_from_prefix(&rep[16..]).unwrap();
        let open = abi::OpenIn {
            flags,
            ..Default::default()
        };
        let (_, rep) = self.call(&request(op::OPEN, e.nodeid, 51, &[open.as_bytes()]), 4096);
        assert_eq!(header(&rep).error, 0);
        (
            e.nodeid,
            abi::OpenOut::read_from_prefix(&rep[16..]).unwrap().0.fh,
        )
    }

    /// A WRITE laid out as Linux's virtio-fs client does: the in-header in
    /// one buffer, `write_in` in the next, then `data` in buffers of the
    /// given sizes at scattered addresses; the reply's header and
    /// `write_out` in two buffers. Returns (used length, reply).
    fn write_pages(&mut self, w: abi::WriteIn, data: &[u8], sizes: &[usize]) -> (u32, Vec<u8>) {
        let req = request(op::WRITE, 0, 60, &[w.as_bytes(), data]);
        self.mem_write(REQ, &req[..80]);
        let mut bufs = vec![(REQ, 40, false), (REQ + 0x100, 40, false)];
        self.mem_write(REQ + 0x100, &req[40..80]);
        let mut at = 0;
        for (i, &n) in sizes.iter().enumerate() {
            self.mem_write(page(PAGES, i), &data[at..at + n]);
            bufs.push((page(PAGES, i), n as u32, false));
            at += n;
        }
        bufs.extend([(REP, 16, true), (REP + 0x100, 8, true)]);
        let head = self.push_chain(REQUESTS, &bufs);
        self.serve(REQUESTS);
        let (len, _) = self.last_used(REQUESTS, head);
        let mut rep = self.rings[REQUESTS].read(REP, 16);
        rep.extend(self.rings[REQUESTS].read(REP + 0x100, 8));
        (len, rep)
    }

    /// A READ whose reply is a 16-byte header buffer then buffers of the
    /// given sizes at scattered addresses. Returns (header, data read).
    fn read_pages(
        &mut self,
        fh: u64,
        offset: u64,
        size: u32,
        sizes: &[usize],
    ) -> (abi::OutHeader, Vec<u8>) {
        let r = abi::ReadIn {
            fh,
            offset,
            size,
            ..Default::default()
        };
        let req = request(op::READ, 0, 61, &[r.as_bytes()]);
        self.mem_write(REQ, &req);
        let mut bufs = vec![(REQ, req.len() as u32, false), (REP, 16, true)];
        for (i, &n) in sizes.iter().enumerate() {
            bufs.push((page(REPLY_PAGES, i), n as u32, true));
        }
        let head = self.push_chain(REQUESTS, &bufs);
        self.serve(REQUESTS);
        let (len, rep) = self.last_used(REQUESTS, head);
        let h = header(&rep[..16]);
        assert_eq!(h.len, len);
        let mut data = Vec::new();
        let mut left = len as usize - 16;
        for (i, &n) in sizes.iter().enumerate() {
            let take = n.min(left);
            data.extend(self.rings[REQUESTS].read(page(REPLY_PAGES, i), take));
            left -= take;
        }
        (h, data)
    }
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(seed) >> 3) as u8)
        .collect()
}

#[test]
fn linux_style_data_chains_over_scattered_pages() {
    let mut f = fixture();
    f.bring_up();
    f.init();
    std::fs::write(f.lower.join("big"), b"").unwrap();
    let (_, fh) = f.open(b"big", 2);
    // Nine page buffers, one page split mid-way into two buffers and a
    // last partial one: with the headers and the reply, all 16 descriptors
    // of the ring.
    let sizes = [
        4096, 4096, 1000, 3096, 4096, 4096, 4096, 4096, 4096, 4096, 4096, 123,
    ];
    let total: usize = sizes.iter().sum();
    let data = pattern(total, 2654435761);
    let w = abi::WriteIn {
        fh,
        offset: 5,
        size: total as u32,
        ..Default::default()
    };
    let (len, rep) = f.write_pages(w, &data, &sizes);
    assert_eq!((len, header(&rep).error), (24, 0));
    assert_eq!(
        u32::from_le_bytes(rep[16..20].try_into().unwrap()),
        total as u32
    );
    let on_disk = std::fs::read(f.upper.join("big")).unwrap();
    assert_eq!(on_disk.len(), 5 + total);
    assert_eq!(&on_disk[5..], &data[..]);
    assert_eq!(std::fs::read(f.lower.join("big")).unwrap(), b"");

    // Back into pages, the reply area split mid-page too.
    let rsizes = [
        4096, 4096, 2000, 2096, 4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096,
    ];
    let (h, back) = f.read_pages(fh, 5, total as u32, &rsizes);
    assert_eq!(h.error, 0);
    assert_eq!(back, data);
}

#[test]
fn write_sizes_that_disagree_with_the_payload_are_refused() {
    let mut f = fixture();
    f.bring_up();
    f.init();
    std::fs::write(f.lower.join("w"), b"").unwrap();
    let (_, fh) = f.open(b"w", 2);
    let data = pattern(8192, 7);
    let w = |size| abi::WriteIn {
        fh,
        size,
        ..Default::default()
    };
    // The size field claims more than the chain carries: the header's
    // length covers it all, the chain only two pages of it.
    let mut req = request(op::WRITE, 0, 70, &[w(3 * 4096).as_bytes(), &data]);
    req[0..4].copy_from_slice(&(80u32 + 3 * 4096).to_le_bytes());
    f.mem_write(REQ, &req);
    let (len, rep) = f.call(&req, 4096);
    assert_eq!((len, header(&rep).error), (16, -22));
    // The header's length covers less than the size field says.
    let req = request(op::WRITE, 0, 71, &[w(8192).as_bytes(), &data[..4096]]);
    let (len, rep) = f.call(&req, 4096);
    assert_eq!((len, header(&rep).error), (16, -22));
    // No room in the chain for write_in, or only part of it.
    for cut in [40, 60] {
        let mut req = request(op::WRITE, 0, 72, &[w(0).as_bytes()]);
        req.truncate(cut);
        req[0..4].copy_from_slice(&(cut as u32).to_le_bytes());
        let (len, rep) = f.call(&req, 4096);
        assert_eq!((len, header(&rep).error), (16, -22), "{cut}");
    }
    // Larger than the negotiated maximum.
    let req = request(op::WRITE, 0, 73, &[w(cowfs::MAX_WRITE + 1).as_bytes()]);
    let (len, rep) = f.call(&req, 4096);
    assert_eq!((len, header(&rep).error), (16, -22));
    assert_eq!(std::fs::metadata(f.upper.join("w")).unwrap().len(), 0);
    // More payload than the size field: only `size` bytes are written.
    let (len, rep) = f.write_pages(w(100), &data[..4096], &[4096]);
    assert_eq!((len, header(&rep).error), (24, 0));
    assert_eq!(std::fs::read(f.upper.join("w")).unwrap(), &data[..100]);
}

#[test]
fn reads_at_eof_and_into_small_reply_areas() {
    let mut f = fixture();
    f.bring_up();
    f.init();
    let (_, fh) = f.open(b"a.txt", 0);
    let text = b"hello from the host";
    // At and past end of file: an empty successful reply; at an offset
    // the host cannot take, EINVAL.
    for off in [19, 1000] {
        let (h, data) = f.read_pages(fh, off, 4096, &[4096]);
        assert_eq!((h.error, h.len, data.len()), (0, 16, 0), "{off}");
    }
    let (h, _) = f.read_pages(fh, u64::MAX, 4096, &[4096]);
    assert_eq!((h.error, h.len), (-22, 16));
    // Short read at end of file, over two buffers.
    let (h, data) = f.read_pages(fh, 6, 4096, &[3, 4096]);
    assert_eq!((h.error, &data[..]), (0, &text[6..]));
    // A reply area smaller than asked: what fits.
    let (h, data) = f.read_pages(fh, 0, 4096, &[5, 2]);
    assert_eq!((h.error, &data[..]), (0, &text[..7]));
    // Room for the header only.
    let (h, data) = f.read_pages(fh, 0, 4096, &[]);
    assert_eq!((h.error, h.len, data.len()), (0, 16, 0));
    // A bad handle: an error reply, no data.
    let (h, _) = f.read_pages(fh + 1000, 0, 4096, &[4096]);
    assert_eq!((h.error, h.len), (-9, 16));
    // A header buffer split in two before the data.
    let r = abi::ReadIn {
        fh,
        size: 4096,
        ..Default::default()
    };
    let req = request(op::READ, 0, 80, &[r.as_bytes()]);
    f.mem_write(REQ, &req);
    let head = f.push_chain(
        REQUESTS,
        &[
            (REQ, req.len() as u32, false),
            (REP, 10, true),
            (REP + 0x100, 6, true),
            (REP + 0x200, 100, true),
        ],
    );
    f.serve(REQUESTS);
    let (len, _) = f.last_used(REQUESTS, head);
    assert_eq!(len, 16 + 19);
    let mut hdr = f.rings[REQUESTS].read(REP, 10);
    hdr.extend(f.rings[REQUESTS].read(REP + 0x100, 6));
    assert_eq!((header(&hdr).len, header(&hdr).error), (35, 0));
    assert_eq!(f.rings[REQUESTS].read(REP + 0x200, 19), text);
}

#[test]
fn writes_to_lower_files_land_in_the_upper_copy() {
    let mut f = fixture();
    f.bring_up();
    f.init();
    // A reader opened on the lower file, then a writer (copy-up).
    let (_, reader) = f.open(b"a.txt", 0);
    let (_, writer) = f.open(b"a.txt", 2);
    let w = abi::WriteIn {
        fh: writer,
        size: 5,
        ..Default::default()
    };
    let (len, rep) = f.write_pages(w, b"HELLO", &[2, 3]);
    assert_eq!((len, header(&rep).error), (24, 0));
    assert_eq!(
        std::fs::read(f.upper.join("a.txt")).unwrap(),
        b"HELLO from the host"
    );
    assert_eq!(
        std::fs::read(f.lower.join("a.txt")).unwrap(),
        b"hello from the host"
    );
    // The reader follows the copy-up; a write through it is refused.
    let (h, data) = f.read_pages(reader, 0, 4096, &[4096]);
    assert_eq!((h.error, &data[..]), (0, &b"HELLO from the host"[..]));
    let w = abi::WriteIn {
        fh: reader,
        size: 1,
        ..Default::default()
    };
    let (len, rep) = f.write_pages(w, b"x", &[1]);
    assert_eq!((len, header(&rep).error), (16, -9));
}
