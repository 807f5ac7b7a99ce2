//! ACPI tables for kernels built with ACPI (distribution kernels): the
//! RSDP, the XSDT, a hardware-reduced FADT with the sleep and reset
//! registers of [`devices::legacy::AcpiPm`], the DSDT (`dsdt.rs`: the
//! console and the virtio-mmio devices) and the MADT (a local APIC per
//! vCPU and the IO-APIC). Our own guest kernel has no ACPI and reads the
//! MP table instead (`arch/x86_64/mptable.rs`); both describe the same
//! machine.
//!
//! Everything goes into the reserved range from [`ACPI_START`] to 1 MiB,
//! where a kernel scans for the RSDP when the boot protocol does not hand
//! it the address.

mod dsdt;

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use devices::legacy::{
    ACPI_PM_PORT_BASE, ACPI_RESET_OFFSET, ACPI_RESET_VALUE, ACPI_SLEEP_CONTROL_OFFSET,
    ACPI_SLEEP_STATUS_OFFSET,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub use dsdt::VirtioMmioDevice;

use crate::arch::layout::{APIC_START, HIMEM_START, IOAPIC_START};
use crate::arch::mptable::MAX_CPUS;

/// The RSDP sits here, at the start of the BIOS area a kernel scans
/// (0xe0000-0xfffff); the other tables follow it.
pub const ACPI_START: u64 = 0xe_0000;

const OEM_ID: [u8; 6] = *b"MVM   ";
const OEM_TABLE_ID: [u8; 8] = *b"MVMVM   ";
const OEM_REVISION: u32 = 1;

// FADT IA-PC boot architecture flags: no VGA, no MSI, no CMOS RTC (so
// the kernel does not probe hardware this VMM does not emulate). The
// absent "8042" flag tells it there is no keyboard controller to drive;
// `reboot=k` still reaches the reset line directly.
const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
const IAPC_MSI_NOT_SUPPORTED: u16 = 1 << 3;
const IAPC_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AcpiError {
    #[error("ACPI tables support 1 to {MAX_CPUS} CPUs, not {0}")]
    CpuCount(u8),
    #[error("the ACPI tables ({0} bytes) do not fit below 1 MiB")]
    TooBig(usize),
    #[error("cannot write the ACPI tables into guest memory")]
    Write,
}

/// What the tables describe.
#[derive(Debug, Clone)]
pub struct AcpiParams<'a> {
    pub cpus: u8,
    pub virtio: &'a [VirtioMmioDevice],
}

/// The tables laid out from `base`: the bytes to write there and the
/// address of the RSDP (which is `base`).
#[derive(Debug)]
pub struct AcpiTables {
    pub rsdp_addr: u64,
    pub bytes: Vec<u8>,
}

fn aml_bytes(table: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    table.to_aml_bytes(&mut v);
    v
}

/// Appends `table` 8-byte aligned and returns its guest address.
fn place(out: &mut Vec<u8>, base: u64, table: &[u8]) -> u64 {
    out.resize(out.len().next_multiple_of(8), 0);
    let addr = base + out.len() as u64;
    out.extend_from_slice(table);
    addr
}

/// Builds every table, laid out from `base`.
pub fn build(base: u64, p: &AcpiParams) -> Result<AcpiTables, AcpiError> {
    if p.cpus == 0 || p.cpus > MAX_CPUS {
        return Err(AcpiError::CpuCount(p.cpus));
    }
    // The RSDP comes first but points at the XSDT, which comes last:
    // reserve its room now and fill it in at the end.
    let mut out = vec![0u8; Rsdp::len()];

    let dsdt_addr = place(&mut out, base, &dsdt::build(p.virtio));
    let fadt_addr = place(&mut out, base, &aml_bytes(&fadt(dsdt_addr)));
    let madt_addr = place(&mut out, base, &aml_bytes(&madt(p.cpus)));
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let xsdt_addr = place(&mut out, base, &aml_bytes(&xsdt));
    out[..Rsdp::len()].copy_from_slice(&aml_bytes(&Rsdp::new(OEM_ID, xsdt_addr)));

    if base + out.len() as u64 > HIMEM_START {
        return Err(AcpiError::TooBig(out.len()));
    }
    Ok(AcpiTables {
        rsdp_addr: base,
        bytes: out,
    })
}

fn io_register(port: u64) -> GAS {
    GAS::new(AddressSpace::SystemIo, 8, 0, AccessSize::ByteAccess, port)
}

/// Hardware-reduced: no PM1 blocks, no SCI, no legacy PIC; power-off and
/// reset go through the sleep control and reset registers.
fn fadt(dsdt_addr: u64) -> acpi_tables::fadt::FADT {
    let mut f = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        // No fixed power button: it would be one more thing to emulate.
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    f.iapc_boot_arch =
        (IAPC_VGA_NOT_PRESENT | IAPC_MSI_NOT_SUPPORTED | IAPC_CMOS_RTC_NOT_PRESENT).into();
    f.sleep_control_reg = io_register(ACPI_PM_PORT_BASE + ACPI_SLEEP_CONTROL_OFFSET);
    f.sleep_status_reg = io_register(ACPI_PM_PORT_BASE + ACPI_SLEEP_STATUS_OFFSET);
    f.reset_reg = io_register(ACPI_PM_PORT_BASE + ACPI_RESET_OFFSET);
    f.reset_value = ACPI_RESET_VALUE;
    f.hypervisor_vendor_identity = u64::from_le_bytes(*b"MVMVMVMV").into();
    f.finalize()
}

/// One enabled local APIC per vCPU (APIC id = vCPU index, as CPUID says)
/// and the IO-APIC with the id after them, as in the MP table.
fn madt(cpus: u8) -> MADT {
    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        LocalInterruptController::Address(APIC_START as u32),
    );
    for cpu in 0..cpus {
        madt.add_structure(ProcessorLocalApic::new(cpu, cpu, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(cpus, IOAPIC_START as u32, 0));
    madt
}

/// Writes the tables at [`ACPI_START`] and returns the RSDP's address.
pub fn setup_acpi(mem: &GuestMemoryMmap, p: &AcpiParams) -> Result<u64, AcpiError> {
    let tables = build(ACPI_START, p)?;
    mem.write_slice(&tables.bytes, GuestAddress(ACPI_START))
        .map_err(|_| AcpiError::Write)?;
    Ok(tables.rsdp_addr)
}

#[cfg(test)]
mod tests;
