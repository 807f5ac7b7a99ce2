use std::os::fd::AsRawFd;
use std::path::Path;

use tracing::debug;
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserProtocolFeatures};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::VhostUserFsError as Error;
use crate::virtio::features::{
    VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};
use crate::virtio::fs::{config_space, NUM_QUEUES, TAG_LEN};
use crate::virtio::{read_config_from_slice, ActivateError, Activated, VirtioDevice, VirtioState};

/// VHOST_USER_F_PROTOCOL_FEATURES: a vhost-user bit, never offered to the
/// guest.
const PROTOCOL_FEATURES: u64 = 1 << 30;

/// Ring features we can pass through (our transport has split rings only;
/// virtio-fs's own NOTIFICATION feature needs a notification queue we do
/// not wire).
const RING_FEATURES: u64 =
    (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX) | (1 << VIRTIO_RING_F_INDIRECT_DESC);

/// The protocol features we use when the backend has them.
fn wanted_protocol() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK
}

/// A virtio-fs device served by a vhost-user backend.
pub struct VhostUserFs {
    frontend: Frontend,
    config: [u8; TAG_LEN + 4],
    /// Offers the features the backend offers, restricted to
    /// [`RING_FEATURES`]. Its queue eventfds are the kicks (KVM
    /// ioeventfds), read by the backend.
    state: VirtioState,
    /// Whether VHOST_USER_F_PROTOCOL_FEATURES was negotiated (then rings
    /// are enabled explicitly).
    protocol: bool,
    /// Signalled by the backend when the guest should be interrupted.
    pub(super) call_evts: [EventFd; NUM_QUEUES],
    /// Queues handed to the backend, to stop them at reset.
    started: Vec<usize>,
}

impl VhostUserFs {
    /// Connects to the backend listening on `socket` and negotiates what
    /// does not depend on the guest. The backend must be running.
    pub fn new(socket: &Path, tag: &str, queue_size: u16) -> Result<Self, Error> {
        let config = config_space(tag).ok_or_else(|| Error::Tag(tag.to_string()))?;
        if !queue_size.is_power_of_two() || queue_size < 2 {
            return Err(Error::QueueSize(queue_size));
        }
        let mut frontend = Frontend::connect(socket, NUM_QUEUES as u64)
            .map_err(|e| Error::Connect(socket.to_path_buf(), e))?;
        frontend
            .set_owner()
            .map_err(|e| Error::Protocol("SET_OWNER", e))?;
        let features = frontend
            .get_features()
            .map_err(|e| Error::Protocol("GET_FEATURES", e))?;
        if features & (1 << VIRTIO_F_VERSION_1) == 0 {
            return Err(Error::Missing("VIRTIO_F_VERSION_1"));
        }
        let protocol = features & PROTOCOL_FEATURES != 0;
        if protocol {
            let offered = frontend
                .get_protocol_features()
                .map_err(|e| Error::Protocol("GET_PROTOCOL_FEATURES", e))?;
            let use_ = offered & wanted_protocol();
            frontend
                .set_protocol_features(use_)
                .map_err(|e| Error::Protocol("SET_PROTOCOL_FEATURES", e))?;
            if use_.contains(VhostUserProtocolFeatures::MQ) {
                let n = frontend
                    .get_queue_num()
                    .map_err(|e| Error::Protocol("GET_QUEUE_NUM", e))?;
                if n < NUM_QUEUES as u64 {
                    return Err(Error::Queues(n));
                }
            }
        }
        let evt = || EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd);
        debug!(socket = %socket.display(), features, protocol, "vhost-user-fs connected");
        let state =
            crate::virtio::fs::virtio_state("vhost-user-fs", features & RING_FEATURES, queue_size)
                .map_err(Error::EventFd)?;
        Ok(Self {
            frontend,
            config,
            state,
            protocol,
            call_evts: [evt()?, evt()?],
            started: Vec::new(),
        })
    }

    /// Hands guest memory and the ready queues to the backend.
    fn start(&mut self, mem: &GuestMemoryMmap, queues: &[Queue]) -> Result<Vec<usize>, Error> {
        let p = |what| move |e| Error::Protocol(what, e);
        let extra = if self.protocol { PROTOCOL_FEATURES } else { 0 };
        self.frontend
            .set_features(self.state.acked_features() | extra)
            .map_err(p("SET_FEATURES"))?;
        let regions = memory_regions(mem).ok_or(Error::Missing(
            "file-backed guest memory (the VMM must map guest RAM from a memfd)",
        ))?;
        self.frontend
            .set_mem_table(&regions)
            .map_err(p("SET_MEM_TABLE"))?;
        let mut started = Vec::new();
        for (i, q) in queues.iter().enumerate() {
            if !q.ready() {
                continue;
            }
            self.frontend
                .set_vring_num(i, q.size())
                .map_err(p("SET_VRING_NUM"))?;
            // vhost-user wants the rings at our (the frontend's) virtual
            // addresses; the backend maps them through the memory table.
            let host = |gpa| {
                mem.get_host_address(GuestAddress(gpa))
                    .map(|p| p as u64)
                    .map_err(|_| Error::Missing("the queue's rings in guest memory"))
            };
            let config = VringConfigData {
                queue_max_size: q.max_size(),
                queue_size: q.size(),
                flags: 0,
                desc_table_addr: host(q.desc_table())?,
                used_ring_addr: host(q.used_ring())?,
                avail_ring_addr: host(q.avail_ring())?,
                log_addr: None,
            };
            self.frontend
                .set_vring_addr(i, &config)
                .map_err(p("SET_VRING_ADDR"))?;
            self.frontend
                .set_vring_base(i, q.next_avail())
                .map_err(p("SET_VRING_BASE"))?;
            self.frontend
                .set_vring_call(i, &self.call_evts[i])
                .map_err(p("SET_VRING_CALL"))?;
            self.frontend
                .set_vring_kick(i, &self.state.queue_evts[i])
                .map_err(p("SET_VRING_KICK"))?;
            if self.protocol {
                self.frontend
                    .set_vring_enable(i, true)
                    .map_err(p("SET_VRING_ENABLE"))?;
            }
            started.push(i);
        }
        Ok(started)
    }

    /// Stops the backend's rings (GET_VRING_BASE stops a ring).
    fn stop(&mut self, started: &[usize]) {
        for &i in started {
            if self.protocol {
                if let Err(e) = self.frontend.set_vring_enable(i, false) {
                    tracing::warn!(queue = i, error = %e, "vhost-user-fs: cannot disable a ring");
                }
            }
            if let Err(e) = self.frontend.get_vring_base(i) {
                tracing::warn!(queue = i, error = %e, "vhost-user-fs: cannot stop a ring");
            }
        }
    }
}

/// Guest RAM as the backend must map it: each region's fd and offset.
/// None when a region is anonymous memory (nothing to pass).
pub(crate) fn memory_regions(mem: &GuestMemoryMmap) -> Option<Vec<VhostUserMemoryRegionInfo>> {
    mem.iter()
        .map(|r| {
            let file = r.file_offset()?;
            Some(VhostUserMemoryRegionInfo {
                guest_phys_addr: r.start_addr().raw_value(),
                memory_size: r.len(),
                userspace_addr: r.as_ptr() as u64,
                mmap_offset: file.start(),
                mmap_handle: file.file().as_raw_fd(),
            })
        })
        .collect()
}

impl VirtioDevice for VhostUserFs {
    virtio_state_accessors!(state);

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_from_slice(&self.config, offset, data);
    }

    fn activate(&mut self, active: Activated) -> Result<(), ActivateError> {
        self.state.check_activation(&active.queues)?;
        // The backend's first calls are served once the lock we run under
        // is released, by then with the interrupt in place.
        self.started = self
            .start(&active.mem, &active.queues)
            .map_err(|e| ActivateError::Backend(std::io::Error::other(e.to_string())))?;
        // The kicks are the backend's: nothing to look at here.
        self.state.set_active(active, []);
        Ok(())
    }

    fn reset(&mut self) -> bool {
        if self.state.is_activated() {
            let started = std::mem::take(&mut self.started);
            self.stop(&started);
        }
        self.state.reset();
        true
    }

    fn debug_state(&self) -> crate::virtio::debug::DeviceDebug {
        crate::virtio::debug::DeviceDebug {
            queues: Vec::new(),
            notes: vec!["queues are served by the vhost-user backend: see its rings above".into()],
        }
    }
}
