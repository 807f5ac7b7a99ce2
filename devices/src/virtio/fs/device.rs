use std::sync::Arc;

use tracing::debug;
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::guest_io::{Buffers, GuestReply, GuestRequest};
use super::{
    FsError, HIPRIO, HIPRIO_BATCH, MAX_REPLY, MAX_REQUEST, NUM_QUEUES, QUEUE_SIZE, TAG_LEN,
};
use crate::virtio::features::{VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};
use crate::virtio::{read_config_from_slice, ActivateError, Interrupt, VirtioDevice, TYPE_FS};

/// What the device holds between DRIVER_OK and reset.
struct Active {
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    queues: Vec<Queue>,
}

/// The virtio-fs device: one share, served by a [`cowfs::Server`].
pub struct Fs {
    config: [u8; TAG_LEN + 4],
    acked_features: u64,
    queue_sizes: [u16; NUM_QUEUES],
    queue_evts: [EventFd; NUM_QUEUES],
    server: cowfs::Server,
    active: Option<Active>,
    /// Serve the guest's notifications on its vCPU thread (the default).
    on_vcpu: bool,
    /// Buffers of the chain being served, reused so a busy guest costs
    /// no allocations.
    bufs: ChainBuffers,
}

impl Fs {
    /// A device exporting `share` under `tag` (what the guest passes to
    /// `mount -t virtiofs TAG /mnt`).
    pub fn new(tag: &str, share: cowfs::ShareConfig) -> Result<Self, FsError> {
        Self::with_limits(tag, share, cowfs::Limits::default())
    }

    pub fn with_limits(
        tag: &str,
        share: cowfs::ShareConfig,
        limits: cowfs::Limits,
    ) -> Result<Self, FsError> {
        let config = super::config_space(tag).ok_or_else(|| FsError::Tag(tag.to_string()))?;
        let fs = cowfs::Filesystem::with_limits(&share, limits)?;
        let evt = || EventFd::new(EFD_NONBLOCK).map_err(FsError::EventFd);
        Ok(Self {
            config,
            acked_features: 0,
            queue_sizes: [QUEUE_SIZE; NUM_QUEUES],
            queue_evts: [evt()?, evt()?],
            server: cowfs::Server::new(fs),
            on_vcpu: true,
            active: None,
            bufs: ChainBuffers::default(),
        })
    }

    /// Where the guest's requests are served: on the vCPU thread that
    /// notified (true, the default: a FUSE request is a short job the
    /// guest waits on, and handing it to the event loop's thread costs two
    /// thread switches and the guest an idle exit per request), or on the
    /// VMM's event loop (false: a long copy-up then stalls no vCPU).
    pub fn set_serve_on_vcpu(&mut self, on_vcpu: bool) {
        self.on_vcpu = on_vcpu;
    }

    /// Bounds what the guest may store in the share's upper layer
    /// ([`cowfs::Filesystem::set_budget`]).
    pub fn set_budget(&mut self, budget: cowfs::UpperBudget) -> Result<(), FsError> {
        Ok(self.server.set_budget(budget)?)
    }

    /// Serve extended attributes or answer ENOSYS ([`cowfs::Server::set_xattr`]).
    pub fn set_xattr(&mut self, enabled: bool) {
        self.server.set_xattr(enabled);
    }

    /// The FUSE server (for inspection; the device owns it).
    pub fn server(&self) -> &cowfs::Server {
        &self.server
    }

    /// Serves queue `index` (up to one queue's worth per call, so a guest
    /// that keeps refilling cannot monopolise the thread) and interrupts
    /// the guest if it asked to be told. A request-queue call first drains
    /// the high-priority queue (see [`drain_hiprio`]). No-op before
    /// activation or for an unknown index.
    pub fn process_queue(&mut self, index: usize) {
        let hiprio_used = self.drain_hiprio();
        let Some(active) = &mut self.active else {
            return;
        };
        let (mem, interrupt) = (&active.mem, &active.interrupt);
        let signalled = match active.queues.get_mut(index) {
            Some(queue) if index != HIPRIO && queue.ready() => {
                let (server, bufs) = (&mut self.server, &mut self.bufs);
                crate::virtio::serve::serve_queue(
                    "virtio-fs",
                    queue,
                    mem,
                    interrupt,
                    &self.queue_evts[index],
                    |chain| serve_chain(mem, chain, server, bufs),
                )
            }
            _ => false,
        };
        // One interrupt line for both queues: the request queue's interrupt
        // (if any) already makes the driver look at the high-priority one.
        if hiprio_used && !signalled {
            let hiprio = &mut active.queues[HIPRIO];
            if hiprio.needs_notification(mem).unwrap_or(true) {
                interrupt.signal_used_queue();
            }
        }
    }

    /// Serves what waits in the high-priority queue (FORGET and
    /// BATCH_FORGET: no replies, nothing the driver waits on) and returns
    /// whether any chain was used.
    ///
    /// Forgets are lazy by nature, so the device does not want a
    /// notification for each (every one would cost the guest an exit and
    /// an interrupt: a third of the requests of an `rm -r`). It drains the
    /// queue whenever the driver notifies the request queue, and with
    /// EVENT_IDX sets `avail_event` so the driver notifies the
    /// high-priority queue itself only once [`HIPRIO_BATCH`] entries wait
    /// (or half the ring, so it cannot fill the ring unnoticed). Without EVENT_IDX
    /// every notification is served as it comes.
    fn drain_hiprio(&mut self) -> bool {
        let Some(active) = &mut self.active else {
            return false;
        };
        let Some(queue) = active.queues.get_mut(HIPRIO) else {
            return false;
        };
        if !queue.ready() {
            return false;
        }
        let (mem, server, bufs) = (&active.mem, &mut self.server, &mut self.bufs);
        crate::virtio::serve::drain_queue(
            "virtio-fs",
            queue,
            mem,
            &self.queue_evts[HIPRIO],
            HIPRIO_BATCH,
            |chain| serve_chain(mem, chain, server, bufs),
        )
    }
}

/// The readable and the writable buffers of one chain.
#[derive(Default)]
struct ChainBuffers {
    readable: Buffers,
    writable: Buffers,
}

/// Serves one chain: the server copies the headers out of the readable
/// part (at most `MAX_REQUEST` bytes of it are used) and writes its reply
/// into the writable part (at most `MAX_REPLY` bytes); file data moves
/// straight between guest memory and the host file. Returns the number of
/// reply bytes written. A chain with a buffer outside guest memory, or a
/// readable buffer after a writable one, is malformed and gets 0 bytes
/// (no reply). Lengths come from the guest and are checked, never
/// trusted; loops are cut off by virtio-queue.
fn serve_chain(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    server: &mut cowfs::Server,
    bufs: &mut ChainBuffers,
) -> u32 {
    bufs.readable.clear();
    bufs.writable.clear();
    let mut seen_writable = false;
    for desc in chain {
        let len = desc.len() as usize;
        if len == 0 {
            continue;
        }
        if !GuestMemoryBackend::check_range(mem, desc.addr(), len) {
            warn_limited!(
                addr = desc.addr().0,
                len,
                "virtio-fs: buffer outside guest memory"
            );
            return 0;
        }
        if desc.is_write_only() {
            seen_writable = true;
            bufs.writable.push(desc.addr(), len, MAX_REPLY);
        } else if seen_writable {
            warn_limited!("virtio-fs: readable buffer after a writable one");
            return 0;
        } else {
            // Past the cap the request is cut: its header's length then
            // disagrees and the server answers EINVAL.
            bufs.readable.push(desc.addr(), len, MAX_REQUEST);
        }
    }
    let mut request = GuestRequest::new(mem, &bufs.readable);
    let mut reply = GuestReply::new(mem, &bufs.writable);
    match server.serve(&mut request, &mut reply) {
        // At most MAX_REPLY (about 1 MiB), so this never truncates.
        Ok(n) => u32::try_from(n).unwrap_or(u32::MAX),
        Err(e) => {
            warn_limited!(error = %e, "virtio-fs: cannot serve request");
            0
        }
    }
}

impl Drop for Fs {
    fn drop(&mut self) {
        let stats = self.server.stats();
        if stats.total() > 0 {
            debug!(target: "cowfs::stats", tag = %tag_of(&self.config), "requests (opcode:count/ms): {stats}");
        }
    }
}

fn tag_of(config: &[u8]) -> String {
    let tag = &config[..TAG_LEN];
    let end = tag.iter().position(|&b| b == 0).unwrap_or(TAG_LEN);
    String::from_utf8_lossy(&tag[..end]).into_owned()
}

impl VirtioDevice for Fs {
    fn device_type(&self) -> u32 {
        TYPE_FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn avail_features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX)
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_from_slice(&self.config, offset, data);
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn serves_on_vcpu(&self) -> bool {
        self.on_vcpu
    }

    fn serve_notification(&mut self, index: usize) {
        self.process_queue(index);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<Interrupt>,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        super::check_activation(self.active.is_some(), &queues)?;
        self.active = Some(Active {
            mem,
            interrupt,
            queues,
        });
        // The driver may have queued buffers (and its notification been
        // dropped) before DRIVER_OK: look at the queues once now.
        for evt in &self.queue_evts {
            if let Err(e) = evt.write(1) {
                warn_limited!(error = %e, "virtio-fs: cannot kick queue after activation");
            }
        }
        debug!(acked_features = self.acked_features, "virtio-fs activated");
        Ok(())
    }

    fn reset(&mut self) -> bool {
        self.active = None;
        self.acked_features = 0;
        // A new driver starts with INIT: forget every inode and handle.
        self.server.reset();
        true
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    fn debug_state(&self) -> crate::virtio::debug::DeviceDebug {
        crate::virtio::debug::DeviceDebug {
            queues: self
                .active
                .as_ref()
                .map(|a| crate::virtio::debug::progress_of(&a.queues))
                .unwrap_or_default(),
            notes: Vec::new(),
        }
    }
}
