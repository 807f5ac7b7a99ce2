use std::os::fd::AsRawFd;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use tracing::error;

use super::VhostUserFs;
use crate::virtio::VirtioDevice;

impl MutEventSubscriber for VhostUserFs {
    fn init(&mut self, ops: &mut EventOps) {
        // Only the backend's calls: the kick eventfds belong to the backend
        // (reading them here would steal its notifications).
        for evt in &self.call_evts {
            if let Err(e) = ops.add(Events::new(evt, EventSet::IN)) {
                error!(error = %e, "vhost-user-fs: cannot watch a call eventfd");
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let Some(evt) = self.call_evts.iter().find(|e| e.as_raw_fd() == events.fd()) else {
            warn_limited!(fd = events.fd(), "vhost-user-fs: event for an unknown fd");
            return;
        };
        crate::virtio::common::drain_eventfd("vhost-user-fs", evt);
        // A call before activation or after reset has no one to tell.
        if let Some(interrupt) = self.state().interrupt() {
            interrupt.signal_used_queue();
        }
    }
}
