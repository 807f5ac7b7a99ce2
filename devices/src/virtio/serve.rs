//! The request loop shared by devices whose every request is one
//! descriptor chain answered in place (rng, fs): pop, serve, return used,
//! with notification suppression, a per-call budget and guest lies about
//! the ring handled once.

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::Interrupt;

/// Serves every available chain of `queue` with `serve` (which returns the
/// number of bytes written into the chain), at most one queue's worth per
/// call so a guest that keeps refilling cannot monopolise the event loop:
/// beyond that, `rearm` is written to come back after everyone else had a
/// turn. Interrupts the guest if it asked to be told; returns whether it
/// did.
pub(crate) fn serve_queue<F>(
    device: &'static str,
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    interrupt: &Interrupt,
    rearm: &EventFd,
    mut serve: F,
) -> bool
where
    F: FnMut(DescriptorChain<&GuestMemoryMmap>) -> u32,
{
    let mut budget = queue.size();
    let mut used_any = false;
    // Set once enable_notification reports more work: the next pass must
    // then find some, or the avail index is lying and we stop.
    let mut expect_more = false;
    loop {
        if let Err(e) = queue.disable_notification(mem) {
            warn_limited!(device, error = %e, "cannot disable notifications");
            break;
        }
        let mut popped = 0u32;
        while budget > 0 {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                break;
            };
            budget -= 1;
            popped += 1;
            let head = chain.head_index();
            let len = serve(chain);
            match queue.add_used(mem, head, len) {
                Ok(()) => used_any = true,
                Err(e) => {
                    warn_limited!(device, head, error = %e, "cannot return descriptor chain")
                }
            }
        }
        if expect_more && popped == 0 {
            warn_limited!(device, "available ring index runs ahead of its entries");
            break;
        }
        if budget == 0 {
            if let Err(e) = rearm.write(1) {
                warn_limited!(device, error = %e, "cannot re-arm queue eventfd");
            }
            break;
        }
        match queue.enable_notification(mem) {
            Ok(true) => expect_more = true,
            Ok(false) => break,
            Err(e) => {
                warn_limited!(device, error = %e, "cannot enable notifications");
                break;
            }
        }
    }
    // On error, interrupt anyway: a spurious interrupt is cheaper than a
    // guest waiting forever.
    let notify = used_any && queue.needs_notification(mem).unwrap_or(true);
    if notify {
        interrupt.signal_used_queue();
    }
    notify
}
