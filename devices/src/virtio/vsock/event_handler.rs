use std::os::fd::AsRawFd;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use tracing::{debug, error};

use super::{Vsock, EVENT_QUEUE, RX_QUEUE, TX_QUEUE};
use crate::virtio::common::drain_eventfd;
use crate::virtio::VirtioDevice;

impl MutEventSubscriber for Vsock {
    fn init(&mut self, ops: &mut EventOps) {
        // The queue eventfds are watched before activation on purpose:
        // early notifications are drained instead of piling up. The
        // listener too: host clients may connect before the guest driver
        // is up and are served once it is.
        let fds = [
            self.queue_event(RX_QUEUE).as_raw_fd(),
            self.queue_event(TX_QUEUE).as_raw_fd(),
            self.queue_event(EVENT_QUEUE).as_raw_fd(),
            self.listener.as_raw_fd(),
            self.timer.as_raw_fd(),
            self.wake.as_raw_fd(),
        ];
        for fd in fds {
            if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
                error!(fd, error = ?e, "virtio-vsock: cannot watch a device fd");
            }
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        let set = events.event_set();
        if fd == self.queue_event(RX_QUEUE).as_raw_fd() {
            // New rx buffers: finish_round fills them.
            drain_eventfd("virtio-vsock rx", self.queue_event(RX_QUEUE));
        } else if fd == self.queue_event(TX_QUEUE).as_raw_fd() {
            drain_eventfd("virtio-vsock tx", self.queue_event(TX_QUEUE));
            if self.is_activated() {
                self.process_tx();
            } else {
                debug!("virtio-vsock: tx notification before activation ignored");
            }
        } else if fd == self.queue_event(EVENT_QUEUE).as_raw_fd() {
            // The event queue only ever carries transport resets, which this
            // device does not send; its buffers simply stay posted.
            drain_eventfd("virtio-vsock event", self.queue_event(EVENT_QUEUE));
        } else if fd == self.listener.as_raw_fd() {
            self.muxer.accept(&self.listener);
        } else if fd == self.timer.as_raw_fd() {
            self.on_timer();
        } else if fd == self.wake.as_raw_fd() {
            drain_eventfd("virtio-vsock wake", &self.wake);
        } else {
            self.muxer.on_fd_event(fd, set);
        }
        self.finish_round(ops);
    }
}
