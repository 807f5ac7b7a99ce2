//! The state every virtio device keeps the same way: features offered and
//! accepted, queue sizes and queue eventfds, and what it holds between
//! DRIVER_OK and reset (memory, interrupt, queues). Devices embed one
//! [`VirtioState`] and the [`VirtioDevice`](super::VirtioDevice) trait's
//! default methods read it, so a device writes only what is its own
//! (config space, serving its queues, its backend).
//!
//! Shaped after Cloud Hypervisor's `VirtioCommon` (one struct the devices
//! embed, the trait's methods delegating to it), kept smaller: no
//! pause/resume, one interrupt kind. Like Firecracker's `DeviceState`
//! (inactive, or activated with memory and interrupt), what activation
//! brings lives in one `Option<Activated>`, so "active" cannot disagree
//! with having queues.

use std::io;
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::debug::{progress_of, QueueProgress};
use super::{ActivateError, Interrupt};

/// Reads `evt` to zero. Drained before the work it announces, so a
/// notification that arrives meanwhile re-arms it rather than being lost.
pub(crate) fn drain_eventfd(device: &'static str, evt: &EventFd) {
    if let Err(e) = evt.read() {
        if e.kind() != io::ErrorKind::WouldBlock {
            warn_limited!(device, error = %e, "cannot read an eventfd");
        }
    }
}

/// What a device holds between DRIVER_OK and reset.
pub struct Activated {
    pub mem: GuestMemoryMmap,
    pub interrupt: Arc<Interrupt>,
    /// One per queue, in the device's queue order.
    pub queues: Vec<Queue>,
}

impl Activated {
    pub fn new(mem: GuestMemoryMmap, interrupt: Arc<Interrupt>, queues: Vec<Queue>) -> Self {
        Self {
            mem,
            interrupt,
            queues,
        }
    }
}

/// What serving one queue of an active device needs, borrowed apart from
/// the rest of the state.
pub(crate) struct Serving<'a> {
    pub mem: &'a GuestMemoryMmap,
    pub interrupt: &'a Interrupt,
    pub queue: &'a mut Queue,
    /// The queue's eventfd, to come back to it later.
    pub evt: &'a EventFd,
}

/// Features, queues and activation of one virtio device.
pub struct VirtioState {
    /// The virtio device ID (`TYPE_*`).
    device_type: u32,
    /// The device's name in log lines ("virtio-net").
    name: &'static str,
    pub(crate) avail_features: u64,
    /// Always a subset of `avail_features` (see [`Self::set_acked_features`]).
    pub(crate) acked_features: u64,
    queue_sizes: Vec<u16>,
    /// One per queue, created with the device so the event loop can watch
    /// them before the guest activates it.
    pub(crate) queue_evts: Vec<EventFd>,
    /// Bit i set: queue i may be left unready by the driver (virtio-fs's
    /// high-priority queue).
    optional_queues: u64,
    pub(crate) active: Option<Activated>,
}

impl VirtioState {
    /// A device of type `device_type` (`TYPE_*`) named `name` offering
    /// `avail_features`, with one queue (and one eventfd) per entry of
    /// `queue_sizes`.
    pub fn new(
        device_type: u32,
        name: &'static str,
        avail_features: u64,
        queue_sizes: &[u16],
    ) -> io::Result<Self> {
        let queue_evts = queue_sizes
            .iter()
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<io::Result<_>>()?;
        Ok(Self {
            device_type,
            name,
            avail_features,
            acked_features: 0,
            queue_sizes: queue_sizes.to_vec(),
            queue_evts,
            optional_queues: 0,
            active: None,
        })
    }

    /// Lets the driver leave queue `index` unready at activation.
    pub fn with_optional_queue(mut self, index: usize) -> Self {
        self.optional_queues |= 1 << index;
        self
    }

    pub fn device_type(&self) -> u32 {
        self.device_type
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn queue_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    pub fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    pub fn avail_features(&self) -> u64 {
        self.avail_features
    }

    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// Whether the driver accepted feature bit `bit`.
    pub fn has_feature(&self, bit: u32) -> bool {
        self.acked_features & (1 << bit) != 0
    }

    /// Stops offering the features not in `mask` (before any driver saw
    /// them: vhost-net lacks some ring features).
    pub(crate) fn restrict_features(&mut self, mask: u64) {
        self.avail_features &= mask;
    }

    /// Keeps what the driver accepted, never more than was offered.
    pub fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features;
    }

    pub fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    /// The interrupt, while the device is active.
    pub fn interrupt(&self) -> Option<&Arc<Interrupt>> {
        self.active.as_ref().map(|a| &a.interrupt)
    }

    /// What every device checks before it starts: not started yet, one
    /// queue per size, each ready unless it is optional.
    pub fn check_activation(&self, queues: &[Queue]) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        if queues.len() != self.queue_sizes.len() {
            return Err(ActivateError::QueueCount {
                expected: self.queue_sizes.len(),
                got: queues.len(),
            });
        }
        let required = |i: usize| self.optional_queues & (1 << i) == 0;
        match queues
            .iter()
            .enumerate()
            .find(|&(i, q)| required(i) && !q.ready())
        {
            Some((i, _)) => Err(ActivateError::QueueNotReady(i)),
            None => Ok(()),
        }
    }

    /// Records the activation (after [`check_activation`](Self::check_activation)
    /// and whatever the device's backend needed) and kicks the queues
    /// `kick` (see [`kick`](Self::kick)).
    pub fn set_active(&mut self, active: Activated, kick: impl IntoIterator<Item = usize>) {
        self.active = Some(active);
        self.kick(kick);
        tracing::debug!(
            device = self.name,
            acked_features = self.acked_features,
            "activated"
        );
    }

    /// Activation of a device with nothing of its own to start: the checks,
    /// then [`set_active`](Self::set_active).
    pub fn activate(
        &mut self,
        active: Activated,
        kick: impl IntoIterator<Item = usize>,
    ) -> Result<(), ActivateError> {
        self.check_activation(&active.queues)?;
        self.set_active(active, kick);
        Ok(())
    }

    /// Queue `index` of the active device and what serving it needs; None
    /// before activation or for an unknown index.
    pub(crate) fn serving(&mut self, index: usize) -> Option<Serving<'_>> {
        let active = self.active.as_mut()?;
        Some(Serving {
            mem: &active.mem,
            interrupt: &active.interrupt,
            queue: active.queues.get_mut(index)?,
            evt: self.queue_evts.get(index)?,
        })
    }

    /// Makes the event loop look at the queues `indices`: the driver may
    /// have queued buffers (and its notifications been dropped) before
    /// DRIVER_OK, and a queue whose budget ran out comes back after
    /// everyone else had a turn.
    pub fn kick(&self, indices: impl IntoIterator<Item = usize>) {
        for i in indices {
            if let Some(evt) = self.queue_evts.get(i) {
                if let Err(e) = evt.write(1) {
                    warn_limited!(device = self.name, queue = i, error = %e, "cannot kick a queue");
                }
            }
        }
    }

    /// Back to the pre-activation state: queues, memory and the accepted
    /// features go.
    pub fn reset(&mut self) {
        self.active = None;
        self.acked_features = 0;
    }

    /// The queue whose eventfd is `fd`, drained (see [`drain_eventfd`]),
    /// for an event loop that watches them all alike; None for another fd.
    pub(crate) fn take_queue_event(&self, fd: std::os::fd::RawFd) -> Option<usize> {
        use std::os::fd::AsRawFd;
        let index = self.queue_evts.iter().position(|e| e.as_raw_fd() == fd)?;
        drain_eventfd(self.name, &self.queue_evts[index]);
        Some(index)
    }

    /// The device's position in each queue, for the state dump (empty
    /// before activation).
    pub fn queue_progress(&self) -> Vec<QueueProgress> {
        self.active
            .as_ref()
            .map(|a| progress_of(&a.queues))
            .unwrap_or_default()
    }
}
