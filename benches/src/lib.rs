//! Shared pieces of the boot-path benchmarks (see `benches/README.md`):
//! clocks, statistics, `/proc` readers, child processes whose output is
//! timestamped as it arrives (the tiny guest is `mvm_test_guests::pvh_elf`).
//!
//! Every benchmark measures a reference in the same run and reports
//! ratios; nothing here asserts a time.

pub mod args;
pub mod child;
pub mod clock;
pub mod netperf;
pub mod procfs;
pub mod stats;

/// Writes `value` as pretty JSON to `path` (creating its folder).
pub fn write_json(path: &std::path::Path, value: &serde_json::Value) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    text.push('\n');
    std::fs::write(path, text)
}

/// `uname -sr` and the CPU count, for the record.
pub fn host_description() -> serde_json::Value {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    serde_json::json!({
        "kernel": format!("{} {}", read("/proc/sys/kernel/ostype"), read("/proc/sys/kernel/osrelease")),
        "cpus": cpus,
        "loadavg": read("/proc/loadavg"),
    })
}
