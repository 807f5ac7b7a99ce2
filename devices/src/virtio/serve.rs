//! The one place for a device's side of a split queue: popping chains,
//! publishing used entries and deciding about notifications.
//!
//! [`drain`] is the loop of every queue the driver fills and the device
//! empties (rng, fs, net and vsock transmit): pop, serve, return used, with
//! notification suppression, a per-call budget and guest lies about the
//! ring handled once. The receive side of net and vsock fills buffers when
//! it has something and uses [`pop_or_listen`], [`publish_used`] and
//! [`needs_interrupt_since`].

use std::sync::atomic::{fence, Ordering};

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::Interrupt;

/// What serving one chain came to.
pub(crate) enum Served {
    /// Return the chain to the driver with this many bytes written into it.
    Used(u32),
    /// Keep the chain (the device holds on to it and returns it later) and
    /// stop draining: the device cannot take more now.
    Keep,
}

/// A device's side of [`drain`]: what it does with each chain.
pub(crate) trait ChainServer {
    /// Whether another chain may be popped now; false stops the drain
    /// before it pops (the device is waiting on something of its own).
    fn ready(&mut self) -> bool {
        true
    }

    fn serve(&mut self, chain: DescriptorChain<&GuestMemoryMmap>) -> Served;
}

/// A [`ChainServer`] from a closure returning the bytes written.
struct Each<F>(F);

impl<F> ChainServer for Each<F>
where
    F: FnMut(DescriptorChain<&GuestMemoryMmap>) -> u32,
{
    fn serve(&mut self, chain: DescriptorChain<&GuestMemoryMmap>) -> Served {
        Served::Used((self.0)(chain))
    }
}

/// Serves every available chain of `queue` with `serve` (which returns the
/// number of bytes written into the chain), as [`drain`] does with a
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
    let used_any = drain(device, queue, mem, rearm, 1, &mut Each(serve));
    notify_used(queue, mem, interrupt, used_any)
}

/// Interrupts the guest for the chains just used if there were any and it
/// asked to be told (virtio-queue's count of what was added since the last
/// check, with EVENT_IDX); returns whether it did.
pub(crate) fn notify_used(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    interrupt: &Interrupt,
    used_any: bool,
) -> bool {
    // On error, interrupt anyway: a spurious interrupt is cheaper than a
    // guest waiting forever.
    let notify = used_any && queue.needs_notification(mem).unwrap_or(true);
    if notify {
        interrupt.signal_used_queue();
    }
    notify
}

/// [`drain`] with a closure returning the bytes written into each chain.
pub(crate) fn drain_queue<F>(
    device: &'static str,
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    rearm: &EventFd,
    batch: u16,
    serve: F,
) -> bool
where
    F: FnMut(DescriptorChain<&GuestMemoryMmap>) -> u32,
{
    drain(device, queue, mem, rearm, batch, &mut Each(serve))
}

/// Serves every available chain of `queue` with `server`, at most one
/// queue's worth per call so a guest that keeps refilling cannot
/// monopolise the thread: beyond that, `rearm` is written to come back
/// after everyone else had a turn. Returns whether any chain was used; the
/// caller decides about the interrupt. A server that is not
/// [`ready`](ChainServer::ready) or [`Keep`](Served::Keep)s a chain stops
/// the drain with notifications left off: the device comes back on its
/// own event.
///
/// Notifications are re-enabled at the end. With EVENT_IDX and `batch` > 1
/// the driver is asked to notify only once `batch` more chains wait (at most
/// half the ring, so it cannot fill the ring unnoticed): for queues whose
/// requests nobody waits on, which the device also drains on other
/// occasions.
pub(crate) fn drain<S: ChainServer>(
    device: &'static str,
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    rearm: &EventFd,
    batch: u16,
    server: &mut S,
) -> bool {
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
            if !server.ready() {
                return used_any;
            }
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                break;
            };
            budget -= 1;
            popped += 1;
            let head = chain.head_index();
            match server.serve(chain) {
                Served::Used(len) => used_any |= add_used(device, queue, mem, head, len),
                Served::Keep => return used_any,
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

/// The length of `desc`'s buffer if all of it is guest memory (the
/// guest's lengths are checked, never trusted); None, logged, if it is
/// not, which spoils its chain.
pub(crate) fn guest_buffer(
    device: &'static str,
    mem: &GuestMemoryMmap,
    desc: &Descriptor,
) -> Option<usize> {
    let len = desc.len() as usize;
    if len > 0 && !GuestMemoryBackend::check_range(mem, desc.addr(), len) {
        warn_limited!(
            device,
            addr = desc.addr().0,
            len,
            "buffer outside guest memory"
        );
        return None;
    }
    Some(len)
}

/// Puts a chain on the used ring; true if it got there.
pub(crate) fn add_used(
    device: &'static str,
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    head: u16,
    len: u32,
) -> bool {
    match queue.add_used(mem, head, len) {
        Ok(()) => true,
        Err(e) => {
            warn_limited!(device, head, error = %e, "cannot return descriptor chain");
            false
        }
    }
}

/// Pops the next chain; when the ring looks empty, asks the driver to
/// notify us about new buffers and looks once more (the driver may have
/// added one in between). For queues the device fills when it has
/// something, not when the driver notifies.
pub(crate) fn pop_or_listen<'a>(
    device: &'static str,
    queue: &mut Queue,
    mem: &'a GuestMemoryMmap,
) -> Option<DescriptorChain<&'a GuestMemoryMmap>> {
    if let Some(chain) = queue.pop_descriptor_chain(mem) {
        return Some(chain);
    }
    match queue.enable_notification(mem) {
        Ok(true) => queue.pop_descriptor_chain(mem),
        Ok(false) => None,
        Err(e) => {
            warn_limited!(device, error = %e, "cannot enable notifications");
            None
        }
    }
}

/// Puts the chains of one frame on the used ring and only then moves the
/// used index, once: a driver reading num_buffers must find every buffer of
/// the frame already there (Linux polls the ring from another vCPU while we
/// write it). virtio-queue's add_used publishes each entry on its own, so
/// all but the last entry are written here and add_used writes the last
/// one and the index. True if anything was published.
pub(crate) fn publish_used(
    device: &'static str,
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    entries: &[(u16, u32)],
) -> bool {
    let Some((&(last_head, last_len), rest)) = entries.split_last() else {
        return false;
    };
    let size = queue.size();
    let start = queue.next_used();
    let written_ahead = rest.iter().enumerate().all(|(k, &(head, len))| {
        // k < entries.len() <= the queue size, so it fits in u16.
        let slot = start.wrapping_add(k as u16) % size;
        let mut elem = [0u8; 8];
        elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        head < size
            && GuestAddress(queue.used_ring())
                .checked_add(4 + 8 * u64::from(slot))
                .is_some_and(|addr| mem.write_slice(&elem, addr).is_ok())
    });
    if !written_ahead {
        // Cannot happen with a ring that passed activation; fall back to
        // one entry at a time.
        warn_limited!(device, "cannot batch used entries");
        let mut any = false;
        for &(head, len) in entries {
            any |= add_used(device, queue, mem, head, len);
        }
        return any;
    }
    // The last entry goes at start + rest.len(); add_used writes it, then
    // stores the index (release) past all of them.
    queue.set_next_used(start.wrapping_add(rest.len() as u16));
    if add_used(device, queue, mem, last_head, last_len) {
        true
    } else {
        queue.set_next_used(start);
        false
    }
}

/// Whether the driver wants an interrupt for the used entries added since
/// the used index was `old` (virtio 1.2, 2.7.10: used_event, when
/// EVENT_IDX is on; always otherwise). Our own check rather than
/// virtio-queue's, whose count of added entries misses those written by
/// [`publish_used`].
pub(crate) fn needs_interrupt_since(queue: &Queue, mem: &GuestMemoryMmap, old: u16) -> bool {
    if !queue.event_idx_enabled() {
        return true;
    }
    // Our used-index store must be visible before we read used_event, as
    // the driver writes used_event before it re-reads the used index.
    fence(Ordering::SeqCst);
    let addr = GuestAddress(queue.avail_ring()).checked_add(4 + 2 * u64::from(queue.size()));
    let Some(used_event) = addr.and_then(|a| mem.load::<u16>(a, Ordering::Acquire).ok()) else {
        return true;
    };
    let used_event = u16::from_le(used_event);
    let new = queue.next_used();
    new.wrapping_sub(used_event).wrapping_sub(1) < new.wrapping_sub(old)
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
