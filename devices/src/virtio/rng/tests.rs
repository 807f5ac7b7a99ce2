//! virtio-rng driven through the MMIO transport the way a Linux guest does,
//! with real guest memory, plus hostile guests.

use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use vm_memory::GuestMemoryMmap;

use super::{Rng, MAX_BYTES_PER_CHAIN};
use crate::bus::{lock, BusDevice};
use crate::virtio::features::{VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};
use crate::virtio::status::{DEVICE_NEEDS_RESET, DRIVER_OK};
use crate::virtio::test_utils::*;
use crate::virtio::{Interrupt, MmioTransport, VirtioDevice, INT_VRING};

const BUF: u64 = 0x10000;
const SIZE: u16 = 16;

struct Fixture {
    mem: GuestMemoryMmap,
    irq: Arc<Interrupt>,
    rng: Arc<Mutex<Rng>>,
    t: MmioTransport,
}

fn fixture() -> Fixture {
    let mem = guest_memory();
    let irq = interrupt();
    let rng = shared(Rng::new().unwrap());
    let t = MmioTransport::new(mem.clone(), irq.clone(), rng.clone()).unwrap();
    Fixture { mem, irq, rng, t }
}

impl Fixture {
    /// Probes like Linux with `features` and checks the device came up.
    fn bring_up(&mut self, features: u64) {
        linux_probe_with(&mut self.t, features, &[(u32::from(SIZE), QUEUE_ADDRS[0])]);
        assert_eq!(
            rd(&mut self.t, STATUS) & (DRIVER_OK | DEVICE_NEEDS_RESET),
            DRIVER_OK
        );
        assert!(lock(&self.rng).is_activated());
    }

    /// Notifies through the MMIO register (served there, on the "vCPU"),
    /// then runs the handler the way the event loop would for what the
    /// vCPU handed over.
    fn kick_and_serve(&mut self) {
        wr(&mut self.t, QUEUE_NOTIFY, 0);
        let mut rng = lock(&self.rng);
        let _ = rng.queue_event().read();
        rng.process_queue();
    }

    fn take_irq(&self) -> bool {
        let raised = self.irq.irqfd().read().is_ok();
        self.irq.ack(u32::MAX);
        raised
    }
}

#[test]
fn end_to_end_with_event_manager() {
    let mut f = fixture();
    let mut em: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
        EventManager::new().unwrap();
    em.add_subscriber(f.rng.clone());

    let mut ring = GuestRing::new(&f.mem, SIZE, QUEUE_ADDRS[0]);
    f.bring_up(1 << VIRTIO_F_VERSION_1);
    // Activation looks at the queue once; nothing is there yet.
    em.run_with_timeout(100).unwrap();
    assert_eq!(ring.used_idx(), 0);
    assert!(!f.take_irq());

    // Request 1: one 64-byte writable buffer, handed to the event loop
    // (as a notification is when another thread holds the device).
    ring.set_desc(0, BUF, 64, F_WRITE, 0);
    ring.push_avail(0);
    lock(&f.rng).queue_event().write(1).unwrap();
    assert_eq!(em.run_with_timeout(100).unwrap(), 1);
    assert_eq!(ring.used_idx(), 1);
    assert_eq!(ring.used_elem(0), (0, 64));
    let first = ring.read(BUF, 64);
    assert!(first.iter().any(|&b| b != 0));
    assert_eq!(rd(&mut f.t, INTERRUPT_STATUS) & INT_VRING, INT_VRING);
    assert!(f.irq.irqfd().read().unwrap() >= 1);
    wr(&mut f.t, INTERRUPT_ACK, INT_VRING);
    assert_eq!(rd(&mut f.t, INTERRUPT_STATUS), 0);

    // Request 2: split over two writable buffers behind a readable one.
    ring.set_desc(1, BUF + 0x1000, 8, F_NEXT, 2);
    ring.set_desc(2, BUF + 0x100, 16, F_WRITE | F_NEXT, 3);
    ring.set_desc(3, BUF + 0x200, 48, F_WRITE, 0);
    ring.push_avail(1);
    lock(&f.rng).queue_event().write(1).unwrap();
    em.run_with_timeout(100).unwrap();
    assert_eq!(ring.used_idx(), 2);
    assert_eq!(ring.used_elem(1), (1, 64));
    let second = [ring.read(BUF + 0x100, 16), ring.read(BUF + 0x200, 48)].concat();
    assert_ne!(first, second);
    assert_eq!(
        ring.read(BUF + 0x1000, 8),
        [0; 8],
        "readable buffer untouched"
    );
    assert!(f.take_irq());

    // Using the registered eventfd directly (the ioeventfd path) works too.
    ring.set_desc(4, BUF + 0x300, 32, F_WRITE, 0);
    ring.push_avail(4);
    f.t.queue_events()[0].write(1).unwrap();
    em.run_with_timeout(100).unwrap();
    assert_eq!(ring.used_elem(2), (4, 32));
    assert!(f.take_irq());
}

#[test]
fn a_notification_is_served_on_the_notifying_vcpu() {
    let mut f = fixture();
    let mut ring = GuestRing::new(&f.mem, SIZE, QUEUE_ADDRS[0]);
    f.bring_up(1 << VIRTIO_F_VERSION_1);
    assert!(f.t.serves_on_vcpu());
    // Activation asked the event loop to look at the queue once.
    let _ = lock(&f.rng).queue_event().read();
    ring.set_desc(0, BUF, 32, F_WRITE, 0);
    ring.push_avail(0);
    // No event loop runs: the MMIO write itself serves the request.
    wr(&mut f.t, QUEUE_NOTIFY, 0);
    assert_eq!(ring.used_elem(0), (0, 32));
    assert!(ring.read(BUF, 32).iter().any(|&b| b != 0));
    assert!(f.take_irq());
    // Nothing was left for the event loop.
    assert!(lock(&f.rng).queue_event().read().is_err());
}

#[test]
fn event_idx_suppresses_interrupts() {
    let mut f = fixture();
    let mut ring = GuestRing::new(&f.mem, SIZE, QUEUE_ADDRS[0]);
    f.bring_up((1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX));
    f.kick_and_serve();

    // used_event = 0: interrupt when used idx moves past 0.
    ring.set_used_event(0);
    ring.set_desc(0, BUF, 16, F_WRITE, 0);
    ring.push_avail(0);
    f.kick_and_serve();
    assert_eq!(ring.used_idx(), 1);
    assert!(f.take_irq());

    // Still 0: the driver does not want to hear about entry 1.
    ring.set_desc(1, BUF + 16, 16, F_WRITE, 0);
    ring.push_avail(1);
    f.kick_and_serve();
    assert_eq!(ring.used_idx(), 2);
    assert!(!f.take_irq());

    // The device published avail_event = next avail index it expects.
    let avail_event = ring.read(ring.used + 4 + 8 * u64::from(SIZE), 2);
    assert_eq!(u16::from_le_bytes([avail_event[0], avail_event[1]]), 2);
}

#[test]
fn buffers_outside_guest_memory_return_zero_bytes() {
    let mut f = fixture();
    let mut ring = GuestRing::new(&f.mem, SIZE, QUEUE_ADDRS[0]);
    f.bring_up(1 << VIRTIO_F_VERSION_1);
    let cases: [(u64, u32); 4] = [
        (MEM_SIZE - 8, 64),
        (MEM_SIZE, 1),
        (u64::MAX - 10, 100),
        (BUF, u32::MAX),
    ];
    for (i, &(addr, len)) in cases.iter().enumerate() {
        let i = i as u16;
        ring.set_desc(i, addr, len, F_WRITE, 0);
        ring.push_avail(i);
        f.kick_and_serve();
        assert_eq!(ring.used_idx(), i + 1);
        assert_eq!(ring.used_elem(i), (u32::from(i), 0), "{addr:#x}+{len:#x}");
    }
    // A bad buffer after a good one spoils the whole chain.
    ring.set_desc(8, BUF, 16, F_WRITE | F_NEXT, 9);
    ring.set_desc(9, MEM_SIZE, 16, F_WRITE, 0);
    ring.push_avail(8);
    f.kick_and_serve();
    assert_eq!(ring.used_elem(4), (8, 0));
}

#[test]
fn looping_and_broken_chains_terminate() {
    let mut f = fixture();
    let mut ring = GuestRing::new(&f.mem, SIZE, QUEUE_ADDRS[0]);
    f.bring_up(1 << VIRTIO_F_VERSION_1);

    // 0 -> 1 -> 0 -> ...: cut off after SIZE descriptors.
    ring.set_desc(0, BUF, 16, F_WRITE | F_NEXT, 1);
    ring.set_desc(1, BUF + 16, 16, F_WRITE | F_NEXT, 0);
    ring.push_avail(0);
    f.kick_and_serve();
    assert_eq!(ring.used_idx(), 1);
    let (id, len) = ring.used_elem(0);
    assert_eq!(id, 0);
    assert!(len as usize <= MAX_BYTES_PER_CHAIN && len <= 16 * u32::from(SIZE));

    // A self-loop of large buffers is capped by the per-chain budget.
    ring.set_desc(2, BUF, 0x8000, F_WRITE | F_NEXT, 2);
    ring.push_avail(2);
    f.kick_and_serve();
    assert_eq!(ring.used_elem(1), (2, MAX_BYTES_PER_CHAIN as u32));

    // `next` beyond the table ends the chain.
    ring.set_desc(3, BUF, 8, F_WRITE | F_NEXT, 500);
    ring.push_avail(3);
    f.kick_and_serve();
    assert_eq!(ring.used_elem(2), (3, 8));

    // Indirect tables outside memory, misaligned, or nested.
    ring.set_desc(4, MEM_SIZE + 0x1000, 32, F_INDIRECT, 0);
    ring.push_avail(4);
    ring.set_desc(5, BUF, 17, F_INDIRECT, 0);
    ring.push_avail(5);
    ring.set_desc(6, BUF + 0x100, 16, F_INDIRECT, 0);
    GuestRing::new(&f.mem, 1, (BUF + 0x100, BUF + 0x800, BUF + 0x900)).set_desc(
        0,
        BUF + 0x100,
        16,
        F_INDIRECT,
        0,
    );
    ring.push_avail(6);
    f.kick_and_serve();
    assert_eq!(ring.used_idx(), 6);
    for i in 3..6 {
        assert_eq!(ring.used_elem(i).1, 0);
    }
}

#[test]
fn zero_length_readable_and_oversized_buffers() {
    let mut f = fixture();
    let mut ring = GuestRing::new(&f.mem, SIZE, QUEUE_ADDRS[0]);
    f.bring_up(1 << VIRTIO_F_VERSION_1);

    ring.set_desc(0, BUF, 0, F_WRITE, 0);
    ring.push_avail(0);
    ring.set_desc(1, BUF, 64, 0, 0);
    ring.push_avail(1);
    // Zero-length buffers may even point anywhere.
    ring.set_desc(2, u64::MAX, 0, F_WRITE, 0);
    ring.push_avail(2);
    f.kick_and_serve();
    assert_eq!(ring.used_idx(), 3);
    for i in 0..3 {
        assert_eq!(ring.used_elem(i), (u32::from(i), 0));
    }
    assert_eq!(ring.read(BUF, 64), [0; 64]);

    // 512 KiB asked for, 64 KiB given, nothing written past it.
    ring.set_desc(3, BUF, 0x8_0000, F_WRITE, 0);
    ring.push_avail(3);
    f.kick_and_serve();
    assert_eq!(ring.used_elem(3), (3, MAX_BYTES_PER_CHAIN as u32));
    let end = BUF + MAX_BYTES_PER_CHAIN as u64;
    assert!(ring.read(end - 64, 64).iter().any(|&b| b != 0));
    assert_eq!(ring.read(end, 4096), vec![0; 4096]);
}

#[test]
fn lying_available_ring() {
    let mut f = fixture();
    let mut ring = GuestRing::new(&f.mem, SIZE, QUEUE_ADDRS[0]);
    f.bring_up(1 << VIRTIO_F_VERSION_1);

    // A head index beyond the queue cannot be returned, but does no harm.
    ring.push_avail(200);
    f.kick_and_serve();
    assert_eq!(ring.used_idx(), 0);

    // The device keeps working afterwards.
    ring.set_desc(0, BUF, 8, F_WRITE, 0);
    ring.push_avail(0);
    f.kick_and_serve();
    assert_eq!(ring.used_idx(), 1);
    assert_eq!(ring.used_elem(0), (0, 8));

    // avail->idx far ahead of anything published: ignored, no spinning.
    ring.set_avail_idx(1000);
    f.kick_and_serve();
    assert_eq!(ring.used_idx(), 1);
    // And no self-kick loop was left behind.
    assert!(lock(&f.rng).queue_event().read().is_err());
}

#[test]
fn a_full_queue_is_served_in_one_pass() {
    let mut f = fixture();
    let mut ring = GuestRing::new(&f.mem, SIZE, QUEUE_ADDRS[0]);
    f.bring_up(1 << VIRTIO_F_VERSION_1);
    for i in 0..SIZE {
        ring.set_desc(i, BUF + 0x100 * u64::from(i), 32, F_WRITE, 0);
        ring.push_avail(i);
    }
    let _ = lock(&f.rng).queue_event().read(); // activation's look
    wr(&mut f.t, QUEUE_NOTIFY, 0);
    assert_eq!(ring.used_idx(), SIZE);
    assert!(f.take_irq());
    // The budget ran out exactly, so the device re-armed itself to check
    // again; the second look finds nothing.
    let mut rng = lock(&f.rng);
    assert_eq!(rng.queue_event().read().unwrap(), 1);
    rng.process_queue();
    assert_eq!(ring.used_idx(), SIZE);
}

#[test]
fn invalid_queue_sizes_never_activate() {
    for size in [0u32, 3, 512] {
        let mut f = fixture();
        let mut ring = GuestRing::new(&f.mem, SIZE, QUEUE_ADDRS[0]);
        linux_probe(&mut f.t, &[(size, QUEUE_ADDRS[0])]);
        assert!(!lock(&f.rng).is_activated(), "size {size}");
        assert_ne!(rd(&mut f.t, STATUS) & DEVICE_NEEDS_RESET, 0);
        ring.set_desc(0, BUF, 8, F_WRITE, 0);
        ring.push_avail(0);
        f.kick_and_serve();
        assert_eq!(ring.used_idx(), 0);
    }
}

#[test]
fn notifications_before_activation_and_after_reset_are_ignored() {
    let mut f = fixture();
    let mut ring = GuestRing::new(&f.mem, SIZE, QUEUE_ADDRS[0]);
    ring.set_desc(0, BUF, 8, F_WRITE, 0);
    ring.push_avail(0);
    f.kick_and_serve();
    assert_eq!(ring.used_idx(), 0);

    // Buffers queued before DRIVER_OK are served once the device starts.
    f.bring_up(1 << VIRTIO_F_VERSION_1);
    let mut rng = lock(&f.rng);
    assert_eq!(rng.queue_event().read().unwrap(), 1);
    rng.process_queue();
    drop(rng);
    assert_eq!(ring.used_elem(0), (0, 8));

    wr(&mut f.t, STATUS, 0);
    assert!(!lock(&f.rng).is_activated());
    ring.set_desc(1, BUF, 8, F_WRITE, 0);
    ring.push_avail(1);
    f.kick_and_serve();
    assert_eq!(ring.used_idx(), 1);

    // Misaligned or odd-width notifications are dropped, not forwarded.
    f.t.write(QUEUE_NOTIFY, &[0, 0]);
    f.t.write(QUEUE_NOTIFY + 1, &[0, 0, 0, 0]);
    assert!(lock(&f.rng).queue_event().read().is_err());
}
