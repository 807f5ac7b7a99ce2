//! Snapshots of a virtio device's rings and interrupt state, for the VMM's
//! state dump (`mvm debug`, SIGUSR1). Everything here is read without
//! waiting on a lock that another thread may hold forever: a stuck VM is
//! exactly when that happens, and the dump must still come back.

use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// How long a snapshot tries to take a lock before it reports it as held.
pub const LOCK_PATIENCE: Duration = Duration::from_millis(200);

/// Where the device itself stands in one queue (its own copy of the queue:
/// the next avail entry it will pop, the next used slot it will fill).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueProgress {
    pub next_avail: u16,
    pub next_used: u16,
}

impl QueueProgress {
    pub fn of(queue: &Queue) -> Self {
        Self {
            next_avail: queue.next_avail(),
            next_used: queue.next_used(),
        }
    }
}

/// What a device reports of itself: its queues' progress (in queue order)
/// and free-form lines (e.g. vsock connections and their credit).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceDebug {
    pub queues: Vec<QueueProgress>,
    pub notes: Vec<String>,
}

/// One queue as the driver left it in guest memory, beside the device's
/// own progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSnapshot {
    pub index: usize,
    pub size: u16,
    pub ready: bool,
    pub event_idx: bool,
    /// avail.idx: how far the driver has offered buffers.
    pub avail_idx: Option<u16>,
    /// avail.flags (1 = VIRTQ_AVAIL_F_NO_INTERRUPT).
    pub avail_flags: Option<u16>,
    /// used_event (EVENT_IDX): interrupt once used.idx passes this.
    pub used_event: Option<u16>,
    /// used.idx: how far the device has returned buffers.
    pub used_idx: Option<u16>,
    /// used.flags (1 = VIRTQ_USED_F_NO_NOTIFY).
    pub used_flags: Option<u16>,
    /// avail_event (EVENT_IDX): the driver notifies once avail.idx passes this.
    pub avail_event: Option<u16>,
    /// The device's own position; None when the device was not activated
    /// or its lock was held.
    pub device: Option<QueueProgress>,
}

impl QueueSnapshot {
    /// Reads the rings of `queue` (the transport's copy: addresses and
    /// size) from `mem`. Unreadable fields stay None: the addresses are
    /// the guest's and may be anything.
    pub fn read(index: usize, queue: &Queue, mem: &GuestMemoryMmap) -> Self {
        let size = queue.size();
        let read = |addr: u64| mem.read_obj::<u16>(GuestAddress(addr)).ok();
        let (avail, used) = (queue.avail_ring(), queue.used_ring());
        let ring_end = |base: u64, entry: u64| base.checked_add(4 + entry * u64::from(size));
        let live = queue.ready();
        Self {
            index,
            size,
            ready: live,
            event_idx: queue.event_idx_enabled(),
            avail_flags: live.then(|| read(avail)).flatten(),
            avail_idx: live.then(|| read(avail.wrapping_add(2))).flatten(),
            used_event: live.then(|| ring_end(avail, 2).and_then(read)).flatten(),
            used_flags: live.then(|| read(used)).flatten(),
            used_idx: live.then(|| read(used.wrapping_add(2))).flatten(),
            avail_event: live.then(|| ring_end(used, 8).and_then(read)).flatten(),
            device: None,
        }
    }

    /// How many buffers the driver offered that the device has not taken.
    /// On a request or transmit queue those are requests not served yet;
    /// on a receive queue, buffers waiting for something to deliver (the
    /// normal state).
    pub fn buffers_not_taken(&self) -> u16 {
        match (self.avail_idx, self.device) {
            (Some(a), Some(d)) => a.wrapping_sub(d.next_avail),
            _ => 0,
        }
    }
}

/// A whole device behind its transport.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSnapshot {
    pub device_type: u32,
    /// The driver's status register (DRIVER_OK = 4, NEEDS_RESET = 0x40).
    pub status: u32,
    /// InterruptStatus: bits raised and not yet acknowledged by the driver.
    pub interrupt_status: u32,
    pub activated: bool,
    pub queues: Vec<QueueSnapshot>,
    pub notes: Vec<String>,
}

/// Tries `mutex` for up to [`LOCK_PATIENCE`]; None if another thread kept
/// it all that time (a poisoned lock is taken: a dump wants the state).
pub fn try_lock_patiently<T: ?Sized>(mutex: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    let deadline = Instant::now() + LOCK_PATIENCE;
    loop {
        match mutex.try_lock() {
            Ok(g) => return Some(g),
            Err(TryLockError::Poisoned(p)) => return Some(p.into_inner()),
            Err(TryLockError::WouldBlock) if Instant::now() >= deadline => return None,
            Err(TryLockError::WouldBlock) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// The progress of every queue in `queues`.
pub fn progress_of<'a>(queues: impl IntoIterator<Item = &'a Queue>) -> Vec<QueueProgress> {
    queues.into_iter().map(QueueProgress::of).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::test_utils::{guest_memory, GuestRing, QUEUE_ADDRS};

    #[test]
    fn rings_are_read_from_guest_memory() {
        let mem = guest_memory();
        let (desc, avail, used) = QUEUE_ADDRS[0];
        let mut ring = GuestRing::new(&mem, 16, QUEUE_ADDRS[0]);
        ring.set_desc(0, 0x8000, 16, 0, 0);
        ring.set_desc(1, 0x8100, 16, 0, 0);
        ring.push_avail(0);
        ring.push_avail(1);
        ring.set_used_event(7);
        let mut queue = Queue::new(16).unwrap();
        queue.set_desc_table_address(Some(desc as u32), Some(0));
        queue.set_avail_ring_address(Some(avail as u32), Some(0));
        queue.set_used_ring_address(Some(used as u32), Some(0));
        queue.set_event_idx(true);
        queue.set_ready(true);

        let mut snap = QueueSnapshot::read(0, &queue, &mem);
        assert_eq!(snap.size, 16);
        assert!(snap.ready && snap.event_idx);
        assert_eq!((snap.avail_idx, snap.used_event), (Some(2), Some(7)));
        assert_eq!((snap.used_idx, snap.avail_event), (Some(0), Some(0)));
        snap.device = Some(QueueProgress::of(&queue));
        assert_eq!(snap.buffers_not_taken(), 2, "{snap:?}");
        queue.pop_descriptor_chain(&mem).unwrap();
        queue.pop_descriptor_chain(&mem).unwrap();
        snap.device = Some(QueueProgress::of(&queue));
        assert_eq!(snap.buffers_not_taken(), 0);
    }

    #[test]
    fn rings_outside_memory_read_as_unknown() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 16)]).unwrap();
        let mut queue = Queue::new(256).unwrap();
        queue.set_avail_ring_address(Some(0xffff_fff0), Some(0xffff_ffff));
        queue.set_used_ring_address(Some(0x1000_0000), None);
        queue.set_ready(true);
        let snap = QueueSnapshot::read(3, &queue, &mem);
        assert_eq!(snap.index, 3);
        assert_eq!((snap.avail_idx, snap.used_event), (None, None));
        assert_eq!((snap.used_idx, snap.avail_event), (None, None));
    }

    #[test]
    fn a_held_lock_is_reported_not_waited_for() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let held = m.lock().unwrap();
        let m2 = m.clone();
        let t = std::thread::spawn(move || try_lock_patiently(&m2).is_none());
        assert!(t.join().unwrap());
        drop(held);
        assert!(try_lock_patiently(&m).is_some());
    }
}
