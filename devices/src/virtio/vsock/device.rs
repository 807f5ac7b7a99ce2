use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Instant;

use event_manager::EventOps;
use tracing::error;
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::timerfd::TimerFd;

use super::muxer::Muxer;
use super::{Timeouts, VsockError, MAX_PKT_PAYLOAD, QUEUE_SIZE, RX_QUEUE, TX_QUEUE};
use crate::virtio::debug::DeviceDebug;
use crate::virtio::features::{VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};
use crate::virtio::{
    read_config_from_slice, ActivateError, Activated, VirtioDevice, VirtioState, TYPE_VSOCK,
};

const FEATURES: u64 = (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX);

/// The virtio-vsock device with its Unix-socket backend.
pub struct Vsock {
    pub(super) guest_cid: u64,
    uds_path: PathBuf,
    pub(super) listener: UnixListener,
    /// (st_dev, st_ino) of the socket we bound, so Drop removes only ours.
    listener_id: Option<(u64, u64)>,
    pub(super) state: VirtioState,
    /// Fires at the earliest connection or handshake deadline.
    pub(super) timer: TimerFd,
    timer_armed_for: Option<Instant>,
    /// Asks the event loop for a pass when something changed outside it
    /// (a reset), so closed sockets leave the loop promptly.
    pub(super) wake: EventFd,
    pub(super) muxer: Muxer,
    /// tx processing paused until the guest takes the RSTs we owe it.
    pub(super) tx_stalled: bool,
    /// Guest buffers of the chain being handled, (address, length).
    pub(super) segs: Vec<(GuestAddress, usize)>,
    /// One tx packet's payload.
    pub(super) tx_scratch: Vec<u8>,
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
