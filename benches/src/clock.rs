//! Raw clocks: the benchmarks compare their own CLOCK_MONOTONIC readings
//! with ones the VMM writes (`MVM_STARTUP_REPORT`), so `Instant` (opaque)
//! does not do.

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the
    // call; clock_gettime writes nothing else.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime({clock}) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_MONOTONIC in nanoseconds (the clock of `MVM_STARTUP_REPORT`).
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CPU time this process has used, in nanoseconds.
pub fn process_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// The start-up report `mvm run` writes with `MVM_STARTUP_REPORT=FILE`
/// (and `noop` too): `{"monotonic_ns":N,"cpu_ns":N}`, and from mvm the
/// `stages` on the way there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupReport {
    pub monotonic_ns: u64,
    pub cpu_ns: u64,
    /// Oldest first; none in older reports and in noop's.
    pub stages: Vec<Stage>,
}

impl StartupReport {
    pub fn now() -> Self {
        StartupReport {
            monotonic_ns: monotonic_ns(),
            cpu_ns: process_cpu_ns(),
            stages: Vec::new(),
        }
    }

    pub fn to_json(&self) -> String {
        format!(
            "{{\"monotonic_ns\":{},\"cpu_ns\":{}}}\n",
            self.monotonic_ns, self.cpu_ns
        )
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("bad start-up report {text:?}: {e}"))?;
        let field = |k: &str| {
            v.get(k)
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| format!("start-up report without {k}: {text:?}"))
        };
        Ok(StartupReport {
            monotonic_ns: field("monotonic_ns")?,
            cpu_ns: field("cpu_ns")?,
            stages: stages_of(&v)?,
        })
    }
}

/// One stage of mvm's start-up as its report lists it (`stages`): the
/// stage's name and when it ended (CLOCK_MONOTONIC and CPU so far, ns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub name: String,
    pub monotonic_ns: u64,
    pub cpu_ns: u64,
}

fn stages_of(v: &serde_json::Value) -> Result<Vec<Stage>, String> {
    let Some(list) = v.get("stages").and_then(serde_json::Value::as_array) else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|s| {
            let num = |k: &str| s.get(k).and_then(serde_json::Value::as_u64);
            match (
                s.get("stage").and_then(serde_json::Value::as_str),
                num("monotonic_ns"),
                num("cpu_ns"),
            ) {
                (Some(name), Some(monotonic_ns), Some(cpu_ns)) => Ok(Stage {
                    name: name.to_string(),
                    monotonic_ns,
                    cpu_ns,
                }),
                _ => Err(format!("bad stage {s} in the start-up report")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trips() {
        let r = StartupReport {
            monotonic_ns: 12,
            cpu_ns: 34,
            stages: Vec::new(),
        };
        assert_eq!(StartupReport::parse(&r.to_json()).unwrap(), r);
        assert!(StartupReport::parse("{\"cpu_ns\":1}").is_err());
    }

    #[test]
    fn stages_parse_in_order() {
        let text = r#"{"monotonic_ns":9,"cpu_ns":5,"stages":[{"stage":"main","monotonic_ns":1,"cpu_ns":1},{"stage":"first_kvm_run","monotonic_ns":9,"cpu_ns":5}]}"#;
        let stages = StartupReport::parse(text).unwrap().stages;
        assert_eq!(stages.len(), 2);
        assert_eq!(
            (stages[0].name.as_str(), stages[1].monotonic_ns),
            ("main", 9)
        );
        assert!(StartupReport::parse(r#"{"monotonic_ns":1,"cpu_ns":1}"#)
            .unwrap()
            .stages
            .is_empty());
        assert!(
            StartupReport::parse(r#"{"monotonic_ns":1,"cpu_ns":1,"stages":[{"stage":"x"}]}"#)
                .is_err()
        );
    }

    #[test]
    fn clocks_move() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(b >= a && a > 0);
        assert!(process_cpu_ns() > 0);
    }
}
