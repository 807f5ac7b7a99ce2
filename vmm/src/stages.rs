//! Boot-stage stamps: where start-up time goes, stage by stage, for the
//! benches (`MVM_STARTUP_REPORT` writes them beside the first KVM_RUN).
//! Off unless [`enable`]d; a stamp is then one relaxed atomic load.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

static ENABLED: AtomicBool = AtomicBool::new(false);
/// CPU the process used before a fork: a forked child's clock restarts.
static CPU_OFFSET_NS: AtomicU64 = AtomicU64::new(0);
static STAMPS: Mutex<Vec<Stamp>> = Mutex::new(Vec::new());

/// The moment a start-up stage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub stage: &'static str,
    /// CLOCK_MONOTONIC, comparable with the clock of the process that
    /// started this one.
    pub monotonic_ns: u64,
    /// CPU this process (with its parent before a fork) had used.
    pub cpu_ns: u64,
}

/// Starts recording stamps.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// In a forked child: the CPU the parent had used at the fork, added to
/// every later stamp.
pub fn set_cpu_offset(ns: u64) {
    CPU_OFFSET_NS.store(ns, Ordering::Relaxed);
}

/// Records that `stage` ended now (when enabled).
pub fn stamp(stage: &'static str) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let s = Stamp {
        stage,
        monotonic_ns: clock_ns(libc::CLOCK_MONOTONIC),
        cpu_ns: cpu_ns() + CPU_OFFSET_NS.load(Ordering::Relaxed),
    };
    STAMPS.lock().unwrap_or_else(|e| e.into_inner()).push(s);
}

/// The stamps so far, oldest first.
pub fn stamps() -> Vec<Stamp> {
    STAMPS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The CPU time this process has used (its own clock: without the
/// offset of [`set_cpu_offset`]).
pub fn cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_recorded_only_once_enabled_and_in_order() {
        stamp("before");
        assert!(stamps().iter().all(|s| s.stage != "before"));
        enable();
        stamp("one");
        stamp("two");
        let all = stamps();
        let one = all.iter().position(|s| s.stage == "one").unwrap();
        let two = all.iter().position(|s| s.stage == "two").unwrap();
        assert!(one < two);
        assert!(all[one].monotonic_ns <= all[two].monotonic_ns);
        assert!(all[one].cpu_ns <= all[two].cpu_ns);
    }
}
