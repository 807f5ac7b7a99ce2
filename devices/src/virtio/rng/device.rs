use std::io;

use tracing::error;
use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::{RngError, MAX_BYTES_PER_CHAIN, QUEUE_SIZE};
use crate::virtio::features::{VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};
use crate::virtio::{ActivateError, Activated, VirtioDevice, VirtioState, TYPE_RNG};

/// The virtio entropy device.
pub struct Rng {
    state: VirtioState,
    /// Reused for every request so a busy guest costs no allocations.
    scratch: Vec<u8>,
}

impl Rng {
    pub fn new() -> Result<Self, RngError> {
        let features = (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX);
        Ok(Self {
            state: VirtioState::new(TYPE_RNG, "virtio-rng", features, &[QUEUE_SIZE])
                .map_err(RngError::EventFd)?,
            scratch: vec![0; MAX_BYTES_PER_CHAIN],
        })
    }

    /// The eventfd the guest's notifications arrive on.
    pub fn queue_event(&self) -> &EventFd {
        &self.state.queue_evts[0]
    }

    /// Serves every request in the queue (up to one queue's worth per call,
    /// so a guest that keeps refilling cannot monopolise the event loop) and
    /// interrupts the guest if it asked to be told. No-op before activation.
    pub fn process_queue(&mut self) {
        let Some(q) = self.state.serving(0) else {
            return;
        };
        let (mem, scratch) = (q.mem, &mut self.scratch);
        crate::virtio::serve::serve_queue(
            "virtio-rng",
            q.queue,
            mem,
            q.interrupt,
            q.evt,
            |chain| fill_chain(mem, chain, scratch),
        );
    }
}

/// Fills the chain's device-writable buffers with random bytes, at most
/// `scratch.len()` in total, and returns how many were written. A chain with
/// a buffer outside guest memory is malformed and reported as 0 bytes
/// (whatever went into its earlier buffers is only noise to the guest).
/// Loops in the chain are cut off by the queue size (virtio-queue's TTL).
fn fill_chain(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    scratch: &mut [u8],
) -> u32 {
    let mut written = 0usize;
    for desc in chain {
        if !desc.is_write_only() {
            // The driver gives us nothing to read; readable buffers are ignored.
            continue;
        }
        let room = scratch.len() - written;
        if room == 0 {
            break;
        }
        // The whole buffer must be guest memory, not just the part we fill.
        let len = match crate::virtio::serve::guest_buffer("virtio-rng", mem, &desc) {
            Some(0) => continue,
            Some(len) => len,
            None => return 0,
        };
        let n = room.min(len);
        let buf = &mut scratch[..n];
        if let Err(e) = getrandom(buf) {
            error!(error = %e, "virtio-rng: getrandom failed");
            break;
        }
        if let Err(e) = mem.write_slice(buf, desc.addr()) {
            warn_limited!(addr = desc.addr().0, error = %e, "virtio-rng: cannot write buffer");
            return 0;
        }
        written += n;
    }
    // At most scratch.len() (64 KiB), so this never truncates.
    u32::try_from(written).unwrap_or(u32::MAX)
}

/// Fills `buf` from the kernel's CSPRNG (urandom pool, blocking only until
/// it has been seeded once after boot).
fn getrandom(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the pointer and length describe `rest`, a live, exclusively
        // borrowed byte slice; the kernel writes at most `rest.len()` bytes.
        let ret = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        // ret is non-negative and at most rest.len() here.
        filled += ret as usize;
    }
    Ok(())
}

impl VirtioDevice for Rng {
    virtio_state_accessors!(state);

    fn activate(&mut self, active: Activated) -> Result<(), ActivateError> {
        // The driver may have queued buffers (and its notification been
        // dropped) before DRIVER_OK: look at the queue once now.
        self.state.activate(active, [0])
    }

    fn reset(&mut self) -> bool {
        self.state.reset();
        true
    }

    /// A request is a getrandom into guest buffers (at most a queue's
    /// worth, 64 KiB a chain) that the driver waits on: served on the
    /// notifying vCPU, the guest does not halt until another thread has.
    fn serves_on_vcpu(&self) -> bool {
        true
    }

    fn serve_notification(&mut self, index: usize) {
        if index == 0 {
            self.process_queue();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::{Queue, QueueT};

    #[test]
    fn getrandom_fills_large_buffers() {
        let mut a = vec![0u8; MAX_BYTES_PER_CHAIN];
        let mut b = vec![0u8; MAX_BYTES_PER_CHAIN];
        getrandom(&mut a).unwrap();
        getrandom(&mut b).unwrap();
        assert_ne!(a, b);
        // 64 KiB of zeros from a CSPRNG would be a bug, not bad luck.
        assert!(a[MAX_BYTES_PER_CHAIN - 64..].iter().any(|&x| x != 0));
        getrandom(&mut []).unwrap();
    }

    #[test]
    fn activate_checks_queues() {
        let mem = crate::virtio::test_utils::guest_memory();
        let irq = crate::virtio::test_utils::interrupt();
        let mut rng = Rng::new().unwrap();
        assert!(matches!(
            rng.activate(Activated::new(mem.clone(), irq.clone(), vec![])),
            Err(ActivateError::QueueCount { expected: 1, .. })
        ));
        let q = Queue::new(QUEUE_SIZE).unwrap();
        assert!(matches!(
            rng.activate(Activated::new(mem.clone(), irq.clone(), vec![q])),
            Err(ActivateError::QueueNotReady(0))
        ));
        let mut q = Queue::new(QUEUE_SIZE).unwrap();
        q.set_ready(true);
        rng.activate(Activated::new(mem.clone(), irq.clone(), vec![q]))
            .unwrap();
        assert!(rng.is_activated());
        let mut q = Queue::new(QUEUE_SIZE).unwrap();
        q.set_ready(true);
        assert!(matches!(
            rng.activate(Activated::new(mem, irq, vec![q])),
            Err(ActivateError::AlreadyActive)
        ));
        assert!(rng.reset());
        assert!(!rng.is_activated());
    }
}
