use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use tracing::{debug, error};

use super::Block;
use crate::virtio::VirtioDevice;

impl MutEventSubscriber for Block {
    fn init(&mut self, ops: &mut EventOps) {
        // Registered before activation: early notifications are drained
        // and dropped instead of piling up.
        if let Err(e) = ops.add(Events::new(self.queue_event(), EventSet::IN)) {
            error!(error = %e, "virtio-blk: cannot watch the queue eventfd");
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if !events.event_set().contains(EventSet::IN) {
            warn_limited!(events = ?events.event_set(), "virtio-blk: unexpected queue eventfd state");
            return;
        }
        if self.state().take_queue_event(events.fd()).is_none() {
            warn_limited!(fd = events.fd(), "virtio-blk: event for an unknown fd");
        } else if self.is_activated() {
            self.process_queue();
        } else {
            debug!("virtio-blk: notification before activation ignored");
        }
    }
}
