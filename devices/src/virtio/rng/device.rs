use std::io;
use std::sync::Arc;

use tracing::{debug, error};
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{RngError, MAX_BYTES_PER_CHAIN, QUEUE_SIZE};
use crate::virtio::features::{VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};
use crate::virtio::{ActivateError, Interrupt, VirtioDevice, TYPE_RNG};

/// What the device holds between DRIVER_OK and reset.
struct Active {
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    queue: Queue,
}

/// The virtio entropy device.
pub struct Rng {
    acked_features: u64,
    queue_sizes: [u16; 1],
    queue_evts: [EventFd; 1],
    active: Option<Active>,
    /// Reused for every request so a busy guest costs no allocations.
    scratch: Vec<u8>,
}

impl Rng {
    pub fn new() -> Result<Self, RngError> {
        Ok(Self {
            acked_features: 0,
            queue_sizes: [QUEUE_SIZE],
            queue_evts: [EventFd::new(EFD_NONBLOCK).map_err(RngError::EventFd)?],
            active: None,
            scratch: vec![0; MAX_BYTES_PER_CHAIN],
        })
    }

    /// The eventfd the guest's notifications arrive on.
    pub fn queue_event(&self) -> &EventFd {
        &self.queue_evts[0]
    }

    /// Serves every request in the queue (up to one queue's worth per call,
    /// so a guest that keeps refilling cannot monopolise the event loop) and
    /// interrupts the guest if it asked to be told. No-op before activation.
    pub fn process_queue(&mut self) {
        let Some(active) = &mut self.active else {
            return;
        };
        let Active {
            mem,
            interrupt,
            queue,
        } = active;
        let scratch = &mut self.scratch;
        crate::virtio::serve::serve_queue(
            "virtio-rng",
            queue,
            mem,
            interrupt,
            &self.queue_evts[0],
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
        let len = desc.len() as usize;
        if len == 0 {
            continue;
        }
        // The whole buffer must be guest memory, not just the part we fill.
        if !GuestMemoryBackend::check_range(mem, desc.addr(), len) {
            warn_limited!(
                addr = desc.addr().0,
                len,
                "virtio-rng: buffer outside guest memory"
            );
            return 0;
        }
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
    fn device_type(&self) -> u32 {
        TYPE_RNG
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

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<Interrupt>,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        let queue = match <[Queue; 1]>::try_from(queues) {
            Ok([queue]) => queue,
            Err(queues) => {
                return Err(ActivateError::QueueCount {
                    expected: 1,
                    got: queues.len(),
                })
            }
        };
        if !queue.ready() {
            return Err(ActivateError::QueueNotReady(0));
        }
        self.active = Some(Active {
            mem,
            interrupt,
            queue,
        });
        // The driver may have queued buffers (and its notification been
        // dropped) before DRIVER_OK: look at the queue once now.
        if let Err(e) = self.queue_evts[0].write(1) {
            warn_limited!(error = %e, "virtio-rng: cannot kick queue after activation");
        }
        debug!(acked_features = self.acked_features, "virtio-rng activated");
        Ok(())
    }

    fn reset(&mut self) -> bool {
        self.active = None;
        self.acked_features = 0;
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
                .map(|a| crate::virtio::debug::progress_of([&a.queue]))
                .unwrap_or_default(),
            notes: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            rng.activate(mem.clone(), irq.clone(), vec![]),
            Err(ActivateError::QueueCount { expected: 1, .. })
        ));
        let q = Queue::new(QUEUE_SIZE).unwrap();
        assert!(matches!(
            rng.activate(mem.clone(), irq.clone(), vec![q]),
            Err(ActivateError::QueueNotReady(0))
        ));
        let mut q = Queue::new(QUEUE_SIZE).unwrap();
        q.set_ready(true);
        rng.activate(mem.clone(), irq.clone(), vec![q]).unwrap();
        assert!(rng.is_activated());
        let mut q = Queue::new(QUEUE_SIZE).unwrap();
        q.set_ready(true);
        assert!(matches!(
            rng.activate(mem, irq, vec![q]),
            Err(ActivateError::AlreadyActive)
        ));
        assert!(rng.reset());
        assert!(!rng.is_activated());
    }
}
