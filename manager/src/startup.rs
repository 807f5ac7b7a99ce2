//! Start-up measurement for benches/: with `MVM_STARTUP_REPORT=FILE`, the
//! moment before the first KVM_RUN is written to FILE as JSON: the
//! CLOCK_MONOTONIC time (the bench compares it with its own clock taken
//! before exec) and the CPU time this process used so far (a jailed VMM
//! forked from `mvm`: with what `mvm` used before the fork).

use std::path::Path;

fn timespec_ns(clock: libc::clockid_t) -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

/// The CPU time this process has used.
pub fn cpu_ns() -> u128 {
    timespec_ns(libc::CLOCK_PROCESS_CPUTIME_ID)
}

pub fn write_report(path: &Path) {
    let report = format!(
        "{{\"monotonic_ns\":{},\"cpu_ns\":{}}}\n",
        timespec_ns(libc::CLOCK_MONOTONIC),
        cpu_ns() + u128::from(crate::supervisor::cpu_before_fork_ns())
    );
    if let Err(e) = std::fs::write(path, report) {
        tracing::warn!("cannot write the start-up report {}: {e}", path.display());
    }
}
