//! Start-up measurement for benches/: with `MVM_STARTUP_REPORT=FILE`, the
//! moment before the first KVM_RUN is written to FILE as JSON: the
//! CLOCK_MONOTONIC time (the bench compares it with its own clock taken
//! before exec), the CPU time this process used so far (a jailed VMM
//! forked from `mvm`: with what `mvm` used before the fork), and the
//! [`vmm::stages`] stamped on the way there.

use std::fmt::Write;
use std::path::Path;

/// The CPU time this process has used.
pub fn cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Turns on the stage stamps when a report was asked for.
pub fn enable_from_env() {
    if std::env::var_os("MVM_STARTUP_REPORT").is_some() {
        vmm::stages::enable();
        vmm::stages::stamp("main");
    }
}

/// Writes the report: call it right before the first KVM_RUN.
pub fn write_report(path: &Path) {
    vmm::stages::stamp("first_kvm_run");
    let stamps = vmm::stages::stamps();
    let Some(last) = stamps.last() else {
        return;
    };
    let mut stages = String::new();
    for (i, s) in stamps.iter().enumerate() {
        let comma = if i == 0 { "" } else { "," };
        let _ = write!(
            stages,
            "{comma}{{\"stage\":\"{}\",\"monotonic_ns\":{},\"cpu_ns\":{}}}",
            s.stage, s.monotonic_ns, s.cpu_ns
        );
    }
    let report = format!(
        "{{\"monotonic_ns\":{},\"cpu_ns\":{},\"stages\":[{stages}]}}\n",
        last.monotonic_ns, last.cpu_ns
    );
    if let Err(e) = std::fs::write(path, report) {
        tracing::warn!("cannot write the start-up report {}: {e}", path.display());
    }
}
