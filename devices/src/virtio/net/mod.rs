//! virtio-net (virtio 1.2, 5.1) over a tap: queue 0 receives, queue 1
//! transmits, no control queue.
//!
//! Offered: VERSION_1, MAC, STATUS, CSUM, GUEST_CSUM, HOST_TSO4/6,
//! GUEST_TSO4/6, MRG_RXBUF, RING_EVENT_IDX, RING_INDIRECT_DESC. The tap's
//! offloads (TUNSETOFFLOAD) follow the GUEST_* features the driver accepts.
//!
//! Bounds a guest cannot push: the device holds at most one received frame
//! that has no room in the guest yet (and then stops reading the tap until
//! the guest posts buffers) and at most one frame the tap refused with
//! EAGAIN (and then stops taking transmit chains until the tap is writable
//! again); each event serves at most a queue's worth of chains or frames.
//!
//! Wiring is that of every virtio device (see [`crate::virtio`]): one
//! `Arc<Mutex<Net>>` given to the [`MmioTransport`](crate::virtio::MmioTransport)
//! as `dyn VirtioDevice` and to the event manager as
//! `dyn MutEventSubscriber + Send`. The device registers its two queue
//! eventfds and the tap fd itself; the tap is watched for readable only while
//! the guest has receive buffers, and for writable only while a frame waits.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use devices::virtio::net::{MemBackend, Net};
//! use devices::virtio::{Interrupt, MmioTransport, VirtioDevice};
//! use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
//! use vm_memory::{GuestAddress, GuestMemoryMmap};
//! use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
//!
//! let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
//! // In the VMM: Net::new("mvm-tap0", mac)?, on a tap the host network
//! // plane created for this VM (or that we may create).
//! let net = Arc::new(Mutex::new(
//!     Net::with_backend(MemBackend::new().unwrap(), [0x02, 0, 0, 0, 0, 1]).unwrap(),
//! ));
//! let interrupt = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
//! let transport = MmioTransport::new(mem, interrupt, net.clone()).unwrap();
//! assert_eq!(transport.queue_events().len(), 2); // rx = 0, tx = 1
//! let mut em: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
//!     EventManager::new().unwrap();
//! em.add_subscriber(net.clone());
//! assert!(!net.lock().unwrap().is_activated());
//! ```

mod backend;
mod device;
mod event_handler;
pub mod header;
mod rx;
mod tap;
mod tx;
mod vhost;

pub use crate::tap::{Tap, TapError};
pub use backend::{MemBackend, NetBackend};
pub use device::{Net, NetStats};

/// Maximum size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Index of the receive queue.
pub const RX_QUEUE: usize = 0;
/// Index of the transmit queue.
pub const TX_QUEUE: usize = 1;
/// `virtio_net_hdr_v1` (with num_buffers): the header in front of every
/// frame on both queues under VIRTIO_F_VERSION_1, and on the tap.
pub const VNET_HDR_LEN: usize = 12;
/// The largest Ethernet frame carried, header excluded: a 64 KiB GSO frame
/// plus Ethernet and VLAN headers.
pub const MAX_FRAME_LEN: usize = 65550;
/// Descriptors followed per chain at most; longer chains are dropped
/// (transmit) or only partly used (receive). Linux uses at most
/// MAX_SKB_FRAGS + 2 per packet.
pub const MAX_DESCS_PER_CHAIN: usize = 256;

/// Why a virtio-net device could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("failed to create a virtio-net queue eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error("invalid MAC address {0}: multicast bit set or all zeros")]
    InvalidMac(String),
}

/// Whether /dev/vhost-net can be used by this process (opens, and has
/// VIRTIO_F_VERSION_1); the reason when it cannot.
pub fn vhost_usable() -> Result<(), String> {
    vhost::Vhost::probe().map(|_| ())
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests;
