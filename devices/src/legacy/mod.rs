//! Legacy PC devices on the port I/O bus: the 8250 UART the guest's console
//! runs on, just enough of the i8042 controller for the guest to ask for
//! a reset (`reboot=k`), and the ACPI sleep and reset registers.

mod acpi_pm;
mod i8042;
mod serial;

pub use acpi_pm::{
    AcpiPm, ACPI_PM_PORT_BASE, ACPI_PM_PORT_LEN, ACPI_RESET_OFFSET, ACPI_RESET_VALUE,
    ACPI_S5_SLEEP_TYPE, ACPI_SLEEP_CONTROL_OFFSET, ACPI_SLEEP_STATUS_OFFSET,
};
pub use i8042::{I8042, I8042_PORT_BASE, I8042_PORT_LEN};
pub use serial::{Serial, COM1_IRQ, COM1_PORT_BASE, COM1_PORT_LEN};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

/// The guest asking to end the VM (reset or power-off): an eventfd the
/// event loop watches and, when given, a flag the vCPU loops check after
/// every exit, so the vCPU that asked runs no more guest code while the
/// event loop gets to it (the kernel retries the reset in a loop).
pub struct EndSignal {
    evt: EventFd,
    stop: Option<Arc<AtomicBool>>,
}

impl EndSignal {
    pub fn new(evt: EventFd) -> Self {
        Self { evt, stop: None }
    }

    /// Also sets `flag` when raised.
    pub fn stopping(mut self, flag: Arc<AtomicBool>) -> Self {
        self.stop = Some(flag);
        self
    }

    fn raise(&self) -> std::io::Result<()> {
        if let Some(flag) = &self.stop {
            flag.store(true, Ordering::Release);
        }
        self.evt.write(1)
    }
}

impl vm_superio::Trigger for EndSignal {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.raise()
    }
}

/// An `EventFd` as a vm-superio interrupt trigger.
pub struct EventFdTrigger(pub EventFd);

impl vm_superio::Trigger for EventFdTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}
