//! `mvm run` boots our guest kernel on real KVM: init runs, CPUs, memory,
//! command line, hwrng, exit statuses, console routing, a bzImage.

use super::{scenario, suite};

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn guest_init_runs_and_reset_exits_zero() {
    let s = scenario("single");
    let g = s.guest();
    assert!(g.contains_key("init started"), "{}", s.describe());
    assert_eq!(s.status, Some(0), "{}", s.describe());
    assert_eq!(
        g.get("cpus").map(String::as_str),
        Some("1"),
        "{}",
        s.describe()
    );
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn two_cpus_memory_and_cmdline_reach_the_guest() {
    let s = scenario("smp");
    let g = s.guest();
    assert_eq!(s.status, Some(0), "{}", s.describe());
    assert_eq!(
        g.get("cpus").map(String::as_str),
        Some("2"),
        "{}",
        s.describe()
    );
    let mem_kb: u64 = g["memtotal_kb"].parse().unwrap();
    // MemTotal is RAM minus what the kernel reserves: within 256 MiB and
    // not far below it.
    assert!(
        (200 * 1024..=256 * 1024).contains(&mem_kb),
        "MemTotal {mem_kb} kB for --memory 256\n{}",
        s.describe()
    );
    let cmdline = &g["cmdline"];
    assert!(cmdline.contains("mvmtest.token=e2e-token-42"), "{cmdline}");
    assert!(cmdline.contains("console=ttyS0"), "{cmdline}");
    assert!(cmdline.contains("virtio_mmio.device="), "{cmdline}");
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn memory_above_the_32bit_gap_is_usable() {
    let s = scenario("bigmem");
    let g = s.guest();
    assert_eq!(s.status, Some(0), "{}", s.describe());
    assert_eq!(
        g.get("cpus").map(String::as_str),
        Some("4"),
        "{}",
        s.describe()
    );
    let mem_kb: u64 = g["memtotal_kb"].parse().unwrap();
    assert!(
        mem_kb > 3 * 1024 * 1024 && mem_kb <= 3584 * 1024,
        "MemTotal {mem_kb} kB for --memory 3584\n{}",
        s.describe()
    );
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn hwrng_yields_random_bytes() {
    let a = scenario("smp").guest()["hwrng"].clone();
    let b = scenario("single").guest()["hwrng"].clone();
    for h in [&a, &b] {
        assert_eq!(h.len(), 32, "16 bytes as hex, got {h:?}");
        assert!(h.chars().all(|c| c.is_ascii_hexdigit()), "{h:?}");
        assert_ne!(h, &"0".repeat(32));
    }
    assert_ne!(a, b, "two boots read the same 'random' bytes");
    let none = scenario("norng");
    assert_eq!(none.status, Some(0), "{}", none.describe());
    assert_eq!(none.guest()["hwrng"], "missing", "{}", none.describe());
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn guest_panic_exits_non_zero() {
    let s = scenario("panic");
    assert!(s.guest().contains_key("init started"), "{}", s.describe());
    assert_eq!(s.status, Some(3), "{}", s.describe());
    assert!(s.stderr.contains("panicked"), "{}", s.describe());
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn triple_fault_exits_non_zero_with_rip() {
    let s = scenario("triple");
    assert_eq!(s.status, Some(4), "{}", s.describe());
    assert!(s.stderr.contains("triple-faulted"), "{}", s.describe());
    assert!(s.stderr.contains("RIP 0x"), "{}", s.describe());
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn console_goes_to_stdout_by_default() {
    let s = scenario("stdout-console");
    assert_eq!(s.status, Some(0), "{}", s.describe());
    assert!(s.stdout.contains("MVM-GUEST: init started"), "{}", s.stdout);
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn distribution_bzimage_boots_through_the_64bit_protocol() {
    let s = scenario("bzimage");
    let g = s.guest();
    assert!(g.contains_key("init started"), "{}", s.describe());
    assert_eq!(s.status, Some(0), "{}", s.describe());
    assert_eq!(
        g.get("cpus").map(String::as_str),
        Some("2"),
        "{}",
        s.describe()
    );
}

/// The guest's boot log the probe printed between its markers.
fn boot_log(s: &mvm_e2e::Scenario) -> &str {
    let start = s.console.find("MVM-BOOTLOG-BEGIN");
    let end = s.console.find("MVM-BOOTLOG-END");
    match (start, end) {
        (Some(a), Some(b)) if a < b => &s.console[a..b],
        _ => panic!("no boot log from the probe\n{}", s.describe()),
    }
}

/// Lines of `log` that a clean boot must not have: kernel warnings, MSR
/// accesses the guest saw fail, MSRs KVM did not handle.
fn bad_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            l.contains("WARNING") || l.contains("Unhandled") || l.contains("unchecked MSR access")
        })
        .collect()
}

/// Debian's kernel (`kind`: bz or elf) booted with 1 to 4 vCPUs: all CPUs
/// and the memory asked, the IO-APIC routing interrupts, ACPI found, no
/// warning in its boot log nor an unhandled MSR in L2's.
fn distribution_kernel_boots_cleanly(kind: &str) {
    for (cpus, mib) in [(1u64, 256u64), (2, 768), (3, 1024), (4, 3584)] {
        let s = scenario(&format!("distro-{kind}-{cpus}cpu"));
        let g = s.guest();
        assert_eq!(s.status, Some(0), "{}", s.describe());
        assert_eq!(g.get("cpus"), Some(&cpus.to_string()), "{}", s.describe());
        let mem_kb: u64 = g["memtotal_kb"].parse().unwrap();
        // MemTotal is RAM minus the kernel image and what it reserves.
        assert!(
            mem_kb <= mib * 1024 && mem_kb >= mib * 1024 * 3 / 4,
            "MemTotal {mem_kb} kB for --memory {mib}\n{}",
            s.describe()
        );
        assert_eq!(g.get("acpi").map(String::as_str), Some("yes"), "{}", s.describe());
        let ioapic: u32 = g["ioapic_irqs"].parse().unwrap();
        assert!(ioapic > 0, "no IO-APIC interrupt\n{}", s.describe());
        let log = boot_log(&s);
        assert!(
            log.contains("ACPI: Using ACPI (MADT) for SMP configuration"),
            "{log}"
        );
        assert_eq!(bad_lines(log), Vec::<&str>::new(), "{log}");
        let l2 = std::fs::read_to_string(suite().join(&s.name).join("l2-dmesg")).unwrap();
        assert_eq!(bad_lines(&l2), Vec::<&str>::new(), "L2's log:\n{l2}");
    }
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn distribution_bzimage_finds_every_cpu_memory_and_ioapic_without_warnings() {
    distribution_kernel_boots_cleanly("bz");
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn distribution_elf_finds_every_cpu_memory_and_ioapic_without_warnings() {
    distribution_kernel_boots_cleanly("elf");
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn distribution_kernel_poweroff_and_acpi_reboot_exit_zero() {
    for kind in ["bz", "elf"] {
        let off = scenario(&format!("distro-{kind}-poweroff"));
        assert_eq!(off.status, Some(0), "{}", off.describe());
        assert_eq!(off.guest()["action"], "poweroff", "{}", off.describe());
        assert!(off.console.contains("reboot: Power down"), "{}", off.describe());
        let reboot = scenario(&format!("distro-{kind}-acpi-reboot"));
        assert_eq!(reboot.status, Some(0), "{}", reboot.describe());
        assert_eq!(reboot.guest()["action"], "reboot", "{}", reboot.describe());
        assert!(
            reboot.console.contains("reboot: Restarting system"),
            "{}",
            reboot.describe()
        );
    }
}
