use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Instant;

use event_manager::EventOps;
use tracing::error;
use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::timerfd::TimerFd;

use super::muxer::{Muxer, CTL_QUEUE_STALL};
use super::packet::{Header, HDR_SIZE};
use super::{Timeouts, VsockError, MAX_PKT_PAYLOAD, QUEUE_SIZE, RX_QUEUE, TX_QUEUE};
use crate::virtio::debug::DeviceDebug;
use crate::virtio::features::{VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};
use crate::virtio::serve;
use crate::virtio::{
    read_config_from_slice, ActivateError, Activated, VirtioDevice, VirtioState, TYPE_VSOCK,
};

const FEATURES: u64 = (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX);

/// The virtio-vsock device with its Unix-socket backend.
pub struct Vsock {
    guest_cid: u64,
    uds_path: PathBuf,
    pub(super) listener: UnixListener,
    /// (st_dev, st_ino) of the socket we bound, so Drop removes only ours.
    listener_id: Option<(u64, u64)>,
    state: VirtioState,
    /// Fires at the earliest connection or handshake deadline.
    pub(super) timer: TimerFd,
    timer_armed_for: Option<Instant>,
    /// Asks the event loop for a pass when something changed outside it
    /// (a reset), so closed sockets leave the loop promptly.
    pub(super) wake: EventFd,
    pub(super) muxer: Muxer,
    /// tx processing paused until the guest takes the RSTs we owe it.
    tx_stalled: bool,
    /// Guest buffers of the chain being handled, (address, length).
    segs: Vec<(GuestAddress, usize)>,
    /// One tx packet's payload.
    tx_scratch: Vec<u8>,
}

impl Vsock {
    /// Creates the device for a guest with CID `guest_cid` and starts
    /// listening at `uds_path` (a stale socket there is replaced; any other
    /// kind of file is an error). Guest connections to host port `P` go to
    /// `<uds_path>_<P>`.
    pub fn new(guest_cid: u64, uds_path: PathBuf) -> Result<Self, VsockError> {
        // CIDs are 32-bit in practice; 0-2 and u32::MAX are reserved.
        if !(3..u64::from(u32::MAX)).contains(&guest_cid) {
            return Err(VsockError::InvalidCid(guest_cid));
        }
        remove_stale_socket(&uds_path)?;
        let listener = UnixListener::bind(&uds_path).map_err(|source| VsockError::Bind {
            path: uds_path.clone(),
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| VsockError::Bind {
                path: uds_path.clone(),
                source,
            })?;
        let listener_id = fs::symlink_metadata(&uds_path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        let evt = || EventFd::new(EFD_NONBLOCK).map_err(VsockError::EventFd);
        let timer = TimerFd::new().map_err(|e| VsockError::EventFd(e.into()))?;
        set_nonblocking(timer.as_raw_fd()).map_err(VsockError::EventFd)?;
        Ok(Self {
            guest_cid,
            muxer: Muxer::new(guest_cid, uds_path.clone()),
            uds_path,
            listener,
            listener_id,
            state: VirtioState::new(TYPE_VSOCK, "virtio-vsock", FEATURES, &[QUEUE_SIZE; 3])
                .map_err(VsockError::EventFd)?,
            timer,
            timer_armed_for: None,
            wake: evt()?,
            tx_stalled: false,
            segs: Vec::new(),
            tx_scratch: vec![0; MAX_PKT_PAYLOAD],
        })
    }

    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// Where host processes connect (and the prefix of the sockets guest
    /// connections are forwarded to).
    pub fn uds_path(&self) -> &Path {
        &self.uds_path
    }

    /// Overrides the default [`Timeouts`].
    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.muxer.timeouts = timeouts;
    }

    /// Live connections.
    pub fn connection_count(&self) -> usize {
        self.muxer.connection_count()
    }

    /// Guest data held for host peers that have not read it yet, over all
    /// connections (never more than CONN_BUF_SIZE each).
    pub fn buffered_bytes(&self) -> usize {
        self.muxer.buffered_bytes()
    }

    pub(super) fn queue_event(&self, index: usize) -> &EventFd {
        &self.state.queue_evts[index]
    }

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

    /// What every event ends with: deliver to the guest, sync the event
    /// loop's interest with the sockets, and arm the timer.
    pub(super) fn finish_round(&mut self, ops: &mut EventOps) {
        self.process_rx();
        if !self.muxer.reconcile(ops) {
            // Resets queued RSTs; deliver them on the next round.
            let _ = self.wake.write(1);
        }
        self.arm_timer();
    }

    fn arm_timer(&mut self) {
        let next = self.muxer.next_deadline();
        if next == self.timer_armed_for {
            return;
        }
        let res = match next {
            Some(at) => {
                // A zero duration would disarm the timer instead.
                let dur = at
                    .saturating_duration_since(Instant::now())
                    .max(std::time::Duration::from_millis(1));
                self.timer.reset(dur, None)
            }
            None => self.timer.clear(),
        };
        match res {
            Ok(()) => self.timer_armed_for = next,
            Err(e) => error!(error = %e, "virtio-vsock: cannot arm the timer"),
        }
    }

    pub(super) fn on_timer(&mut self) {
        // Non-blocking: the timer may have been re-armed since it fired.
        let _ = self.timer.wait();
        self.timer_armed_for = None;
        self.muxer.sweep(Instant::now());
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

impl Drop for Vsock {
    fn drop(&mut self) {
        // Remove the socket file unless someone replaced it meanwhile.
        let ours = fs::symlink_metadata(&self.uds_path)
            .ok()
            .is_some_and(|m| Some((m.dev(), m.ino())) == self.listener_id);
        if ours {
            let _ = fs::remove_file(&self.uds_path);
        }
    }
}

fn remove_stale_socket(path: &Path) -> Result<(), VsockError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            fs::remove_file(path).map_err(|source| VsockError::RemoveStale {
                path: path.to_owned(),
                source,
            })
        }
        Ok(_) => Err(VsockError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(VsockError::Stat {
            path: path.to_owned(),
            source,
        }),
    }
}

fn set_nonblocking(fd: std::os::fd::RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

enum TxError {
    /// No complete header in readable guest memory.
    Unreadable,
    /// A header whose `len` is too large or larger than the buffer.
    Malformed(Header),
}

/// Collects the chain's device-readable buffers (those before the first
/// writable one) or, with `writable`, its device-writable ones, enough for
/// a header and a maximal payload, into `segs`. Returns their total length
/// (capped at a full packet), or None if one lies outside guest memory.
fn collect_segments(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    segs: &mut Vec<(GuestAddress, usize)>,
    writable: bool,
) -> Option<usize> {
    const ENOUGH: usize = HDR_SIZE + MAX_PKT_PAYLOAD;
    segs.clear();
    let mut total = 0usize;
    for desc in chain {
        if desc.is_write_only() != writable {
            if writable {
                // Readable buffers before the writable ones: skip them.
                continue;
            }
            break;
        }
        let len = desc.len() as usize;
        if len == 0 {
            continue;
        }
        if !GuestMemoryBackend::check_range(mem, desc.addr(), len) {
            return None;
        }
        // Cap what we keep: a huge chain costs nothing beyond a full packet.
        let len = len.min(ENOUGH - total);
        segs.push((desc.addr(), len));
        total += len;
        if total == ENOUGH {
            break;
        }
    }
    Some(total)
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

/// Copies `buf.len()` bytes starting `offset` bytes into the buffers.
fn gather(
    mem: &GuestMemoryMmap,
    segs: &[(GuestAddress, usize)],
    mut offset: usize,
    buf: &mut [u8],
) -> bool {
    let mut done = 0;
    for &(addr, len) in segs {
        if done == buf.len() {
            break;
        }
        if offset >= len {
            offset -= len;
            continue;
        }
        let n = (len - offset).min(buf.len() - done);
        let Some(at) = addr.0.checked_add(offset as u64) else {
            return false;
        };
        if mem
            .read_slice(&mut buf[done..done + n], GuestAddress(at))
            .is_err()
        {
            return false;
        }
        done += n;
        offset = 0;
    }
    done == buf.len()
}

/// Writes `hdr` then `payload` across the buffers.
fn scatter(
    mem: &GuestMemoryMmap,
    segs: &[(GuestAddress, usize)],
    hdr: &[u8],
    payload: &[u8],
) -> bool {
    let mut parts = [hdr, payload];
    let mut part = 0;
    for &(addr, len) in segs {
        let mut at = addr.0;
        let mut room = len;
        while room > 0 && part < parts.len() {
            let src = parts[part];
            if src.is_empty() {
                part += 1;
                continue;
            }
            let n = room.min(src.len());
            if mem.write_slice(&src[..n], GuestAddress(at)).is_err() {
                return false;
            }
            parts[part] = &src[n..];
            at += n as u64;
            room -= n;
        }
    }
    parts.iter().all(|p| p.is_empty())
}

impl VirtioDevice for Vsock {
    virtio_state_accessors!(state);

    /// `le64 guest_cid`.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_from_slice(&self.guest_cid.to_le_bytes(), offset, data);
    }

    fn activate(&mut self, active: Activated) -> Result<(), ActivateError> {
        // Packets queued before DRIVER_OK, and host connections waiting for
        // the driver: look at both directions once now.
        self.state.activate(active, [RX_QUEUE, TX_QUEUE])
    }

    fn reset(&mut self) -> bool {
        self.state.reset();
        self.tx_stalled = false;
        // The guest forgot its sockets; host peers see theirs closed.
        self.muxer.reset();
        // Closed sockets leave the event loop on its next round.
        if let Err(e) = self.wake.write(1) {
            warn_limited!(error = %e, "virtio-vsock: cannot wake the event loop after reset");
        }
        true
    }

    fn debug_state(&self) -> DeviceDebug {
        let mut notes = self.muxer.debug_lines();
        if self.tx_stalled {
            notes.push("tx stalled: waiting for the guest to take our control packets".into());
        }
        DeviceDebug {
            queues: self.state.queue_progress(),
            notes,
        }
    }
}
