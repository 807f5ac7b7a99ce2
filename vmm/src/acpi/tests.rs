use super::*;

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// The table at guest address `addr` of `t`, checked: its length field
/// stays inside the bytes and its checksum is right.
fn table(t: &AcpiTables, addr: u64, signature: &[u8; 4]) -> Vec<u8> {
    let off = (addr - t.rsdp_addr) as usize;
    assert_eq!(&t.bytes[off..off + 4], signature);
    let len = u32_at(&t.bytes, off + 4) as usize;
    assert!(
        len >= 36 && off + len <= t.bytes.len(),
        "{signature:?} length {len}"
    );
    let bytes = t.bytes[off..off + len].to_vec();
    assert_eq!(sum(&bytes), 0, "{signature:?} checksum");
    bytes
}

fn devices(n: usize) -> Vec<VirtioMmioDevice> {
    (0..n)
        .map(|i| VirtioMmioDevice {
            base: 0xd000_0000 + 0x1000 * i as u64,
            len: 0x1000,
            irq: 5 + i as u32,
        })
        .collect()
}

/// Follows RSDP -> XSDT -> FADT/MADT -> DSDT as a kernel does.
fn walk(t: &AcpiTables) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let rsdp = &t.bytes[..36];
    assert_eq!(&rsdp[..8], b"RSD PTR ");
    assert_eq!(sum(&rsdp[..20]), 0, "ACPI 1.0 checksum");
    assert_eq!(sum(rsdp), 0, "extended checksum");
    assert_eq!(rsdp[15], 2, "revision 2: the XSDT is used");
    assert_eq!(u32_at(rsdp, 20), 36);
    let xsdt = table(t, u64_at(rsdp, 24), b"XSDT");
    let entries: Vec<u64> = (36..xsdt.len())
        .step_by(8)
        .map(|o| u64_at(&xsdt, o))
        .collect();
    assert_eq!(entries.len(), 2);
    let fadt = table(t, entries[0], b"FACP");
    let madt = table(t, entries[1], b"APIC");
    // X_DSDT at offset 140 (the 32-bit DSDT field is left 0).
    assert_eq!(u32_at(&fadt, 40), 0);
    let dsdt = table(t, u64_at(&fadt, 140), b"DSDT");
    (fadt, madt, dsdt)
}

#[test]
fn tables_chain_with_valid_checksums_and_lengths() {
    for n in [0, 1, 19] {
        let t = build(
            ACPI_START,
            &AcpiParams {
                cpus: 3,
                virtio: &devices(n),
            },
        )
        .unwrap();
        assert_eq!(t.rsdp_addr, ACPI_START);
        let (fadt, _, dsdt) = walk(&t);
        assert_eq!(fadt.len(), 276, "FADT of ACPI 6.5");
        // One LNRO0005 device per transport.
        let hid = b"LNRO0005";
        let found = dsdt.windows(hid.len()).filter(|w| w == hid).count();
        assert_eq!(found, n);
        assert!(dsdt.windows(4).any(|w| w == b"_S5_"));
    }
}

#[test]
fn madt_has_one_local_apic_per_vcpu_and_the_ioapic() {
    for cpus in [1u8, 2, 3, 4, 64, MAX_CPUS] {
        let t = build(ACPI_START, &AcpiParams { cpus, virtio: &[] }).unwrap();
        let (_, madt, _) = walk(&t);
        assert_eq!(u32_at(&madt, 36), APIC_START as u32);
        let mut off = 44;
        let mut apic_ids = Vec::new();
        let mut ioapics = Vec::new();
        while off < madt.len() {
            let (kind, len) = (madt[off], madt[off + 1] as usize);
            match kind {
                0 => {
                    assert_eq!(len, 8);
                    assert_eq!(madt[off + 2], madt[off + 3], "UID = APIC id");
                    assert_eq!(u32_at(&madt, off + 4) & 1, 1, "enabled");
                    apic_ids.push(madt[off + 3]);
                }
                1 => {
                    assert_eq!(len, 12);
                    ioapics.push((
                        madt[off + 2],
                        u32_at(&madt, off + 4),
                        u32_at(&madt, off + 8),
                    ));
                }
                k => panic!("unexpected MADT entry type {k}"),
            }
            off += len;
        }
        assert_eq!(off, madt.len());
        assert_eq!(apic_ids, (0..cpus).collect::<Vec<_>>());
        assert_eq!(ioapics, vec![(cpus, IOAPIC_START as u32, 0)]);
    }
}

#[test]
fn fadt_is_hardware_reduced_with_sleep_and_reset_ports() {
    let t = build(
        ACPI_START,
        &AcpiParams {
            cpus: 1,
            virtio: &[],
        },
    )
    .unwrap();
    let (fadt, _, _) = walk(&t);
    let flags = u32_at(&fadt, 112);
    assert_ne!(flags & Flags::HwReducedAcpi as u32, 0);
    assert_ne!(flags & Flags::ResetRegSup as u32, 0);
    // Generic address structures: space 1 = system I/O, then the port.
    let gas = |off: usize| (fadt[off], u64_at(&fadt, off + 4));
    assert_eq!(gas(116), (1, ACPI_PM_PORT_BASE + ACPI_RESET_OFFSET));
    assert_eq!(fadt[128], ACPI_RESET_VALUE);
    assert_eq!(gas(244), (1, ACPI_PM_PORT_BASE + ACPI_SLEEP_CONTROL_OFFSET));
    assert_eq!(gas(256), (1, ACPI_PM_PORT_BASE + ACPI_SLEEP_STATUS_OFFSET));
    // No 8042 flag (bit 1): the kernel does not drive a keyboard.
    let boot_arch = u16::from_le_bytes([fadt[109], fadt[110]]);
    assert_eq!(boot_arch & 0b10, 0);
    assert_ne!(boot_arch & IAPC_CMOS_RTC_NOT_PRESENT, 0);
}

#[test]
fn rsdp_is_where_a_kernel_scans_and_everything_fits_below_1mib() {
    // Linux scans 0xe0000-0xfffff on 16-byte boundaries for the RSDP.
    assert_eq!(ACPI_START % 16, 0);
    assert!((0xe_0000..0x10_0000).contains(&ACPI_START));
    let t = build(
        ACPI_START,
        &AcpiParams {
            cpus: MAX_CPUS,
            virtio: &devices(19),
        },
    )
    .unwrap();
    assert!(ACPI_START + t.bytes.len() as u64 <= HIMEM_START);
    // The range is reserved in the memory map the guest gets.
    let map = crate::arch::boot_params::memory_map(256 << 20);
    assert!(map.iter().any(|r| !r.ram
        && r.addr <= ACPI_START
        && ACPI_START + t.bytes.len() as u64 <= r.addr + r.size));
}

#[test]
fn bad_counts_and_overflow_are_errors() {
    let p = |cpus| AcpiParams { cpus, virtio: &[] };
    assert_eq!(
        build(ACPI_START, &p(0)).unwrap_err(),
        AcpiError::CpuCount(0)
    );
    assert_eq!(
        build(ACPI_START, &p(255)).unwrap_err(),
        AcpiError::CpuCount(255)
    );
    assert!(matches!(
        build(HIMEM_START - 64, &p(1)),
        Err(AcpiError::TooBig(_))
    ));
}

#[test]
fn setup_writes_the_tables_into_guest_memory() {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
    let rsdp = setup_acpi(
        &mem,
        &AcpiParams {
            cpus: 2,
            virtio: &devices(2),
        },
    )
    .unwrap();
    let mut sig = [0u8; 8];
    mem.read_slice(&mut sig, GuestAddress(rsdp)).unwrap();
    assert_eq!(&sig, b"RSD PTR ");
}
