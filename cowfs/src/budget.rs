//! The byte budget of one VM's upper layers: what a guest can make the
//! host store is bounded, so a runaway `dd` or a hostile guest fills its
//! budget (ENOSPC, as a full disk would say) and not the host's disk.
//!
//! One budget is shared by every copy-on-write share of a VM (the root
//! view and the project). What counts: the blocks each upper object
//! occupies on the host (`st_blocks`, so sparse files cost what they
//! hold) plus [`OBJECT_COST`] per name, so a flood of empty files is
//! bounded too. Growth is checked before it happens (a write, an
//! fallocate, a copy-up, a new name) and the exact change is counted
//! after it from `fstat`. Directory blocks growing with their entries
//! and the small marker files (whiteouts) are not counted: the figure
//! is a bound, not a quota report.
//!
//! Threads serving different shares of one VM share the counter: two
//! concurrent requests may each pass the check and overshoot by at most
//! their own size (a FUSE write is at most 1 MiB).

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustix::io::Errno;

use crate::layer::St;

/// What one name costs beyond its blocks (about an inode's worth).
pub const OBJECT_COST: u64 = 256;

/// Bytes an upper object costs: its blocks and its name.
pub(crate) fn cost(st: &St) -> u64 {
    st.blocks.saturating_mul(512).saturating_add(OBJECT_COST)
}

/// A VM's upper-layer byte budget; clones share one counter.
#[derive(Debug, Clone)]
pub struct UpperBudget(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    cap: u64,
    used: AtomicU64,
}

impl UpperBudget {
    /// A budget of `cap` bytes, none used yet.
    pub fn new(cap: u64) -> Self {
        Self(Arc::new(Inner {
            cap,
            used: AtomicU64::new(0),
        }))
    }

    pub fn cap(&self) -> u64 {
        self.0.cap
    }

    pub fn used(&self) -> u64 {
        self.0.used.load(Ordering::Relaxed)
    }

    /// Ok if `more` bytes still fit, else ENOSPC.
    pub(crate) fn room(&self, more: u64) -> Result<(), Errno> {
        if self.used().saturating_add(more) > self.0.cap {
            Err(Errno::NOSPC)
        } else {
            Ok(())
        }
    }

    pub(crate) fn charge(&self, n: u64) {
        self.0.used.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn refund(&self, n: u64) {
        let _ = self
            .0
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(n))
            });
    }

    /// An object's blocks went from `before` to `after` (512-byte units).
    pub(crate) fn blocks_changed(&self, before: u64, after: u64) {
        if after > before {
            self.charge((after - before).saturating_mul(512));
        } else {
            self.refund((before - after).saturating_mul(512));
        }
    }

    /// Counts what the upper directory `upper` already holds (a
    /// persistent VM's layer, or one kept across a restart). Walks with
    /// an explicit stack (a guest-made tree may be deeper than the host's
    /// stack allows) and counts a hard-linked file's blocks once.
    pub fn count_existing(&self, upper: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let mut seen = HashSet::new();
        let mut stack = vec![upper.to_path_buf()];
        let mut total = 0u64;
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let md = entry.path().symlink_metadata()?;
                total = total.saturating_add(OBJECT_COST);
                if md.nlink() <= 1 || md.is_dir() || seen.insert((md.dev(), md.ino())) {
                    total = total.saturating_add(md.blocks().saturating_mul(512));
                }
                if md.is_dir() {
                    stack.push(entry.path());
                }
            }
        }
        self.charge(total);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_charge_refund() {
        let b = UpperBudget::new(10_000);
        assert!(b.room(10_000).is_ok());
        b.charge(9_000);
        assert_eq!(b.room(1_001), Err(Errno::NOSPC));
        b.clone().blocks_changed(8, 0);
        assert_eq!(b.used(), 9_000 - 4096);
        b.refund(u64::MAX);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn counts_an_existing_tree_once_per_inode() {
        let dir = std::env::temp_dir().join(format!("cowfs-budget-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::write(dir.join("a/b/f"), vec![1u8; 64 * 1024]).unwrap();
        std::fs::hard_link(dir.join("a/b/f"), dir.join("a/g")).unwrap();
        let b = UpperBudget::new(u64::MAX);
        b.count_existing(&dir).unwrap();
        // Two directories, two names; the file's 64 KiB once.
        assert!(b.used() >= 64 * 1024 + 4 * OBJECT_COST, "{}", b.used());
        assert!(b.used() < 2 * 64 * 1024, "{}", b.used());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
