use std::os::fd::AsRawFd;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use tracing::{debug, error};

use super::{Net, NetBackend};
use crate::virtio::VirtioDevice;

impl<B: NetBackend> Net<B> {
    /// Watches the backend fd for what the device can take now: readable
    /// only while the guest has receive buffers, writable only while a
    /// frame waits for the backend.
    fn update_backend_interest(&mut self, ops: &mut EventOps) {
        let Some(current) = self.backend_interest else {
            return;
        };
        let wanted = self.wanted_backend_events();
        if wanted == current {
            return;
        }
        match ops.modify(Events::new_raw(self.backend().as_raw_fd(), wanted)) {
            Ok(()) => self.backend_interest = Some(wanted),
            Err(e) => {
                warn_limited!(error = %e, "virtio-net: cannot change what the backend fd is watched for")
            }
        }
    }
}

fn drain(evt: &vmm_sys_util::eventfd::EventFd) {
    crate::virtio::common::drain_eventfd("virtio-net", evt);
}

impl<B: NetBackend> MutEventSubscriber for Net<B> {
    fn init(&mut self, ops: &mut EventOps) {
        if let Some(calls) = self.vhost_call_events() {
            // vhost-net reads the queue eventfds and the tap itself; we only
            // turn its calls into interrupts.
            for evt in calls {
                if let Err(e) = ops.add(Events::new(evt, EventSet::IN)) {
                    error!(error = %e, "virtio-net: cannot watch a vhost call eventfd");
                }
            }
            return;
        }
        // Registered before activation on purpose: notifications that arrive
        // early are drained and dropped instead of piling up.
        for evt in [self.rx_queue_event(), self.tx_queue_event()] {
            if let Err(e) = ops.add(Events::new(evt, EventSet::IN)) {
                error!(error = %e, "virtio-net: cannot watch a queue eventfd");
            }
        }
        // The backend starts with no interest: nothing is read from it
        // before the guest has posted receive buffers.
        match ops.add(Events::new_raw(
            self.backend().as_raw_fd(),
            EventSet::empty(),
        )) {
            Ok(()) => self.backend_interest = Some(EventSet::empty()),
            Err(e) => error!(error = %e, "virtio-net: cannot watch the backend fd"),
        }
        self.update_backend_interest(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        let set = events.event_set();
        if let Some(call) = self
            .vhost_call_events()
            .and_then(|calls| calls.iter().find(|e| e.as_raw_fd() == fd))
        {
            drain(call);
            self.signal_used_queue();
            return;
        }
        if fd == self.rx_queue_event().as_raw_fd() {
            drain(self.rx_queue_event());
            if self.is_activated() {
                self.process_rx();
            } else {
                debug!("virtio-net: rx notification before activation ignored");
            }
        } else if fd == self.tx_queue_event().as_raw_fd() {
            drain(self.tx_queue_event());
            if self.is_activated() {
                self.process_tx();
            } else {
                debug!("virtio-net: tx notification before activation ignored");
            }
        } else if fd == self.backend().as_raw_fd() && self.backend_interest.is_some() {
            if set.intersects(EventSet::ERROR | EventSet::HANG_UP) {
                // A tap whose interface was deleted reports EPOLLERR forever:
                // stop watching it rather than spin. The guest sees a dead
                // link; the VMM keeps running.
                error!(events = ?set, "virtio-net: backend fd failed; no longer polled");
                if let Err(e) = ops.remove(Events::empty_raw(fd)) {
                    error!(error = %e, "virtio-net: cannot unwatch the backend fd");
                }
                self.backend_interest = None;
                return;
            }
            if set.contains(EventSet::OUT) {
                self.process_tx();
            }
            if set.contains(EventSet::IN) {
                self.process_rx();
            }
        } else {
            warn_limited!(fd, "virtio-net: event for an unknown fd");
            return;
        }
        self.update_backend_interest(ops);
    }
}
