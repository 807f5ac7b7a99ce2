use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use tracing::{debug, error};

use super::Fs;
use crate::virtio::VirtioDevice;

impl MutEventSubscriber for Fs {
    fn init(&mut self, ops: &mut EventOps) {
        // Registered before activation on purpose: notifications that arrive
        // early are drained and dropped instead of piling up.
        for evt in self.queue_events() {
            if let Err(e) = ops.add(Events::new(evt, EventSet::IN)) {
                error!(error = %e, "virtio-fs: cannot watch a queue eventfd");
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if !events.event_set().contains(EventSet::IN) {
            warn_limited!(events = ?events.event_set(), "virtio-fs: unexpected queue eventfd state");
            return;
        }
        match self.state().take_queue_event(events.fd()) {
            None => warn_limited!(fd = events.fd(), "virtio-fs: event for an unknown fd"),
            Some(index) if self.is_activated() => self.process_queue(index),
            Some(_) => debug!("virtio-fs: notification before activation ignored"),
        }
    }
}
