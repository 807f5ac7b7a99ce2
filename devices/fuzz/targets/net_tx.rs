//! Feeds hostile transmit (and receive) chains to a virtio-net device with
//! an in-memory backend, and checks that whatever reaches the backend is a
//! frame the negotiated features allow.
//!
//! The harness brings the device up like Linux (queues of 16 at fixed
//! addresses: rx 0x1000/0x2000/0x3000, tx 0x4000/0x5000/0x6000), acking the
//! features in the first 8 input bytes. Then a sequence of operations, each
//! one opcode byte (low 3 bits):
//! - 0 memory: addr u16, len u8, then `len` bytes written to guest memory
//! - 1 tx descriptor: index u8, addr u32, len u32, flags u8, next u8
//! - 2 tx avail: head u8 (published in the tx available ring)
//! - 3 run the tx handler
//! - 4 toggle "backend would block"
//! - 5 rx frame: len u16 (% 2048), fill u8; queued in the backend, rx run
//! - 6 rx descriptor: like 1, on the rx queue
//! - 7 rx avail: head u8

use std::sync::{Arc, Mutex};

use devices::bus::lock;
use devices::virtio::net::{MemBackend, Net, VNET_HDR_LEN};
use devices::virtio::{Interrupt, MmioTransport, VirtioDevice};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const SIZE: u16 = 16;
const QUEUES: [(u64, u64, u64); 2] = [(0x1000, 0x2000, 0x3000), (0x4000, 0x5000, 0x6000)];

// virtio-net feature bits.
const CSUM: u64 = 1 << 0;
const HOST_TSO4: u64 = 1 << 11;
const HOST_TSO6: u64 = 1 << 12;

#[path = "driver.rs"]
mod driver;
#[path = "input.rs"]
mod input;
use input::Input;

fn set_desc(mem: &GuestMemoryMmap, table: u64, input: &mut Input) -> Option<()> {
    let (index, addr, len, flags, next) = (
        input.u8()?,
        input.u32()?,
        input.u32()?,
        input.u8()?,
        input.u8()?,
    );
    let mut raw = [0u8; 16];
    raw[0..8].copy_from_slice(&u64::from(addr).to_le_bytes());
    raw[8..12].copy_from_slice(&len.to_le_bytes());
    raw[12..14].copy_from_slice(&u16::from(flags & 7).to_le_bytes());
    raw[14..16].copy_from_slice(&u16::from(next).to_le_bytes());
    let at = table + 16 * u64::from(index % SIZE as u8);
    mem.write_slice(&raw, GuestAddress(at)).ok()
}

fn push_avail(mem: &GuestMemoryMmap, avail: u64, idx: &mut u16, head: u8) {
    let slot = avail + 4 + 2 * u64::from(*idx % SIZE);
    let _ = mem.write_obj(u16::from(head).to_le(), GuestAddress(slot));
    *idx = idx.wrapping_add(1);
    let _ = mem.write_obj(idx.to_le(), GuestAddress(avail + 2));
}

/// Everything the backend got must be a frame the guest was allowed to send.
fn check_sent(net: &mut Net<MemBackend>, acked: u64) {
    for frame in net.backend_mut().tx.drain(..) {
        assert!(frame.len() >= VNET_HDR_LEN + 14, "runt frame sent");
        assert!(frame.len() <= VNET_HDR_LEN + 65550, "oversized frame sent");
        let (flags, gso) = (frame[0], frame[1]);
        assert_eq!(flags & !1, 0, "unknown flags sent");
        if flags & 1 != 0 {
            assert_ne!(acked & CSUM, 0, "NEEDS_CSUM without CSUM");
            let start = u16::from_le_bytes([frame[6], frame[7]]) as usize;
            let off = u16::from_le_bytes([frame[8], frame[9]]) as usize;
            assert!(start + off + 2 <= frame.len() - VNET_HDR_LEN);
        }
        match gso {
            0 => assert_eq!(&frame[4..6], &[0, 0]),
            1 => assert_ne!(acked & HOST_TSO4, 0),
            4 => assert_ne!(acked & HOST_TSO6, 0),
            other => panic!("gso_type {other:#x} sent"),
        }
        assert_eq!(&frame[10..12], &[0, 0], "num_buffers leaked");
    }
}

pub fn run(data: &[u8]) {
    let mut input = Input(data);
    let Some(features) = input.u64() else {
        return;
    };
    // Two regions with a hole between them, so buffers can straddle the
    // end of memory.
    let mem = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0x1_0000),
        (GuestAddress(0x2_0000), 0x1000),
    ])
    .unwrap();
    let irq = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    let mut backend = MemBackend::new().unwrap();
    backend.tx_limit = 64;
    let net = Arc::new(Mutex::new(
        Net::with_backend(backend, [2, 0, 0, 0, 0, 1]).unwrap(),
    ));
    let mut t = MmioTransport::new(mem.clone(), irq, net.clone()).unwrap();
    driver::probe(&mut t, features, &QUEUES, SIZE);
    assert!(lock(&net).is_activated());
    // What probe() acked, as the transport passed it on.
    let acked = lock(&net).avail_features() & (features | 1 << 32);

    let (mut rx_idx, mut tx_idx) = (0u16, 0u16);
    while let Some(op) = input.u8() {
        match op & 7 {
            0 => {
                let (Some(addr), Some(len)) = (input.u16(), input.u8()) else {
                    break;
                };
                let bytes = input.bytes(usize::from(len));
                // Partial writes at the end of memory are fine to lose.
                let _ = mem.write_slice(bytes, GuestAddress(u64::from(addr)));
            }
            1 => {
                if set_desc(&mem, QUEUES[1].0, &mut input).is_none() {
                    break;
                }
            }
            2 => {
                let Some(head) = input.u8() else { break };
                push_avail(&mem, QUEUES[1].1, &mut tx_idx, head);
            }
            3 => {
                let mut net = lock(&net);
                let _ = net.tx_queue_event().read();
                net.process_tx();
                check_sent(&mut net, acked);
            }
            4 => {
                let mut net = lock(&net);
                let b = net.backend_mut();
                b.tx_would_block = !b.tx_would_block;
            }
            5 => {
                let (Some(len), Some(fill)) = (input.u16(), input.u8()) else {
                    break;
                };
                let mut frame = vec![fill; usize::from(len % 2048)];
                // Mostly well-formed host headers, sometimes odd ones.
                if frame.len() >= VNET_HDR_LEN && fill & 0x80 == 0 {
                    frame[..VNET_HDR_LEN].fill(0);
                }
                let mut net = lock(&net);
                net.backend_mut().push_rx(frame);
                if net.backend().rx.len() > 64 {
                    net.backend_mut().rx.pop_front();
                }
                net.process_rx();
            }
            6 => {
                if set_desc(&mem, QUEUES[0].0, &mut input).is_none() {
                    break;
                }
            }
            _ => {
                let Some(head) = input.u8() else { break };
                push_avail(&mem, QUEUES[0].1, &mut rx_idx, head);
                let mut net = lock(&net);
                let _ = net.rx_queue_event().read();
                net.process_rx();
            }
        }
    }
    let mut net = lock(&net);
    net.backend_mut().tx_would_block = false;
    net.process_tx();
    // For checking that seeds reach the interesting states (before the
    // check drains what was sent).
    if std::env::var_os("NET_TX_TRACE").is_some() {
        eprintln!("acked {acked:#x} {:?}", net.stats());
    }
    check_sent(&mut net, acked);
}
