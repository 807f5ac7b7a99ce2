use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use event_manager::EventSet;
use tracing::debug;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::header::{self, TxDrop};
use super::vhost::{self, Vhost};
use super::{
    format_mac, NetBackend, NetError, Tap, MAX_DESCS_PER_CHAIN, MAX_FRAME_LEN, QUEUE_SIZE,
    RX_QUEUE, TX_QUEUE, VNET_HDR_LEN,
};
use crate::virtio::features::{
    VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};
use crate::virtio::{ActivateError, Activated, Interrupt, VirtioDevice, VirtioState, TYPE_NET};

/// Receive descriptors remembered per chain at most: the rest of a longer
/// chain goes unused. Bounds what held chains cost (see [`RxState::held`]).
const MAX_RX_DESCS_PER_CHAIN: usize = 64;
/// Read buffer: one byte more than the largest frame, so a read that fills
/// it was truncated by the tap.
const RX_BUF_LEN: usize = VNET_HDR_LEN + MAX_FRAME_LEN + 1;
const TX_BUF_LEN: usize = VNET_HDR_LEN + MAX_FRAME_LEN;

/// Frame and byte counters since the device was built.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NetStats {
    /// Frames given to the guest, and their bytes (headers excluded).
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// Frames from the backend that never reached the guest (too large for
    /// its buffers, or a header it did not negotiate).
    pub rx_dropped: u64,
    /// Receive chains returned unused because they were malformed.
    pub rx_bad_buffers: u64,
    /// Frames the guest sent that the backend took, and their bytes.
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Transmit chains dropped: malformed, or refused by the backend.
    pub tx_dropped: u64,
}

/// A receive chain popped from the queue and not yet used.
struct RxChain {
    head: u16,
    capacity: usize,
    descs: Vec<(GuestAddress, u32)>,
}

struct RxState {
    /// The frame read from the backend, header first.
    buf: Box<[u8]>,
    /// Length of the frame in `buf` not yet given to the guest: at most one.
    pending: Option<usize>,
    /// Chains taken from the queue for the pending or next frame. At most a
    /// queue's worth (`QUEUE_SIZE` * `MAX_RX_DESCS_PER_CHAIN` descriptors).
    held: VecDeque<RxChain>,
    held_capacity: usize,
    /// Descriptor vectors of used chains, reused for the next ones.
    spare: Vec<Vec<(GuestAddress, u32)>>,
    /// The guest has no room (or the backend failed): do not poll the
    /// backend until the guest notifies the receive queue.
    blocked: bool,
    /// Chains popped, ever; tells whether a re-check made progress.
    popped: u64,
    /// (head, length) of the chains one frame fills, published together.
    batch: Vec<(u16, u32)>,
}

impl RxState {
    fn new() -> Self {
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

    fn reset(&mut self) {
        self.pending = None;
        while let Some(chain) = self.held.pop_front() {
            self.spare.push(chain.descs);
        }
        self.held_capacity = 0;
        self.blocked = false;
    }
}

struct TxState {
    buf: Box<[u8]>,
    /// A frame the backend refused with EAGAIN: (head, length in `buf`).
    /// Its chain stays unused and no other is taken until it is written.
    pending: Option<(u16, usize)>,
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

/// A virtio network device on a tap (or any [`NetBackend`]).
pub struct Net<B: NetBackend = Tap> {
    backend: B,
    mac: [u8; 6],
    link_up: bool,
    state: VirtioState,
    rx: RxState,
    tx: TxState,
    stats: NetStats,
    /// What the event loop watches the backend fd for; `None` when it is
    /// not watched (registration failed, the fd reported an error, or
    /// vhost-net owns it).
    pub(super) backend_interest: Option<EventSet>,
    /// vhost-net, when it was asked for and the kernel has it: the frames
    /// then never pass through the VMM.
    vhost: Option<Vhost>,
}

impl Net<Tap> {
    /// Opens the tap `tap_name` (see [`Tap::open`]) and builds a device
    /// with MAC address `mac` around it.
    pub fn new(tap_name: &str, mac: [u8; 6]) -> Result<Self, NetError> {
        Self::with_tap(Tap::open(tap_name)?, mac)
    }

    /// Builds a device around an already open tap.
    pub fn with_tap(tap: Tap, mac: [u8; 6]) -> Result<Self, NetError> {
        Self::with_backend(tap, mac)
    }

    /// Like [`new`](Self::new), with the data path in the kernel's
    /// vhost-net when /dev/vhost-net can be used; otherwise (no module, no
    /// permission) the ordinary userspace path, with a log line saying why.
    /// [`is_vhost`](Net::is_vhost) tells which one was taken.
    pub fn new_vhost(tap_name: &str, mac: [u8; 6]) -> Result<Self, NetError> {
        Self::with_tap_vhost(Tap::open(tap_name)?, mac)
    }

    /// [`new_vhost`](Self::new_vhost) on an already open tap.
    pub fn with_tap_vhost(tap: Tap, mac: [u8; 6]) -> Result<Self, NetError> {
        let mut net = Self::with_tap(tap, mac)?;
        match Vhost::probe() {
            Ok(v) => {
                // Ring features vhost lacks are not offered.
                net.state
                    .restrict_features(!vhost::RING_FEATURES | v.supported);
                net.vhost = Some(v);
                debug!(tap = net.backend.name(), "virtio-net: using vhost-net");
            }
            Err(reason) => tracing::warn!(
                tap = net.backend.name(),
                %reason,
                "virtio-net: vhost-net unavailable, frames go through the VMM"
            ),
        }
        Ok(net)
    }
}

impl<B: NetBackend> Net<B> {
    /// Builds a device around any backend (tests and fuzzing use
    /// [`MemBackend`](super::MemBackend)). `mac` must be a unicast address.
    pub fn with_backend(backend: B, mac: [u8; 6]) -> Result<Self, NetError> {
        if mac[0] & 1 != 0 || mac == [0; 6] {
            return Err(NetError::InvalidMac(format_mac(&mac)));
        }
        let avail_features = (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
            | (1 << VIRTIO_NET_F_MAC)
            | (1 << VIRTIO_NET_F_STATUS)
            | (1 << VIRTIO_NET_F_CSUM)
            | (1 << VIRTIO_NET_F_GUEST_CSUM)
            | (1 << VIRTIO_NET_F_HOST_TSO4)
            | (1 << VIRTIO_NET_F_HOST_TSO6)
            | (1 << VIRTIO_NET_F_GUEST_TSO4)
            | (1 << VIRTIO_NET_F_GUEST_TSO6)
            | (1 << VIRTIO_NET_F_MRG_RXBUF);
        Ok(Self {
            backend,
            mac,
            link_up: true,
            state: VirtioState::new("virtio-net", avail_features, &[QUEUE_SIZE; 2])
                .map_err(NetError::EventFd)?,
            rx: RxState::new(),
            tx: TxState {
                buf: vec![0; TX_BUF_LEN].into_boxed_slice(),
                pending: None,
            },
            stats: NetStats::default(),
            backend_interest: None,
            vhost: None,
        })
    }

    /// Whether the kernel's vhost-net carries the frames.
    pub fn is_vhost(&self) -> bool {
        self.vhost.is_some()
    }

    /// The eventfds vhost-net signals when the guest should be
    /// interrupted (vhost mode only).
    pub(super) fn vhost_call_events(&self) -> Option<&[EventFd; 2]> {
        self.vhost.as_ref().map(|v| &v.call_evts)
    }

    /// Raises the used-buffer interrupt (for vhost's call notifications).
    pub(super) fn signal_used_queue(&self) {
        if let Some(interrupt) = self.state.interrupt() {
            interrupt.signal_used_queue();
        }
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The eventfd the guest's receive-queue notifications arrive on.
    pub fn rx_queue_event(&self) -> &EventFd {
        &self.state.queue_evts[RX_QUEUE]
    }

    /// The eventfd the guest's transmit-queue notifications arrive on.
    pub fn tx_queue_event(&self) -> &EventFd {
        &self.state.queue_evts[TX_QUEUE]
    }

    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// Sets the link status the guest sees (VIRTIO_NET_S_LINK_UP) and tells
    /// a driver that negotiated VIRTIO_NET_F_STATUS.
    pub fn set_link_up(&mut self, up: bool) {
        if self.link_up == up {
            return;
        }
        self.link_up = up;
        if let Some(interrupt) = self.state.interrupt() {
            if self.state.has_feature(VIRTIO_NET_F_STATUS) {
                interrupt.signal_config_change();
            }
        }
    }

    /// What the backend fd should be watched for now: readable while the
    /// guest has room for frames, writable while a frame waits for it.
    pub(super) fn wanted_backend_events(&self) -> EventSet {
        let mut set = EventSet::empty();
        if self.state.is_activated() && self.vhost.is_none() {
            if !self.rx.blocked {
                set |= EventSet::IN;
            }
            if self.tx.pending.is_some() {
                set |= EventSet::OUT;
            }
        }
        set
    }

    #[cfg(test)]
    pub(super) fn rx_pending(&self) -> Option<usize> {
        self.rx.pending
    }

    #[cfg(test)]
    pub(super) fn rx_held(&self) -> usize {
        self.rx.held.len()
    }

    #[cfg(test)]
    pub(super) fn rx_blocked(&self) -> bool {
        self.rx.blocked
    }

    #[cfg(test)]
    pub(super) fn tx_pending(&self) -> bool {
        self.tx.pending.is_some()
    }

    /// Moves frames from the backend into the guest's receive buffers while
    /// both have some, at most a queue's worth of frames per call. Reads a
    /// frame only when the guest has posted a buffer; when the guest runs
    /// out, asks to be notified and marks the receive side blocked (the
    /// event loop then stops polling the backend). No-op before activation.
    pub fn process_rx(&mut self) {
        if self.vhost.is_some() {
            return;
        }
        let state = &mut self.state;
        let acked = state.acked_features;
        let Some(Activated {
            mem,
            interrupt,
            queues,
        }) = &mut state.active
        else {
            return;
        };
        let queue = &mut queues[RX_QUEUE];
        let rx = &mut self.rx;
        let stats = &mut self.stats;
        let mergeable = acked & (1 << VIRTIO_NET_F_MRG_RXBUF) != 0;
        rx.blocked = false;
        if let Err(e) = queue.disable_notification(mem) {
            warn_limited!(error = %e, "virtio-net: cannot disable rx notifications");
        }
        let used_before = queue.next_used();
        let mut frames = usize::from(queue.size());
        let mut chains = 8 * usize::from(queue.size());
        let mut used = false;
        // Chains popped when enable_notification last reported more work:
        // the next look must find some, or the avail index is lying.
        let mut recheck_mark: Option<u64> = None;
        loop {
            let outcome = if rx.pending.is_none() {
                // A buffer first, then a frame: a guest that posts none
                // makes us read nothing.
                let have = if rx.held.is_empty() {
                    pop_rx_chain(rx, queue, mem, &mut chains, &mut used, stats)
                } else {
                    Pop::Got
                };
                match have {
                    Pop::Got => {}
                    Pop::Empty => {
                        if !need_buffers(rx, queue, mem, &mut recheck_mark) {
                            break;
                        }
                        continue;
                    }
                    Pop::OutOfBudget => {
                        requeue(&state.queue_evts[RX_QUEUE]);
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
                deliver(rx, queue, mem, mergeable, &mut chains, &mut used, stats)
            };
            match outcome {
                Delivery::Delivered | Delivery::Dropped => rx.pending = None,
                Delivery::NeedBuffers => {
                    if !need_buffers(rx, queue, mem, &mut recheck_mark) {
                        break;
                    }
                }
                Delivery::OutOfBudget => {
                    requeue(&state.queue_evts[RX_QUEUE]);
                    break;
                }
            }
        }
        if used && rx_needs_interrupt(queue, mem, used_before) {
            interrupt.signal_used_queue();
        }
    }

    /// Sends the guest's frames to the backend, at most a queue's worth of
    /// chains per call. A frame the backend refuses with `WouldBlock` keeps
    /// its chain and stops the queue until the backend is writable again.
    /// No-op before activation.
    pub fn process_tx(&mut self) {
        if self.vhost.is_some() {
            return;
        }
        let state = &mut self.state;
        let acked = state.acked_features;
        let Some(Activated {
            mem,
            interrupt,
            queues,
        }) = &mut state.active
        else {
            return;
        };
        let queue = &mut queues[TX_QUEUE];
        let tx = &mut self.tx;
        let stats = &mut self.stats;
        let mut used = false;
        if let Some((head, len)) = tx.pending {
            let res = write_frame(&mut self.backend, &tx.buf[..len]);
            if matches!(&res, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                return;
            }
            tx.pending = None;
            account_tx(stats, res, len);
            used |= return_chain(queue, mem, head, 0);
        }
        let mut budget = queue.size();
        // Set once enable_notification reports more work: the next pass must
        // then find some, or the avail index is lying and we stop.
        let mut expect_more = false;
        'passes: loop {
            if let Err(e) = queue.disable_notification(mem) {
                warn_limited!(error = %e, "virtio-net: cannot disable tx notifications");
                break;
            }
            let mut popped = 0u32;
            while budget > 0 {
                let Some(chain) = queue.pop_descriptor_chain(&*mem) else {
                    break;
                };
                budget -= 1;
                popped += 1;
                let head = chain.head_index();
                let frame = gather_tx(mem, chain, &mut tx.buf)
                    .and_then(|len| header::check_tx(&mut tx.buf[..len], acked).map(|()| len));
                match frame {
                    Ok(len) => {
                        let res = write_frame(&mut self.backend, &tx.buf[..len]);
                        if matches!(&res, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                            tx.pending = Some((head, len));
                            break 'passes;
                        }
                        account_tx(stats, res, len);
                    }
                    Err(reason) => {
                        stats.tx_dropped += 1;
                        warn_limited!(head, %reason, "virtio-net: transmit chain dropped");
                    }
                }
                used |= return_chain(queue, mem, head, 0);
            }
            if expect_more && popped == 0 {
                warn_limited!("virtio-net: tx available ring index runs ahead of its entries");
                break;
            }
            if budget == 0 {
                requeue(&state.queue_evts[TX_QUEUE]);
                break;
            }
            match queue.enable_notification(mem) {
                Ok(true) => expect_more = true,
                Ok(false) => break,
                Err(e) => {
                    warn_limited!(error = %e, "virtio-net: cannot enable tx notifications");
                    break;
                }
            }
        }
        if used && queue.needs_notification(mem).unwrap_or(true) {
            interrupt.signal_used_queue();
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
                *used |= return_chain(queue, mem, head, 0);
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
    *used |= publish_used(queue, mem, &rx.batch);
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

/// Puts the chains of one frame on the used ring and only then moves the
/// used index, once: a driver reading num_buffers must find every buffer of
/// the frame already there (Linux polls the ring from another vCPU while we
/// write it). virtio-queue's add_used publishes each entry on its own, so
/// all but the last entry are written here and add_used writes the last
/// one and the index. True if anything was published.
fn publish_used(queue: &mut Queue, mem: &GuestMemoryMmap, entries: &[(u16, u32)]) -> bool {
    let Some((&(last_head, last_len), rest)) = entries.split_last() else {
        return false;
    };
    let size = queue.size();
    let start = queue.next_used();
    let written_ahead = rest.iter().enumerate().all(|(k, &(head, len))| {
        // k < entries.len() <= QUEUE_SIZE, so it fits in u16.
        let slot = start.wrapping_add(k as u16) % size;
        let mut elem = [0u8; 8];
        elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        head < size
            && GuestAddress(queue.used_ring())
                .checked_add(4 + 8 * u64::from(slot))
                .is_some_and(|addr| mem.write_slice(&elem, addr).is_ok())
    });
    if !written_ahead {
        // Cannot happen with a ring that passed activation; fall back to
        // one entry at a time.
        warn_limited!("virtio-net: cannot batch used entries");
        let mut any = false;
        for &(head, len) in entries {
            any |= return_chain(queue, mem, head, len);
        }
        return any;
    }
    // The last entry goes at start + rest.len(); add_used writes it, then
    // stores the index (release) past all of them.
    queue.set_next_used(start.wrapping_add(rest.len() as u16));
    if return_chain(queue, mem, last_head, last_len) {
        true
    } else {
        queue.set_next_used(start);
        false
    }
}

/// Whether the driver wants an interrupt for the used entries added since
/// the used index was `old` (virtio 1.2, 2.7.10: used_event, when
/// EVENT_IDX is on; always otherwise). Our own check rather than
/// virtio-queue's, whose count of added entries misses those written by
/// [`publish_used`].
fn rx_needs_interrupt(queue: &Queue, mem: &GuestMemoryMmap, old: u16) -> bool {
    if !queue.event_idx_enabled() {
        return true;
    }
    // Our used-index store must be visible before we read used_event, as
    // the driver writes used_event before it re-reads the used index.
    fence(Ordering::SeqCst);
    let addr = GuestAddress(queue.avail_ring()).checked_add(4 + 2 * u64::from(queue.size()));
    let Some(used_event) = addr.and_then(|a| mem.load::<u16>(a, Ordering::Acquire).ok()) else {
        return true;
    };
    let used_event = u16::from_le(used_event);
    let new = queue.next_used();
    new.wrapping_sub(used_event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// Puts a chain on the used ring; true if it got there.
fn return_chain(queue: &mut Queue, mem: &GuestMemoryMmap, head: u16, len: u32) -> bool {
    match queue.add_used(mem, head, len) {
        Ok(()) => true,
        Err(e) => {
            warn_limited!(head, error = %e, "virtio-net: cannot return descriptor chain");
            false
        }
    }
}

impl<B: NetBackend> VirtioDevice for Net<B> {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn state(&self) -> &VirtioState {
        &self.state
    }

    fn state_mut(&mut self) -> &mut VirtioState {
        &mut self.state
    }

    /// `struct virtio_net_config`: mac[6], status (le16).
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&self.mac);
        let status = if self.link_up {
            VIRTIO_NET_S_LINK_UP as u16
        } else {
            0
        };
        config[6..8].copy_from_slice(&status.to_le_bytes());
        crate::virtio::read_config_from_slice(&config, offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<Interrupt>,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        self.state.check_activation(&queues)?;
        let acked = self.state.acked_features();
        let offloads = header::tap_offloads(acked);
        self.backend
            .set_offload(offloads)
            .map_err(ActivateError::Backend)?;
        self.rx.reset();
        self.tx.pending = None;
        if let Some(vhost) = &mut self.vhost {
            let tap = self.backend.vhost_tap().ok_or_else(|| {
                ActivateError::Backend(io::Error::other("vhost-net needs a tap backend"))
            })?;
            vhost
                .start(
                    tap,
                    &mem,
                    acked,
                    [&queues[RX_QUEUE], &queues[TX_QUEUE]],
                    self.state.queue_events(),
                )
                .map_err(ActivateError::Backend)?;
        }
        self.state.set_active(mem, interrupt, queues);
        // The driver may have queued buffers (and its notifications been
        // dropped) before DRIVER_OK: look at both queues once now (we or
        // vhost). This is also what makes the event loop start polling the
        // backend.
        self.state.kick([RX_QUEUE, TX_QUEUE]);
        debug!(acked_features = acked, offloads, "virtio-net activated");
        Ok(())
    }

    fn reset(&mut self) -> bool {
        if let Some(vhost) = &mut self.vhost {
            vhost.stop();
        }
        self.state.reset();
        self.rx.reset();
        self.tx.pending = None;
        true
    }
}
