//! Everything a guest talks to: legacy PC devices on the port I/O bus and
//! virtio devices on the virtio-mmio transport. Devices know guest memory
//! and queues; they never know KVM or the command line.

pub mod bus;
pub mod legacy;
pub mod tap;
pub mod virtio;
