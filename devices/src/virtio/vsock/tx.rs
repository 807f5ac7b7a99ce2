//! The tx queue: the guest's packets, one chain each, to the muxer,
//! through the shared queue loop ([`serve::drain`]).

use virtio_queue::DescriptorChain;
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::muxer::{Muxer, CTL_QUEUE_STALL};
use super::packet::{Header, HDR_SIZE};
use super::segments::{collect_segments, gather};
use super::{Vsock, MAX_PKT_PAYLOAD, TX_QUEUE};
use crate::virtio::serve;

impl Vsock {
    /// Handles everything in the tx queue (one queue's worth per call).
    pub fn process_tx(&mut self) {
        let Some(q) = self.state.serving(TX_QUEUE) else {
            return;
        };
        let mut server = TxServer {
            mem: q.mem,
            guest_cid: self.guest_cid,
            muxer: &mut self.muxer,
            segs: &mut self.segs,
            scratch: &mut self.tx_scratch,
            stalled: &mut self.tx_stalled,
        };
        let used_any = serve::drain("virtio-vsock tx", q.queue, q.mem, q.evt, 1, &mut server);
        serve::notify_used(q.queue, q.mem, q.interrupt, used_any);
    }
}

/// The tx queue's chains, each one packet for the muxer.
struct TxServer<'a> {
    mem: &'a GuestMemoryMmap,
    guest_cid: u64,
    muxer: &'a mut Muxer,
    segs: &'a mut Vec<(GuestAddress, usize)>,
    scratch: &'a mut [u8],
    stalled: &'a mut bool,
}

impl serve::ChainServer for TxServer<'_> {
    fn ready(&mut self) -> bool {
        if self.muxer.ctl_queue_len() >= CTL_QUEUE_STALL {
            // The guest is not taking our replies; come back when it
            // does (process_rx re-kicks tx).
            *self.stalled = true;
            return false;
        }
        true
    }

    fn serve(&mut self, chain: DescriptorChain<&GuestMemoryMmap>) -> serve::Served {
        match read_tx_packet(self.mem, chain, self.segs, self.scratch) {
            Ok((hdr, len)) => {
                if hdr.src_cid != self.guest_cid {
                    warn_limited!(
                        src_cid = hdr.src_cid,
                        guest_cid = self.guest_cid,
                        "virtio-vsock: packet with a spoofed source CID dropped"
                    );
                } else {
                    self.muxer.on_guest_packet(&hdr, &self.scratch[..len]);
                }
            }
            Err(TxError::Malformed(hdr)) => {
                if hdr.src_cid != self.guest_cid {
                    warn_limited!(
                        src_cid = hdr.src_cid,
                        "virtio-vsock: malformed packet with a spoofed source CID dropped"
                    );
                } else {
                    warn_limited!(
                        len = hdr.len,
                        op = hdr.op,
                        "virtio-vsock: packet length does not match its buffer"
                    );
                    self.muxer.on_malformed(&hdr);
                }
            }
            Err(TxError::Unreadable) => {
                warn_limited!("virtio-vsock: tx chain without a readable header dropped");
            }
        }
        // The device only reads tx buffers.
        serve::Served::Used(0)
    }
}

enum TxError {
    /// No complete header in readable guest memory.
    Unreadable,
    /// A header whose `len` is too large or larger than the buffer.
    Malformed(Header),
}

/// Reads one guest packet: the header, and for any op the `len` payload
/// bytes that must follow it (into `scratch`). Returns the header and the
/// payload length.
fn read_tx_packet(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    segs: &mut Vec<(GuestAddress, usize)>,
    scratch: &mut [u8],
) -> Result<(Header, usize), TxError> {
    let total = collect_segments(mem, chain, segs, false).ok_or(TxError::Unreadable)?;
    if total < HDR_SIZE {
        return Err(TxError::Unreadable);
    }
    let mut raw = [0u8; HDR_SIZE];
    if !gather(mem, segs, 0, &mut raw) {
        return Err(TxError::Unreadable);
    }
    let hdr = Header::parse(&raw);
    let len = hdr.len as usize;
    if len > MAX_PKT_PAYLOAD || len > total - HDR_SIZE || len > scratch.len() {
        return Err(TxError::Malformed(hdr));
    }
    if !gather(mem, segs, HDR_SIZE, &mut scratch[..len]) {
        return Err(TxError::Unreadable);
    }
    Ok((hdr, len))
}
