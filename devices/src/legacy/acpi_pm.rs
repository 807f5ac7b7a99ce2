use super::EndSignal;
use crate::bus::BusDevice;

/// The registers a hardware-reduced ACPI FADT points at, as I/O ports:
/// sleep control, sleep status and reset, one byte each.
pub const ACPI_PM_PORT_BASE: u64 = 0x600;
pub const ACPI_PM_PORT_LEN: u64 = 3;
pub const ACPI_SLEEP_CONTROL_OFFSET: u64 = 0;
pub const ACPI_SLEEP_STATUS_OFFSET: u64 = 1;
pub const ACPI_RESET_OFFSET: u64 = 2;
/// What the guest writes to the reset register (the FADT says so).
pub const ACPI_RESET_VALUE: u8 = 1;
/// The sleep type the DSDT's `\_S5_` names for soft-off.
pub const ACPI_S5_SLEEP_TYPE: u8 = 5;

// Sleep control register: SLP_TYP in bits 4:2, SLP_EN in bit 5.
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0x7;
const SLP_EN: u8 = 1 << 5;

/// Power-off and reset for ACPI guests: writing S5 with SLP_EN to the
/// sleep control register raises `poweroff`; writing the reset value to
/// the reset register raises `reset` (the same line the i8042 drives).
/// Reads return 0: the guest then waits for a wake that never comes while
/// the VMM stops it.
pub struct AcpiPm {
    reset: EndSignal,
    poweroff: EndSignal,
}

impl AcpiPm {
    pub fn new(reset: EndSignal, poweroff: EndSignal) -> Self {
        Self { reset, poweroff }
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else {
            return;
        };
        let evt = match offset {
            ACPI_SLEEP_CONTROL_OFFSET
                if value & SLP_EN != 0
                    && (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK == ACPI_S5_SLEEP_TYPE =>
            {
                &self.poweroff
            }
            ACPI_RESET_OFFSET if value == ACPI_RESET_VALUE => &self.reset,
            // Other sleep states and stray writes: nothing to do.
            _ => return,
        };
        if let Err(e) = evt.raise() {
            tracing::error!("ACPI: cannot signal power-off or reset: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use vmm_sys_util::eventfd::EventFd;

    use super::*;

    fn pm() -> (AcpiPm, EventFd, EventFd) {
        let reset = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let off = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let dev = AcpiPm::new(
            EndSignal::new(reset.try_clone().unwrap()),
            EndSignal::new(off.try_clone().unwrap()),
        );
        (dev, reset, off)
    }

    #[test]
    fn s5_with_enable_powers_off() {
        let (mut dev, reset, off) = pm();
        // S5 without SLP_EN, S3 with it, an empty access: nothing.
        dev.write(ACPI_SLEEP_CONTROL_OFFSET, &[ACPI_S5_SLEEP_TYPE << 2]);
        dev.write(ACPI_SLEEP_CONTROL_OFFSET, &[(3 << 2) | SLP_EN]);
        dev.write(ACPI_SLEEP_CONTROL_OFFSET, &[]);
        assert!(off.read().is_err());
        // What Linux writes: (SLP_TYP << 2) | SLP_EN.
        dev.write(
            ACPI_SLEEP_CONTROL_OFFSET,
            &[(ACPI_S5_SLEEP_TYPE << 2) | SLP_EN],
        );
        assert_eq!(off.read().unwrap(), 1);
        assert!(reset.read().is_err());
    }

    #[test]
    fn reset_value_resets_and_reads_are_zero() {
        let (mut dev, reset, off) = pm();
        dev.write(ACPI_RESET_OFFSET, &[2]);
        assert!(reset.read().is_err());
        dev.write(ACPI_RESET_OFFSET, &[ACPI_RESET_VALUE]);
        assert_eq!(reset.read().unwrap(), 1);
        assert!(off.read().is_err());
        let mut b = [0xffu8; 2];
        dev.read(ACPI_SLEEP_STATUS_OFFSET, &mut b);
        assert_eq!(b, [0, 0]);
    }
}
