//! What the device needs from the host side of the link, and an in-memory
//! implementation for tests and fuzzing.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// The host end of a virtio-net device: a tap in production. Frames in both
/// directions start with a 12-byte `virtio_net_hdr_v1`.
///
/// The fd is watched by the event loop: readable means a frame is waiting,
/// writable means [`write_frame`](Self::write_frame) may succeed again after
/// `WouldBlock`.
pub trait NetBackend: AsRawFd + Send {
    /// Reads one frame (header first) into `buf`, returning its length.
    /// Non-blocking: `WouldBlock` when none is waiting. A frame longer than
    /// `buf` is truncated to `buf.len()`.
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// Writes one frame (header first) gathered from `bufs`, all or nothing.
    /// `WouldBlock` means "try again when the fd is writable".
    fn write_frame(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// The offloads (`TUN_F_*` bits) the guest accepts in received frames.
    fn set_offload(&mut self, flags: u32) -> io::Result<()>;

    /// The tap to hand to vhost-net, for backends that are one.
    #[doc(hidden)]
    fn vhost_tap(&self) -> Option<&std::fs::File> {
        None
    }
}

/// A backend made of two frame queues, for tests and fuzzing: frames pushed
/// with [`push_rx`](Self::push_rx) are what the guest receives, frames the
/// guest sends land in [`tx`](Self::tx). Its fd is an eventfd that is
/// readable while rx frames are queued and always writable.
pub struct MemBackend {
    /// Frames waiting for the guest (header included).
    pub rx: VecDeque<Vec<u8>>,
    /// Frames the guest sent (header included), oldest first.
    pub tx: Vec<Vec<u8>>,
    /// Keep at most this many frames in `tx`, dropping the oldest.
    pub tx_limit: usize,
    /// While set, writes fail with `WouldBlock` and are not recorded.
    pub tx_would_block: bool,
    /// The last offload flags set by the device.
    pub offload: u32,
    /// How many times the device called `read_frame`.
    pub reads: u64,
    readable: EventFd,
}

impl MemBackend {
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            rx: VecDeque::new(),
            tx: Vec::new(),
            tx_limit: 1024,
            tx_would_block: false,
            offload: 0,
            reads: 0,
            readable: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// Queues a frame (header included) for the guest and makes the fd
    /// readable.
    pub fn push_rx(&mut self, frame: Vec<u8>) {
        self.rx.push_back(frame);
        // A full counter only means the fd is already readable.
        let _ = self.readable.write(1);
    }
}

impl AsRawFd for MemBackend {
    fn as_raw_fd(&self) -> RawFd {
        self.readable.as_raw_fd()
    }
}

impl NetBackend for MemBackend {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads += 1;
        let Some(frame) = self.rx.pop_front() else {
            let _ = self.readable.read();
            return Err(io::ErrorKind::WouldBlock.into());
        };
        if self.rx.is_empty() {
            let _ = self.readable.read();
        }
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        Ok(n)
    }

    fn write_frame(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.tx_would_block {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let frame: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        let n = frame.len();
        if self.tx.len() >= self.tx_limit.max(1) {
            self.tx.remove(0);
        }
        self.tx.push(frame);
        Ok(n)
    }

    fn set_offload(&mut self, flags: u32) -> io::Result<()> {
        self.offload = flags;
        Ok(())
    }
}
