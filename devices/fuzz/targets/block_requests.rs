//! Feeds hostile request chains to a virtio-blk device on a small image
//! file, and checks that the image never changes size, that a read-only
//! image is never written, and that every used length is one the request
//! could have produced.
//!
//! The harness brings the device up like Linux (one queue of 16 at
//! 0x1000/0x2000/0x3000) acking the features in the first 8 input bytes;
//! bit 5 there (VIRTIO_BLK_F_RO) makes the image read-only. Then a sequence
//! of operations, each one opcode byte (low 2 bits):
//! - 0 memory: addr u16, len u8, then `len` bytes written to guest memory
//! - 1 descriptor: index u8, addr u32, len u32, flags u8, next u8
//! - 2 avail: head u8 (published in the available ring)
//! - 3 run the queue handler

use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use devices::bus::lock;
use devices::virtio::block::{Block, MAX_REQUEST_BYTES};
use devices::virtio::{Interrupt, MmioTransport, VirtioDevice};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const SIZE: u16 = 16;
const QUEUE: (u64, u64, u64) = (0x1000, 0x2000, 0x3000);
/// 64 KiB: 128 sectors.
const IMAGE: u64 = 64 * 1024;
/// A pattern the read-only image starts with (and must keep).
const FILL: u8 = 0x5a;

#[path = "driver.rs"]
mod driver;
#[path = "input.rs"]
mod input;
use input::Input;

pub fn run(data: &[u8]) {
    let mut input = Input(data);
    let Some(features) = input.u64() else {
        return;
    };
    let read_only = features & (1 << 5) != 0;
    let file = tempfile::tempfile().unwrap();
    file.set_len(IMAGE).unwrap();
    if read_only {
        file.write_all_at(&[FILL; IMAGE as usize], 0).unwrap();
    }
    let check = file.try_clone().unwrap();
    // Two regions with a hole between them, so buffers can straddle the
    // end of memory.
    let mem = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0x1_0000),
        (GuestAddress(0x2_0000), 0x1000),
    ])
    .unwrap();
    let irq = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    let blk = Arc::new(Mutex::new(
        Block::with_file(file, read_only, "fuzz").unwrap(),
    ));
    let mut t = MmioTransport::new(mem.clone(), irq, blk.clone()).unwrap();
    driver::probe(&mut t, features, &[QUEUE], SIZE);
    assert!(lock(&blk).is_activated());

    let mut avail_idx = 0u16;
    let mut used_seen = 0u16;
    while let Some(op) = input.u8() {
        match op & 3 {
            0 => {
                let (Some(addr), Some(len)) = (input.u16(), input.u8()) else {
                    break;
                };
                let bytes = input.bytes(usize::from(len));
                // Partial writes at the end of memory are fine to lose.
                let _ = mem.write_slice(bytes, GuestAddress(u64::from(addr)));
            }
            1 => {
                let (Some(index), Some(addr), Some(len), Some(flags), Some(next)) =
                    (input.u8(), input.u32(), input.u32(), input.u8(), input.u8())
                else {
                    break;
                };
                let mut raw = [0u8; 16];
                raw[0..8].copy_from_slice(&u64::from(addr).to_le_bytes());
                raw[8..12].copy_from_slice(&len.to_le_bytes());
                raw[12..14].copy_from_slice(&u16::from(flags & 7).to_le_bytes());
                raw[14..16].copy_from_slice(&u16::from(next).to_le_bytes());
                let at = QUEUE.0 + 16 * u64::from(index % SIZE as u8);
                let _ = mem.write_slice(&raw, GuestAddress(at));
            }
            2 => {
                let Some(head) = input.u8() else { break };
                let slot = QUEUE.1 + 4 + 2 * u64::from(avail_idx % SIZE);
                let _ = mem.write_obj(u16::from(head).to_le(), GuestAddress(slot));
                avail_idx = avail_idx.wrapping_add(1);
                let _ = mem.write_obj(avail_idx.to_le(), GuestAddress(QUEUE.1 + 2));
            }
            _ => {
                let mut b = lock(&blk);
                let _ = b.queue_event().read();
                b.process_queue();
                // Every new used entry: data at most one request's worth
                // plus the status byte.
                let used: u16 = mem.read_obj(GuestAddress(QUEUE.2 + 2)).unwrap_or(0);
                while used_seen != used {
                    let at = QUEUE.2 + 4 + 8 * u64::from(used_seen % SIZE) + 4;
                    let len: u32 = mem.read_obj(GuestAddress(at)).unwrap_or(0);
                    assert!(u64::from(len) <= MAX_REQUEST_BYTES + 1, "used len {len}");
                    used_seen = used_seen.wrapping_add(1);
                }
            }
        }
    }

    assert_eq!(
        check.metadata().unwrap().len(),
        IMAGE,
        "the image changed size"
    );
    if read_only {
        let mut now = vec![0u8; IMAGE as usize];
        check.read_exact_at(&mut now, 0).unwrap();
        assert!(
            now.iter().all(|&b| b == FILL),
            "a read-only image was written"
        );
    }
    if std::env::var_os("BLOCK_TRACE").is_some() {
        let used: u16 = mem.read_obj(GuestAddress(QUEUE.2 + 2)).unwrap_or(0);
        eprintln!(
            "read_only {read_only} used_idx {used} {:?}",
            lock(&blk).debug_state().notes
        );
    }
}
