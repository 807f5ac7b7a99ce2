//! The virtio-mmio transport, register layout version 2 (virtio 1.2, 4.2.2).
//!
//! Every value arrives from the guest: register accesses must be 4 bytes
//! wide and aligned, selectors may point anywhere, queue parameters may be
//! nonsense. Bad accesses are ignored (reads return 0) with a rate-limited
//! warning; bad queue parameters make activation fail with
//! DEVICE_NEEDS_RESET instead of letting a device run on rings the driver
//! did not describe.

use std::sync::{Arc, Mutex};

use tracing::debug;
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::debug::{try_lock_patiently, DeviceSnapshot, QueueSnapshot, LOCK_PATIENCE};
use super::features::{VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};
use super::status::{ACKNOWLEDGE, DEVICE_NEEDS_RESET, DRIVER, DRIVER_OK, FAILED, FEATURES_OK};
use super::{ActivateError, Activated, Interrupt, VirtioDevice};
use crate::bus::{lock, BusDevice};

/// Size of the address window each virtio-mmio device occupies.
pub const MMIO_DEVICE_WINDOW: u64 = 0x1000;

/// "virt" in little endian.
const MAGIC_VALUE: u32 = 0x7472_6976;
const MMIO_VERSION: u32 = 2;
const VENDOR_ID: u32 = 0;

const REG_MAGIC_VALUE: u64 = 0x000;
const REG_VERSION: u64 = 0x004;
const REG_DEVICE_ID: u64 = 0x008;
const REG_VENDOR_ID: u64 = 0x00c;
const REG_DEVICE_FEATURES: u64 = 0x010;
const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
const REG_DRIVER_FEATURES: u64 = 0x020;
const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
const REG_QUEUE_SEL: u64 = 0x030;
const REG_QUEUE_NUM_MAX: u64 = 0x034;
const REG_QUEUE_NUM: u64 = 0x038;
const REG_QUEUE_READY: u64 = 0x044;
/// The VMM registers each queue's eventfd as an ioeventfd here, with the
/// queue index as datamatch.
pub const REG_QUEUE_NOTIFY: u64 = 0x050;
const REG_INTERRUPT_STATUS: u64 = 0x060;
const REG_INTERRUPT_ACK: u64 = 0x064;
const REG_STATUS: u64 = 0x070;
const REG_QUEUE_DESC_LOW: u64 = 0x080;
const REG_QUEUE_DESC_HIGH: u64 = 0x084;
const REG_QUEUE_DRIVER_LOW: u64 = 0x090;
const REG_QUEUE_DRIVER_HIGH: u64 = 0x094;
const REG_QUEUE_DEVICE_LOW: u64 = 0x0a0;
const REG_QUEUE_DEVICE_HIGH: u64 = 0x0a4;
const REG_SHM_SEL: u64 = 0x0ac;
const REG_SHM_LEN_LOW: u64 = 0x0b0;
const REG_SHM_LEN_HIGH: u64 = 0x0b4;
const REG_SHM_BASE_LOW: u64 = 0x0b8;
const REG_SHM_BASE_HIGH: u64 = 0x0bc;
const REG_CONFIG_GENERATION: u64 = 0x0fc;
const CONFIG_SPACE: u64 = 0x100;

/// The status values a driver passes through, in order (FAILED aside).
const STATUS_PROGRESSION: [u32; 5] = [
    0,
    ACKNOWLEDGE,
    ACKNOWLEDGE | DRIVER,
    ACKNOWLEDGE | DRIVER | FEATURES_OK,
    ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
];

/// Why a transport could not be built around a device (a VMM bug, not a
/// guest action).
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    #[error("device does not offer VIRTIO_F_VERSION_1, required by virtio-mmio version 2")]
    MissingVersion1,
    #[error("queue {index}: maximum size {size} is not a power of two in 1..=32768")]
    InvalidQueueMaxSize { index: usize, size: u16 },
    #[error("device has {queues} queues but {events} queue eventfds")]
    QueueEventMismatch { queues: usize, events: usize },
    #[error("failed to duplicate a queue eventfd: {0}")]
    CloneQueueEvent(#[source] std::io::Error),
}

/// Why DRIVER_OK did not start the device.
#[derive(Debug, thiserror::Error)]
enum ActivationFailure {
    #[error("queue {0} was configured with an invalid size or misaligned ring address")]
    BadQueueConfig(usize),
    #[error("queue {0} does not fit in guest memory")]
    QueueOutsideMemory(usize),
    #[error(transparent)]
    Device(#[from] ActivateError),
}

#[derive(Clone, Copy)]
enum Ring {
    Desc,
    Avail,
    Used,
}

struct QueueSlot {
    queue: Queue,
    /// A QueueNum or ring address write for this queue was rejected, so the
    /// queue no longer matches what the driver believes it set up. Sticky
    /// until reset: activation then fails instead of running on wrong rings.
    bad_config: bool,
}

/// A virtio device behind the virtio-mmio register window.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    interrupt: Arc<Interrupt>,
    mem: GuestMemoryMmap,
    // Constant per device, cached so most register reads need no device lock.
    device_type: u32,
    avail_features: u64,
    serves_on_vcpu: bool,
    queue_evts: Vec<EventFd>,

    queues: Vec<QueueSlot>,
    device_features_sel: u32,
    driver_features_sel: u32,
    acked_features: u64,
    queue_sel: u32,
    status: u32,
}

impl MmioTransport {
    pub fn new(
        mem: GuestMemoryMmap,
        interrupt: Arc<Interrupt>,
        device: Arc<Mutex<dyn VirtioDevice>>,
    ) -> Result<Self, MmioError> {
        let (device_type, avail_features, serves_on_vcpu, queues, queue_evts) = {
            let dev = lock(&device);
            let avail_features = dev.avail_features();
            if avail_features & (1 << VIRTIO_F_VERSION_1) == 0 {
                return Err(MmioError::MissingVersion1);
            }
            let sizes = dev.queue_max_sizes();
            let events = dev.queue_events();
            if sizes.len() != events.len() {
                return Err(MmioError::QueueEventMismatch {
                    queues: sizes.len(),
                    events: events.len(),
                });
            }
            let queues = sizes
                .iter()
                .enumerate()
                .map(|(index, &size)| {
                    Queue::new(size)
                        .map(|queue| QueueSlot {
                            queue,
                            bad_config: false,
                        })
                        .map_err(|_| MmioError::InvalidQueueMaxSize { index, size })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let queue_evts = events
                .iter()
                .map(EventFd::try_clone)
                .collect::<Result<Vec<_>, _>>()
                .map_err(MmioError::CloneQueueEvent)?;
            let on_vcpu = dev.serves_on_vcpu();
            (
                dev.device_type(),
                avail_features,
                on_vcpu,
                queues,
                queue_evts,
            )
        };
        Ok(Self {
            device,
            interrupt,
            mem,
            device_type,
            avail_features,
            serves_on_vcpu,
            queue_evts,
            queues,
            device_features_sel: 0,
            driver_features_sel: 0,
            acked_features: 0,
            queue_sel: 0,
            status: 0,
        })
    }

    /// One eventfd per queue: register each as a KVM ioeventfd at
    /// `base + REG_QUEUE_NOTIFY`, 4 bytes, datamatch = its index, unless
    /// the device [serves on the vCPU](Self::serves_on_vcpu).
    pub fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// The device serves notifications on the notifying vCPU's thread:
    /// register no ioeventfds for it, so they reach [`BusDevice::write`].
    pub fn serves_on_vcpu(&self) -> bool {
        self.serves_on_vcpu
    }

    pub fn interrupt(&self) -> &Arc<Interrupt> {
        &self.interrupt
    }

    pub fn device(&self) -> &Arc<Mutex<dyn VirtioDevice>> {
        &self.device
    }

    /// The device status register as the driver sees it.
    pub fn device_status(&self) -> u32 {
        self.status
    }

    /// The device's rings as the driver left them in guest memory, the
    /// device's own progress (if its lock comes free in time: a serving
    /// thread may hold it) and the interrupt status, for the state dump.
    pub fn snapshot(&self) -> DeviceSnapshot {
        // EVENT_IDX is set on the device's copies at activation, not on
        // ours: the acked feature says whether it is on.
        let event_idx = self.acked_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        let mut queues: Vec<QueueSnapshot> = self
            .queues
            .iter()
            .enumerate()
            .map(|(i, slot)| QueueSnapshot {
                event_idx,
                ..QueueSnapshot::read(i, &slot.queue, &self.mem)
            })
            .collect();
        let mut notes = Vec::new();
        let mut activated = false;
        match try_lock_patiently(&self.device) {
            Some(dev) => {
                activated = dev.is_activated();
                let own = dev.debug_state();
                for (q, progress) in queues.iter_mut().zip(own.queues) {
                    q.device = Some(progress);
                }
                notes = own.notes;
            }
            None => notes.push(format!(
                "device lock held by another thread for over {:?} (a vCPU serving a request, or a wedged event loop)",
                LOCK_PATIENCE
            )),
        }
        DeviceSnapshot {
            device_type: self.device_type,
            status: self.status,
            interrupt_status: self.interrupt.status(),
            activated,
            queues,
            notes,
        }
    }

    fn selected_queue(&self) -> Option<&QueueSlot> {
        self.queues.get(usize::try_from(self.queue_sel).ok()?)
    }

    fn read_reg(&self, offset: u64) -> Option<u32> {
        let v = match offset {
            REG_MAGIC_VALUE => MAGIC_VALUE,
            REG_VERSION => MMIO_VERSION,
            REG_DEVICE_ID => self.device_type,
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.avail_features as u32,
                1 => (self.avail_features >> 32) as u32,
                _ => 0,
            },
            // 0 tells the driver the queue does not exist.
            REG_QUEUE_NUM_MAX => self
                .selected_queue()
                .map_or(0, |s| u32::from(s.queue.max_size())),
            REG_QUEUE_READY => self
                .selected_queue()
                .map_or(0, |s| u32::from(s.queue.ready())),
            REG_INTERRUPT_STATUS => self.interrupt.status(),
            REG_STATUS => self.status,
            // No shared memory regions: a length of all ones says "absent".
            REG_SHM_LEN_LOW | REG_SHM_LEN_HIGH | REG_SHM_BASE_LOW | REG_SHM_BASE_HIGH => u32::MAX,
            REG_CONFIG_GENERATION => self.interrupt.config_generation(),
            _ => return None,
        };
        Some(v)
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = v,
            REG_DRIVER_FEATURES => self.write_driver_features(v),
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            REG_QUEUE_SEL => self.queue_sel = v,
            REG_QUEUE_NUM => self.write_queue_num(v),
            REG_QUEUE_READY => self.write_queue_ready(v),
            REG_QUEUE_NOTIFY => self.notify(v),
            REG_INTERRUPT_ACK => self.interrupt.ack(v),
            REG_STATUS => self.write_status(v),
            REG_QUEUE_DESC_LOW => self.write_ring_addr(Ring::Desc, false, v),
            REG_QUEUE_DESC_HIGH => self.write_ring_addr(Ring::Desc, true, v),
            REG_QUEUE_DRIVER_LOW => self.write_ring_addr(Ring::Avail, false, v),
            REG_QUEUE_DRIVER_HIGH => self.write_ring_addr(Ring::Avail, true, v),
            REG_QUEUE_DEVICE_LOW => self.write_ring_addr(Ring::Used, false, v),
            REG_QUEUE_DEVICE_HIGH => self.write_ring_addr(Ring::Used, true, v),
            // Any selected region is absent; nothing to remember.
            REG_SHM_SEL => {}
            _ => warn_limited!(
                offset,
                "write to read-only or unknown virtio-mmio register ignored"
            ),
        }
    }

    fn write_driver_features(&mut self, v: u32) {
        if self.status != ACKNOWLEDGE | DRIVER {
            warn_limited!(
                status = self.status,
                "DriverFeatures written outside feature negotiation"
            );
            return;
        }
        let shift = match self.driver_features_sel {
            0 => 0,
            1 => 32,
            sel => {
                if v != 0 {
                    warn_limited!(
                        sel,
                        value = v,
                        "driver acked features in a nonexistent word"
                    );
                }
                return;
            }
        };
        let offered = (self.avail_features >> shift) as u32;
        if v & !offered != 0 {
            warn_limited!(
                sel = self.driver_features_sel,
                value = v,
                offered,
                "driver acked features that were not offered; dropping them"
            );
        }
        self.acked_features =
            (self.acked_features & !(0xffff_ffff_u64 << shift)) | (u64::from(v & offered) << shift);
    }

    /// The selected queue, if the driver may configure it now: after
    /// FEATURES_OK, before DRIVER_OK, and (when `needs_idle`) not yet ready.
    fn configurable_queue(&mut self, what: &str, needs_idle: bool) -> Option<&mut QueueSlot> {
        let phase = self.status & (FEATURES_OK | DRIVER_OK | FAILED | DEVICE_NEEDS_RESET);
        if phase != FEATURES_OK {
            warn_limited!(
                what,
                status = self.status,
                "queue register written outside queue setup"
            );
            return None;
        }
        let sel = self.queue_sel;
        let Some(slot) = usize::try_from(sel)
            .ok()
            .and_then(|i| self.queues.get_mut(i))
        else {
            warn_limited!(
                what,
                queue = sel,
                "queue register written for a nonexistent queue"
            );
            return None;
        };
        if needs_idle && slot.queue.ready() {
            warn_limited!(
                what,
                queue = sel,
                "queue register written while the queue is ready"
            );
            return None;
        }
        Some(slot)
    }

    fn write_queue_num(&mut self, v: u32) {
        let Some(slot) = self.configurable_queue("QueueNum", true) else {
            return;
        };
        let ok = u16::try_from(v)
            .ok()
            .is_some_and(|n| slot.queue.try_set_size(n).is_ok());
        if !ok {
            slot.bad_config = true;
            warn_limited!(
                size = v,
                max = slot.queue.max_size(),
                "queue size is not a power of two within the maximum"
            );
        }
    }

    fn write_queue_ready(&mut self, v: u32) {
        let Some(slot) = self.configurable_queue("QueueReady", false) else {
            return;
        };
        match v {
            0 => slot.queue.set_ready(false),
            1 => slot.queue.set_ready(true),
            _ => warn_limited!(
                value = v,
                "QueueReady written with a value other than 0 or 1"
            ),
        }
    }

    fn write_ring_addr(&mut self, ring: Ring, high: bool, v: u32) {
        let Some(slot) = self.configurable_queue("queue address", true) else {
            return;
        };
        let q = &mut slot.queue;
        let current = match ring {
            Ring::Desc => q.desc_table(),
            Ring::Avail => q.avail_ring(),
            Ring::Used => q.used_ring(),
        };
        let addr = if high {
            (current & 0xffff_ffff) | (u64::from(v) << 32)
        } else {
            (current & !0xffff_ffff) | u64::from(v)
        };
        let addr = GuestAddress(addr);
        let res = match ring {
            Ring::Desc => q.try_set_desc_table_address(addr),
            Ring::Avail => q.try_set_avail_ring_address(addr),
            Ring::Used => q.try_set_used_ring_address(addr),
        };
        if res.is_err() {
            slot.bad_config = true;
            warn_limited!(addr = addr.0, "misaligned virtqueue ring address");
        }
    }

    /// QueueNotify reached us because no ioeventfd matched (none registered,
    /// or a bogus index). A device that serves on the vCPU does so now,
    /// unless another thread is serving it (then, and for every other
    /// device, the queue's eventfd hands the work to the event loop).
    fn notify(&self, index: u32) {
        let queue = usize::try_from(index).ok();
        match queue.and_then(|i| self.queue_evts.get(i).map(|evt| (i, evt))) {
            Some((i, evt)) => {
                if self.serves_on_vcpu {
                    if let Ok(mut device) = self.device.try_lock() {
                        device.serve_notification(i);
                        return;
                    }
                }
                if let Err(e) = evt.write(1) {
                    warn_limited!(queue = index, error = %e, "failed to signal queue eventfd");
                }
            }
            None => warn_limited!(queue = index, "notification for a nonexistent queue"),
        }
    }

    fn write_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        // DEVICE_NEEDS_RESET belongs to the device; drivers echo it back when
        // they OR a new bit into what they read.
        let new = v & !DEVICE_NEEDS_RESET;
        let old_driver = old & !DEVICE_NEEDS_RESET;
        if v > 0xff || new & old_driver != old_driver {
            warn_limited!(
                old,
                new = v,
                "invalid device status write (only a reset clears bits)"
            );
            return;
        }
        let added = new & !old_driver;
        if added == 0 {
            return;
        }
        if added & FAILED != 0 {
            warn_limited!(
                device_type = self.device_type,
                status = new,
                "driver marked the virtio device FAILED"
            );
            self.status |= FAILED;
            return;
        }
        if old & (FAILED | DEVICE_NEEDS_RESET) != 0 {
            warn_limited!(
                old,
                new = v,
                "device status write ignored until the driver resets the device"
            );
            return;
        }
        if !STATUS_PROGRESSION.contains(&new) {
            warn_limited!(old, new = v, "device status bits set out of order");
            return;
        }
        if added & FEATURES_OK != 0 && !self.accept_features() {
            // Leave FEATURES_OK (and anything after it) clear: the driver
            // reads the status back and gives up on the device (spec 3.1.1).
            self.status = new & (ACKNOWLEDGE | DRIVER);
            return;
        }
        self.status = new;
        if added & DRIVER_OK != 0 {
            if let Err(e) = self.activate() {
                warn_limited!(device_type = self.device_type, error = %e, "virtio device activation failed");
                self.status |= DEVICE_NEEDS_RESET;
                self.interrupt.signal_config_change();
            }
        }
    }

    fn accept_features(&mut self) -> bool {
        if self.acked_features & (1 << VIRTIO_F_VERSION_1) == 0 {
            warn_limited!(
                acked = self.acked_features,
                "driver did not accept VIRTIO_F_VERSION_1; refusing FEATURES_OK"
            );
            return false;
        }
        lock(&self.device).set_acked_features(self.acked_features);
        true
    }

    fn activate(&mut self) -> Result<(), ActivationFailure> {
        let event_idx = self.acked_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, slot) in self.queues.iter().enumerate() {
            if slot.bad_config {
                return Err(ActivationFailure::BadQueueConfig(i));
            }
            if slot.queue.ready() && !slot.queue.is_valid(&self.mem) {
                return Err(ActivationFailure::QueueOutsideMemory(i));
            }
            // The device gets its own copy; ours keeps answering QueueReady.
            let mut q = Queue::try_from(slot.queue.state())
                .map_err(|_| ActivationFailure::BadQueueConfig(i))?;
            q.set_event_idx(event_idx);
            queues.push(q);
        }
        let mut dev = lock(&self.device);
        if dev.is_activated() {
            return Err(ActivateError::AlreadyActive.into());
        }
        dev.activate(Activated::new(
            self.mem.clone(),
            self.interrupt.clone(),
            queues,
        ))?;
        debug!(device_type = self.device_type, "virtio device activated");
        Ok(())
    }

    fn reset(&mut self) {
        {
            let mut dev = lock(&self.device);
            if dev.is_activated() && !dev.reset() {
                warn_limited!(
                    device_type = self.device_type,
                    "virtio device cannot be reset; it keeps its old queues and will refuse re-activation"
                );
            }
        }
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.acked_features = 0;
        self.queue_sel = 0;
        for slot in &mut self.queues {
            slot.queue.reset();
            slot.bad_config = false;
        }
        // Pending interrupt bits belong to the session that just ended.
        self.interrupt.ack(u32::MAX);
    }

    fn config_access_ok(&self, offset: u64, width: usize) -> bool {
        if matches!(width, 1 | 2 | 4 | 8) {
            true
        } else {
            warn_limited!(offset, width, "virtio config space access with bad width");
            false
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE {
            if self.config_access_ok(offset, data.len()) {
                lock(&self.device).read_config(offset - CONFIG_SPACE, data);
            } else {
                data.fill(0);
            }
            return;
        }
        let value = if data.len() != 4 || !offset.is_multiple_of(4) {
            warn_limited!(
                offset,
                width = data.len(),
                "virtio-mmio register read with bad width or alignment"
            );
            None
        } else {
            let v = self.read_reg(offset);
            if v.is_none() {
                warn_limited!(offset, "read of write-only or unknown virtio-mmio register");
            }
            v
        };
        match value {
            Some(v) => data.copy_from_slice(&v.to_le_bytes()),
            None => data.fill(0),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE {
            if self.status & DRIVER == 0 || self.status & FAILED != 0 {
                warn_limited!(
                    offset,
                    status = self.status,
                    "config space write outside driver setup ignored"
                );
            } else if self.config_access_ok(offset, data.len()) {
                lock(&self.device).write_config(offset - CONFIG_SPACE, data);
            }
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            warn_limited!(
                offset,
                width = data.len(),
                "virtio-mmio register write with bad width ignored"
            );
            return;
        };
        if !offset.is_multiple_of(4) {
            warn_limited!(offset, "misaligned virtio-mmio register write ignored");
            return;
        }
        self.write_reg(offset, u32::from_le_bytes(bytes));
    }
}

/// The kernel command-line fragment that tells Linux's virtio_mmio driver
/// about a device, e.g. `virtio_mmio.device=4K@0xd0000000:5`.
pub fn cmdline_device(base: u64, size: u64, irq: u32) -> String {
    const K: u64 = 1 << 10;
    const M: u64 = 1 << 20;
    const G: u64 = 1 << 30;
    let size = match size {
        0 => "0".to_string(),
        s if s % G == 0 => format!("{}G", s / G),
        s if s % M == 0 => format!("{}M", s / M),
        s if s % K == 0 => format!("{}K", s / K),
        s => s.to_string(),
    };
    format!("virtio_mmio.device={size}@{base:#x}:{irq}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::test_utils::*;
    use crate::virtio::INT_CONFIG;

    #[test]
    fn cmdline_fragment() {
        assert_eq!(
            cmdline_device(0xd000_0000, MMIO_DEVICE_WINDOW, 5),
            "virtio_mmio.device=4K@0xd0000000:5"
        );
        assert_eq!(
            cmdline_device(0x1000, 0x20_0000, 12),
            "virtio_mmio.device=2M@0x1000:12"
        );
        assert_eq!(
            cmdline_device(0, 0x4000_0000, 1),
            "virtio_mmio.device=1G@0x0:1"
        );
        assert_eq!(cmdline_device(0, 100, 1), "virtio_mmio.device=100@0x0:1");
    }

    #[test]
    fn construction_checks_the_device() {
        let mem = guest_memory();
        let irq = interrupt();
        let mut dev = DummyDevice::new(&[4]);
        dev.state.avail_features = 0;
        assert!(matches!(
            MmioTransport::new(mem.clone(), irq.clone(), shared(dev)),
            Err(MmioError::MissingVersion1)
        ));
        assert!(matches!(
            MmioTransport::new(mem.clone(), irq.clone(), shared(DummyDevice::new(&[3]))),
            Err(MmioError::InvalidQueueMaxSize { index: 0, size: 3 })
        ));
        assert!(matches!(
            MmioTransport::new(mem.clone(), irq.clone(), shared(DummyDevice::new(&[0]))),
            Err(MmioError::InvalidQueueMaxSize { .. })
        ));
        let mut dev = DummyDevice::new(&[4, 4]);
        dev.state.queue_evts.pop();
        assert!(matches!(
            MmioTransport::new(mem, irq, shared(dev)),
            Err(MmioError::QueueEventMismatch {
                queues: 2,
                events: 1
            })
        ));
    }

    #[test]
    fn identification_registers() {
        let (mut t, _dev) = transport(&[16, 8]);
        assert_eq!(rd(&mut t, REG_MAGIC_VALUE), 0x7472_6976);
        assert_eq!(rd(&mut t, REG_VERSION), 2);
        assert_eq!(rd(&mut t, REG_DEVICE_ID), DUMMY_TYPE);
        assert_eq!(rd(&mut t, REG_VENDOR_ID), 0);
        assert_eq!(rd(&mut t, REG_STATUS), 0);
        assert_eq!(rd(&mut t, REG_INTERRUPT_STATUS), 0);
        // No shared memory regions, whatever the selector.
        for sel in [0, 1, u32::MAX] {
            wr(&mut t, REG_SHM_SEL, sel);
            assert_eq!(rd(&mut t, REG_SHM_LEN_LOW), u32::MAX);
            assert_eq!(rd(&mut t, REG_SHM_LEN_HIGH), u32::MAX);
        }
        // Write-only registers read as zero.
        assert_eq!(rd(&mut t, REG_QUEUE_NOTIFY), 0);
        assert_eq!(rd(&mut t, REG_DRIVER_FEATURES), 0);
        assert_eq!(rd(&mut t, 0xf0), 0);
        assert_eq!(t.queue_events().len(), 2);
    }

    #[test]
    fn feature_select_and_ack_masking() {
        let (mut t, dev) = transport(&[16]);
        let offered = lock(&dev).state.avail_features;
        wr(&mut t, REG_DEVICE_FEATURES_SEL, 0);
        assert_eq!(rd(&mut t, REG_DEVICE_FEATURES), offered as u32);
        wr(&mut t, REG_DEVICE_FEATURES_SEL, 1);
        assert_eq!(rd(&mut t, REG_DEVICE_FEATURES), (offered >> 32) as u32);
        wr(&mut t, REG_DEVICE_FEATURES_SEL, 2);
        assert_eq!(rd(&mut t, REG_DEVICE_FEATURES), 0);
        wr(&mut t, REG_DEVICE_FEATURES_SEL, u32::MAX);
        assert_eq!(rd(&mut t, REG_DEVICE_FEATURES), 0);

        // Acks before DRIVER are ignored.
        wr(&mut t, REG_DRIVER_FEATURES_SEL, 1);
        wr(&mut t, REG_DRIVER_FEATURES, 1);
        assert_eq!(t.acked_features, 0);

        wr(&mut t, REG_STATUS, ACKNOWLEDGE);
        wr(&mut t, REG_STATUS, ACKNOWLEDGE | DRIVER);
        // Everything acked, only offered bits stick.
        wr(&mut t, REG_DRIVER_FEATURES_SEL, 0);
        wr(&mut t, REG_DRIVER_FEATURES, u32::MAX);
        wr(&mut t, REG_DRIVER_FEATURES_SEL, 1);
        wr(&mut t, REG_DRIVER_FEATURES, u32::MAX);
        wr(&mut t, REG_DRIVER_FEATURES_SEL, 7);
        wr(&mut t, REG_DRIVER_FEATURES, u32::MAX);
        assert_eq!(t.acked_features, offered);
        // Rewriting a word replaces it.
        wr(&mut t, REG_DRIVER_FEATURES_SEL, 0);
        wr(&mut t, REG_DRIVER_FEATURES, 0);
        assert_eq!(t.acked_features, offered & !0xffff_ffff);

        wr(&mut t, REG_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        assert_eq!(rd(&mut t, REG_STATUS), ACKNOWLEDGE | DRIVER | FEATURES_OK);
        assert_eq!(lock(&dev).state.acked_features, offered & !0xffff_ffff);
        // Frozen after FEATURES_OK.
        wr(&mut t, REG_DRIVER_FEATURES, u32::MAX);
        assert_eq!(t.acked_features, offered & !0xffff_ffff);
    }

    #[test]
    fn features_ok_requires_version_1() {
        let (mut t, dev) = transport(&[16]);
        wr(&mut t, REG_STATUS, ACKNOWLEDGE);
        wr(&mut t, REG_STATUS, ACKNOWLEDGE | DRIVER);
        wr(&mut t, REG_DRIVER_FEATURES_SEL, 0);
        wr(&mut t, REG_DRIVER_FEATURES, u32::MAX);
        wr(&mut t, REG_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        assert_eq!(rd(&mut t, REG_STATUS), ACKNOWLEDGE | DRIVER);
        assert_eq!(lock(&dev).state.acked_features, 0);
        // Even straight to DRIVER_OK.
        wr(
            &mut t,
            REG_STATUS,
            ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
        );
        assert_eq!(rd(&mut t, REG_STATUS), ACKNOWLEDGE | DRIVER);
        assert!(!lock(&dev).activated);
    }

    #[test]
    fn status_transitions() {
        let (mut t, dev) = transport(&[16]);
        // Skipping steps or clearing bits is ignored.
        wr(&mut t, REG_STATUS, DRIVER);
        assert_eq!(rd(&mut t, REG_STATUS), 0);
        wr(&mut t, REG_STATUS, ACKNOWLEDGE | FEATURES_OK);
        assert_eq!(rd(&mut t, REG_STATUS), 0);
        wr(&mut t, REG_STATUS, 0x1_0001);
        assert_eq!(rd(&mut t, REG_STATUS), 0);
        wr(&mut t, REG_STATUS, ACKNOWLEDGE);
        wr(&mut t, REG_STATUS, ACKNOWLEDGE | DRIVER);
        wr(&mut t, REG_STATUS, DRIVER);
        assert_eq!(rd(&mut t, REG_STATUS), ACKNOWLEDGE | DRIVER);
        wr(&mut t, REG_STATUS, ACKNOWLEDGE | DRIVER | DRIVER_OK);
        assert_eq!(rd(&mut t, REG_STATUS), ACKNOWLEDGE | DRIVER);
        wr(&mut t, REG_STATUS, ACKNOWLEDGE | DRIVER | 0x10);
        assert_eq!(rd(&mut t, REG_STATUS), ACKNOWLEDGE | DRIVER);
        // Rewriting the same value is a no-op.
        wr(&mut t, REG_STATUS, ACKNOWLEDGE | DRIVER);
        assert_eq!(rd(&mut t, REG_STATUS), ACKNOWLEDGE | DRIVER);

        ack_features(&mut t);
        wr(&mut t, REG_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        setup_queue(&mut t, 0, 16, QUEUE_ADDRS[0]);
        wr(
            &mut t,
            REG_STATUS,
            ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
        );
        assert_eq!(
            rd(&mut t, REG_STATUS),
            ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK
        );
        assert!(lock(&dev).activated);
        assert_eq!(lock(&dev).activations, 1);

        // FAILED is honoured at any point and blocks everything but reset.
        wr(
            &mut t,
            REG_STATUS,
            ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK | FAILED,
        );
        assert_eq!(rd(&mut t, REG_STATUS) & FAILED, FAILED);

        // Reset clears everything and resets the device.
        wr(&mut t, REG_STATUS, 0);
        assert_eq!(rd(&mut t, REG_STATUS), 0);
        assert!(!lock(&dev).activated);
        wr(&mut t, REG_QUEUE_SEL, 0);
        assert_eq!(rd(&mut t, REG_QUEUE_READY), 0);
        assert_eq!(t.acked_features, 0);

        // And the device can be brought up again.
        linux_probe(&mut t, &[(16, QUEUE_ADDRS[0])]);
        assert_eq!(
            rd(&mut t, REG_STATUS),
            ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK
        );
        assert_eq!(lock(&dev).activations, 2);
    }

    #[test]
    fn failed_before_activation_blocks_progress() {
        let (mut t, dev) = transport(&[16]);
        wr(&mut t, REG_STATUS, ACKNOWLEDGE);
        wr(&mut t, REG_STATUS, ACKNOWLEDGE | FAILED);
        assert_eq!(rd(&mut t, REG_STATUS), ACKNOWLEDGE | FAILED);
        wr(&mut t, REG_STATUS, ACKNOWLEDGE | DRIVER | FAILED);
        assert_eq!(rd(&mut t, REG_STATUS), ACKNOWLEDGE | FAILED);
        wr(&mut t, REG_STATUS, 0);
        linux_probe(&mut t, &[(16, QUEUE_ADDRS[0])]);
        assert!(lock(&dev).activated);
    }

    #[test]
    fn queue_setup_and_ready() {
        let (mut t, _dev) = transport(&[16, 8]);
        wr(&mut t, REG_QUEUE_SEL, 0);
        assert_eq!(rd(&mut t, REG_QUEUE_NUM_MAX), 16);
        wr(&mut t, REG_QUEUE_SEL, 1);
        assert_eq!(rd(&mut t, REG_QUEUE_NUM_MAX), 8);
        wr(&mut t, REG_QUEUE_SEL, 2);
        assert_eq!(rd(&mut t, REG_QUEUE_NUM_MAX), 0);
        assert_eq!(rd(&mut t, REG_QUEUE_READY), 0);
        wr(&mut t, REG_QUEUE_SEL, u32::MAX);
        assert_eq!(rd(&mut t, REG_QUEUE_NUM_MAX), 0);

        // Queue registers before FEATURES_OK are ignored.
        wr(&mut t, REG_QUEUE_SEL, 0);
        wr(&mut t, REG_QUEUE_NUM, 4);
        wr(&mut t, REG_QUEUE_READY, 1);
        assert_eq!(rd(&mut t, REG_QUEUE_READY), 0);
        assert_eq!(t.queues[0].queue.size(), 16);

        negotiate(&mut t);
        setup_queue(&mut t, 1, 4, QUEUE_ADDRS[1]);
        let q = &t.queues[1].queue;
        assert_eq!(q.size(), 4);
        assert!(q.ready());
        assert_eq!(q.desc_table(), QUEUE_ADDRS[1].0);
        assert_eq!(q.avail_ring(), QUEUE_ADDRS[1].1);
        assert_eq!(q.used_ring(), QUEUE_ADDRS[1].2);
        wr(&mut t, REG_QUEUE_SEL, 1);
        assert_eq!(rd(&mut t, REG_QUEUE_READY), 1);
        // A ready queue's parameters are frozen.
        wr(&mut t, REG_QUEUE_NUM, 2);
        wr(&mut t, REG_QUEUE_DESC_LOW, 0x8000);
        assert_eq!(t.queues[1].queue.size(), 4);
        assert_eq!(t.queues[1].queue.desc_table(), QUEUE_ADDRS[1].0);
        // QueueReady accepts only 0 and 1.
        wr(&mut t, REG_QUEUE_READY, 2);
        assert_eq!(rd(&mut t, REG_QUEUE_READY), 1);
        wr(&mut t, REG_QUEUE_READY, 0);
        assert_eq!(rd(&mut t, REG_QUEUE_READY), 0);
        // 64-bit addresses are composed from both halves.
        wr(&mut t, REG_QUEUE_DESC_HIGH, 1);
        assert_eq!(t.queues[1].queue.desc_table(), (1 << 32) | QUEUE_ADDRS[1].0);
        // Writes to a nonexistent queue go nowhere.
        wr(&mut t, REG_QUEUE_SEL, 9);
        wr(&mut t, REG_QUEUE_NUM, 2);
        wr(&mut t, REG_QUEUE_READY, 1);
        wr(&mut t, REG_QUEUE_DESC_LOW, 0x1000);
        assert_eq!(rd(&mut t, REG_QUEUE_READY), 0);
    }

    #[test]
    fn bad_queue_sizes_fail_activation() {
        for size in [0, 3, 32, 0x1_0010, u32::MAX] {
            let (mut t, dev) = transport(&[16]);
            negotiate(&mut t);
            setup_queue(&mut t, 0, size, QUEUE_ADDRS[0]);
            assert_eq!(t.queues[0].queue.size(), 16, "size {size} must be rejected");
            let irq_before = t.interrupt().config_generation();
            wr(
                &mut t,
                REG_STATUS,
                ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
            );
            assert!(!lock(&dev).activated, "size {size}");
            assert_eq!(
                rd(&mut t, REG_STATUS) & DEVICE_NEEDS_RESET,
                DEVICE_NEEDS_RESET
            );
            assert_eq!(rd(&mut t, REG_INTERRUPT_STATUS) & INT_CONFIG, INT_CONFIG);
            assert_eq!(
                rd(&mut t, REG_CONFIG_GENERATION),
                irq_before.wrapping_add(1)
            );
            // Further status writes (echoing NEEDS_RESET) wait for a reset.
            let status = rd(&mut t, REG_STATUS);
            wr(&mut t, REG_STATUS, status | FAILED);
            assert_eq!(rd(&mut t, REG_STATUS) & FAILED, FAILED);
            wr(&mut t, REG_STATUS, 0);
            assert_eq!(rd(&mut t, REG_STATUS), 0);
            assert_eq!(rd(&mut t, REG_INTERRUPT_STATUS), 0);
            linux_probe(&mut t, &[(16, QUEUE_ADDRS[0])]);
            assert!(lock(&dev).activated, "recovers after reset");
        }
    }

    #[test]
    fn misaligned_and_out_of_memory_rings_fail_activation() {
        // Misaligned descriptor table.
        let (mut t, dev) = transport(&[16]);
        negotiate(&mut t);
        let (d, a, u) = QUEUE_ADDRS[0];
        setup_queue(&mut t, 0, 16, (d + 8, a, u));
        wr(
            &mut t,
            REG_STATUS,
            ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
        );
        assert!(!lock(&dev).activated);
        assert_ne!(rd(&mut t, REG_STATUS) & DEVICE_NEEDS_RESET, 0);

        // Rings beyond guest memory, including ones that wrap the address space.
        for addrs in [
            (MEM_SIZE, a, u),
            (d, MEM_SIZE - 4, u),
            (d, a, MEM_SIZE - 8),
            (u64::MAX - 15, a, u),
            (d, a, u64::MAX - 3),
        ] {
            let (mut t, dev) = transport(&[16]);
            negotiate(&mut t);
            setup_queue(&mut t, 0, 16, addrs);
            wr(
                &mut t,
                REG_STATUS,
                ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
            );
            assert!(!lock(&dev).activated, "{addrs:x?}");
            assert_ne!(rd(&mut t, REG_STATUS) & DEVICE_NEEDS_RESET, 0);
        }
    }

    #[test]
    fn device_refusal_sets_needs_reset() {
        let (mut t, dev) = transport(&[16]);
        lock(&dev).fail_activate = true;
        linux_probe(&mut t, &[(16, QUEUE_ADDRS[0])]);
        assert_eq!(
            rd(&mut t, REG_STATUS),
            ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK | DEVICE_NEEDS_RESET
        );
        assert_ne!(rd(&mut t, REG_INTERRUPT_STATUS) & INT_CONFIG, 0);
        assert_eq!(t.interrupt().irqfd().read().unwrap(), 1);
    }

    #[test]
    fn device_without_reset_is_not_reactivated() {
        let (mut t, dev) = transport(&[16]);
        lock(&dev).supports_reset = false;
        linux_probe(&mut t, &[(16, QUEUE_ADDRS[0])]);
        assert!(lock(&dev).activated);
        wr(&mut t, REG_STATUS, 0);
        assert_eq!(rd(&mut t, REG_STATUS), 0);
        linux_probe(&mut t, &[(16, QUEUE_ADDRS[0])]);
        assert_eq!(lock(&dev).activations, 1);
        assert_ne!(rd(&mut t, REG_STATUS) & DEVICE_NEEDS_RESET, 0);
    }

    #[test]
    fn activation_hands_over_queues_with_event_idx() {
        let (mut t, dev) = transport(&[16, 8]);
        wr(&mut t, REG_STATUS, ACKNOWLEDGE);
        wr(&mut t, REG_STATUS, ACKNOWLEDGE | DRIVER);
        wr(&mut t, REG_DRIVER_FEATURES_SEL, 0);
        wr(&mut t, REG_DRIVER_FEATURES, 1 << VIRTIO_RING_F_EVENT_IDX);
        wr(&mut t, REG_DRIVER_FEATURES_SEL, 1);
        wr(&mut t, REG_DRIVER_FEATURES, 1);
        wr(&mut t, REG_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        // Only queue 0 is set up; queue 1 is handed over not ready.
        setup_queue(&mut t, 0, 8, QUEUE_ADDRS[0]);
        wr(
            &mut t,
            REG_STATUS,
            ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
        );
        let dev = lock(&dev);
        assert!(dev.activated);
        let qs = &dev.queues;
        assert_eq!(qs.len(), 2);
        assert!(qs[0].ready() && qs[0].event_idx_enabled());
        assert_eq!(qs[0].size(), 8);
        assert_eq!(qs[0].desc_table(), QUEUE_ADDRS[0].0);
        assert!(!qs[1].ready());
    }

    #[test]
    fn bad_widths_and_alignment() {
        let (mut t, dev) = transport(&[16]);
        for width in [0usize, 1, 2, 3, 5, 8, 16] {
            let mut buf = vec![0xaa; width];
            t.read(REG_MAGIC_VALUE, &mut buf);
            assert!(buf.iter().all(|&b| b == 0), "width {width}");
            t.write(REG_STATUS, &vec![1; width]);
            assert_eq!(rd(&mut t, REG_STATUS), 0, "width {width}");
        }
        let mut buf = [0xaa; 4];
        t.read(REG_MAGIC_VALUE + 1, &mut buf);
        assert_eq!(buf, [0; 4]);
        t.write(REG_STATUS + 2, &[1, 0, 0, 0]);
        assert_eq!(rd(&mut t, REG_STATUS), 0);

        // Config space: 1/2/4/8-byte accesses reach the device, others don't.
        let mut b = [0u8; 2];
        t.read(CONFIG_SPACE + 1, &mut b);
        assert_eq!(b, [1, 2]);
        let mut b = [0xffu8; 3];
        t.read(CONFIG_SPACE, &mut b);
        assert_eq!(b, [0; 3]);
        // Far beyond the config area.
        let mut b = [0xffu8; 8];
        t.read(u64::MAX - 7, &mut b);
        assert_eq!(b, [0; 8]);

        // Config writes only once a driver is attached.
        t.write(CONFIG_SPACE, &[9]);
        assert_eq!(lock(&dev).config[0], 0);
        wr(&mut t, REG_STATUS, ACKNOWLEDGE);
        wr(&mut t, REG_STATUS, ACKNOWLEDGE | DRIVER);
        t.write(CONFIG_SPACE, &[9]);
        assert_eq!(lock(&dev).config[0], 9);
        t.write(CONFIG_SPACE, &[9, 9, 9]);
        assert_eq!(lock(&dev).config[1], 1);
        t.write(u64::MAX, &[7]);
    }

    #[test]
    fn config_generation_and_interrupt_ack() {
        let (mut t, _dev) = transport(&[16]);
        let gen = rd(&mut t, REG_CONFIG_GENERATION);
        t.interrupt().signal_config_change();
        assert_eq!(rd(&mut t, REG_CONFIG_GENERATION), gen.wrapping_add(1));
        t.interrupt().signal_used_queue();
        assert_eq!(rd(&mut t, REG_INTERRUPT_STATUS), INT_CONFIG | 1);
        wr(&mut t, REG_INTERRUPT_ACK, 1);
        assert_eq!(rd(&mut t, REG_INTERRUPT_STATUS), INT_CONFIG);
        wr(&mut t, REG_INTERRUPT_ACK, u32::MAX);
        assert_eq!(rd(&mut t, REG_INTERRUPT_STATUS), 0);
    }

    #[test]
    fn queue_notify_is_served_on_the_vcpu_when_the_device_asks() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let irq = Arc::new(Interrupt::new(
            EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap(),
        ));
        let mut d = DummyDevice::new(&[16, 8]);
        d.on_vcpu = true;
        let dev = Arc::new(Mutex::new(d));
        let mut t = MmioTransport::new(mem, irq, dev.clone()).unwrap();
        assert!(t.serves_on_vcpu());
        wr(&mut t, REG_QUEUE_NOTIFY, 1);
        assert_eq!(lock(&dev).served, [1]);
        assert!(lock(&dev).state.queue_evts[1].read().is_err());
        // Busy elsewhere (here: locked by this thread): the event loop
        // gets the notification instead of the vCPU waiting.
        {
            let held = lock(&dev);
            wr(&mut t, REG_QUEUE_NOTIFY, 0);
            assert_eq!(held.state.queue_evts[0].read().unwrap(), 1);
        }
        assert_eq!(lock(&dev).served, [1]);
        wr(&mut t, REG_QUEUE_NOTIFY, 2);
        assert_eq!(lock(&dev).served, [1]);
    }

    #[test]
    fn a_wedged_queue_shows_in_the_snapshot() {
        let (mut t, dev) = transport(&[16, 8]);
        linux_probe(&mut t, &[(16, QUEUE_ADDRS[0]), (8, QUEUE_ADDRS[1])]);
        assert!(lock(&dev).activated);
        // The driver offers two buffers on queue 0 that the device never
        // takes, and an interrupt it never acknowledges.
        let mut ring = GuestRing::new(&t.mem, 16, QUEUE_ADDRS[0]);
        ring.set_desc(0, 0x8000, 64, F_WRITE, 0);
        ring.set_desc(1, 0x8100, 64, F_WRITE, 0);
        ring.push_avail(0);
        ring.push_avail(1);
        t.interrupt().signal_used_queue();

        let snap = t.snapshot();
        assert!(snap.activated);
        assert_eq!(snap.interrupt_status, crate::virtio::INT_VRING);
        assert_eq!(snap.notes, ["dummy"]);
        let q0 = &snap.queues[0];
        assert_eq!((q0.size, q0.avail_idx, q0.used_idx), (16, Some(2), Some(0)));
        assert_eq!(q0.device.map(|d| d.next_avail), Some(0));
        assert_eq!(q0.buffers_not_taken(), 2, "{q0:?}");
        assert_eq!(snap.queues[1].buffers_not_taken(), 0);

        // A device lock held elsewhere is reported, not waited for.
        let held = lock(&dev);
        let snap = std::thread::scope(|s| s.spawn(|| t.snapshot()).join().unwrap());
        drop(held);
        assert!(snap.queues[0].device.is_none());
        assert!(
            snap.notes[0].contains("device lock held"),
            "{:?}",
            snap.notes
        );
    }

    #[test]
    fn queue_notify_writes_the_eventfd() {
        let (mut t, dev) = transport(&[16, 8]);
        wr(&mut t, REG_QUEUE_NOTIFY, 1);
        assert!(lock(&dev).state.queue_evts[0].read().is_err());
        assert_eq!(lock(&dev).state.queue_evts[1].read().unwrap(), 1);
        // Bogus indices are dropped.
        wr(&mut t, REG_QUEUE_NOTIFY, 2);
        wr(&mut t, REG_QUEUE_NOTIFY, u32::MAX);
        assert!(lock(&dev).state.queue_evts[0].read().is_err());
        assert!(lock(&dev).state.queue_evts[1].read().is_err());
    }
}
