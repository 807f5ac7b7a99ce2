//! The interrupt line of one virtio-mmio device.

use std::sync::atomic::{AtomicU32, Ordering};

use vmm_sys_util::eventfd::EventFd;

use super::{INT_CONFIG, INT_VRING};

/// Raises the device's interrupt line directly (the VMM: KVM_IRQ_LINE,
/// high then low). KVM injects an irqfd routed to an IOAPIC pin from a
/// kernel worker thread, one more thread switch per interrupt; the ioctl
/// injects on the calling thread.
pub trait IrqLine: Send + Sync {
    fn pulse(&self) -> std::io::Result<()>;
}

/// InterruptStatus bits plus the eventfd that raises the device's GSI (the
/// VMM registers it as a KVM irqfd) and, when the VMM gives one, a direct
/// [`IrqLine`] used instead of it. Shared by the transport, which reads and
/// acknowledges the status, and the device, which raises it.
pub struct Interrupt {
    status: AtomicU32,
    config_generation: AtomicU32,
    event: EventFd,
    line: Option<Box<dyn IrqLine>>,
}

impl Interrupt {
    pub fn new(event: EventFd) -> Self {
        Self {
            status: AtomicU32::new(0),
            config_generation: AtomicU32::new(0),
            event,
            line: None,
        }
    }

    /// Raised through `line`; `event` (the irqfd) stays the fallback.
    pub fn with_line(event: EventFd, line: Box<dyn IrqLine>) -> Self {
        Self {
            line: Some(line),
            ..Self::new(event)
        }
    }

    /// Tells the driver that a queue has new used entries.
    pub fn signal_used_queue(&self) {
        self.signal(INT_VRING);
    }

    /// Tells the driver that the configuration space (or the device status,
    /// e.g. DEVICE_NEEDS_RESET) changed. Bumps ConfigGeneration first, so a
    /// driver that re-reads the generation sees the change.
    pub fn signal_config_change(&self) {
        self.config_generation.fetch_add(1, Ordering::AcqRel);
        self.signal(INT_CONFIG);
    }

    /// The InterruptStatus register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::Acquire)
    }

    /// InterruptACK: clears `bits` from the status.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::AcqRel);
    }

    /// The ConfigGeneration register.
    pub fn config_generation(&self) -> u32 {
        self.config_generation.load(Ordering::Acquire)
    }

    /// The eventfd behind the interrupt line, for registering it as an irqfd.
    pub fn irqfd(&self) -> &EventFd {
        &self.event
    }

    fn signal(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::AcqRel);
        if let Some(line) = &self.line {
            match line.pulse() {
                Ok(()) => return,
                Err(e) => {
                    warn_limited!(error = %e, "cannot raise the interrupt line; using the irqfd")
                }
            }
        }
        // A failure here means a lost interrupt, not a broken VMM: log it and
        // let the driver's next poll or notification recover.
        if let Err(e) = self.event.write(1) {
            warn_limited!(error = %e, "failed to signal virtio interrupt");
        }
    }
}

impl std::fmt::Debug for Interrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interrupt")
            .field("status", &self.status())
            .field("config_generation", &self.config_generation())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    struct Line {
        pulses: Arc<AtomicUsize>,
        fail: bool,
    }

    impl IrqLine for Line {
        fn pulse(&self) -> std::io::Result<()> {
            self.pulses.fetch_add(1, Ordering::SeqCst);
            if self.fail {
                return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
            }
            Ok(())
        }
    }

    #[test]
    fn a_direct_line_replaces_the_irqfd_and_falls_back_to_it() {
        for fail in [false, true] {
            let pulses = Arc::new(AtomicUsize::new(0));
            let line = Line {
                pulses: pulses.clone(),
                fail,
            };
            let irq = Interrupt::with_line(EventFd::new(EFD_NONBLOCK).unwrap(), Box::new(line));
            irq.signal_used_queue();
            assert_eq!(irq.status(), INT_VRING);
            assert_eq!(pulses.load(Ordering::SeqCst), 1);
            // The irqfd is written only when the line failed.
            assert_eq!(irq.irqfd().read().is_ok(), fail);
        }
    }

    #[test]
    fn status_signal_and_ack() {
        let irq = Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap());
        assert_eq!(irq.status(), 0);
        assert!(irq.irqfd().read().is_err(), "nothing signalled yet");

        irq.signal_used_queue();
        assert_eq!(irq.status(), INT_VRING);
        assert_eq!(irq.irqfd().read().unwrap(), 1);

        let gen = irq.config_generation();
        irq.signal_config_change();
        assert_eq!(irq.status(), INT_VRING | INT_CONFIG);
        assert_eq!(irq.config_generation(), gen.wrapping_add(1));

        irq.ack(INT_VRING);
        assert_eq!(irq.status(), INT_CONFIG);
        irq.ack(u32::MAX);
        assert_eq!(irq.status(), 0);
    }

    #[test]
    fn signalling_a_full_eventfd_does_not_panic() {
        let irq = Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap());
        // The counter saturates at u64::MAX - 1; further writes fail with EAGAIN.
        irq.irqfd().write(u64::MAX - 1).unwrap();
        irq.signal_used_queue();
        assert_eq!(irq.status(), INT_VRING);
    }
}
