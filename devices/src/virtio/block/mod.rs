//! virtio-blk (virtio 1.2, 5.2) over a raw image file: one request queue;
//! IN, OUT, FLUSH, GET_ID, DISCARD and WRITE_ZEROES.
//!
//! Offered: VERSION_1, RING_EVENT_IDX, SEG_MAX, SIZE_MAX, BLK_SIZE, FLUSH,
//! and either RO (a read-only volume) or DISCARD + WRITE_ZEROES. FLUSH is
//! `fdatasync` of the image; DISCARD and WRITE_ZEROES punch holes, so the
//! image stays sparse.
//!
//! Bounds a guest cannot push: the capacity is the image's size when the
//! device is built, and every request's sector range is checked against it
//! (overflow-safe), so the image never grows; one request carries at most
//! [`MAX_REQUEST_BYTES`] of data (what SEG_MAX x SIZE_MAX lets Linux build)
//! and is copied through one fixed [`CHUNK`]-byte buffer, so serving costs
//! no host memory beyond it; DISCARD and WRITE_ZEROES take at most
//! [`MAX_DISCARD_SEGMENTS`] segments. Malformed chains (no status byte,
//! buffers outside guest memory, a short header, data not in whole
//! sectors) are answered IOERR when they have a status byte, and returned
//! with nothing written when they do not; nothing a guest sends panics.
//!
//! The image is `flock`ed while the device lives (exclusive when
//! writable, shared when read-only): two VMMs never write one image.

mod device;
mod event_handler;
mod request;

pub use device::Block;
pub use request::{RequestType, Status};

/// Maximum size of the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Bytes per sector: the unit of every offset and length the guest uses.
pub const SECTOR_SIZE: u64 = 512;
/// The largest data segment (one descriptor) offered to the driver
/// (VIRTIO_BLK_F_SIZE_MAX).
pub const SIZE_MAX: u32 = 128 * 1024;
/// The most data segments per request offered to the driver
/// (VIRTIO_BLK_F_SEG_MAX): the queue less the header and status.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Data bytes one request may move at most; larger requests get IOERR.
pub const MAX_REQUEST_BYTES: u64 = SIZE_MAX as u64 * SEG_MAX as u64;
/// The copy buffer between guest memory and the image.
pub const CHUNK: usize = 64 * 1024;
/// Segments one DISCARD / WRITE_ZEROES request may carry.
pub const MAX_DISCARD_SEGMENTS: u32 = 32;
/// Sectors one DISCARD / WRITE_ZEROES segment may cover (1 GiB).
pub const MAX_DISCARD_SECTORS: u32 = (1 << 30) / SECTOR_SIZE as u32;
/// Length of the GET_ID answer (VIRTIO_BLK_ID_BYTES).
pub const ID_BYTES: usize = 20;

/// Feature bits of virtio-blk (virtio 1.2, 5.2.3).
pub mod features {
    pub const SIZE_MAX: u32 = 1;
    pub const SEG_MAX: u32 = 2;
    pub const RO: u32 = 5;
    pub const BLK_SIZE: u32 = 6;
    pub const FLUSH: u32 = 9;
    pub const DISCARD: u32 = 13;
    pub const WRITE_ZEROES: u32 = 14;
}

/// Why a virtio-blk device could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("failed to create the virtio-blk queue eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    #[error("cannot open the image {path}: {source}")]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the size of the image: {0}")]
    Size(#[source] std::io::Error),
    #[error(
        "the image is {0} bytes: a block device needs a non-empty whole number of 512-byte sectors"
    )]
    BadSize(u64),
    #[error("the image is in use by another VM (it holds its lock)")]
    Locked,
    #[error("cannot lock the image: {0}")]
    Lock(#[source] std::io::Error),
    #[error("block device id '{0}' is longer than 20 bytes")]
    IdTooLong(String),
}

#[cfg(test)]
mod tests;
