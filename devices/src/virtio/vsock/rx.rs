//! The rx queue: what the connections have for the guest, into the
//! buffers the guest posted.

use std::time::Instant;

use tracing::error;
use virtio_queue::{QueueOwnedT, QueueT};

use super::muxer::CTL_QUEUE_STALL;
use super::packet::HDR_SIZE;
use super::segments::{collect_segments, scatter};
use super::{Vsock, RX_QUEUE, TX_QUEUE};
use crate::virtio::serve;

impl Vsock {
    /// Fills rx buffers with whatever the connections have for the guest
    /// (one queue's worth per call).
    pub fn process_rx(&mut self) {
        let Some(q) = self.state.serving(RX_QUEUE) else {
            return;
        };
        self.muxer.settle(Instant::now());
        let mut budget = q.queue.size();
        let mut used_any = false;
        while self.muxer.has_rx_work() {
            if budget == 0 {
                if let Err(e) = q.evt.write(1) {
                    warn_limited!(error = %e, "virtio-vsock: cannot re-arm the rx eventfd");
                }
                break;
            }
            let Some(chain) = serve::pop_or_listen("virtio-vsock rx", q.queue, q.mem) else {
                break;
            };
            budget -= 1;
            let head = chain.head_index();
            let room = match collect_segments(q.mem, chain, &mut self.segs, true) {
                Some(room) if room >= HDR_SIZE => room - HDR_SIZE,
                bad => {
                    warn_limited!(
                        room = ?bad,
                        "virtio-vsock: rx buffer too small or outside guest memory"
                    );
                    used_any |= serve::add_used("virtio-vsock rx", q.queue, q.mem, head, 0);
                    continue;
                }
            };
            let Some((hdr, len)) = self.muxer.next_rx(room) else {
                // Nothing to send after all: the buffer stays the guest's.
                q.queue.go_to_previous_position();
                break;
            };
            let payload = &self.muxer.scratch[..len];
            let written = scatter(q.mem, &self.segs, &hdr.to_bytes(), payload);
            let used_len = if written {
                (HDR_SIZE + len) as u32
            } else {
                // Validated just above, so this is a VMM bug or a memory
                // hot-unplug; the data is lost and the guest sees a zero
                // length buffer.
                error!("virtio-vsock: cannot write an rx buffer");
                0
            };
            used_any |= serve::add_used("virtio-vsock rx", q.queue, q.mem, head, used_len);
        }
        serve::notify_used(q.queue, q.mem, q.interrupt, used_any);
        if self.tx_stalled && self.muxer.ctl_queue_len() < CTL_QUEUE_STALL {
            self.tx_stalled = false;
            self.state.kick([TX_QUEUE]);
        }
    }
}
