//! Test fixtures: a scriptable virtio device, a guest memory, and a
//! driver-side view of the MMIO registers and split rings that follows what
//! Linux's virtio_mmio and virtio_ring do.

use std::sync::{Arc, Mutex};

use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::features::VIRTIO_F_VERSION_1;
use super::status::{ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK};
use super::{ActivateError, Activated, Interrupt, MmioTransport, VirtioDevice, VirtioState};
use crate::bus::BusDevice;

pub(crate) const DUMMY_TYPE: u32 = 0x2a;
pub(crate) const MEM_SIZE: u64 = 0x10_0000;
/// (descriptor table, available ring, used ring) for queues 0 and 1.
pub(crate) const QUEUE_ADDRS: [(u64, u64, u64); 2] =
    [(0x1000, 0x2000, 0x3000), (0x4000, 0x5000, 0x6000)];

// Register offsets as a driver knows them.
pub(crate) const MAGIC: u64 = 0x00;
pub(crate) const DEVICE_ID: u64 = 0x08;
pub(crate) const DEVICE_FEATURES: u64 = 0x10;
pub(crate) const DEVICE_FEATURES_SEL: u64 = 0x14;
pub(crate) const DRIVER_FEATURES: u64 = 0x20;
pub(crate) const DRIVER_FEATURES_SEL: u64 = 0x24;
pub(crate) const QUEUE_SEL: u64 = 0x30;
pub(crate) const QUEUE_NUM_MAX: u64 = 0x34;
pub(crate) const QUEUE_NUM: u64 = 0x38;
pub(crate) const QUEUE_READY: u64 = 0x44;
pub(crate) const QUEUE_NOTIFY: u64 = 0x50;
pub(crate) const INTERRUPT_STATUS: u64 = 0x60;
pub(crate) const INTERRUPT_ACK: u64 = 0x64;
pub(crate) const STATUS: u64 = 0x70;
pub(crate) const QUEUE_DESC_LOW: u64 = 0x80;

pub(crate) struct DummyDevice {
    pub state: VirtioState,
    pub config: [u8; 8],
    pub activated: bool,
    pub activations: u32,
    pub fail_activate: bool,
    pub supports_reset: bool,
    pub queues: Vec<Queue>,
    /// Serve notifications on the vCPU thread (recorded in `served`).
    pub on_vcpu: bool,
    pub served: Vec<usize>,
}

impl DummyDevice {
    pub fn new(sizes: &[u16]) -> Self {
        Self {
            state: VirtioState::new(
                DUMMY_TYPE,
                "dummy",
                (1 << VIRTIO_F_VERSION_1) | (1 << 29) | (1 << 5),
                sizes,
            )
            .unwrap(),
            config: [0, 1, 2, 3, 4, 5, 6, 7],
            activated: false,
            activations: 0,
            fail_activate: false,
            supports_reset: true,
            queues: Vec::new(),
            on_vcpu: false,
            served: Vec::new(),
        }
    }
}

impl VirtioDevice for DummyDevice {
    virtio_state_accessors!(state);
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_from_slice(&self.config, offset, data);
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        if let Some(dst) = start
            .checked_add(data.len())
            .and_then(|end| self.config.get_mut(start..end))
        {
            dst.copy_from_slice(data);
        }
    }
    fn serves_on_vcpu(&self) -> bool {
        self.on_vcpu
    }
    fn serve_notification(&mut self, index: usize) {
        self.served.push(index);
    }
    fn debug_state(&self) -> super::debug::DeviceDebug {
        super::debug::DeviceDebug {
            queues: super::debug::progress_of(&self.queues),
            notes: vec!["dummy".into()],
        }
    }
    fn activate(&mut self, active: Activated) -> Result<(), ActivateError> {
        if self.fail_activate {
            return Err(ActivateError::QueueNotReady(0));
        }
        self.activated = true;
        self.activations += 1;
        self.queues = active.queues;
        Ok(())
    }
    fn reset(&mut self) -> bool {
        if self.supports_reset {
            self.activated = false;
            self.queues.clear();
        }
        self.supports_reset
    }
    fn is_activated(&self) -> bool {
        self.activated
    }
}

pub(crate) fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
}

pub(crate) fn interrupt() -> Arc<Interrupt> {
    Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()))
}

pub(crate) fn shared<T>(dev: T) -> Arc<Mutex<T>> {
    Arc::new(Mutex::new(dev))
}

pub(crate) fn transport(sizes: &[u16]) -> (MmioTransport, Arc<Mutex<DummyDevice>>) {
    let dev = shared(DummyDevice::new(sizes));
    let t = MmioTransport::new(guest_memory(), interrupt(), dev.clone()).unwrap();
    (t, dev)
}

pub(crate) fn rd(t: &mut MmioTransport, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(offset, &mut b);
    u32::from_le_bytes(b)
}

pub(crate) fn wr(t: &mut MmioTransport, offset: u64, v: u32) {
    t.write(offset, &v.to_le_bytes());
}

/// Acks only VIRTIO_F_VERSION_1 (call in the DRIVER phase).
pub(crate) fn ack_features(t: &mut MmioTransport) {
    write_driver_features(t, 1 << VIRTIO_F_VERSION_1);
}

pub(crate) fn write_driver_features(t: &mut MmioTransport, features: u64) {
    wr(t, DRIVER_FEATURES_SEL, 1);
    wr(t, DRIVER_FEATURES, (features >> 32) as u32);
    wr(t, DRIVER_FEATURES_SEL, 0);
    wr(t, DRIVER_FEATURES, features as u32);
}

/// ACKNOWLEDGE, DRIVER, VERSION_1, FEATURES_OK.
pub(crate) fn negotiate(t: &mut MmioTransport) {
    wr(t, STATUS, ACKNOWLEDGE);
    wr(t, STATUS, ACKNOWLEDGE | DRIVER);
    ack_features(t);
    wr(t, STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
}

/// The register sequence of Linux's vm_setup_vq.
pub(crate) fn setup_queue(t: &mut MmioTransport, index: u32, size: u32, addrs: (u64, u64, u64)) {
    wr(t, QUEUE_SEL, index);
    assert_eq!(rd(t, QUEUE_READY), 0, "queue {index} already ready");
    assert_ne!(rd(t, QUEUE_NUM_MAX), 0, "queue {index} missing");
    wr(t, QUEUE_NUM, size);
    let (d, a, u) = addrs;
    for (i, addr) in [d, a, u].into_iter().enumerate() {
        let low = QUEUE_DESC_LOW + 0x10 * i as u64;
        wr(t, low, addr as u32);
        wr(t, low + 4, (addr >> 32) as u32);
    }
    wr(t, QUEUE_READY, 1);
}

/// What Linux does from probe to DRIVER_OK, acking `driver_features`
/// (intersected with the offer, as Linux does).
pub(crate) fn linux_probe_with(
    t: &mut MmioTransport,
    driver_features: u64,
    queues: &[(u32, (u64, u64, u64))],
) {
    assert_eq!(rd(t, MAGIC), 0x7472_6976);
    assert_ne!(rd(t, DEVICE_ID), 0);
    wr(t, STATUS, 0);
    wr(t, STATUS, ACKNOWLEDGE);
    wr(t, STATUS, ACKNOWLEDGE | DRIVER);
    wr(t, DEVICE_FEATURES_SEL, 1);
    let mut offered = u64::from(rd(t, DEVICE_FEATURES)) << 32;
    wr(t, DEVICE_FEATURES_SEL, 0);
    offered |= u64::from(rd(t, DEVICE_FEATURES));
    write_driver_features(t, offered & driver_features);
    wr(t, STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    if rd(t, STATUS) & FEATURES_OK == 0 {
        return;
    }
    for (i, &(size, addrs)) in queues.iter().enumerate() {
        setup_queue(t, i as u32, size, addrs);
    }
    wr(t, STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
}

pub(crate) fn linux_probe(t: &mut MmioTransport, queues: &[(u32, (u64, u64, u64))]) {
    linux_probe_with(t, 1 << VIRTIO_F_VERSION_1, queues);
}

/// The driver's side of one split virtqueue in guest memory.
pub(crate) struct GuestRing {
    pub mem: GuestMemoryMmap,
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    avail_idx: u16,
}

pub(crate) const F_NEXT: u16 = 1;
pub(crate) const F_WRITE: u16 = 2;
pub(crate) const F_INDIRECT: u16 = 4;

impl GuestRing {
    pub fn new(mem: &GuestMemoryMmap, size: u16, addrs: (u64, u64, u64)) -> Self {
        let ring = Self {
            mem: mem.clone(),
            size,
            desc: addrs.0,
            avail: addrs.1,
            used: addrs.2,
            avail_idx: 0,
        };
        // Fresh rings: zero flags and indices.
        mem.write_slice(&[0; 4], GuestAddress(ring.avail)).unwrap();
        mem.write_slice(&[0; 4], GuestAddress(ring.used)).unwrap();
        ring
    }

    pub fn set_desc(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        self.mem
            .write_slice(&raw, GuestAddress(self.desc + 16 * u64::from(index)))
            .unwrap();
    }

    /// Publishes `head` in the available ring.
    pub fn push_avail(&mut self, head: u16) {
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % self.size);
        self.mem
            .write_obj(head.to_le(), GuestAddress(slot))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.set_avail_idx(self.avail_idx);
    }

    /// Writes avail->idx directly (hostile drivers lie about it).
    pub fn set_avail_idx(&self, idx: u16) {
        self.mem
            .write_obj(idx.to_le(), GuestAddress(self.avail + 2))
            .unwrap();
    }

    /// used_event, at the end of the available ring (EVENT_IDX).
    pub fn set_used_event(&self, v: u16) {
        let addr = self.avail + 4 + 2 * u64::from(self.size);
        self.mem.write_obj(v.to_le(), GuestAddress(addr)).unwrap();
    }

    pub fn used_idx(&self) -> u16 {
        u16::from_le(self.mem.read_obj(GuestAddress(self.used + 2)).unwrap())
    }

    /// (id, len) of used ring entry `i`.
    pub fn used_elem(&self, i: u16) -> (u32, u32) {
        let addr = self.used + 4 + 8 * u64::from(i % self.size);
        let id: u32 = self.mem.read_obj(GuestAddress(addr)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(addr + 4)).unwrap();
        (u32::from_le(id), u32::from_le(len))
    }

    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}
