//! Feeds arbitrary register accesses, guest memory writes and handler runs to
//! a virtio-mmio transport with a virtio-rng device behind it.
//!
//! Input: a sequence of operations, each one opcode byte (low 2 bits):
//! - 0 write:  offset u16, width u8, value u64 (all little endian)
//! - 1 read:   offset u16, width u8
//! - 2 memory: addr u16, len u8, then `len` bytes written to guest memory
//! - 3 run the rng's queue handler (as the event loop would)
//!
//! Widths: `w & 3` selects 1/2/4/8 bytes, unless bit 7 is set, in which
//! case `w & 15` bytes (0..=15, including nonsense widths) are used.

use std::sync::{Arc, Mutex};

use devices::bus::{lock, BusDevice};
use devices::virtio::{Interrupt, MmioTransport, Rng, VirtioDevice};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

#[path = "input.rs"]
mod input;
use input::Input;

pub fn run(data: &[u8]) {
    // Two regions with a hole between them, so rings and buffers can
    // straddle the end of memory.
    let mem = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0x1_0000),
        (GuestAddress(0x2_0000), 0x1000),
    ])
    .unwrap();
    let irq = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    let rng = Arc::new(Mutex::new(Rng::new().unwrap()));
    let mut t = MmioTransport::new(mem.clone(), irq, rng.clone()).unwrap();

    let mut input = Input(data);
    while let Some(op) = input.u8() {
        match op & 3 {
            0 => {
                let (Some(offset), Some(width), Some(value)) =
                    (input.u16(), input.width(), input.u64())
                else {
                    break;
                };
                let mut buf = [0u8; 16];
                buf[..8].copy_from_slice(&value.to_le_bytes());
                t.write(u64::from(offset), &buf[..width]);
            }
            1 => {
                let (Some(offset), Some(width)) = (input.u16(), input.width()) else {
                    break;
                };
                let mut buf = [0u8; 16];
                t.read(u64::from(offset), &mut buf[..width]);
            }
            2 => {
                let (Some(addr), Some(len)) = (input.u16(), input.u8()) else {
                    break;
                };
                let bytes = input.bytes(usize::from(len));
                // Partial writes at the end of memory are fine to lose.
                let _ = mem.write_slice(bytes, GuestAddress(u64::from(addr)));
            }
            _ => {
                let mut rng = lock(&rng);
                let _ = rng.queue_event().read();
                rng.process_queue();
            }
        }
    }

    // For checking that seeds reach the interesting states.
    if std::env::var_os("MMIO_RNG_TRACE").is_some() {
        let used_idx: u16 = mem.read_obj(GuestAddress(0x3002)).unwrap_or(0);
        eprintln!(
            "status {:#x} activated {} used_idx {used_idx}",
            t.device_status(),
            lock(&rng).is_activated(),
        );
    }
}
