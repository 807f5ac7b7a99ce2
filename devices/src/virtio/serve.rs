//! The request loop shared by devices whose every request is one
//! descriptor chain answered in place (rng, fs): pop, serve, return used,
//! with notification suppression, a per-call budget and guest lies about
//! the ring handled once.

use std::sync::atomic::{fence, Ordering};

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::Interrupt;

/// Serves every available chain of `queue` with `serve` (which returns the
/// number of bytes written into the chain), as [`drain_queue`] does with a
/// notification wanted for every new chain, then interrupts the guest if it
/// asked to be told; returns whether it did.
pub(crate) fn serve_queue<F>(
    device: &'static str,
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    interrupt: &Interrupt,
    rearm: &EventFd,
    serve: F,
) -> bool
where
    F: FnMut(DescriptorChain<&GuestMemoryMmap>) -> u32,
{
    let used_any = drain_queue(device, queue, mem, rearm, 1, serve);
    // On error, interrupt anyway: a spurious interrupt is cheaper than a
    // guest waiting forever.
    let notify = used_any && queue.needs_notification(mem).unwrap_or(true);
    if notify {
        interrupt.signal_used_queue();
    }
    notify
}

/// Serves every available chain of `queue` with `serve`, at most one
/// queue's worth per call so a guest that keeps refilling cannot
/// monopolise the thread: beyond that, `rearm` is written to come back
/// after everyone else had a turn. Returns whether any chain was used; the
/// caller decides about the interrupt.
///
/// Notifications are re-enabled at the end. With EVENT_IDX and `batch` > 1
/// the driver is asked to notify only once `batch` more chains wait (at most
/// half the ring, so it cannot fill the ring unnoticed): for queues whose
/// requests nobody waits on, which the device also drains on other
/// occasions.
pub(crate) fn drain_queue<F>(
    device: &'static str,
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    rearm: &EventFd,
    batch: u16,
    mut serve: F,
) -> bool
where
    F: FnMut(DescriptorChain<&GuestMemoryMmap>) -> u32,
{
    let mut budget = queue.size();
    let mut used_any = false;
    // Set once re-enabling reports more work: the next pass must then find
    // some, or the avail index is lying and we stop.
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
        match enable_notification(queue, mem, batch) {
            Ok(true) => expect_more = true,
            Ok(false) => break,
            Err(e) => {
                warn_limited!(device, error = %e, "cannot enable notifications");
                break;
            }
        }
    }
    used_any
}

/// [`QueueT::enable_notification`], but with EVENT_IDX the driver is asked
/// to notify only after `batch` more chains (at most half the ring).
/// Returns whether chains arrived meanwhile.
fn enable_notification(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    batch: u16,
) -> Result<bool, String> {
    if batch <= 1 || !queue.event_idx_enabled() {
        return queue.enable_notification(mem).map_err(|e| e.to_string());
    }
    let n = batch.min(queue.size() / 2).max(1);
    let value = queue.next_avail().wrapping_add(n - 1);
    // avail_event follows the used ring's flags (2), idx (2) and one 8-byte
    // element per entry.
    let addr = queue
        .used_ring()
        .checked_add(4 + 8 * u64::from(queue.size()))
        .ok_or("used ring address overflows")?;
    mem.store(value.to_le(), GuestAddress(addr), Ordering::Release)
        .map_err(|e| e.to_string())?;
    // The driver may have added chains before it could see the new
    // threshold: look once more (as enable_notification does).
    fence(Ordering::SeqCst);
    queue
        .avail_idx(mem, Ordering::Relaxed)
        .map(|idx| idx.0 != queue.next_avail())
        .map_err(|e| e.to_string())
}
