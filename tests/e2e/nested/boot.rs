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

/// Lines of a guest's boot log that a clean boot must not have: kernel
/// warnings (with their "cut here" line) and MSR accesses that faulted.
fn warnings(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            l.contains("WARNING: CPU:")
                || l.contains("cut here")
                || l.contains("unchecked MSR access")
        })
        .collect()
}

/// The MSRs L2's KVM logged as unhandled ("Unhandled WRMSR(0xc0010007)").
fn unhandled_msrs(l2_log: &str) -> std::collections::BTreeSet<String> {
    l2_log
        .lines()
        .filter_map(|l| l.split_once("Unhandled ")?.1.split_once(')'))
        .map(|(msr, _)| format!("{msr})"))
        .collect()
}

/// What L2's KVM logged unhandled while Firecracker booted the same
/// kernel: the reference (probes of PMU counters the nested host lacks).
fn firecracker_unhandled_msrs() -> std::collections::BTreeSet<String> {
    let fc = scenario("distro-firecracker");
    assert_eq!(
        fc.status,
        Some(0),
        "Firecracker's reference boot\n{}",
        fc.describe()
    );
    assert!(fc.guest().contains_key("init started"), "{}", fc.describe());
    let log = std::fs::read_to_string(suite().join("distro-firecracker/l2-dmesg")).unwrap();
    unhandled_msrs(&log)
}

/// Debian's kernel (`kind`: bz or elf) booted with 1 to 4 vCPUs: all CPUs
/// and the memory asked, the IO-APIC routing interrupts, ACPI found, no
/// warning in its boot log, and no MSR left unhandled in L2's log that
/// Firecracker's boot of the same kernel does not also leave.
fn distribution_kernel_boots_cleanly(kind: &str) {
    let reference = firecracker_unhandled_msrs();
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
        assert_eq!(
            g.get("acpi").map(String::as_str),
            Some("yes"),
            "{}",
            s.describe()
        );
        let ioapic: u32 = g["ioapic_irqs"].parse().unwrap();
        assert!(ioapic > 0, "no IO-APIC interrupt\n{}", s.describe());
        let log = boot_log(&s);
        assert!(
            log.contains("ACPI: Using ACPI (MADT) for SMP configuration"),
            "{log}"
        );
        assert_eq!(warnings(log), Vec::<&str>::new(), "{log}");
        let l2 = std::fs::read_to_string(suite().join(&s.name).join("l2-dmesg")).unwrap();
        let extra: Vec<_> = unhandled_msrs(&l2)
            .difference(&reference)
            .cloned()
            .collect();
        assert_eq!(
            extra,
            Vec::<String>::new(),
            "beyond Firecracker's; L2's log:\n{l2}"
        );
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
fn distribution_kernel_panic_exits_non_zero() {
    for kind in ["bz", "elf"] {
        let s = scenario(&format!("distro-{kind}-panic"));
        assert_eq!(s.guest()["action"], "panic", "{}", s.describe());
        assert_eq!(s.status, Some(3), "{}", s.describe());
        assert!(s.stderr.contains("panicked"), "{}", s.describe());
    }
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn distribution_kernel_poweroff_and_acpi_reboot_exit_zero() {
    for kind in ["bz", "elf"] {
        let off = scenario(&format!("distro-{kind}-poweroff"));
        assert_eq!(off.status, Some(0), "{}", off.describe());
        assert_eq!(off.guest()["action"], "poweroff", "{}", off.describe());
        assert!(
            off.console.contains("reboot: Power down"),
            "{}",
            off.describe()
        );
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

#[test]
fn boot_log_checks_find_warnings_and_unhandled_msrs() {
    let guest = "[ 0.1] Speculative Return Stack Overflow: WARNING: See https://...\n\
                 [ 2.8] ------------[ cut here ]------------\n\
                 [ 2.8] WARNING: CPU: 0 PID: 0 at arch/x86/kernel/fpu/xstate.c:606\n\
                 [ 3.0] ok";
    assert_eq!(
        warnings(guest).len(),
        2,
        "a mitigation notice is no warning"
    );
    let l2 = "kvm [284]: vcpu0, guest rIP: 0xffff Unhandled WRMSR(0xc0010007) = 0xffff\n\
              kvm [285]: vcpu1, guest rIP: 0xffff Unhandled RDMSR(0xc0011029)\n\
              kvm [286]: vcpu0, guest rIP: 0xffff Unhandled WRMSR(0xc0010007) = 0xffff";
    let msrs: Vec<_> = unhandled_msrs(l2).into_iter().collect();
    assert_eq!(msrs, ["RDMSR(0xc0011029)", "WRMSR(0xc0010007)"]);
}
