//! The Intel MultiProcessor table: how the guest learns its CPUs, the
//! IO-APIC and how ISA IRQs reach it, without ACPI. We chose it over an
//! ACPI MADT because the guest kernel then needs no ACPI interpreter at
//! all (smaller and faster to boot), and it carries everything a microVM
//! has: CPUs, one IO-APIC, edge-triggered ISA-style lines.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{APIC_START, EBDA_START, HIMEM_START, IOAPIC_START, IRQ_MAX};

/// APIC ids are 8 bits and the IO-APIC takes the id after the last CPU.
pub const MAX_CPUS: u8 = 254;

const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
// Family 6 model 15 stepping 11: what the MP spec's examples (and QEMU)
// put here; Linux only prints it.
const CPU_STEPPING: u32 = 0x600;
const CPU_FEATURE_APIC: u32 = 1 << 9;
const CPU_FEATURE_FPU: u32 = 1;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_INTSRC: u8 = 3;
const ENTRY_LINTSRC: u8 = 4;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MptableError {
    #[error("the MP table supports 1 to {MAX_CPUS} CPUs, not {0}")]
    CpuCount(u8),
    #[error("the MP table does not fit below 1 MiB")]
    TooBig,
    #[error("cannot write the MP table into guest memory")]
    Write,
}

/// Serialises MP structures little-endian, byte for byte as the spec
/// lays them out (no Rust struct padding to get wrong).
#[derive(Default)]
struct Table(Vec<u8>);

impl Table {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }
}

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// Builds the floating pointer structure followed by the configuration
/// table, to be placed at `base`.
pub fn build(base: u64, cpus: u8) -> Result<Vec<u8>, MptableError> {
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(MptableError::CpuCount(cpus));
    }
    let ioapic_id = cpus;
    let mut entries = Table::default();
    for cpu in 0..cpus {
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BOOTPROCESSOR } else { 0 };
        entries
            .u8(ENTRY_PROCESSOR)
            .u8(cpu)
            .u8(APIC_VERSION)
            .u8(flags)
            .u32(CPU_STEPPING)
            .u32(CPU_FEATURE_APIC | CPU_FEATURE_FPU)
            .u32(0)
            .u32(0);
    }
    entries.u8(ENTRY_BUS).u8(0).bytes(b"ISA   ");
    entries
        .u8(ENTRY_IOAPIC)
        .u8(ioapic_id)
        .u8(IOAPIC_VERSION)
        .u8(1)
        .u32(IOAPIC_START as u32);
    for irq in 0..=IRQ_MAX as u8 {
        // ISA IRQ n is IO-APIC pin n, default polarity and trigger.
        entries
            .u8(ENTRY_INTSRC)
            .u8(INT_TYPE_INT)
            .u16(0)
            .u8(0)
            .u8(irq)
            .u8(ioapic_id)
            .u8(irq);
    }
    // LINT0 is the PIC (ExtINT), LINT1 NMI, on every local APIC.
    for (kind, lint) in [(INT_TYPE_EXTINT, 0), (INT_TYPE_NMI, 1)] {
        entries
            .u8(ENTRY_LINTSRC)
            .u8(kind)
            .u16(0)
            .u8(0)
            .u8(0)
            .u8(0xff)
            .u8(lint);
    }

    const FLOATING_LEN: usize = 16;
    const HEADER_LEN: usize = 44;
    let table_len = HEADER_LEN + entries.0.len();
    let entry_count = 2 + u16::from(cpus) + IRQ_MAX as u16 + 1 + 2;
    let mut header = Table::default();
    header
        .bytes(b"PCMP")
        .u16(table_len as u16)
        .u8(4) // spec revision 1.4
        .u8(0) // checksum, below
        .bytes(b"MVM     ")
        .bytes(b"MICROVM     ")
        .u32(0)
        .u16(0)
        .u16(entry_count)
        .u32(APIC_START as u32)
        .u32(0);
    let mut table = header.0;
    table.extend_from_slice(&entries.0);
    table[7] = checksum(&table);

    let mut floating = Table::default();
    floating
        .bytes(b"_MP_")
        .u32((base + FLOATING_LEN as u64) as u32)
        .u8(1) // length in 16-byte units
        .u8(4)
        .u8(0) // checksum, below
        .bytes(&[0; 5]);
    let mut out = floating.0;
    out[10] = checksum(&out);
    out.extend_from_slice(&table);
    if base + out.len() as u64 > HIMEM_START {
        return Err(MptableError::TooBig);
    }
    Ok(out)
}

/// Writes the MP table for `cpus` CPUs into the EBDA.
pub fn setup_mptable(mem: &GuestMemoryMmap, cpus: u8) -> Result<(), MptableError> {
    let table = build(EBDA_START, cpus)?;
    mem.write_slice(&table, GuestAddress(EBDA_START))
        .map_err(|_| MptableError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn checksums_and_counts() {
        for cpus in [1u8, 2, 64, MAX_CPUS] {
            let t = build(EBDA_START, cpus).unwrap();
            assert_eq!(&t[0..4], b"_MP_");
            assert_eq!(sum(&t[..16]), 0);
            let phys = u32::from_le_bytes(t[4..8].try_into().unwrap()) as u64;
            assert_eq!(phys, EBDA_START + 16);
            let table = &t[16..];
            assert_eq!(&table[0..4], b"PCMP");
            let len = u16::from_le_bytes(table[4..6].try_into().unwrap()) as usize;
            assert_eq!(len, table.len());
            assert_eq!(sum(table), 0);
            // Walk the entries and count processors.
            let mut off = 44;
            let mut cpus_seen = 0;
            let mut entries = 0;
            while off < table.len() {
                entries += 1;
                if table[off] == ENTRY_PROCESSOR {
                    cpus_seen += 1;
                    off += 20;
                } else {
                    off += 8;
                }
            }
            assert_eq!(off, table.len());
            assert_eq!(cpus_seen, cpus as usize);
            let count = u16::from_le_bytes(table[34..36].try_into().unwrap());
            assert_eq!(count as usize, entries);
        }
    }

    #[test]
    fn rejects_bad_counts() {
        assert_eq!(build(EBDA_START, 0), Err(MptableError::CpuCount(0)));
        assert_eq!(build(EBDA_START, 255), Err(MptableError::CpuCount(255)));
        assert_eq!(build(HIMEM_START - 8, 1), Err(MptableError::TooBig));
    }
}
