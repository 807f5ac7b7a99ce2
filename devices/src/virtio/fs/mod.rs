//! virtio-fs (virtio 1.2, 5.11): the guest's FUSE requests over virtqueues,
//! answered by our own server ([`cowfs`]) over copy-on-write directory
//! layers.
//!
//! Queue 0 is the high-priority queue (FORGET, BATCH_FORGET, INTERRUPT),
//! queues 1.. are request queues (one here). Each descriptor chain is a
//! device-readable part (`fuse_in_header` + arguments), then a
//! device-writable part for the reply. Requests are served on the event
//! loop, synchronously.

mod device;
mod event_handler;

pub use cowfs;
pub use cowfs::{Limits, ShareConfig, ShareMode};
pub use device::Fs;

/// Maximum size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// High-priority queue + one request queue.
pub const NUM_QUEUES: usize = 2;
/// Request queues announced in the config space.
pub const NUM_REQUEST_QUEUES: u32 = 1;
/// Length of the tag field of the config space.
pub const TAG_LEN: usize = 36;
/// Bytes gathered from one chain's readable part at most (a maximal WRITE
/// plus headers); longer requests are cut there and answered with EINVAL.
pub const MAX_REQUEST: usize = cowfs::Server::max_request_len();
/// Reply bytes written into one chain at most.
pub const MAX_REPLY: usize = cowfs::Server::max_request_len();

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
