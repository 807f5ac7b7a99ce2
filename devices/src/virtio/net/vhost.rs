//! Optional vhost-net acceleration: the kernel's vhost worker moves frames
//! between the tap and the guest's rings, the VMM only sets it up. Its
//! "call" notifications come back through the event loop, which turns them
//! into virtio-mmio interrupts (a bare irqfd would leave InterruptStatus at
//! 0, and Linux's virtio_mmio handler ignores such an interrupt).

use std::fs::File;
use std::io;
use std::sync::Arc;

use vhost::net::VhostNet as _;
use vhost::vhost_kern::net::Net as KernNet;
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::virtio::features::{
    VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};

/// The features vhost-net implements (and must be told about); the
/// checksum and segmentation bits are between the guest and the tap.
pub(super) const RING_FEATURES: u64 = (1 << VIRTIO_F_VERSION_1)
    | (1 << VIRTIO_RING_F_EVENT_IDX)
    | (1 << VIRTIO_RING_F_INDIRECT_DESC)
    | (1 << VIRTIO_NET_F_MRG_RXBUF);

fn err(what: &str, e: vhost::Error) -> io::Error {
    io::Error::other(format!("vhost-net {what}: {e}"))
}

pub(super) struct Vhost {
    /// [`RING_FEATURES`] the kernel supports.
    pub(super) supported: u64,
    /// One per queue, signalled by the vhost worker when the guest should
    /// be interrupted (it applies EVENT_IDX itself).
    pub(super) call_evts: [EventFd; 2],
    /// The running instance, from activation to reset. Closing it stops
    /// the worker and detaches the tap.
    running: Option<KernNet<Arc<GuestMemoryMmap>>>,
}

impl Vhost {
    /// Opens /dev/vhost-net once to learn what it supports; the reason as
    /// text if it cannot be used.
    pub(super) fn probe() -> Result<Self, String> {
        let net =
            KernNet::new(Arc::new(GuestMemoryMmap::<()>::new())).map_err(|e| e.to_string())?;
        let features = net.get_features().map_err(|e| e.to_string())?;
        if features & (1 << VIRTIO_F_VERSION_1) == 0 {
            return Err("the kernel's vhost-net lacks VIRTIO_F_VERSION_1".into());
        }
        let evt = || EventFd::new(EFD_NONBLOCK).map_err(|e| e.to_string());
        Ok(Self {
            supported: features & RING_FEATURES,
            call_evts: [evt()?, evt()?],
            running: None,
        })
    }

    /// Hands both queues and the tap to a new vhost-net instance. The rings
    /// were checked against `mem` by the transport.
    pub(super) fn start(
        &mut self,
        tap: &File,
        mem: &GuestMemoryMmap,
        acked: u64,
        queues: [&Queue; 2],
        kicks: &[EventFd],
    ) -> io::Result<()> {
        self.stop();
        let net = KernNet::new(Arc::new(mem.clone())).map_err(|e| err("open", e))?;
        net.set_owner().map_err(|e| err("SET_OWNER", e))?;
        net.set_features(acked & self.supported)
            .map_err(|e| err("SET_FEATURES", e))?;
        let regions: Vec<VhostUserMemoryRegionInfo> = mem
            .iter()
            .map(|r| VhostUserMemoryRegionInfo {
                guest_phys_addr: r.start_addr().raw_value(),
                memory_size: r.len(),
                userspace_addr: r.as_ptr() as u64,
                mmap_offset: 0,
                mmap_handle: -1,
            })
            .collect();
        net.set_mem_table(&regions)
            .map_err(|e| err("SET_MEM_TABLE", e))?;
        for (i, q) in queues.into_iter().enumerate() {
            net.set_vring_num(i, q.size())
                .map_err(|e| err("SET_VRING_NUM", e))?;
            let config = VringConfigData {
                queue_max_size: q.max_size(),
                queue_size: q.size(),
                flags: 0,
                desc_table_addr: q.desc_table(),
                used_ring_addr: q.used_ring(),
                avail_ring_addr: q.avail_ring(),
                log_addr: None,
            };
            net.set_vring_addr(i, &config)
                .map_err(|e| err("SET_VRING_ADDR", e))?;
            net.set_vring_base(i, q.next_avail())
                .map_err(|e| err("SET_VRING_BASE", e))?;
            net.set_vring_call(i, &self.call_evts[i])
                .map_err(|e| err("SET_VRING_CALL", e))?;
            net.set_vring_kick(i, &kicks[i])
                .map_err(|e| err("SET_VRING_KICK", e))?;
        }
        for i in 0..2 {
            net.set_backend(i, Some(tap))
                .map_err(|e| err("NET_SET_BACKEND", e))?;
        }
        self.running = Some(net);
        Ok(())
    }

    /// Detaches the tap and closes the instance (the kernel waits for its
    /// worker to stop touching guest memory).
    pub(super) fn stop(&mut self) {
        if let Some(net) = self.running.take() {
            for i in 0..2 {
                if let Err(e) = net.set_backend(i, None) {
                    tracing::warn!(queue = i, error = %e, "vhost-net: cannot detach the tap");
                }
            }
        }
    }
}
