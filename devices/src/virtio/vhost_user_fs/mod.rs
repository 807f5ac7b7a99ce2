//! vhost-user-fs: a virtio-fs device whose requests are served by an
//! external vhost-user backend (the reference one is `virtiofsd`) instead of
//! our own FUSE server. The VMM keeps the transport, the config space (the
//! tag) and the interrupts; the backend maps guest memory (so guest RAM
//! must be file-backed, e.g. a memfd) and reads and writes the rings itself.
//!
//! Set-up follows the vhost-user protocol: at construction SET_OWNER,
//! GET_FEATURES and the protocol features (MQ to check the queue count,
//! REPLY_ACK when offered); at activation SET_FEATURES, SET_MEM_TABLE with
//! each region's fd, and per queue SET_VRING_NUM/ADDR/BASE/CALL/KICK and
//! SET_VRING_ENABLE. The kick eventfds are the queue eventfds KVM signals
//! (the backend reads them; the event loop must not); the backend's "call"
//! eventfds come back through the event loop, which turns them into
//! virtio-mmio interrupts (InterruptStatus must be set, so a bare irqfd
//! would not do).

mod device;
mod event_handler;

pub use device::VhostUserFs;

/// The default (and largest useful) queue size: virtiofsd's own maximum.
pub const DEFAULT_QUEUE_SIZE: u16 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum VhostUserFsError {
    #[error("virtio-fs tag {0:?} must be 1 to 36 bytes without NUL")]
    Tag(String),
    #[error("queue size {0} must be a power of two from 2 to 32768")]
    QueueSize(u16),
    #[error("cannot connect to the vhost-user socket {0}: {1}")]
    Connect(std::path::PathBuf, #[source] vhost::Error),
    #[error("vhost-user {0} failed: {1}")]
    Protocol(&'static str, #[source] vhost::Error),
    #[error("the vhost-user backend lacks {0}")]
    Missing(&'static str),
    #[error("the vhost-user backend serves {0} queues, virtio-fs needs 2")]
    Queues(u64),
    #[error("failed to create an eventfd: {0}")]
    EventFd(#[source] std::io::Error),
}

#[cfg(test)]
mod tests;
