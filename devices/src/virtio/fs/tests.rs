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
