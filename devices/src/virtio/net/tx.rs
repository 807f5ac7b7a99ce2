//! The transmit side of virtio-net: the guest's frames to the backend,
//! one chain per frame, through the shared queue loop ([`serve::drain`]).

use std::io::{self, IoSlice};

use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestMemoryMmap};

use super::device::{userspace_queue, NetStats};
use super::header::{self, TxDrop};
use super::{Net, NetBackend, MAX_DESCS_PER_CHAIN, MAX_FRAME_LEN, TX_QUEUE, VNET_HDR_LEN};
use crate::virtio::serve::{self, ChainServer, Served};

/// Log context of this side.
const DEVICE: &str = "virtio-net tx";

const TX_BUF_LEN: usize = VNET_HDR_LEN + MAX_FRAME_LEN;

pub(super) struct TxState {
    pub(super) buf: Box<[u8]>,
    /// A frame the backend refused with EAGAIN: (head, length in `buf`).
    /// Its chain stays unused and no other is taken until it is written.
    pub(super) pending: Option<(u16, usize)>,
}

impl TxState {
    pub(super) fn new() -> Self {
        Self {
            buf: vec![0; TX_BUF_LEN].into_boxed_slice(),
            pending: None,
        }
    }
}

impl<B: NetBackend> Net<B> {
    /// Sends the guest's frames to the backend, at most a queue's worth of
    /// chains per call. A frame the backend refuses with `WouldBlock` keeps
    /// its chain and stops the queue until the backend is writable again.
    /// No-op before activation.
    pub fn process_tx(&mut self) {
        let acked = self.state.acked_features();
        let Some(q) = userspace_queue(&mut self.state, &self.vhost, TX_QUEUE) else {
            return;
        };
        let tx = &mut self.tx;
        let mut used = false;
        if let Some((head, len)) = tx.pending {
            let res = write_frame(&mut self.backend, &tx.buf[..len]);
            if matches!(&res, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                return;
            }
            tx.pending = None;
            account_tx(&mut self.stats, res, len);
            used |= serve::add_used(DEVICE, q.queue, q.mem, head, 0);
        }
        let mut server = TxServer {
            mem: q.mem,
            acked,
            backend: &mut self.backend,
            tx,
            stats: &mut self.stats,
        };
        used |= serve::drain(DEVICE, q.queue, q.mem, q.evt, 1, &mut server);
        serve::notify_used(q.queue, q.mem, q.interrupt, used);
    }
}

/// The transmit queue's chains, each one frame for the backend.
struct TxServer<'a, B> {
    mem: &'a GuestMemoryMmap,
    acked: u64,
    backend: &'a mut B,
    tx: &'a mut TxState,
    stats: &'a mut NetStats,
}

impl<B: NetBackend> ChainServer for TxServer<'_, B> {
    fn serve(&mut self, chain: DescriptorChain<&GuestMemoryMmap>) -> Served {
        let head = chain.head_index();
        let tx = &mut *self.tx;
        let frame = gather_tx(self.mem, chain, &mut tx.buf)
            .and_then(|len| header::check_tx(&mut tx.buf[..len], self.acked).map(|()| len));
        match frame {
            Ok(len) => {
                let res = write_frame(self.backend, &tx.buf[..len]);
                if matches!(&res, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                    // Written when the backend is writable again.
                    tx.pending = Some((head, len));
                    return Served::Keep;
                }
                account_tx(self.stats, res, len);
            }
            Err(reason) => {
                self.stats.tx_dropped += 1;
                warn_limited!(head, %reason, "virtio-net: transmit chain dropped");
            }
        }
        Served::Used(0)
    }
}

/// Gathers a transmit chain (header + frame) into `buf`. Zero-length
/// buffers are skipped (they may point anywhere); anything else that does
/// not fit the rules drops the chain.
fn gather_tx(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    buf: &mut [u8],
) -> Result<usize, TxDrop> {
    let mut len = 0usize;
    for (i, desc) in chain.enumerate() {
        if i >= MAX_DESCS_PER_CHAIN {
            return Err(TxDrop::TooManyDescriptors(MAX_DESCS_PER_CHAIN));
        }
        if desc.is_write_only() {
            return Err(TxDrop::WritableDescriptor);
        }
        let n = desc.len() as usize;
        if n == 0 {
            continue;
        }
        let dst = len
            .checked_add(n)
            .and_then(|end| buf.get_mut(len..end))
            .ok_or(TxDrop::TooLong)?;
        mem.read_slice(dst, desc.addr())
            .map_err(|_| TxDrop::OutsideMemory {
                addr: desc.addr().0,
                len: desc.len(),
            })?;
        len += n;
    }
    Ok(len)
}

/// One frame to the backend: the header and the Ethernet frame as two
/// iovecs of one writev.
fn write_frame<B: NetBackend>(backend: &mut B, frame: &[u8]) -> io::Result<usize> {
    let (hdr, body) = frame.split_at(VNET_HDR_LEN);
    backend.write_frame(&[IoSlice::new(hdr), IoSlice::new(body)])
}

fn account_tx(stats: &mut NetStats, res: io::Result<usize>, len: usize) {
    match res {
        Ok(_) => {
            stats.tx_frames += 1;
            stats.tx_bytes += (len - VNET_HDR_LEN) as u64;
        }
        Err(e) => {
            stats.tx_dropped += 1;
            warn_limited!(error = %e, "virtio-net: backend refused a frame; dropped");
        }
    }
}
