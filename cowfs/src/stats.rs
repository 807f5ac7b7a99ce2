//! Per-opcode request counts and server time, for finding where a
//! workload's time goes (`MVM_LOG=cowfs::stats=debug` prints them when a
//! share's device goes away). Fixed-size: a guest cannot grow it.

use std::fmt;
use std::time::Duration;

/// Opcodes above this share the last slot.
const SLOTS: usize = 64;

#[derive(Clone)]
pub struct OpStats {
    count: [u64; SLOTS],
    nanos: [u64; SLOTS],
}

impl Default for OpStats {
    fn default() -> Self {
        Self {
            count: [0; SLOTS],
            nanos: [0; SLOTS],
        }
    }
}

impl OpStats {
    pub(crate) fn record(&mut self, opcode: u32, took: Duration) {
        let slot = (opcode as usize).min(SLOTS - 1);
        self.count[slot] += 1;
        self.nanos[slot] = self.nanos[slot].saturating_add(took.as_nanos() as u64);
    }

    /// Requests seen with `opcode` and the server time they took.
    pub fn get(&self, opcode: u32) -> (u64, Duration) {
        let slot = (opcode as usize).min(SLOTS - 1);
        (self.count[slot], Duration::from_nanos(self.nanos[slot]))
    }

    pub fn total(&self) -> u64 {
        self.count.iter().sum()
    }
}

/// `opcode:count/ms` for every opcode seen, e.g. `1:10000/812.4 3:5/0.2`.
impl fmt::Display for OpStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (op, (&n, &ns)) in self.count.iter().zip(&self.nanos).enumerate() {
            if n == 0 {
                continue;
            }
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{op}:{n}/{:.1}", ns as f64 / 1e6)?;
        }
        Ok(())
    }
}

impl fmt::Debug for OpStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpStats({self})")
    }
}
