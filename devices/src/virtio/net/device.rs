//! The virtio-net device: its state, construction, and what the transport
//! asks of it. The queues are served in `rx.rs` and `tx.rs`.

use std::io;

use event_manager::EventSet;
use tracing::debug;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use vmm_sys_util::eventfd::EventFd;

use super::header;
use super::rx::RxState;
use super::tx::TxState;
use super::vhost::{self, Vhost};
use super::{format_mac, NetBackend, NetError, Tap, QUEUE_SIZE, RX_QUEUE, TX_QUEUE};
use crate::virtio::common::Serving;
use crate::virtio::features::{
    VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};
use crate::virtio::{ActivateError, Activated, VirtioDevice, VirtioState, TYPE_NET};

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

/// A virtio network device on a tap (or any [`NetBackend`]).
pub struct Net<B: NetBackend = Tap> {
    pub(super) backend: B,
    pub(super) mac: [u8; 6],
    pub(super) link_up: bool,
    pub(super) state: VirtioState,
    pub(super) rx: RxState,
    pub(super) tx: TxState,
    pub(super) stats: NetStats,
    /// What the event loop watches the backend fd for; `None` when it is
    /// not watched (registration failed, the fd reported an error, or
    /// vhost-net owns it).
    pub(super) backend_interest: Option<EventSet>,
    /// vhost-net, when it was asked for and the kernel has it: the frames
    /// then never pass through the VMM.
    pub(super) vhost: Option<Vhost>,
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
            state: VirtioState::new(TYPE_NET, "virtio-net", avail_features, &[QUEUE_SIZE; 2])
                .map_err(NetError::EventFd)?,
            rx: RxState::new(),
            tx: TxState::new(),
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
    pub(super) fn tx_pending(&self) -> bool {
        self.tx.pending.is_some()
    }
}

/// Queue `index` and what serving it needs, when the VMM serves it:
/// after activation, and unless vhost-net does.
pub(super) fn userspace_queue<'a>(
    state: &'a mut VirtioState,
    vhost: &Option<Vhost>,
    index: usize,
) -> Option<Serving<'a>> {
    if vhost.is_some() {
        return None;
    }
    state.serving(index)
}

impl<B: NetBackend> VirtioDevice for Net<B> {
    virtio_state_accessors!(state);

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

    fn activate(&mut self, active: Activated) -> Result<(), ActivateError> {
        self.state.check_activation(&active.queues)?;
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
            let queues = &active.queues;
            vhost
                .start(
                    tap,
                    &active.mem,
                    acked,
                    [&queues[RX_QUEUE], &queues[TX_QUEUE]],
                    self.state.queue_events(),
                )
                .map_err(ActivateError::Backend)?;
        }
        debug!(offloads, "virtio-net: tap offloads set");
        // The driver may have queued buffers (and its notifications been
        // dropped) before DRIVER_OK: look at both queues once now (we or
        // vhost). This is also what makes the event loop start polling the
        // backend.
        self.state.set_active(active, [RX_QUEUE, TX_QUEUE]);
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
