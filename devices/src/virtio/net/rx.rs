//! The receive side of virtio-net: frames from the backend into the
//! guest's receive buffers, one frame across several chains with
//! MRG_RXBUF.

use std::collections::VecDeque;
use std::io;

use virtio_bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF;
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::device::{userspace_queue, NetStats};
use super::header;
use super::{Net, NetBackend, MAX_DESCS_PER_CHAIN, MAX_FRAME_LEN, RX_QUEUE, VNET_HDR_LEN};
use crate::virtio::serve::{self, needs_interrupt_since, publish_used};

/// Log context of this side.
const DEVICE: &str = "virtio-net rx";

/// Receive descriptors remembered per chain at most: the rest of a longer
/// chain goes unused. Bounds what held chains cost (see [`RxState::held`]).
const MAX_RX_DESCS_PER_CHAIN: usize = 64;
/// Read buffer: one byte more than the largest frame, so a read that fills
/// it was truncated by the tap.
const RX_BUF_LEN: usize = VNET_HDR_LEN + MAX_FRAME_LEN + 1;

/// A receive chain popped from the queue and not yet used.
struct RxChain {
    head: u16,
    capacity: usize,
    descs: Vec<(GuestAddress, u32)>,
}

pub(super) struct RxState {
    /// The frame read from the backend, header first.
    buf: Box<[u8]>,
    /// Length of the frame in `buf` not yet given to the guest: at most one.
    pub(super) pending: Option<usize>,
    /// Chains taken from the queue for the pending or next frame. At most a
    /// queue's worth (`QUEUE_SIZE` * `MAX_RX_DESCS_PER_CHAIN` descriptors).
    held: VecDeque<RxChain>,
    held_capacity: usize,
    /// Descriptor vectors of used chains, reused for the next ones.
    spare: Vec<Vec<(GuestAddress, u32)>>,
    /// The guest has no room (or the backend failed): do not poll the
    /// backend until the guest notifies the receive queue.
    pub(super) blocked: bool,
    /// Chains popped, ever; tells whether a re-check made progress.
    popped: u64,
    /// (head, length) of the chains one frame fills, published together.
    batch: Vec<(u16, u32)>,
}

impl RxState {
    pub(super) fn new() -> Self {
        Self {
            buf: vec![0; RX_BUF_LEN].into_boxed_slice(),
            pending: None,
            held: VecDeque::new(),
            held_capacity: 0,
            spare: Vec::new(),
            blocked: false,
            popped: 0,
            batch: Vec::new(),
        }
    }

    pub(super) fn reset(&mut self) {
        self.pending = None;
        while let Some(chain) = self.held.pop_front() {
            self.spare.push(chain.descs);
        }
        self.held_capacity = 0;
        self.blocked = false;
    }
}

/// What happened to the pending receive frame.
enum Delivery {
    Delivered,
    Dropped,
    /// Not enough room in the guest yet.
    NeedBuffers,
    /// This event's chain budget ran out.
    OutOfBudget,
}

/// Whether popping found a usable receive chain.
enum Pop {
    Got,
    Empty,
    OutOfBudget,
}

impl<B: NetBackend> Net<B> {
    #[cfg(test)]
    pub(in crate::virtio::net) fn rx_pending(&self) -> Option<usize> {
        self.rx.pending
    }

    #[cfg(test)]
    pub(in crate::virtio::net) fn rx_held(&self) -> usize {
        self.rx.held.len()
    }

    #[cfg(test)]
    pub(in crate::virtio::net) fn rx_blocked(&self) -> bool {
        self.rx.blocked
    }

    /// Moves frames from the backend into the guest's receive buffers while
    /// both have some, at most a queue's worth of frames per call. Reads a
    /// frame only when the guest has posted a buffer; when the guest runs
    /// out, asks to be notified and marks the receive side blocked (the
    /// event loop then stops polling the backend). No-op before activation.
    pub fn process_rx(&mut self) {
        let acked = self.state.acked_features();
        let Some(q) = userspace_queue(&mut self.state, &self.vhost, RX_QUEUE) else {
            return;
        };
        let rx = &mut self.rx;
        let stats = &mut self.stats;
        let mergeable = acked & (1 << VIRTIO_NET_F_MRG_RXBUF) != 0;
        rx.blocked = false;
        if let Err(e) = q.queue.disable_notification(q.mem) {
            warn_limited!(error = %e, "virtio-net: cannot disable rx notifications");
        }
        let used_before = q.queue.next_used();
        let mut frames = usize::from(q.queue.size());
        let mut chains = 8 * usize::from(q.queue.size());
        let mut used = false;
        // Chains popped when enable_notification last reported more work:
        // the next look must find some, or the avail index is lying.
        let mut recheck_mark: Option<u64> = None;
        loop {
            let outcome = if rx.pending.is_none() {
                // A buffer first, then a frame: a guest that posts none
                // makes us read nothing.
                let have = if rx.held.is_empty() {
                    pop_rx_chain(rx, q.queue, q.mem, &mut chains, &mut used, stats)
                } else {
                    Pop::Got
                };
                match have {
                    Pop::Got => {}
                    Pop::Empty => {
                        if !need_buffers(rx, q.queue, q.mem, &mut recheck_mark) {
                            break;
                        }
                        continue;
                    }
                    Pop::OutOfBudget => {
                        requeue(q.evt);
                        break;
                    }
                }
                if frames == 0 {
                    // More frames wait on the fd, still readable: the event
                    // loop comes back after everyone else had a turn.
                    break;
                }
                frames -= 1;
                match self.backend.read_frame(&mut rx.buf) {
                    Ok(n) => match header::prepare_rx(&mut rx.buf[..n], acked, 1) {
                        Ok(()) => rx.pending = Some(n),
                        Err(e) => {
                            stats.rx_dropped += 1;
                            warn_limited!(reason = %e, "virtio-net: received frame dropped");
                        }
                    },
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // Not the guest's doing, but each of its rx
                        // notifications retries: rate-limited. Stop polling
                        // until then instead of spinning.
                        warn_limited!(error = %e, "virtio-net: backend read failed");
                        rx.blocked = true;
                        break;
                    }
                }
                continue;
            } else {
                deliver(rx, q.queue, q.mem, mergeable, &mut chains, &mut used, stats)
            };
            match outcome {
                Delivery::Delivered | Delivery::Dropped => rx.pending = None,
                Delivery::NeedBuffers => {
                    if !need_buffers(rx, q.queue, q.mem, &mut recheck_mark) {
                        break;
                    }
                }
                Delivery::OutOfBudget => {
                    requeue(q.evt);
                    break;
                }
            }
        }
        if used && needs_interrupt_since(q.queue, q.mem, used_before) {
            q.interrupt.signal_used_queue();
        }
    }
}

/// Makes the event loop come back to a queue whose budget ran out, after
/// everyone else had a turn.
fn requeue(evt: &EventFd) {
    if let Err(e) = evt.write(1) {
        warn_limited!(error = %e, "virtio-net: cannot re-arm a queue eventfd");
    }
}

/// The receive side ran out of guest buffers: asks the guest to notify
/// when it posts more. Returns true if it already has (look again), false
/// if the device must wait (blocked).
fn need_buffers(
    rx: &mut RxState,
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    recheck_mark: &mut Option<u64>,
) -> bool {
    if *recheck_mark == Some(rx.popped) {
        warn_limited!("virtio-net: rx available ring index runs ahead of its entries");
        rx.blocked = true;
        return false;
    }
    match queue.enable_notification(mem) {
        Ok(true) => {
            *recheck_mark = Some(rx.popped);
            if let Err(e) = queue.disable_notification(mem) {
                warn_limited!(error = %e, "virtio-net: cannot disable rx notifications");
            }
            true
        }
        Ok(false) => {
            rx.blocked = true;
            false
        }
        Err(e) => {
            warn_limited!(error = %e, "virtio-net: cannot enable rx notifications");
            rx.blocked = true;
            false
        }
    }
}

/// Pops receive chains until one is usable and holds it. Malformed chains
/// are returned to the guest unused (length 0) on the way.
fn pop_rx_chain(
    rx: &mut RxState,
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    budget: &mut usize,
    used: &mut bool,
    stats: &mut NetStats,
) -> Pop {
    loop {
        if *budget == 0 {
            return Pop::OutOfBudget;
        }
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            return Pop::Empty;
        };
        *budget -= 1;
        rx.popped += 1;
        let head = chain.head_index();
        let mut descs = rx.spare.pop().unwrap_or_default();
        descs.clear();
        match parse_rx_chain(mem, chain, &mut descs) {
            Ok(capacity) if capacity >= VNET_HDR_LEN => {
                rx.held_capacity += capacity;
                rx.held.push_back(RxChain {
                    head,
                    capacity,
                    descs,
                });
                return Pop::Got;
            }
            res => {
                rx.spare.push(descs);
                stats.rx_bad_buffers += 1;
                match res {
                    Err((addr, len)) => warn_limited!(
                        head,
                        addr,
                        len,
                        "virtio-net: receive buffer outside guest memory returned unused"
                    ),
                    Ok(capacity) => warn_limited!(
                        head,
                        capacity,
                        "virtio-net: receive chain smaller than a header returned unused"
                    ),
                }
                *used |= serve::add_used(DEVICE, queue, mem, head, 0);
            }
        }
    }
}

/// Collects the device-writable buffers of a receive chain into `descs`
/// and returns their total length; readable descriptors are skipped.
/// Stops early once the chain could hold the largest frame or after
/// `MAX_RX_DESCS_PER_CHAIN` buffers. A buffer outside guest memory spoils
/// the chain: `Err((addr, len))`.
fn parse_rx_chain(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    descs: &mut Vec<(GuestAddress, u32)>,
) -> Result<usize, (u64, u32)> {
    let mut capacity = 0usize;
    for (i, desc) in chain.enumerate() {
        if i >= MAX_DESCS_PER_CHAIN
            || descs.len() >= MAX_RX_DESCS_PER_CHAIN
            || capacity >= VNET_HDR_LEN + MAX_FRAME_LEN
        {
            break;
        }
        let len = desc.len();
        if !desc.is_write_only() || len == 0 {
            continue;
        }
        if !GuestMemoryBackend::check_range(mem, desc.addr(), len as usize) {
            return Err((desc.addr().0, len));
        }
        descs.push((desc.addr(), len));
        capacity += len as usize;
    }
    Ok(capacity)
}

/// Copies the pending frame into held chains: one chain without
/// MRG_RXBUF, as many as it takes with it (num_buffers says how many).
fn deliver(
    rx: &mut RxState,
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    mergeable: bool,
    budget: &mut usize,
    used: &mut bool,
    stats: &mut NetStats,
) -> Delivery {
    let Some(len) = rx.pending else {
        return Delivery::Delivered;
    };
    // Chains needed, with the capacity of the last one counted in full.
    let count = if mergeable {
        loop {
            if rx.held_capacity >= len {
                break;
            }
            if rx.held.len() >= usize::from(queue.size()) {
                // Every buffer the ring can hold is ours and still too
                // small: more will never come.
                return drop_frame(rx, stats, len);
            }
            match pop_rx_chain(rx, queue, mem, budget, used, stats) {
                Pop::Got => {}
                Pop::Empty => return Delivery::NeedBuffers,
                Pop::OutOfBudget => return Delivery::OutOfBudget,
            }
        }
        let mut room = 0;
        rx.held
            .iter()
            .take_while(|c| {
                let before = room;
                room += c.capacity;
                before < len
            })
            .count()
    } else {
        if rx.held.is_empty() {
            match pop_rx_chain(rx, queue, mem, budget, used, stats) {
                Pop::Got => {}
                Pop::Empty => return Delivery::NeedBuffers,
                Pop::OutOfBudget => return Delivery::OutOfBudget,
            }
        }
        if rx.held[0].capacity < len {
            return drop_frame(rx, stats, len);
        }
        1
    };
    // At most QUEUE_SIZE chains are held.
    let num_buffers = u16::try_from(count).unwrap_or(u16::MAX);
    header::set_num_buffers(&mut rx.buf[..len], num_buffers);
    let mut offset = 0;
    rx.batch.clear();
    for _ in 0..count {
        let Some(chain) = rx.held.pop_front() else {
            break;
        };
        rx.held_capacity -= chain.capacity;
        let written = write_chain(mem, &chain.descs, &rx.buf[offset..len]);
        offset += written;
        // written <= capacity of one chain, which fits in u32 buffers.
        rx.batch
            .push((chain.head, u32::try_from(written).unwrap_or(u32::MAX)));
        rx.spare.push(chain.descs);
    }
    *used |= publish_used(DEVICE, queue, mem, &rx.batch);
    stats.rx_frames += 1;
    stats.rx_bytes += (len - VNET_HDR_LEN) as u64;
    Delivery::Delivered
}

fn drop_frame(rx: &RxState, stats: &mut NetStats, len: usize) -> Delivery {
    stats.rx_dropped += 1;
    warn_limited!(
        frame = len,
        room = rx.held_capacity,
        first_buffer = rx.held.front().map_or(0, |c| c.capacity),
        "virtio-net: received frame larger than the guest's buffers dropped"
    );
    Delivery::Dropped
}

/// Writes `data` across the buffers in order; returns the bytes written.
fn write_chain(mem: &GuestMemoryMmap, descs: &[(GuestAddress, u32)], data: &[u8]) -> usize {
    let mut off = 0;
    for &(addr, len) in descs {
        if off == data.len() {
            break;
        }
        let n = (len as usize).min(data.len() - off);
        if let Err(e) = mem.write_slice(&data[off..off + n], addr) {
            warn_limited!(addr = addr.0, error = %e, "virtio-net: cannot write receive buffer");
            break;
        }
        off += n;
    }
    off
}
