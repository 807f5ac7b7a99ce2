//! virtio-blk driven through the MMIO transport as Linux does, on a real
//! sparse image file, plus hostile guests.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{features as blk, Block, BlockError, MAX_REQUEST_BYTES, QUEUE_SIZE, SECTOR_SIZE};
use crate::bus::lock;
use crate::virtio::features::VIRTIO_F_VERSION_1;
use crate::virtio::status::{DEVICE_NEEDS_RESET, DRIVER_OK};
use crate::virtio::test_utils::*;
use crate::virtio::{Interrupt, MmioTransport, VirtioDevice};

const SIZE: u16 = 16;
const HDR: u64 = 0x10000;
const DATA: u64 = 0x20000;
const STATUS_AT: u64 = 0x30000;
/// The image: 1 MiB.
const IMAGE: u64 = 1 << 20;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const T_DISCARD: u32 = 11;
const T_WRITE_ZEROES: u32 = 13;

const OK: u8 = 0;
const IOERR: u8 = 1;
const UNSUPP: u8 = 2;

struct Fixture {
    mem: GuestMemoryMmap,
    irq: Arc<Interrupt>,
    blk: Arc<Mutex<Block>>,
    t: MmioTransport,
    ring: GuestRing,
    image: tempfile::NamedTempFile,
    next: u16,
}

fn image() -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(IMAGE).unwrap();
    f
}

fn fixture_on(image: tempfile::NamedTempFile, read_only: bool) -> Fixture {
    let mem = guest_memory();
    let irq = interrupt();
    let blk = shared(Block::new(image.path(), read_only, "pgdata").unwrap());
    let mut t = MmioTransport::new(mem.clone(), irq.clone(), blk.clone()).unwrap();
    let ring = GuestRing::new(&mem, SIZE, QUEUE_ADDRS[0]);
    linux_probe_with(&mut t, u64::MAX, &[(u32::from(SIZE), QUEUE_ADDRS[0])]);
    assert_eq!(
        rd(&mut t, STATUS) & (DRIVER_OK | DEVICE_NEEDS_RESET),
        DRIVER_OK
    );
    assert!(lock(&blk).is_activated());
    Fixture {
        mem,
        irq,
        blk,
        t,
        ring,
        image,
        next: 0,
    }
}

fn fixture() -> Fixture {
    fixture_on(image(), false)
}

impl Fixture {
    fn header(&self, kind: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&kind.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&h, GuestAddress(HDR)).unwrap();
        // A stale status must not pass for an answer.
        self.mem.write_obj(0xffu8, GuestAddress(STATUS_AT)).unwrap();
    }

    /// Publishes a chain of (addr, len, writable) buffers, serves the queue
    /// and returns (used len, status byte).
    fn submit(&mut self, bufs: &[(u64, u32, bool)]) -> (u32, u8) {
        let base = self.next;
        for (i, &(addr, len, w)) in bufs.iter().enumerate() {
            let idx = (base + i as u16) % SIZE;
            let last = i + 1 == bufs.len();
            let flags = if w { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
            self.ring.set_desc(idx, addr, len, flags, (idx + 1) % SIZE);
        }
        self.next = (base + bufs.len() as u16) % SIZE;
        let used_before = self.ring.used_idx();
        self.ring.push_avail(base);
        wr(&mut self.t, QUEUE_NOTIFY, 0);
        {
            let mut b = lock(&self.blk);
            let _ = b.queue_event().read();
            b.process_queue();
        }
        assert_eq!(self.ring.used_idx(), used_before.wrapping_add(1));
        let (id, len) = self.ring.used_elem(used_before);
        assert_eq!(id, u32::from(base));
        let status: u8 = self.mem.read_obj(GuestAddress(STATUS_AT)).unwrap();
        (len, status)
    }

    /// header + one data buffer + status, as Linux builds them.
    fn rw(&mut self, kind: u32, sector: u64, len: u32) -> (u32, u8) {
        self.header(kind, sector);
        self.submit(&[
            (HDR, 16, false),
            (DATA, len, kind == T_IN),
            (STATUS_AT, 1, true),
        ])
    }

    fn file_bytes(&self, at: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.image.as_file().read_exact_at(&mut v, at).unwrap();
        v
    }

    fn segments(&self, segs: &[(u64, u32, u32)]) -> u32 {
        for (i, &(sector, n, flags)) in segs.iter().enumerate() {
            let mut s = [0u8; 16];
            s[0..8].copy_from_slice(&sector.to_le_bytes());
            s[8..12].copy_from_slice(&n.to_le_bytes());
            s[12..16].copy_from_slice(&flags.to_le_bytes());
            self.mem
                .write_slice(&s, GuestAddress(DATA + 16 * i as u64))
                .unwrap();
        }
        16 * segs.len() as u32
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn config_space_and_features() {
    let f = fixture();
    let b = lock(&f.blk);
    assert_eq!(b.device_type(), crate::virtio::TYPE_BLOCK);
    assert_eq!(b.capacity_sectors(), IMAGE / SECTOR_SIZE);
    let mut cap = [0u8; 8];
    b.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), IMAGE / 512);
    let mut blk_size = [0u8; 4];
    b.read_config(20, &mut blk_size);
    assert_eq!(u32::from_le_bytes(blk_size), 512);
    let feats = b.avail_features();
    for bit in [blk::FLUSH, blk::DISCARD, blk::WRITE_ZEROES, blk::SEG_MAX] {
        assert_ne!(feats & (1 << bit), 0, "bit {bit}");
    }
    assert_eq!(feats & (1 << blk::RO), 0);
    // Reads past the config space are zeroes, not a panic.
    let mut far = [0xaau8; 8];
    b.read_config(u64::MAX, &mut far);
    assert_eq!(far, [0; 8]);
}

#[test]
fn write_then_read_back_through_the_image() {
    let mut f = fixture();
    let data = pattern(4096, 7);
    f.mem.write_slice(&data, GuestAddress(DATA)).unwrap();
    assert_eq!(f.rw(T_OUT, 8, 4096), (1, OK));
    assert_eq!(f.file_bytes(8 * 512, 4096), data);
    assert!(f.irq.irqfd().read().is_ok());

    f.mem.write_slice(&[0; 4096], GuestAddress(DATA)).unwrap();
    assert_eq!(f.rw(T_IN, 8, 4096), (4097, OK));
    let mut back = vec![0; 4096];
    f.mem.read_slice(&mut back, GuestAddress(DATA)).unwrap();
    assert_eq!(back, data);

    // The last sector of the volume is reachable.
    let last = IMAGE / 512 - 1;
    assert_eq!(f.rw(T_OUT, last, 512), (1, OK));
    assert_eq!(f.rw(T_IN, last, 512), (513, OK));
    assert_eq!(f.image.as_file().metadata().unwrap().len(), IMAGE);
}

#[test]
fn requests_larger_than_the_copy_buffer_and_split_anywhere() {
    let mut f = fixture();
    // 192 KiB: three passes through the 64 KiB buffer.
    let n = 3 * super::CHUNK;
    let data = pattern(n, 3);
    const BIG: u64 = 0x40000;
    f.mem.write_slice(&data, GuestAddress(BIG)).unwrap();
    f.header(T_OUT, 0);
    let r = f.submit(&[
        (HDR, 16, false),
        (BIG, n as u32, false),
        (STATUS_AT, 1, true),
    ]);
    assert_eq!(r, (1, OK));
    assert!(f.file_bytes(0, n) == data);
    f.mem.write_slice(&vec![0; n], GuestAddress(BIG)).unwrap();
    f.header(T_IN, 0);
    let r = f.submit(&[
        (HDR, 16, false),
        (BIG, n as u32, true),
        (STATUS_AT, 1, true),
    ]);
    assert_eq!(r, (n as u32 + 1, OK));
    let mut back = vec![0; n];
    f.mem.read_slice(&mut back, GuestAddress(BIG)).unwrap();
    assert!(back == data);

    // Header split over two buffers, data over three, status sharing the
    // last data buffer.
    f.header(T_IN, 0);
    f.mem.write_slice(&[0; 2048], GuestAddress(DATA)).unwrap();
    let (len, _) = f.submit(&[
        (HDR, 5, false),
        (HDR + 5, 11, false),
        (DATA, 100, true),
        (DATA + 100, 900, true),
        (DATA + 1000, 25, true),
    ]);
    assert_eq!(len, 1025);
    let mut back = vec![0; 1024];
    f.mem.read_slice(&mut back, GuestAddress(DATA)).unwrap();
    assert!(back == data[..1024]);
    let status: u8 = f.mem.read_obj(GuestAddress(DATA + 1024)).unwrap();
    assert_eq!(status, OK);
}

#[test]
fn flush_and_get_id() {
    let mut f = fixture();
    f.header(T_FLUSH, 0);
    assert_eq!(f.submit(&[(HDR, 16, false), (STATUS_AT, 1, true)]), (1, OK));

    f.header(T_GET_ID, 0);
    f.mem.write_slice(&[0xaa; 20], GuestAddress(DATA)).unwrap();
    let (len, status) = f.submit(&[(HDR, 16, false), (DATA, 20, true), (STATUS_AT, 1, true)]);
    assert_eq!((len, status), (21, OK));
    let mut id = [0u8; 20];
    f.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id[..6], b"pgdata");
    assert_eq!(id[6..], [0; 14]);

    // A short id buffer gets what fits.
    f.header(T_GET_ID, 0);
    let (len, status) = f.submit(&[(HDR, 16, false), (DATA, 3, true), (STATUS_AT, 1, true)]);
    assert_eq!((len, status), (4, OK));
}

#[test]
fn discard_and_write_zeroes_punch_holes() {
    let mut f = fixture();
    let data = pattern(64 * 1024, 9);
    f.mem.write_slice(&data, GuestAddress(DATA)).unwrap();
    assert_eq!(f.rw(T_OUT, 0, 64 * 1024), (1, OK));
    f.image.as_file().sync_all().unwrap();
    let blocks_full = f.image.as_file().metadata().unwrap().blocks();

    // Discard the first 32 KiB, write zeroes over 8 KiB at 48 KiB.
    let n = f.segments(&[(0, 64, 0)]);
    f.header(T_DISCARD, 0);
    assert_eq!(
        f.submit(&[(HDR, 16, false), (DATA, n, false), (STATUS_AT, 1, true)]),
        (1, OK)
    );
    let n = f.segments(&[(96, 16, 1)]);
    f.header(T_WRITE_ZEROES, 0);
    assert_eq!(
        f.submit(&[(HDR, 16, false), (DATA, n, false), (STATUS_AT, 1, true)]),
        (1, OK)
    );
    assert_eq!(f.file_bytes(0, 32 * 1024), vec![0; 32 * 1024]);
    assert_eq!(
        f.file_bytes(32 * 1024, 16 * 1024),
        data[32 * 1024..48 * 1024]
    );
    assert_eq!(f.file_bytes(48 * 1024, 8 * 1024), vec![0; 8 * 1024]);
    assert_eq!(f.file_bytes(56 * 1024, 8 * 1024), data[56 * 1024..]);
    // The host's blocks were freed (the image stays sparse), size kept.
    let meta = f.image.as_file().metadata().unwrap();
    assert!(
        meta.blocks() < blocks_full,
        "{} < {blocks_full}",
        meta.blocks()
    );
    assert_eq!(meta.len(), IMAGE);

    // Unknown flags: UNSUPP (unmap is not a discard flag); a range past
    // the end or a malformed segment list: IOERR, nothing punched.
    f.mem.write_slice(&data, GuestAddress(0x40000)).unwrap();
    let n = f.segments(&[(0, 8, 1)]);
    f.header(T_DISCARD, 0);
    assert_eq!(
        f.submit(&[(HDR, 16, false), (DATA, n, false), (STATUS_AT, 1, true)])
            .1,
        UNSUPP
    );
    let before = f.file_bytes(32 * 1024, 512);
    let n = f.segments(&[(64, 1, 0), (IMAGE / 512 - 1, 2, 0)]);
    f.header(T_WRITE_ZEROES, 0);
    assert_eq!(
        f.submit(&[(HDR, 16, false), (DATA, n, false), (STATUS_AT, 1, true)])
            .1,
        IOERR
    );
    assert_eq!(f.file_bytes(32 * 1024, 512), before, "all or nothing");
    f.header(T_DISCARD, 0);
    assert_eq!(
        f.submit(&[(HDR, 16, false), (DATA, 15, false), (STATUS_AT, 1, true)])
            .1,
        IOERR
    );
    let n = f.segments(&[(u64::MAX / 256, 8, 0)]);
    f.header(T_DISCARD, 0);
    assert_eq!(
        f.submit(&[(HDR, 16, false), (DATA, n, false), (STATUS_AT, 1, true)])
            .1,
        IOERR
    );
    let segs: Vec<_> = (0..33).map(|i| (i * 8, 8, 0)).collect();
    let n = f.segments(&segs);
    f.header(T_DISCARD, 0);
    assert_eq!(
        f.submit(&[(HDR, 16, false), (DATA, n, false), (STATUS_AT, 1, true)])
            .1,
        IOERR
    );
}

#[test]
fn out_of_range_and_odd_sized_requests_are_refused() {
    let mut f = fixture();
    let last = IMAGE / 512;
    for (kind, sector, len) in [
        (T_IN, last, 512),
        (T_OUT, last, 512),
        (T_OUT, last - 1, 1024),
        (T_IN, u64::MAX, 512),
        (T_IN, u64::MAX / 512, 512),
        (T_OUT, u64::MAX / 512 + 1, 512),
        (T_OUT, 0, 100),
        (T_IN, 0, 513),
    ] {
        assert_eq!(f.rw(kind, sector, len), (1, IOERR), "{kind} {sector} {len}");
    }
    assert_eq!(
        f.image.as_file().metadata().unwrap().len(),
        IMAGE,
        "never grows"
    );
    assert_eq!(f.file_bytes(0, 1024), vec![0; 1024]);

    // Over the per-request bound (SEG_MAX x SIZE_MAX), inside the volume:
    // 250 buffers of 132 KiB through an indirect table, all over the same
    // guest memory. Refused before any copying; the image is untouched.
    let mut big = image();
    big.as_file().set_len(64 << 20).unwrap();
    std::mem::swap(&mut big, &mut f.image);
    let mut g = fixture_on(f.image, false);
    const TABLE: u64 = 0x80000;
    let table = GuestRing::new(&g.mem, 252, (TABLE, 0x90000, 0x98000));
    table.set_desc(0, HDR, 16, F_NEXT, 1);
    for i in 1..251 {
        table.set_desc(i, DATA, 132 * 1024, F_WRITE | F_NEXT, i + 1);
    }
    table.set_desc(251, STATUS_AT, 1, F_WRITE, 0);
    const { assert!(250 * 132 * 1024 > MAX_REQUEST_BYTES) };
    g.header(T_IN, 0);
    g.ring.set_desc(0, TABLE, 252 * 16, F_INDIRECT, 0);
    g.ring.push_avail(0);
    lock(&g.blk).process_queue();
    assert_eq!(g.ring.used_elem(0), (0, 1));
    let status: u8 = g.mem.read_obj(GuestAddress(STATUS_AT)).unwrap();
    assert_eq!(status, IOERR);
    g.next = 1;
    f.image = big;

    // Unknown request type: UNSUPP.
    f.header(77, 0);
    assert_eq!(
        f.submit(&[(HDR, 16, false), (STATUS_AT, 1, true)]),
        (1, UNSUPP)
    );
}

#[test]
fn read_only_volumes_refuse_writes() {
    let img = image();
    img.as_file().write_all_at(&pattern(512, 1), 0).unwrap();
    let mut f = fixture_on(img, true);
    {
        let b = lock(&f.blk);
        assert!(b.read_only());
        let feats = b.avail_features();
        assert_ne!(feats & (1 << blk::RO), 0);
        assert_eq!(feats & (1 << blk::DISCARD), 0);
    }
    f.mem.write_slice(&[0x55; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(f.rw(T_OUT, 0, 512), (1, IOERR));
    let n = f.segments(&[(0, 1, 0)]);
    f.header(T_DISCARD, 0);
    assert_eq!(
        f.submit(&[(HDR, 16, false), (DATA, n, false), (STATUS_AT, 1, true)])
            .1,
        IOERR
    );
    f.segments(&[(0, 1, 1)]);
    f.header(T_WRITE_ZEROES, 0);
    assert_eq!(
        f.submit(&[(HDR, 16, false), (DATA, 16, false), (STATUS_AT, 1, true)])
            .1,
        IOERR
    );
    assert_eq!(f.file_bytes(0, 512), pattern(512, 1));
    // Reads and flushes work.
    assert_eq!(f.rw(T_IN, 0, 512), (513, OK));
    let mut back = vec![0; 512];
    f.mem.read_slice(&mut back, GuestAddress(DATA)).unwrap();
    assert_eq!(back, pattern(512, 1));
    f.header(T_FLUSH, 0);
    assert_eq!(f.submit(&[(HDR, 16, false), (STATUS_AT, 1, true)]), (1, OK));
}

#[test]
fn malformed_chains_are_answered_not_panicked() {
    let mut f = fixture();
    // No writable buffer at all: nowhere for a status, returned with 0.
    f.header(T_IN, 0);
    assert_eq!(f.submit(&[(HDR, 16, false)]).0, 0);
    // Short header.
    f.header(T_IN, 0);
    assert_eq!(
        f.submit(&[(HDR, 8, false), (STATUS_AT, 1, true)]),
        (1, IOERR)
    );
    // No header at all.
    assert_eq!(f.submit(&[(STATUS_AT, 1, true)]), (1, IOERR));
    // Readable after writable: refused, the status still answered.
    f.header(T_OUT, 0);
    assert_eq!(
        f.submit(&[(HDR, 16, false), (STATUS_AT, 1, true), (DATA, 512, false)]),
        (1, IOERR)
    );
    f.header(T_OUT, 0);
    assert_eq!(
        f.submit(&[
            (HDR, 16, false),
            (DATA, 512, true),
            (DATA, 512, false),
            (STATUS_AT, 1, true)
        ]),
        (1, IOERR)
    );
    // Data buffer outside guest memory: IOERR, nothing read into it.
    f.header(T_IN, 0);
    assert_eq!(
        f.submit(&[
            (HDR, 16, false),
            (MEM_SIZE - 256, 512, true),
            (STATUS_AT, 1, true)
        ]),
        (1, IOERR)
    );
    // Status buffer outside guest memory: returned with nothing written.
    f.header(T_IN, 0);
    let (len, _) = f.submit(&[(HDR, 16, false), (DATA, 512, true), (MEM_SIZE, 1, true)]);
    assert_eq!(len, 0);
    // Zero-length status buffer.
    f.header(T_FLUSH, 0);
    assert_eq!(f.submit(&[(HDR, 16, false), (STATUS_AT, 0, true)]).0, 0);
    // A descriptor loop ends (virtio-queue's TTL), answered or dropped.
    f.header(T_IN, 0);
    f.ring.set_desc(10, HDR, 16, F_NEXT, 11);
    f.ring.set_desc(11, DATA, 512, F_WRITE | F_NEXT, 10);
    let used = f.ring.used_idx();
    f.ring.push_avail(10);
    {
        let mut b = lock(&f.blk);
        b.process_queue();
    }
    assert_eq!(f.ring.used_idx(), used.wrapping_add(1));

    // The device still works.
    f.next = 0;
    f.mem.write_slice(&[0x11; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(f.rw(T_OUT, 1, 512), (1, OK));
    assert_eq!(f.file_bytes(512, 512), vec![0x11; 512]);
}

#[test]
fn images_are_locked_and_checked() {
    let img = image();
    let _first = Block::new(img.path(), false, "a").unwrap();
    assert!(matches!(
        Block::new(img.path(), false, "a"),
        Err(BlockError::Locked)
    ));
    assert!(matches!(
        Block::new(img.path(), true, "a"),
        Err(BlockError::Locked)
    ));
    drop(_first);
    let r1 = Block::new(img.path(), true, "a").unwrap();
    let _r2 = Block::new(img.path(), true, "a").unwrap();
    assert!(matches!(
        Block::new(img.path(), false, "a"),
        Err(BlockError::Locked)
    ));
    drop(r1);

    let odd = tempfile::NamedTempFile::new().unwrap();
    odd.as_file().set_len(1000).unwrap();
    assert!(matches!(
        Block::new(odd.path(), false, "a"),
        Err(BlockError::BadSize(1000))
    ));
    let empty = tempfile::NamedTempFile::new().unwrap();
    assert!(matches!(
        Block::new(empty.path(), false, "a"),
        Err(BlockError::BadSize(0))
    ));
    assert!(matches!(
        Block::new(img.path(), true, &"x".repeat(21)),
        Err(BlockError::IdTooLong(_))
    ));
    assert!(matches!(
        Block::new(std::path::Path::new("/nonexistent/x.img"), false, "a"),
        Err(BlockError::Open { .. })
    ));
    let _ = QUEUE_SIZE;
    let _ = VIRTIO_F_VERSION_1;
}
