//! Start-up measurement for benches/: with `MVM_STARTUP_REPORT=FILE`, the
//! moment before the first KVM_RUN is written to FILE as JSON: the
//! CLOCK_MONOTONIC time (the bench compares it with its own clock taken
//! before exec), the CPU time this process used so far (a jailed VMM
//! forked from `mvm`: with what `mvm` used before the fork), and the
//! [`vmm::stages`] stamped on the way there.

use std::path::Path;

/// Turns on the stage stamps when a report was asked for.
pub fn enable_from_env() {
    if std::env::var_os("MVM_STARTUP_REPORT").is_some() {
        vmm::stages::enable();
        vmm::stages::stamp("main");
    }
}

/// Writes the report: call it right before the first KVM_RUN.
pub fn write_report(path: &Path) {
    // On in any case: the report's own stamp is the first KVM_RUN.
    vmm::stages::enable();
    vmm::stages::stamp("first_kvm_run");
    let stamps = vmm::stages::stamps();
    let Some(last) = stamps.last() else {
        return;
    };
    let stages: Vec<_> = stamps
        .iter()
        .map(|s| {
            serde_json::json!({
                "stage": s.stage,
                "monotonic_ns": s.monotonic_ns,
                "cpu_ns": s.cpu_ns,
            })
        })
        .collect();
    let report = serde_json::json!({
        "monotonic_ns": last.monotonic_ns,
        "cpu_ns": last.cpu_ns,
        "stages": stages,
    });
    if let Err(e) = std::fs::write(path, format!("{report}\n")) {
        tracing::warn!("cannot write the start-up report {}: {e}", path.display());
    }
}
