use std::io;
use std::os::fd::AsRawFd;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use tracing::{debug, error};

use super::Rng;
use crate::virtio::VirtioDevice;

impl MutEventSubscriber for Rng {
    fn init(&mut self, ops: &mut EventOps) {
        // Registered before activation on purpose: notifications that arrive
        // early are drained and dropped instead of piling up.
        if let Err(e) = ops.add(Events::new(self.queue_event(), EventSet::IN)) {
            error!(error = %e, "virtio-rng: cannot watch the queue eventfd");
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() != self.queue_event().as_raw_fd() {
            warn_limited!(fd = events.fd(), "virtio-rng: event for an unknown fd");
            return;
        }
        if !events.event_set().contains(EventSet::IN) {
            warn_limited!(events = ?events.event_set(), "virtio-rng: unexpected queue eventfd state");
            return;
        }
        // Drain before processing so a notification that arrives meanwhile
        // re-arms the fd rather than being lost.
        if let Err(e) = self.queue_event().read() {
            if e.kind() != io::ErrorKind::WouldBlock {
                warn_limited!(error = %e, "virtio-rng: cannot read the queue eventfd");
            }
        }
        if self.is_activated() {
            self.process_queue();
        } else {
            debug!("virtio-rng: notification before activation ignored");
        }
    }
}
