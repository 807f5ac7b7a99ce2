//! virtio-rng (virtio 1.2, 5.4): one request queue whose device-writable
//! buffers the device fills with bytes from the host's getrandom(2).

mod device;
mod event_handler;

pub use device::Rng;

/// Maximum size of the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Bytes written into one descriptor chain at most, however large its
/// buffers: bounds the work and the host buffer a single request can cost.
pub const MAX_BYTES_PER_CHAIN: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RngError {
    #[error("failed to create the virtio-rng queue eventfd: {0}")]
    EventFd(#[source] std::io::Error),
}

#[cfg(test)]
mod tests;
