//! Virtio devices and the virtio-mmio transport (virtio 1.x, MMIO version 2).
//!
//! The shape every device follows:
//! - a folder per device (`block/`, `rng/`, `net/`, `fs/`, `vhost_user_fs/`, `vsock/`) with
//!   `mod.rs` (constants, errors, re-exports), `device.rs` (the device and its
//!   [`VirtioDevice`] impl) and `event_handler.rs` (its
//!   `event_manager::MutEventSubscriber` impl); net and vsock serve their
//!   queues in `rx.rs` and `tx.rs`;
//! - the device embeds a [`VirtioState`] (`common.rs`): features offered
//!   and accepted, queue sizes, one [`EventFd`] per queue from construction
//!   on (so the event loop can watch them before the guest activates the
//!   device), and what it holds between DRIVER_OK and reset; the
//!   [`VirtioDevice`] trait's default methods read it;
//! - queues are served through `serve.rs`: the drain loop, used-ring
//!   publishing and the EVENT_IDX notification decisions;
//! - [`MmioTransport`] owns the register state and the queue configuration
//!   and hands ready [`Queue`](virtio_queue::Queue)s to
//!   [`VirtioDevice::activate`] when the driver sets DRIVER_OK;
//! - devices raise interrupts only through [`Interrupt`] and never know about
//!   KVM, the bus or the CLI.
//!
//! Sharing: the VMM keeps one `Arc<Mutex<Device>>` and coerces it to both
//! `Arc<Mutex<dyn VirtioDevice>>` (for the transport) and
//! `Arc<Mutex<dyn MutEventSubscriber + Send>>` (for the event manager).
//!
//! Wiring one device (the KVM calls are the VMM's and shown as comments):
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use devices::bus::Bus;
//! use devices::virtio::{cmdline_device, mmio, Interrupt, MmioTransport, Rng, MMIO_DEVICE_WINDOW};
//! use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
//! use vm_memory::{GuestAddress, GuestMemoryMmap};
//! use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
//!
//! let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
//! let (base, gsi) = (0xd000_0000u64, 5u32);
//!
//! let rng = Arc::new(Mutex::new(Rng::new().unwrap()));
//! let irqfd = EventFd::new(EFD_NONBLOCK).unwrap();
//! // vm_fd.register_irqfd(&irqfd, gsi)?;
//! let interrupt = Arc::new(Interrupt::new(irqfd));
//! let transport = MmioTransport::new(mem.clone(), interrupt, rng.clone()).unwrap();
//! for (index, evt) in transport.queue_events().iter().enumerate() {
//!     let _addr = base + mmio::REG_QUEUE_NOTIFY;
//!     // vm_fd.register_ioevent(evt, &IoEventAddress::Mmio(_addr), index as u32)?;
//!     let _ = (index, evt);
//! }
//!
//! let mut mmio_bus = Bus::new();
//! mmio_bus.insert(Arc::new(Mutex::new(transport)), base, MMIO_DEVICE_WINDOW).unwrap();
//!
//! let mut event_manager: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
//!     EventManager::new().unwrap();
//! event_manager.add_subscriber(rng);
//!
//! assert_eq!(
//!     cmdline_device(base, MMIO_DEVICE_WINDOW, gsi),
//!     "virtio_mmio.device=4K@0xd0000000:5"
//! );
//! ```

use vmm_sys_util::eventfd::EventFd;

/// Logs a warning at most a logarithmic number of times per call site: the
/// first 10 occurrences, then every power of two. Guest-triggered warnings go
/// through this so a hostile guest cannot flood the host's logs.
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static COUNT: ::std::sync::atomic::AtomicU64 = ::std::sync::atomic::AtomicU64::new(0);
        let n = COUNT.fetch_add(1, ::std::sync::atomic::Ordering::Relaxed);
        if n < 10 || n.is_power_of_two() {
            ::tracing::warn!(occurrences = n + 1, $($arg)+);
        }
    }};
}

/// Writes the two [`VirtioDevice`] accessors of a device whose
/// [`VirtioState`] is the field `$field`, inside its `impl VirtioDevice`.
macro_rules! virtio_state_accessors {
    ($field:ident) => {
        fn state(&self) -> &$crate::virtio::VirtioState {
            &self.$field
        }

        fn state_mut(&mut self) -> &mut $crate::virtio::VirtioState {
            &mut self.$field
        }
    };
}

pub mod block;
mod common;
pub mod debug;
pub mod fs;
pub mod interrupt;
pub mod mmio;
pub mod net;
pub mod rng;
mod serve;
pub mod vhost_user_fs;
pub mod vsock;

#[cfg(test)]
pub(crate) mod test_utils;

pub use block::Block;
pub use common::{Activated, VirtioState};
pub use fs::Fs;
pub use interrupt::{Interrupt, IrqLine};
pub use mmio::{cmdline_device, MmioError, MmioTransport, MMIO_DEVICE_WINDOW};
pub use net::Net;
pub use rng::Rng;
pub use vhost_user_fs::VhostUserFs;
pub use vsock::Vsock;

/// Device IDs (virtio 1.2, section 5).
pub const TYPE_NET: u32 = 1;
pub const TYPE_BLOCK: u32 = 2;
pub const TYPE_RNG: u32 = 4;
pub const TYPE_VSOCK: u32 = 19;
pub const TYPE_FS: u32 = 26;

/// Device status bits (virtio 1.2, section 2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    pub const FAILED: u32 = 0x80;
}

/// Feature bit numbers shared by all device types.
pub mod features {
    /// Indirect descriptors (the split-queue code follows them either way).
    pub const VIRTIO_RING_F_INDIRECT_DESC: u32 = 28;
    /// used_event / avail_event notification suppression.
    pub const VIRTIO_RING_F_EVENT_IDX: u32 = 29;
    /// Virtio 1.x device; mandatory on an MMIO version 2 transport.
    pub const VIRTIO_F_VERSION_1: u32 = 32;
}

/// Interrupt status bits (InterruptStatus / InterruptACK).
pub const INT_VRING: u32 = 1;
pub const INT_CONFIG: u32 = 2;

/// Why a device refused to start.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("device is already active")]
    AlreadyActive,
    #[error("device expects {expected} queues, got {got}")]
    QueueCount { expected: usize, got: usize },
    #[error("queue {0} was not made ready by the driver")]
    QueueNotReady(usize),
    #[error("device backend failed to start: {0}")]
    Backend(#[source] std::io::Error),
}

/// A virtio device as seen by its transport.
///
/// A device keeps its features, queues and activation in a
/// [`VirtioState`] and hands it out through [`state`](Self::state) and
/// [`state_mut`](Self::state_mut); the default methods read it from there.
pub trait VirtioDevice: Send {
    /// The virtio device ID (`TYPE_*`).
    fn device_type(&self) -> u32 {
        self.state().device_type()
    }

    /// The state the default methods below read.
    fn state(&self) -> &VirtioState;

    fn state_mut(&mut self) -> &mut VirtioState;

    /// Maximum size of each queue; the length is the number of queues. Each
    /// must be a power of two in `1..=32768`.
    fn queue_max_sizes(&self) -> &[u16] {
        self.state().queue_sizes()
    }

    /// Features offered to the driver. Must include `VIRTIO_F_VERSION_1`.
    fn avail_features(&self) -> u64 {
        self.state().avail_features()
    }

    /// The features the driver accepted (always a subset of
    /// [`avail_features`](Self::avail_features)), set once when the driver
    /// writes FEATURES_OK.
    fn set_acked_features(&mut self, features: u64) {
        self.state_mut().set_acked_features(features);
    }

    /// Reads from the device-specific configuration space. `offset` and
    /// `data.len()` come from the guest: out-of-range bytes read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let _ = offset;
        data.fill(0);
    }

    /// Writes to the device-specific configuration space (guest-controlled
    /// offset and length). Devices without writable fields ignore it.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        warn_limited!(
            offset,
            len = data.len(),
            "write to read-only virtio config space ignored"
        );
    }

    /// One eventfd per queue, created with the device, that the transport (or
    /// a KVM ioeventfd) signals when the driver notifies that queue.
    fn queue_events(&self) -> &[EventFd] {
        self.state().queue_events()
    }

    /// Whether the driver's queue notifications are served right away on
    /// the notifying vCPU's thread ([`serve_notification`]) instead of
    /// through the queue eventfds and the event loop. The VMM registers no
    /// ioeventfd for such a device, so a notification exits to the vCPU
    /// thread, which serves the queue before it re-enters the guest: no
    /// wake-up of another thread and, for a guest waiting on the reply, no
    /// idle round trip. For devices whose requests are short and the
    /// driver waits on (virtio-fs).
    ///
    /// [`serve_notification`]: Self::serve_notification
    fn serves_on_vcpu(&self) -> bool {
        false
    }

    /// Serves queue `index` now, on the notifying vCPU's thread (only
    /// called when [`serves_on_vcpu`](Self::serves_on_vcpu) is true).
    fn serve_notification(&mut self, index: usize) {
        let _ = index;
    }

    /// Starts the device. `active.queues` has one entry per
    /// [`queue_max_sizes`](Self::queue_max_sizes) entry, in order; every
    /// ready queue has been checked against `active.mem`.
    fn activate(&mut self, active: Activated) -> Result<(), ActivateError>;

    /// Returns the device to its pre-activation state, dropping queues and
    /// memory. Returns false if the device cannot be reset, in which case it
    /// stays bound to its old queues and can never be re-activated.
    fn reset(&mut self) -> bool {
        false
    }

    fn is_activated(&self) -> bool {
        self.state().is_activated()
    }

    /// The device's own queue positions and anything else that tells why
    /// it might be stuck, for the VMM's state dump. Called with the device
    /// lock held, from a thread that is not the device's: keep it cheap.
    fn debug_state(&self) -> debug::DeviceDebug {
        debug::DeviceDebug {
            queues: self.state().queue_progress(),
            notes: Vec::new(),
        }
    }
}

/// Copies `data.len()` bytes of a device's config space starting at `offset`
/// into `data`, zero-filling whatever falls outside `config`.
pub fn read_config_from_slice(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_slice_reads_are_bounded() {
        let config = [1u8, 2, 3, 4];
        let mut b = [0xaau8; 4];
        read_config_from_slice(&config, 2, &mut b);
        assert_eq!(b, [3, 4, 0, 0]);
        read_config_from_slice(&config, 4, &mut b);
        assert_eq!(b, [0; 4]);
        read_config_from_slice(&config, u64::MAX, &mut b);
        assert_eq!(b, [0; 4]);
        let mut one = [0u8; 1];
        read_config_from_slice(&config, 0, &mut one);
        assert_eq!(one, [1]);
    }
}
