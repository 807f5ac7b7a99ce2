//! virtio-vsock (virtio 1.2, 5.10), host side on Unix sockets, with
//! Firecracker's conventions:
//! - a host process connects to the device's socket, writes
//!   `CONNECT <port>\n` and, once the guest accepts, reads `OK <local port>\n`
//!   and then talks to the guest's `port` over the same stream;
//! - a guest connecting to host CID 2, port `P` reaches whatever listens on
//!   the Unix socket `<uds_path>_<P>`; nobody there means RST.
//!
//! Only stream sockets are offered. The guest is untrusted: every header
//! field is checked, and host memory per connection and the number of
//! connections are bounded (see the constants below).

mod connection;
mod device;
mod event_handler;
mod muxer;
pub mod packet;
mod rx;
mod segments;
mod tx;

use std::path::PathBuf;
use std::time::Duration;

pub use device::Vsock;

/// Maximum size of each of the three queues.
pub const QUEUE_SIZE: u16 = 256;
/// Queue indices.
pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;
pub const EVENT_QUEUE: usize = 2;

/// The host's well-known CID (VMADDR_CID_HOST).
pub const HOST_CID: u64 = 2;
/// Largest payload in one packet, either way (Linux's
/// VIRTIO_VSOCK_MAX_PKT_BUF_SIZE): bounds what one tx packet costs us.
pub const MAX_PKT_PAYLOAD: usize = 64 * 1024;
/// Receive buffer the device advertises per connection (buf_alloc): the most
/// guest data it ever holds for a host peer that is slow to read.
pub const CONN_BUF_SIZE: u32 = 256 * 1024;
/// Live connections at most (both directions together); more are refused.
pub const MAX_CONNECTIONS: usize = 256;
/// Accepted host sockets still waiting for their `CONNECT` line.
pub const MAX_PENDING_HANDSHAKES: usize = 32;
/// `CONNECT 4294967295\n` is 19 bytes; anything longer is not a request.
pub const MAX_CONNECT_LINE: usize = 32;
/// First local port handed out to host-initiated connections, as
/// Firecracker does: far above anything a guest service listens on.
pub const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// How long the device waits for its peers before giving up.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// For the guest's answer to a REQUEST.
    pub connect: Duration,
    /// For a RST once neither direction can carry data any more.
    pub close: Duration,
    /// For a host process to send its `CONNECT` line.
    pub handshake: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            close: Duration::from_secs(2),
            handshake: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("guest CID {0} is reserved or out of range (valid: 3..=4294967294)")]
    InvalidCid(u64),
    #[error("{}: exists and is not a Unix socket", .0.display())]
    NotASocket(PathBuf),
    #[error("cannot inspect {}: {source}", path.display())]
    Stat {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove stale socket {}: {source}", path.display())]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {}: {source}", path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to create a virtio-vsock eventfd or timerfd: {0}")]
    EventFd(#[source] std::io::Error),
}

#[cfg(test)]
mod tests;
