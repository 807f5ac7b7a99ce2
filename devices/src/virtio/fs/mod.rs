//! virtio-fs (virtio 1.2, 5.11): the guest's FUSE requests over virtqueues,
//! answered by our own server ([`cowfs`]) over copy-on-write directory
//! layers.
//!
//! Queue 0 is the high-priority queue (FORGET, BATCH_FORGET, INTERRUPT),
//! queues 1.. are request queues (one here). Each descriptor chain is a
//! device-readable part (`fuse_in_header` + arguments), then a
//! device-writable part for the reply.
//!
//! Requests are served synchronously on the vCPU thread that notified
//! (the VMM registers no ioeventfd for the device: the notification exits
//! to that thread, which serves the queue before re-entering the guest), or
//! on the event loop when the device is busy elsewhere or configured so
//! ([`Fs::set_serve_on_vcpu`]). A first write to a large lower file copies
//! it up before the guest's vCPU runs on. FORGETs on the high-priority
//! queue are drained with every request (see `Fs::process_queue`). File
//! data moves between guest memory and the host file in one
//! `preadv`/`pwritev` (`guest_io`).
//!
//! Wiring one share (see [`crate::virtio`] for the transport and irqfd
//! side); the guest mounts it with `mount -t virtiofs project /project`:
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use devices::virtio::fs::{Fs, ShareConfig, ShareMode};
//! use devices::virtio::{Interrupt, MmioTransport};
//! use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
//! use vm_memory::{GuestAddress, GuestMemoryMmap};
//! use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let (lower, upper) = (dir.path().join("project"), dir.path().join("upper"));
//! std::fs::create_dir_all(&lower).unwrap();
//! std::fs::create_dir_all(&upper).unwrap();
//!
//! let fs = Fs::new(
//!     "project",
//!     ShareConfig { lower, upper: Some(upper), mode: ShareMode::Cow, masked: vec![], visible: None, hidden: vec![] },
//! )
//! .unwrap();
//! let fs = Arc::new(Mutex::new(fs));
//! let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
//! let interrupt = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
//! let _transport = MmioTransport::new(mem, interrupt, fs.clone()).unwrap();
//! let mut em: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
//!     EventManager::new().unwrap();
//! em.add_subscriber(fs);
//! ```

mod device;
mod event_handler;
mod guest_io;

pub use cowfs;
pub use cowfs::{Limits, ShareConfig, ShareMode};
pub use device::Fs;

/// Maximum size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// High-priority queue + one request queue.
pub const NUM_QUEUES: usize = 2;
/// Index of the high-priority queue.
pub const HIPRIO: usize = 0;
/// High-priority entries the driver may queue before it notifies (with
/// EVENT_IDX; they are also served with every request).
pub const HIPRIO_BATCH: u16 = 64;
/// Request queues announced in the config space.
pub const NUM_REQUEST_QUEUES: u32 = 1;
/// Length of the tag field of the config space.
pub const TAG_LEN: usize = 36;
/// Bytes of one chain's readable part used at most (a maximal WRITE plus
/// headers); longer requests are cut there and answered with EINVAL.
pub const MAX_REQUEST: usize = cowfs::Server::max_request_len();
/// Reply bytes written into one chain at most.
pub const MAX_REPLY: usize = cowfs::Server::max_request_len();

/// The virtio-fs config space for `tag` (the tag, NUL-padded, then the
/// number of request queues), or None for a tag that is empty, longer
/// than [`TAG_LEN`] or holds a NUL.
pub fn config_space(tag: &str) -> Option<[u8; TAG_LEN + 4]> {
    let bytes = tag.as_bytes();
    if bytes.is_empty() || bytes.len() > TAG_LEN || bytes.contains(&0) {
        return None;
    }
    let mut config = [0u8; TAG_LEN + 4];
    config[..bytes.len()].copy_from_slice(bytes);
    config[TAG_LEN..].copy_from_slice(&NUM_REQUEST_QUEUES.to_le_bytes());
    Some(config)
}

/// Features the built-in device offers.
const FEATURES: u64 = (1 << crate::virtio::features::VIRTIO_F_VERSION_1)
    | (1 << crate::virtio::features::VIRTIO_RING_F_EVENT_IDX);

/// The state of any virtio-fs device: the high-priority queue and one
/// request queue, the former optional (the driver may leave it unused).
pub(crate) fn virtio_state(
    name: &'static str,
    features: u64,
    queue_size: u16,
) -> std::io::Result<crate::virtio::VirtioState> {
    Ok(crate::virtio::VirtioState::new(
        crate::virtio::TYPE_FS,
        name,
        features,
        &[queue_size; NUM_QUEUES],
    )?
    .with_optional_queue(HIPRIO))
}

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("virtio-fs tag {0:?} must be 1 to 36 bytes without NUL")]
    Tag(String),
    #[error("failed to create a virtio-fs queue eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    #[error("virtio-fs share: {0}")]
    Share(#[from] cowfs::CowfsError),
}

#[cfg(test)]
mod tests;
