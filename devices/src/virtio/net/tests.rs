//! virtio-net driven through the MMIO transport the way a Linux guest does,
//! with real guest memory: first against the in-memory backend (every
//! corner, hostile guests), then against a real tap in a private network
//! namespace (skipped without CAP_NET_ADMIN).

use std::sync::{Arc, Mutex};

use event_manager::{EventManager, EventSet, MutEventSubscriber, SubscriberOps};
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_STATUS,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{MemBackend, Net, NetBackend, NetError, MAX_FRAME_LEN, VNET_HDR_LEN};
use crate::bus::{lock, BusDevice};
use crate::virtio::features::{VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};
use crate::virtio::status::{DEVICE_NEEDS_RESET, DRIVER_OK};
use crate::virtio::test_utils::*;
use crate::virtio::{Activated, Interrupt, MmioTransport, VirtioDevice, INT_CONFIG, TYPE_NET};

const SIZE: u16 = 16;
/// Guest buffers live from here to the end of the 1 MiB guest memory.
const BUF: u64 = 0x10000;
const GUEST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

const BASE: u64 = (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_NET_F_MAC) | (1 << VIRTIO_NET_F_STATUS);
const MRG: u64 = 1 << VIRTIO_NET_F_MRG_RXBUF;
const OFFLOADS: u64 = (1 << VIRTIO_NET_F_CSUM)
    | (1 << VIRTIO_NET_F_GUEST_CSUM)
    | (1 << VIRTIO_NET_F_HOST_TSO4)
    | (1 << VIRTIO_NET_F_HOST_TSO6)
    | (1 << VIRTIO_NET_F_GUEST_TSO4)
    | (1 << VIRTIO_NET_F_GUEST_TSO6);
const EVENT_IDX: u64 = 1 << VIRTIO_RING_F_EVENT_IDX;

struct Fixture<B: NetBackend + 'static> {
    mem: GuestMemoryMmap,
    irq: Arc<Interrupt>,
    net: Arc<Mutex<Net<B>>>,
    t: MmioTransport,
    rx: GuestRing,
    tx: GuestRing,
    /// Next free descriptor index in each ring (tests never reuse one
    /// before it is used).
    next_desc: [u16; 2],
}

fn mem_fixture() -> Fixture<MemBackend> {
    fixture(Net::with_backend(MemBackend::new().unwrap(), GUEST_MAC).unwrap())
}

fn fixture<B: NetBackend + 'static>(net: Net<B>) -> Fixture<B> {
    let mem = guest_memory();
    let irq = interrupt();
    let net = shared(net);
    let t = MmioTransport::new(mem.clone(), irq.clone(), net.clone()).unwrap();
    let rx = GuestRing::new(&mem, SIZE, QUEUE_ADDRS[0]);
    let tx = GuestRing::new(&mem, SIZE, QUEUE_ADDRS[1]);
    Fixture {
        mem,
        irq,
        net,
        t,
        rx,
        tx,
        next_desc: [0; 2],
    }
}

impl<B: NetBackend + 'static> Fixture<B> {
    /// Probes like Linux with `features` and checks the device came up.
    fn bring_up(&mut self, features: u64) {
        let q = u32::from(SIZE);
        linux_probe_with(
            &mut self.t,
            features,
            &[(q, QUEUE_ADDRS[0]), (q, QUEUE_ADDRS[1])],
        );
        assert_eq!(
            rd(&mut self.t, STATUS) & (DRIVER_OK | DEVICE_NEEDS_RESET),
            DRIVER_OK
        );
        assert!(lock(&self.net).is_activated());
        // Activation kicks both queues; consume those kicks.
        self.serve_rx();
        self.serve_tx();
    }

    fn serve_rx(&mut self) {
        let mut net = lock(&self.net);
        let _ = net.rx_queue_event().read();
        net.process_rx();
    }

    fn serve_tx(&mut self) {
        let mut net = lock(&self.net);
        let _ = net.tx_queue_event().read();
        net.process_tx();
    }

    fn take_irq(&self) -> bool {
        let raised = self.irq.irqfd().read().is_ok();
        self.irq.ack(u32::MAX);
        raised
    }

    fn alloc_desc(&mut self, queue: usize) -> u16 {
        let i = self.next_desc[queue];
        self.next_desc[queue] = (i + 1) % SIZE;
        i
    }

    /// Publishes a chain of (addr, len) buffers on the receive (device
    /// writable) or transmit queue; returns its head.
    fn post_chain(&mut self, queue: usize, bufs: &[(u64, u32)], flags: u16) -> u16 {
        let idx: Vec<u16> = bufs.iter().map(|_| self.alloc_desc(queue)).collect();
        let ring = if queue == 0 {
            &mut self.rx
        } else {
            &mut self.tx
        };
        for (k, &(addr, len)) in bufs.iter().enumerate() {
            let (f, next) = match idx.get(k + 1) {
                Some(&n) => (flags | F_NEXT, n),
                None => (flags, 0),
            };
            ring.set_desc(idx[k], addr, len, f, next);
        }
        ring.push_avail(idx[0]);
        idx[0]
    }

    fn post_rx(&mut self, bufs: &[(u64, u32)]) -> u16 {
        self.post_chain(0, bufs, F_WRITE)
    }

    /// Writes `frame` to guest memory at `addr` and posts it as a one-buffer
    /// transmit chain.
    fn send(&mut self, addr: u64, frame: &[u8]) -> u16 {
        self.mem.write_slice(frame, GuestAddress(addr)).unwrap();
        self.post_chain(1, &[(addr, frame.len() as u32)], 0)
    }
}

/// A 12-byte header with every field given.
fn vnet_hdr(flags: u8, gso: u8, hdr_len: u16, gso_size: u16, start: u16, off: u16) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0] = flags;
    h[1] = gso;
    h[2..4].copy_from_slice(&hdr_len.to_le_bytes());
    h[4..6].copy_from_slice(&gso_size.to_le_bytes());
    h[6..8].copy_from_slice(&start.to_le_bytes());
    h[8..10].copy_from_slice(&off.to_le_bytes());
    h
}

/// Header + Ethernet frame with a recognisable payload of `payload` bytes.
fn frame_with(hdr: [u8; 12], payload: usize, seed: u8) -> Vec<u8> {
    let mut f = hdr.to_vec();
    f.extend_from_slice(&HOST_MAC);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x88, 0xb5]); // local experimental ethertype
    f.extend((0..payload).map(|i| seed.wrapping_add(i as u8)));
    f
}

fn frame(payload: usize, seed: u8) -> Vec<u8> {
    frame_with([0; 12], payload, seed)
}

fn num_buffers(bytes: &[u8]) -> u16 {
    u16::from_le_bytes([bytes[10], bytes[11]])
}

#[test]
fn features_config_space_and_link_status() {
    let mut f = mem_fixture();
    let offered = {
        wr(&mut f.t, DEVICE_FEATURES_SEL, 0);
        let lo = rd(&mut f.t, DEVICE_FEATURES);
        wr(&mut f.t, DEVICE_FEATURES_SEL, 1);
        u64::from(rd(&mut f.t, DEVICE_FEATURES)) << 32 | u64::from(lo)
    };
    assert_eq!(rd(&mut f.t, DEVICE_ID), TYPE_NET);
    for bit in [BASE, MRG, OFFLOADS, EVENT_IDX] {
        assert_eq!(offered & bit, bit);
    }
    // No control queue, no UFO/ECN/USO, no multiqueue.
    for bit in [2u32, 9, 10, 13, 14, 17, 22, 54, 55, 56] {
        assert_eq!(offered & (1 << bit), 0, "bit {bit}");
    }

    let mut config = [0u8; 8];
    f.t.read(0x100, &mut config[..4]);
    f.t.read(0x104, &mut config[4..]);
    assert_eq!(&config[..6], &GUEST_MAC);
    assert_eq!(u16::from_le_bytes([config[6], config[7]]), 1, "link up");
    let mut beyond = [0xffu8; 4];
    f.t.read(0x108, &mut beyond);
    assert_eq!(beyond, [0; 4]);

    f.bring_up(BASE);
    assert!(!f.take_irq());
    lock(&f.net).set_link_up(false);
    assert_eq!(f.irq.status() & INT_CONFIG, INT_CONFIG);
    assert!(f.take_irq());
    let mut status = [0u8; 2];
    f.t.read(0x106, &mut status);
    assert_eq!(status, [0, 0]);
    lock(&f.net).set_link_up(false);
    assert!(!f.take_irq(), "no change, no interrupt");
}

#[test]
fn invalid_macs_are_refused_with_the_value() {
    for mac in [[1, 2, 3, 4, 5, 6], [0; 6], [0xff; 6]] {
        let err = Net::with_backend(MemBackend::new().unwrap(), mac)
            .err()
            .unwrap();
        assert!(matches!(err, NetError::InvalidMac(_)));
        assert!(err.to_string().contains(&super::format_mac(&mac)), "{err}");
    }
}

#[test]
fn activate_checks_queues_and_sets_offloads() {
    let mem = guest_memory();
    let irq = interrupt();
    let mut net = Net::with_backend(MemBackend::new().unwrap(), GUEST_MAC).unwrap();
    use virtio_queue::{Queue, QueueT};
    let ready = || {
        let mut q = Queue::new(SIZE).unwrap();
        q.set_ready(true);
        q
    };
    assert!(net
        .activate(Activated::new(mem.clone(), irq.clone(), vec![ready()]))
        .is_err());
    let err = net
        .activate(Activated::new(
            mem.clone(),
            irq.clone(),
            vec![ready(), Queue::new(SIZE).unwrap()],
        ))
        .unwrap_err();
    assert!(matches!(
        err,
        crate::virtio::ActivateError::QueueNotReady(1)
    ));
    net.set_acked_features(BASE | OFFLOADS | (1 << 63));
    net.activate(Activated::new(
        mem.clone(),
        irq.clone(),
        vec![ready(), ready()],
    ))
    .unwrap();
    assert_eq!(
        net.backend().offload,
        libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6
    );
    assert!(net
        .activate(Activated::new(
            mem.clone(),
            irq.clone(),
            vec![ready(), ready()]
        ))
        .is_err());
    assert!(net.reset());
    net.set_acked_features(BASE | (1 << VIRTIO_NET_F_GUEST_TSO4));
    net.activate(Activated::new(mem, irq, vec![ready(), ready()]))
        .unwrap();
    assert_eq!(net.backend().offload, 0, "TSO needs GUEST_CSUM");
}

#[test]
fn tx_frames_reach_the_backend() {
    let mut f = mem_fixture();
    f.bring_up(BASE);

    // One buffer; the guest's num_buffers is not passed on.
    let mut one = frame(46, 1);
    one[10] = 0x55;
    let head = f.send(BUF, &one);
    f.serve_tx();
    assert_eq!(f.tx.used_idx(), 1);
    assert_eq!(f.tx.used_elem(0), (u32::from(head), 0));
    assert!(f.take_irq());
    {
        let net = lock(&f.net);
        let sent = &net.backend().tx;
        assert_eq!(sent.len(), 1);
        assert_eq!(&sent[0][..12], &[0; 12]);
        assert_eq!(&sent[0][12..], &one[12..]);
    }

    // Header split 5 + 7, frame over three buffers, a zero-length buffer
    // pointing nowhere in between.
    let two = frame(1000, 2);
    let parts = [
        (0, 5),
        (5, 12),
        (12, 300),
        (300, 300),
        (300, 700),
        (700, two.len()),
    ];
    let mut bufs = Vec::new();
    for (k, &(a, b)) in parts.iter().enumerate() {
        let addr = BUF + 0x1000 + 0x800 * k as u64;
        f.mem.write_slice(&two[a..b], GuestAddress(addr)).unwrap();
        let addr = if a == b { u64::MAX } else { addr };
        bufs.push((addr, (b - a) as u32));
    }
    let head = f.post_chain(1, &bufs, 0);
    f.serve_tx();
    assert_eq!(f.tx.used_elem(1), (u32::from(head), 0));
    let net = lock(&f.net);
    assert_eq!(net.backend().tx[1], two);
    let stats = net.stats();
    assert_eq!((stats.tx_frames, stats.tx_dropped), (2, 0));
    assert_eq!(stats.tx_bytes, (one.len() + two.len() - 24) as u64);
}

#[test]
fn malformed_tx_chains_are_dropped_and_returned() {
    let mut f = mem_fixture();
    f.bring_up(BASE | MRG);
    let ok = frame(100, 3);
    f.mem.write_slice(&ok, GuestAddress(BUF)).unwrap();
    let csum = frame_with(vnet_hdr(1, 0, 0, 0, 20, 6), 100, 3);
    f.mem
        .write_slice(&csum, GuestAddress(BUF + 0x1000))
        .unwrap();
    let tso = frame_with(vnet_hdr(1, 1, 54, 1448, 34, 16), 3000, 3);
    f.mem.write_slice(&tso, GuestAddress(BUF + 0x2000)).unwrap();

    type Case = (&'static str, Vec<(u64, u32)>, u16);
    let cases: Vec<Case> = vec![
        ("zero length", vec![(BUF, 0)], 0),
        ("zero length nowhere", vec![(u64::MAX, 0)], 0),
        ("header only", vec![(BUF, 12)], 0),
        ("runt frame", vec![(BUF, 25)], 0),
        ("beyond memory", vec![(MEM_SIZE - 8, 64)], 0),
        (
            "straddling the end",
            vec![(BUF, 12), (MEM_SIZE - 20, 64)],
            0,
        ),
        ("huge length", vec![(BUF, u32::MAX)], 0),
        ("address overflow", vec![(u64::MAX - 10, 100)], 0),
        ("writable buffer", vec![(BUF, ok.len() as u32)], F_WRITE),
        ("longer than a frame", vec![(BUF, 40000), (BUF, 40000)], 0),
        (
            "csum not negotiated",
            vec![(BUF + 0x1000, csum.len() as u32)],
            0,
        ),
        (
            "tso not negotiated",
            vec![(BUF + 0x2000, tso.len() as u32)],
            0,
        ),
    ];
    for (k, (what, bufs, flags)) in cases.iter().enumerate() {
        let head = f.post_chain(1, bufs, *flags);
        f.serve_tx();
        assert_eq!(f.tx.used_idx(), k as u16 + 1, "{what}");
        assert_eq!(f.tx.used_elem(k as u16), (u32::from(head), 0), "{what}");
    }
    assert!(lock(&f.net).backend().tx.is_empty());
    assert_eq!(lock(&f.net).stats().tx_dropped, cases.len() as u64);

    // More descriptors than allowed, through an indirect table of 300.
    let table = BUF + 0x8000;
    let it = GuestRing::new(&f.mem, 512, (table, BUF + 0xf000, BUF + 0xf800));
    for i in 0..300u16 {
        let flags = if i < 299 { F_NEXT } else { 0 };
        it.set_desc(i, BUF + u64::from(i), 1, flags, i + 1);
    }
    let head = f.post_chain(1, &[(table, 300 * 16)], F_INDIRECT);
    f.serve_tx();
    assert_eq!(f.tx.used_elem(cases.len() as u16), (u32::from(head), 0));
    assert!(lock(&f.net).backend().tx.is_empty());

    // The device still works.
    let head = f.send(BUF, &ok);
    f.serve_tx();
    assert_eq!(f.tx.used_elem(cases.len() as u16 + 1), (u32::from(head), 0));
    assert_eq!(lock(&f.net).backend().tx, vec![ok]);
}

#[test]
fn negotiated_tx_offloads_pass() {
    let mut f = mem_fixture();
    f.bring_up(BASE | OFFLOADS);
    let csum = frame_with(vnet_hdr(1, 0, 0, 0, 20, 6), 100, 3);
    f.send(BUF, &csum);
    let tso = frame_with(vnet_hdr(1, 1, 54, 1448, 34, 16), 3000, 4);
    f.send(BUF + 0x1000, &tso);
    f.serve_tx();
    let net = lock(&f.net);
    assert_eq!(net.backend().tx, vec![csum, tso]);
}

#[test]
fn tx_eagain_keeps_the_chain_until_writable() {
    let mut f = mem_fixture();
    f.bring_up(BASE);
    lock(&f.net).backend_mut().tx_would_block = true;
    let a = frame(60, 1);
    let b = frame(70, 2);
    f.send(BUF, &a);
    f.send(BUF + 0x1000, &b);
    f.serve_tx();
    f.serve_tx();
    assert_eq!(f.tx.used_idx(), 0, "nothing returned while the tap refuses");
    assert!(!f.take_irq());
    {
        let net = lock(&f.net);
        assert!(net.tx_pending());
        assert!(net.wanted_backend_events().contains(EventSet::OUT));
        assert!(net.backend().tx.is_empty());
    }
    // The fd turned writable (EPOLLOUT): the kept frame goes first.
    lock(&f.net).backend_mut().tx_would_block = false;
    lock(&f.net).process_tx();
    assert_eq!(f.tx.used_idx(), 2);
    assert_eq!(f.tx.used_elem(0).0, 0);
    assert_eq!(f.tx.used_elem(1).0, 1);
    assert!(f.take_irq());
    let net = lock(&f.net);
    assert_eq!(net.backend().tx, vec![a, b]);
    assert!(!net.tx_pending());
    assert!(!net.wanted_backend_events().contains(EventSet::OUT));
}

#[test]
fn a_full_tx_queue_is_served_in_one_pass_and_rearmed() {
    let mut f = mem_fixture();
    f.bring_up(BASE);
    for i in 0..SIZE {
        f.send(BUF + 0x100 * u64::from(i), &frame(60, i as u8));
    }
    f.serve_tx();
    assert_eq!(f.tx.used_idx(), SIZE);
    let mut net = lock(&f.net);
    assert_eq!(net.backend().tx.len(), usize::from(SIZE));
    assert_eq!(net.tx_queue_event().read().unwrap(), 1);
    net.process_tx();
    assert_eq!(f.tx.used_idx(), SIZE);
}

#[test]
fn rx_without_mergeable_buffers() {
    let mut f = mem_fixture();
    f.bring_up(BASE);
    let head = f.post_rx(&[(BUF, 1600)]);
    let fr = frame(100, 7);
    lock(&f.net).backend_mut().push_rx(fr.clone());
    f.serve_rx();
    assert_eq!(f.rx.used_idx(), 1);
    assert_eq!(f.rx.used_elem(0), (u32::from(head), fr.len() as u32));
    let got = f.rx.read(BUF, fr.len());
    assert_eq!(num_buffers(&got), 1);
    assert_eq!(&got[..10], &[0; 10]);
    assert_eq!(&got[12..], &fr[12..]);
    assert!(f.take_irq());

    // Too large for the posted buffer: dropped, the buffer kept for the
    // next frame. Header split over two descriptors on the way.
    let head = f.post_rx(&[(BUF + 0x1000, 4), (BUF + 0x2000, 200)]);
    lock(&f.net).backend_mut().push_rx(frame(300, 8));
    let small = frame(150, 9);
    lock(&f.net).backend_mut().push_rx(small.clone());
    f.serve_rx();
    assert_eq!(f.rx.used_idx(), 2);
    assert_eq!(f.rx.used_elem(1), (u32::from(head), small.len() as u32));
    let got = [
        f.rx.read(BUF + 0x1000, 4),
        f.rx.read(BUF + 0x2000, small.len() - 4),
    ]
    .concat();
    assert_eq!(num_buffers(&got), 1);
    assert_eq!(&got[12..], &small[12..]);
    let stats = lock(&f.net).stats();
    assert_eq!((stats.rx_frames, stats.rx_dropped), (2, 1));
}

#[test]
fn rx_mergeable_buffers_across_small_chains() {
    let mut f = mem_fixture();
    f.bring_up(BASE | MRG);
    let heads: Vec<u16> = (0..6)
        .map(|i| f.post_rx(&[(BUF + 0x1000 * i, 256)]))
        .collect();
    let fr = frame(1000, 5);
    assert_eq!(fr.len(), 1026);
    lock(&f.net).backend_mut().push_rx(fr.clone());
    f.serve_rx();
    assert_eq!(f.rx.used_idx(), 5);
    let mut got = Vec::new();
    for i in 0..5u16 {
        let (id, len) = f.rx.used_elem(i);
        assert_eq!(id, u32::from(heads[usize::from(i)]));
        assert_eq!(len, if i < 4 { 256 } else { 1026 - 4 * 256 });
        got.extend(f.rx.read(BUF + 0x1000 * u64::from(i), len as usize));
    }
    assert_eq!(num_buffers(&got), 5);
    assert_eq!(&got[12..], &fr[12..]);
    assert!(f.take_irq());

    // The sixth chain, with more descriptors, takes the next frame.
    let fr = frame(100, 6);
    lock(&f.net).backend_mut().push_rx(fr.clone());
    f.serve_rx();
    assert_eq!(f.rx.used_elem(5), (u32::from(heads[5]), fr.len() as u32));
    assert_eq!(num_buffers(&f.rx.read(BUF + 0x5000, 12)), 1);
}

#[test]
fn rx_mergeable_waits_for_enough_buffers() {
    let mut f = mem_fixture();
    f.bring_up(BASE | MRG);
    f.post_rx(&[(BUF, 256)]);
    f.post_rx(&[(BUF + 0x1000, 256)]);
    let big = frame(1000, 1);
    for seed in 0..50 {
        lock(&f.net).backend_mut().push_rx(if seed == 0 {
            big.clone()
        } else {
            frame(10, seed)
        });
    }
    f.serve_rx();
    f.serve_rx();
    {
        let net = lock(&f.net);
        assert_eq!(f.rx.used_idx(), 0);
        assert_eq!(net.rx_pending(), Some(big.len()));
        assert!(net.rx_blocked());
        assert!(!net.wanted_backend_events().contains(EventSet::IN));
        assert_eq!(net.backend().reads, 1, "one frame held, no more read");
    }
    f.post_rx(&[(BUF + 0x2000, 256)]);
    f.post_rx(&[(BUF + 0x3000, 256)]);
    f.post_rx(&[(BUF + 0x4000, 256)]);
    f.serve_rx();
    // The big frame in all 5 buffers; the small ones wait for more.
    assert_eq!(f.rx.used_idx(), 5);
    assert_eq!(num_buffers(&f.rx.read(BUF, 12)), 5);
    assert_eq!(f.rx.used_elem(4).1, (big.len() - 4 * 256) as u32);
}

#[test]
fn rx_mergeable_drops_what_a_full_ring_cannot_hold() {
    let mut f = mem_fixture();
    f.bring_up(BASE | MRG);
    for i in 0..SIZE {
        f.post_rx(&[(BUF + 0x100 * u64::from(i), 16)]);
    }
    lock(&f.net).backend_mut().push_rx(frame(1000, 1));
    let small = frame(20, 2); // 46 bytes: three 16-byte buffers
    lock(&f.net).backend_mut().push_rx(small.clone());
    f.serve_rx();
    assert_eq!(f.rx.used_idx(), 3);
    assert_eq!(f.rx.used_elem(0), (0, 16));
    assert_eq!(f.rx.used_elem(2), (2, 14));
    let got: Vec<u8> = (0..3)
        .flat_map(|i| f.rx.read(BUF + 0x100 * i, 16))
        .take(small.len())
        .collect();
    assert_eq!(num_buffers(&got), 3);
    assert_eq!(&got[12..], &small[12..]);
    let stats = lock(&f.net).stats();
    assert_eq!((stats.rx_frames, stats.rx_dropped), (1, 1));
}

#[test]
fn no_rx_buffers_means_nothing_is_read() {
    let mut f = mem_fixture();
    f.bring_up(BASE | MRG);
    for i in 0..10_000u32 {
        lock(&f.net).backend_mut().push_rx(frame(60, i as u8));
    }
    for _ in 0..100 {
        f.serve_rx();
        lock(&f.net).process_rx();
    }
    {
        let net = lock(&f.net);
        assert_eq!(net.backend().reads, 0);
        assert_eq!(net.rx_pending(), None);
        assert_eq!(net.rx_held(), 0);
        assert!(net.rx_blocked());
        assert_eq!(net.wanted_backend_events(), EventSet::empty());
        assert_eq!(net.backend().rx.len(), 10_000);
    }
    // One buffer: exactly one frame moves, the first one.
    f.post_rx(&[(BUF, 2048)]);
    f.serve_rx();
    assert_eq!(f.rx.used_idx(), 1);
    assert_eq!(f.rx.read(BUF + 26, 1), [0]);
    let net = lock(&f.net);
    assert_eq!(net.backend().reads, 1);
    assert_eq!(net.backend().rx.len(), 9_999);
    assert!(net.rx_blocked());
}

#[test]
fn rx_stops_when_the_buffers_run_out() {
    let mut f = mem_fixture();
    f.bring_up(BASE | MRG);
    // A queue's worth of buffers, each fitting exactly one frame...
    for i in 0..SIZE {
        f.post_rx(&[(BUF + 0x1000 * u64::from(i), 1024)]);
    }
    for i in 0..100u8 {
        lock(&f.net).backend_mut().push_rx(frame(60, i));
    }
    f.serve_rx();
    assert_eq!(f.rx.used_idx(), SIZE);
    let net = lock(&f.net);
    assert_eq!(net.backend().reads, u64::from(SIZE));
    assert!(net.rx_blocked());
}

#[test]
fn rx_headers_follow_the_guest_features() {
    let mut f = mem_fixture();
    f.bring_up(BASE);
    for i in 0..3 {
        f.post_rx(&[(BUF + 0x1000 * i, 2048)]);
    }
    // DATA_VALID is stripped for a guest without GUEST_CSUM; a partially
    // checksummed or GSO frame cannot go to it at all.
    lock(&f.net)
        .backend_mut()
        .push_rx(frame_with(vnet_hdr(2, 0, 0, 0, 0, 0), 60, 1));
    lock(&f.net)
        .backend_mut()
        .push_rx(frame_with(vnet_hdr(1, 0, 0, 0, 34, 6), 60, 2));
    lock(&f.net)
        .backend_mut()
        .push_rx(frame_with(vnet_hdr(0, 1, 54, 1448, 0, 0), 3000, 3));
    lock(&f.net).backend_mut().push_rx(vec![0; 25]);
    lock(&f.net)
        .backend_mut()
        .push_rx(vec![0; VNET_HDR_LEN + MAX_FRAME_LEN + 100]);
    lock(&f.net).backend_mut().push_rx(frame(60, 4));
    f.serve_rx();
    assert_eq!(f.rx.used_idx(), 2);
    let first = f.rx.read(BUF, 12);
    assert_eq!(first[0], 0);
    assert_eq!(num_buffers(&first), 1);
    assert_eq!(f.rx.read(BUF + 0x1000 + 26, 1), [4]);
    assert_eq!(lock(&f.net).stats().rx_dropped, 4);
}

#[test]
fn bad_rx_buffers_are_returned_unused() {
    let mut f = mem_fixture();
    f.bring_up(BASE | MRG);
    let outside = f.post_rx(&[(MEM_SIZE - 8, 64)]);
    let readable = f.post_chain(0, &[(BUF, 64)], 0);
    let tiny = f.post_rx(&[(BUF, 8)]);
    let good = f.post_rx(&[(BUF + 0x1000, 2048)]);
    let fr = frame(60, 1);
    lock(&f.net).backend_mut().push_rx(fr.clone());
    f.serve_rx();
    assert_eq!(f.rx.used_idx(), 4);
    assert_eq!(f.rx.used_elem(0), (u32::from(outside), 0));
    assert_eq!(f.rx.used_elem(1), (u32::from(readable), 0));
    assert_eq!(f.rx.used_elem(2), (u32::from(tiny), 0));
    assert_eq!(f.rx.used_elem(3), (u32::from(good), fr.len() as u32));
    assert_eq!(lock(&f.net).stats().rx_bad_buffers, 3);
}

#[test]
fn lying_available_rings_do_not_spin() {
    let mut f = mem_fixture();
    f.bring_up(BASE | MRG);
    lock(&f.net).backend_mut().push_rx(frame(60, 1));
    f.rx.set_avail_idx(1000);
    f.tx.set_avail_idx(1000);
    f.serve_rx();
    f.serve_tx();
    assert_eq!((f.rx.used_idx(), f.tx.used_idx()), (0, 0));
    let net = lock(&f.net);
    assert!(net.rx_blocked());
    assert!(net.tx_queue_event().read().is_err(), "no self-kick loop");
    assert!(net.rx_queue_event().read().is_err(), "no self-kick loop");

    // Heads beyond the queue: the chains cannot even be returned.
    drop(net);
    let mut f = mem_fixture();
    f.bring_up(BASE);
    f.rx.push_avail(200);
    f.tx.push_avail(300);
    lock(&f.net).backend_mut().push_rx(frame(60, 1));
    f.serve_rx();
    f.serve_tx();
    assert_eq!((f.rx.used_idx(), f.tx.used_idx()), (0, 0));
}

#[test]
fn event_idx_suppresses_interrupts() {
    let mut f = mem_fixture();
    f.bring_up(BASE | EVENT_IDX);
    f.tx.set_used_event(0);
    f.send(BUF, &frame(60, 1));
    f.serve_tx();
    assert!(f.take_irq());
    // used_event still 0: entry 1 goes unannounced.
    f.send(BUF, &frame(60, 2));
    f.serve_tx();
    assert_eq!(f.tx.used_idx(), 2);
    assert!(!f.take_irq());
    let avail_event = f.tx.read(f.tx.used + 4 + 8 * u64::from(SIZE), 2);
    assert_eq!(u16::from_le_bytes([avail_event[0], avail_event[1]]), 2);

    // Receive: with no buffers the device asks to hear about the next one.
    f.serve_rx();
    let avail_event = f.rx.read(f.rx.used + 4 + 8 * u64::from(SIZE), 2);
    assert_eq!(u16::from_le_bytes([avail_event[0], avail_event[1]]), 0);
    f.rx.set_used_event(0);
    f.post_rx(&[(BUF, 2048)]);
    lock(&f.net).backend_mut().push_rx(frame(60, 1));
    f.serve_rx();
    assert_eq!(f.rx.used_idx(), 1);
    assert!(f.take_irq());
}

#[test]
fn event_idx_counts_every_buffer_of_a_merged_frame() {
    let mut f = mem_fixture();
    f.bring_up(BASE | MRG | EVENT_IDX);
    for i in 0..8 {
        f.post_rx(&[(BUF + 0x1000 * i, 256)]);
    }
    // The driver wants to hear once the used index passes 2: the frame's
    // five entries (0..5) cross it in one go.
    f.rx.set_used_event(2);
    lock(&f.net).backend_mut().push_rx(frame(1000, 1));
    f.serve_rx();
    assert_eq!(f.rx.used_idx(), 5);
    assert!(f.take_irq());
    // 5 and 6 do not cross used_event = 6; 7 would.
    f.rx.set_used_event(6);
    lock(&f.net).backend_mut().push_rx(frame(400, 2));
    f.serve_rx();
    assert_eq!(f.rx.used_idx(), 7);
    assert!(f.take_irq(), "entries 5..7 include 6");
    f.rx.set_used_event(100);
    lock(&f.net).backend_mut().push_rx(frame(60, 3));
    f.serve_rx();
    assert_eq!(f.rx.used_idx(), 8);
    assert!(!f.take_irq());
    // The entries are in order, each with its own length.
    let lens: Vec<u32> = (0..8).map(|i| f.rx.used_elem(i).1).collect();
    assert_eq!(lens, [256, 256, 256, 256, 2, 256, 170, 86]);
    let ids: Vec<u32> = (0..8).map(|i| f.rx.used_elem(i).0).collect();
    assert_eq!(ids, (0..8).collect::<Vec<_>>());
}

#[test]
fn reset_drops_held_state_and_reactivates() {
    let mut f = mem_fixture();
    f.bring_up(BASE | MRG);
    f.post_rx(&[(BUF, 256)]);
    lock(&f.net).backend_mut().push_rx(frame(1000, 1));
    lock(&f.net).backend_mut().tx_would_block = true;
    f.send(BUF + 0x1000, &frame(60, 1));
    f.serve_rx();
    f.serve_tx();
    {
        let net = lock(&f.net);
        assert!(net.rx_pending().is_some() && net.tx_pending());
    }
    wr(&mut f.t, STATUS, 0);
    {
        let net = lock(&f.net);
        assert!(!net.is_activated());
        assert_eq!(net.rx_pending(), None);
        assert_eq!(net.rx_held(), 0);
        assert!(!net.tx_pending());
        assert_eq!(net.wanted_backend_events(), EventSet::empty());
    }
    lock(&f.net).backend_mut().tx_would_block = false;
    f.rx = GuestRing::new(&f.mem, SIZE, QUEUE_ADDRS[0]);
    f.tx = GuestRing::new(&f.mem, SIZE, QUEUE_ADDRS[1]);
    f.next_desc = [0; 2];
    f.bring_up(BASE);
    f.post_rx(&[(BUF, 2048)]);
    lock(&f.net).backend_mut().push_rx(frame(60, 2));
    f.serve_rx();
    assert_eq!(f.rx.used_idx(), 1);
}

#[test]
fn event_manager_polls_the_backend_only_with_rx_buffers() {
    let mut f = mem_fixture();
    let mut em: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
        EventManager::new().unwrap();
    em.add_subscriber(f.net.clone());
    assert_eq!(lock(&f.net).backend_interest, Some(EventSet::empty()));

    let q = u32::from(SIZE);
    linux_probe_with(
        &mut f.t,
        BASE | MRG,
        &[(q, QUEUE_ADDRS[0]), (q, QUEUE_ADDRS[1])],
    );
    // The activation kicks: no rx buffers, so the backend stays unwatched.
    em.run_with_timeout(100).unwrap();
    lock(&f.net).backend_mut().push_rx(frame(60, 1));
    assert_eq!(
        em.run_with_timeout(50).unwrap(),
        0,
        "readable but unwatched"
    );
    assert_eq!(lock(&f.net).backend().reads, 0);

    // The guest posts a buffer and notifies: the frame moves, the backend
    // is watched until the device runs out of buffers again.
    f.post_rx(&[(BUF, 2048)]);
    wr(&mut f.t, QUEUE_NOTIFY, 0);
    em.run_with_timeout(100).unwrap();
    assert_eq!(f.rx.used_idx(), 1);
    assert!(f.take_irq());
    f.post_rx(&[(BUF + 0x1000, 2048)]);
    f.post_rx(&[(BUF + 0x1800, 2048)]);
    wr(&mut f.t, QUEUE_NOTIFY, 0);
    em.run_with_timeout(100).unwrap();
    assert_eq!(
        lock(&f.net).backend_interest,
        Some(EventSet::IN),
        "buffer held, backend watched"
    );
    lock(&f.net).backend_mut().push_rx(frame(60, 2));
    em.run_with_timeout(100).unwrap();
    assert_eq!(f.rx.used_idx(), 2);
    assert_eq!(f.rx.read(BUF + 0x1000 + 26, 1), [2]);
    assert_eq!(lock(&f.net).backend_interest, Some(EventSet::IN));
    // The third frame takes the last buffer; the fourth is never read.
    lock(&f.net).backend_mut().push_rx(frame(60, 3));
    lock(&f.net).backend_mut().push_rx(frame(60, 4));
    em.run_with_timeout(100).unwrap();
    assert_eq!(em.run_with_timeout(10).unwrap(), 0);
    assert_eq!(f.rx.used_idx(), 3);
    assert_eq!(lock(&f.net).backend_interest, Some(EventSet::empty()));
    assert_eq!(lock(&f.net).backend().rx.len(), 1);

    // Transmit through the notify register.
    f.send(BUF + 0x2000, &frame(60, 9));
    wr(&mut f.t, QUEUE_NOTIFY, 1);
    em.run_with_timeout(100).unwrap();
    assert_eq!(f.tx.used_idx(), 1);
    assert_eq!(lock(&f.net).backend().tx.len(), 1);
}

/// A real tap in a private network namespace. Everything here runs on one
/// thread that unshared its network namespace: the tap, the addresses and
/// the sockets live and die with it, nothing touches the host's network.
mod real_tap {
    use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
    use std::process::Command;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::virtio::net::Tap;

    const TAP: &str = "mvmtest0";
    const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
    const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

    /// Runs `f` on a thread in a fresh network namespace with a configured
    /// tap; returns false (test skipped) without the privilege for it.
    fn in_netns(f: impl FnOnce(Tap) + Send + 'static) -> bool {
        std::thread::spawn(move || {
            // SAFETY: unshare(2) with CLONE_NEWNET only changes this thread's
            // network namespace; it takes no pointers.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                eprintln!(
                    "skipped: cannot unshare the network namespace: {}",
                    std::io::Error::last_os_error()
                );
                return false;
            }
            // Quiet link: no IPv6 autoconfiguration chatter on the tap.
            for knob in ["all", "default"] {
                let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{knob}/disable_ipv6"), "1");
            }
            let tap = match Tap::open(TAP) {
                Ok(tap) => tap,
                Err(e) => {
                    eprintln!("skipped: {e}");
                    return false;
                }
            };
            assert_eq!(tap.name(), TAP);
            let mac = super::super::format_mac(&HOST_MAC);
            let guest_mac = super::super::format_mac(&GUEST_MAC);
            let host_cidr = format!("{HOST_IP}/24");
            let guest_ip = GUEST_IP.to_string();
            // Children inherit this thread's namespace.
            for args in [
                vec!["link", "set", "lo", "up"],
                vec!["link", "set", TAP, "address", &mac],
                vec!["addr", "add", &host_cidr, "dev", TAP],
                vec!["link", "set", TAP, "up"],
                vec![
                    "neigh",
                    "replace",
                    &guest_ip,
                    "lladdr",
                    &guest_mac,
                    "dev",
                    TAP,
                    "nud",
                    "permanent",
                ],
            ] {
                let st = Command::new("ip").args(&args).status().unwrap();
                assert!(st.success(), "ip {args:?}");
            }
            f(tap);
            true
        })
        .join()
        .unwrap()
    }

    fn checksum(chunks: &[&[u8]]) -> u16 {
        let mut sum = 0u32;
        for chunk in chunks {
            for pair in chunk.chunks(2) {
                let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
                sum += u32::from(word);
            }
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// header + Ethernet/IPv4/UDP from the guest to the host, with the UDP
    /// checksum complete or (partial) left to the host.
    fn udp_from_guest(payload: &[u8], partial: bool) -> Vec<u8> {
        let udp_len = 8 + payload.len() as u16;
        let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
        ip[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
        ip.extend_from_slice(&GUEST_IP.octets());
        ip.extend_from_slice(&HOST_IP.octets());
        let c = checksum(&[&ip]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut udp = vec![0u8; 8];
        udp[0..2].copy_from_slice(&4444u16.to_be_bytes());
        udp[2..4].copy_from_slice(&5555u16.to_be_bytes());
        udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&GUEST_IP.octets());
        pseudo.extend_from_slice(&HOST_IP.octets());
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&udp_len.to_be_bytes());
        let hdr = if partial {
            // As Linux leaves it: the pseudo-header sum, not complemented.
            let c = !checksum(&[&pseudo]);
            udp[6..8].copy_from_slice(&c.to_be_bytes());
            vnet_hdr(1, 0, 0, 0, 34, 6)
        } else {
            let c = checksum(&[&pseudo, &udp, payload]);
            udp[6..8].copy_from_slice(&c.to_be_bytes());
            [0; 12]
        };
        let mut f = hdr.to_vec();
        f.extend_from_slice(&HOST_MAC);
        f.extend_from_slice(&GUEST_MAC);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&udp);
        f.extend_from_slice(payload);
        f
    }

    fn host_socket() -> UdpSocket {
        let s = UdpSocket::bind(SocketAddrV4::new(HOST_IP, 5555)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// Serves rx until the used index reaches `n` (frames cross the tap
    /// synchronously, but give the kernel a moment anyway).
    fn serve_rx_until(f: &mut Fixture<Tap>, n: u16) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while f.rx.used_idx() < n {
            assert!(
                Instant::now() < deadline,
                "used index stuck at {}",
                f.rx.used_idx()
            );
            lock(&f.net).process_rx();
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The IPv4/UDP payload of a received frame (header + Ethernet).
    fn udp_payload(frame: &[u8]) -> &[u8] {
        assert_eq!(&frame[12..18], &GUEST_MAC, "to the guest");
        assert_eq!(&frame[24..26], &[0x08, 0x00], "IPv4");
        assert_eq!(frame[12 + 14 + 9], 17, "UDP");
        &frame[12 + 14 + 28..]
    }

    fn tap_fixture(tap: Tap, features: u64) -> Fixture<Tap> {
        let mut f = fixture(Net::with_tap(tap, GUEST_MAC).unwrap());
        f.bring_up(features);
        f
    }

    #[test]
    fn guest_udp_reaches_a_host_socket() {
        in_netns(|tap| {
            let mut f = tap_fixture(tap, BASE | OFFLOADS);
            let sock = host_socket();
            let full = udp_from_guest(b"hello from the guest", false);
            f.send(BUF, &full);
            let partial = udp_from_guest(b"checksum left to the host", true);
            f.send(BUF + 0x1000, &partial);
            f.serve_tx();
            assert_eq!(f.tx.used_idx(), 2);
            let mut buf = [0u8; 1500];
            let (n, from) = sock.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"hello from the guest");
            assert_eq!(from, SocketAddrV4::new(GUEST_IP, 4444).into());
            let (n, _) = sock.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"checksum left to the host");
            assert_eq!(lock(&f.net).stats().tx_frames, 2);
        });
    }

    #[test]
    fn host_udp_reaches_the_guest_with_a_clean_header() {
        in_netns(|tap| {
            let mut f = tap_fixture(tap, BASE);
            let sock = host_socket();
            f.post_rx(&[(BUF, 2048)]);
            f.serve_rx();
            sock.send_to(b"hello guest", SocketAddrV4::new(GUEST_IP, 4444))
                .unwrap();
            serve_rx_until(&mut f, 1);
            let (_, len) = f.rx.used_elem(0);
            let got = f.rx.read(BUF, len as usize);
            assert_eq!(&got[..10], &[0; 10], "no offloads negotiated");
            assert_eq!(num_buffers(&got), 1);
            assert_eq!(udp_payload(&got), b"hello guest");
            // The UDP checksum was completed by the host.
            let udp = &got[12 + 14 + 20..];
            assert_ne!(&udp[6..8], &[0, 0]);
            assert!(f.take_irq());
        });
    }

    #[test]
    fn host_udp_with_checksum_offload_and_mergeable_buffers() {
        in_netns(|tap| {
            let mut f = tap_fixture(tap, BASE | OFFLOADS | MRG);
            let sock = host_socket();
            for i in 0..8 {
                f.post_rx(&[(BUF + 0x1000 * i, 256)]);
            }
            let payload: Vec<u8> = (0..1400u32).map(|i| (i % 251) as u8).collect();
            sock.send_to(&payload, SocketAddrV4::new(GUEST_IP, 4444))
                .unwrap();
            // 12 + 14 + 20 + 8 + 1400 = 1454 bytes: six 256-byte buffers.
            serve_rx_until(&mut f, 6);
            let mut got = Vec::new();
            for i in 0..6u16 {
                let (id, len) = f.rx.used_elem(i);
                assert_eq!(id, u32::from(i));
                got.extend(f.rx.read(BUF + 0x1000 * u64::from(i), len as usize));
            }
            assert_eq!(got.len(), 1454);
            assert_eq!(num_buffers(&got), 6);
            assert_eq!(udp_payload(&got), &payload[..]);
            // Locally generated UDP leaves its checksum to the guest.
            assert_eq!(got[0], 1, "NEEDS_CSUM");
            assert_eq!(u16::from_le_bytes([got[6], got[7]]), 34, "csum_start");
            assert_eq!(u16::from_le_bytes([got[8], got[9]]), 6, "csum_offset");
        });
    }

    #[test]
    fn frames_wait_in_the_tap_while_the_guest_has_no_buffers() {
        in_netns(|tap| {
            let mut f = tap_fixture(tap, BASE | MRG);
            let sock = host_socket();
            let dst = SocketAddrV4::new(GUEST_IP, 4444);
            for i in 0..5u8 {
                sock.send_to(&[i; 32], dst).unwrap();
            }
            for _ in 0..10 {
                f.serve_rx();
            }
            {
                let net = lock(&f.net);
                assert_eq!(f.rx.used_idx(), 0);
                assert_eq!(net.rx_pending(), None, "nothing read");
                assert!(net.rx_blocked());
            }
            for i in 0..5 {
                f.post_rx(&[(BUF + 0x1000 * i, 2048)]);
            }
            serve_rx_until(&mut f, 5);
            for i in 0..5u8 {
                let (_, len) = f.rx.used_elem(u16::from(i));
                let got = f.rx.read(BUF + 0x1000 * u64::from(i), len as usize);
                assert_eq!(udp_payload(&got), &[i; 32], "in order, none lost");
            }
        });
    }

    #[test]
    fn event_loop_end_to_end() {
        in_netns(|tap| {
            let mut f = fixture(Net::with_tap(tap, GUEST_MAC).unwrap());
            let mut em: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
                EventManager::new().unwrap();
            em.add_subscriber(f.net.clone());
            let q = u32::from(SIZE);
            linux_probe_with(
                &mut f.t,
                BASE | OFFLOADS | MRG | EVENT_IDX,
                &[(q, QUEUE_ADDRS[0]), (q, QUEUE_ADDRS[1])],
            );
            f.rx.set_used_event(0);
            for i in 0..4 {
                f.post_rx(&[(BUF + 0x1000 * i, 2048)]);
            }
            em.run_with_timeout(100).unwrap();
            let sock = host_socket();
            sock.send_to(b"ping", SocketAddrV4::new(GUEST_IP, 4444))
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while f.rx.used_idx() < 1 {
                assert!(Instant::now() < deadline);
                em.run_with_timeout(100).unwrap();
            }
            let (_, len) = f.rx.used_elem(0);
            assert_eq!(udp_payload(&f.rx.read(BUF, len as usize)), b"ping");
            assert!(f.take_irq());

            f.send(BUF + 0x8000, &udp_from_guest(b"pong", true));
            wr(&mut f.t, QUEUE_NOTIFY, 1);
            em.run_with_timeout(100).unwrap();
            let mut buf = [0u8; 64];
            let (n, _) = sock.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"pong");
        });
    }

    /// Runs on the vhost-net path where /dev/vhost-net exists (the nested
    /// L2 host; `MVM_EXPECT_VHOST=1` makes its absence a failure) and on
    /// the userspace fallback elsewhere: the same traffic either way.
    #[test]
    fn vhost_net_or_its_fallback_carries_traffic() {
        in_netns(|tap| {
            let net = Net::with_tap_vhost(tap, GUEST_MAC).unwrap();
            let vhost = net.is_vhost();
            eprintln!("vhost-net in use: {vhost}");
            if std::env::var_os("MVM_EXPECT_VHOST").is_some() {
                assert!(vhost, "/dev/vhost-net expected");
            }
            assert_eq!(vhost, std::path::Path::new("/dev/vhost-net").exists());
            let mut f = fixture(net);
            // The real wiring: the event loop serves queues (userspace) or
            // turns vhost's calls into interrupts (vhost).
            let mut em: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
                EventManager::new().unwrap();
            em.add_subscriber(f.net.clone());
            let q = u32::from(SIZE);
            linux_probe_with(
                &mut f.t,
                BASE | OFFLOADS | MRG | EVENT_IDX,
                &[(q, QUEUE_ADDRS[0]), (q, QUEUE_ADDRS[1])],
            );
            assert_eq!(rd(&mut f.t, STATUS) & DEVICE_NEEDS_RESET, 0);
            f.rx.set_used_event(0);
            f.tx.set_used_event(0);
            for i in 0..8 {
                f.post_rx(&[(BUF + 0x1000 * i, 2048)]);
            }
            wr(&mut f.t, QUEUE_NOTIFY, 0);
            em.run_with_timeout(50).unwrap();
            let sock = host_socket();
            sock.send_to(b"hello vhost", SocketAddrV4::new(GUEST_IP, 4444))
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while f.rx.used_idx() < 1 || f.irq.status() == 0 {
                assert!(Instant::now() < deadline, "nothing received");
                em.run_with_timeout(10).unwrap();
            }
            assert!(f.take_irq());
            let (_, len) = f.rx.used_elem(0);
            let got = f.rx.read(BUF, len as usize);
            assert_eq!(num_buffers(&got), 1);
            assert_eq!(udp_payload(&got), b"hello vhost");

            f.send(
                BUF + 0x10000,
                &udp_from_guest(b"from the vhost guest", true),
            );
            wr(&mut f.t, QUEUE_NOTIFY, 1);
            let deadline = Instant::now() + Duration::from_secs(5);
            while f.tx.used_idx() < 1 || f.irq.status() == 0 {
                assert!(Instant::now() < deadline, "tx chain not returned");
                em.run_with_timeout(10).unwrap();
            }
            assert!(f.take_irq());
            let mut buf = [0u8; 64];
            let (n, _) = sock.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"from the vhost guest");
            // Reset stops vhost (closing it waits for its worker).
            wr(&mut f.t, STATUS, 0);
            assert!(!lock(&f.net).is_activated());
        });
    }

    #[test]
    fn tap_from_fd_and_offloads() {
        in_netns(|tap| {
            for flags in [
                0,
                libc::TUN_F_CSUM,
                libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6,
            ] {
                tap.set_offload_flags(flags).unwrap();
            }
            let fd = std::os::fd::AsFd::as_fd(&tap).try_clone_to_owned().unwrap();
            let again = Tap::from_fd(fd).unwrap();
            assert_eq!(again.name(), TAP);
            // A second non-multiqueue attach by name is refused, naming it.
            let err = Tap::open(TAP).unwrap_err().to_string();
            assert!(err.contains(TAP), "{err}");
        });
    }
}
