use std::io;
use std::os::fd::AsRawFd;

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
        let Some(index) = self
            .queue_events()
            .iter()
            .position(|e| e.as_raw_fd() == events.fd())
        else {
            warn_limited!(fd = events.fd(), "virtio-fs: event for an unknown fd");
            return;
        };
        if !events.event_set().contains(EventSet::IN) {
            warn_limited!(events = ?events.event_set(), "virtio-fs: unexpected queue eventfd state");
            return;
        }
        // Drain before processing so a notification that arrives meanwhile
        // re-arms the fd rather than being lost.
        if let Err(e) = self.queue_events()[index].read() {
            if e.kind() != io::ErrorKind::WouldBlock {
                warn_limited!(error = %e, "virtio-fs: cannot read a queue eventfd");
            }
        }
        if self.is_activated() {
            self.process_queue(index);
        } else {
            debug!("virtio-fs: notification before activation ignored");
        }
    }
}
