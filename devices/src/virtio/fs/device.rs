use tracing::debug;
use virtio_queue::{DescriptorChain, QueueT};
use vm_memory::GuestMemoryMmap;

use super::guest_io::{Buffers, GuestReply, GuestRequest};
use super::{
    FsError, FEATURES, HIPRIO, HIPRIO_BATCH, MAX_REPLY, MAX_REQUEST, NUM_QUEUES, QUEUE_SIZE,
    TAG_LEN,
};
use crate::virtio::{read_config_from_slice, ActivateError, Activated, VirtioDevice, VirtioState};

/// The virtio-fs device: one share, served by a [`cowfs::Server`].
pub struct Fs {
    config: [u8; TAG_LEN + 4],
    state: VirtioState,
    server: cowfs::Server,
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
        Ok(Self {
            config,
            state: super::virtio_state("virtio-fs", FEATURES, QUEUE_SIZE)
                .map_err(FsError::EventFd)?,
            server: cowfs::Server::new(fs),
            on_vcpu: true,
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

    /// For a VMM that drops root before the guest runs: keep the
    /// guest's file owners in the share's copy-up log
    /// ([`cowfs::Filesystem::record_owners`]).
    pub fn record_owners(&mut self) {
        self.server.record_owners()
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
        let signalled = match self.state.serving(index) {
            Some(q) if index != HIPRIO && q.queue.ready() => {
                let (mem, server, bufs) = (q.mem, &mut self.server, &mut self.bufs);
                crate::virtio::serve::serve_queue(
                    "virtio-fs",
                    q.queue,
                    mem,
                    q.interrupt,
                    q.evt,
                    |chain| serve_chain(mem, chain, server, bufs),
                )
            }
            _ => false,
        };
        // One interrupt line for both queues: the request queue's interrupt
        // (if any) already makes the driver look at the high-priority one.
        if hiprio_used && !signalled {
            if let Some(q) = self.state.serving(HIPRIO) {
                crate::virtio::serve::notify_used(q.queue, q.mem, q.interrupt, true);
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
        let Some(q) = self.state.serving(HIPRIO) else {
            return false;
        };
        if !q.queue.ready() {
            return false;
        }
        let (mem, server, bufs) = (q.mem, &mut self.server, &mut self.bufs);
        crate::virtio::serve::drain_queue("virtio-fs", q.queue, mem, q.evt, HIPRIO_BATCH, |chain| {
            serve_chain(mem, chain, server, bufs)
        })
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
        let len = match crate::virtio::serve::guest_buffer("virtio-fs", mem, &desc) {
            Some(0) => continue,
            Some(len) => len,
            None => return 0,
        };
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
    virtio_state_accessors!(state);

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_from_slice(&self.config, offset, data);
    }

    fn serves_on_vcpu(&self) -> bool {
        self.on_vcpu
    }

    fn serve_notification(&mut self, index: usize) {
        self.process_queue(index);
    }

    fn activate(&mut self, active: Activated) -> Result<(), ActivateError> {
        // The driver may have queued buffers (and its notification been
        // dropped) before DRIVER_OK: look at the queues once now.
        self.state.activate(active, 0..NUM_QUEUES)
    }

    fn reset(&mut self) -> bool {
        self.state.reset();
        // A new driver starts with INIT: forget every inode and handle.
        self.server.reset();
        true
    }
}
