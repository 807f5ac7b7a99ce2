//! What `/proc` says about a running VMM: resident memory by kind (from
//! `smaps`), with the guest's RAM told apart, and CPU time so far.

use serde_json::{json, Value};

/// Resident memory of a process, in KiB, split by where it lives.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rss {
    /// Every mapping.
    pub total_kb: u64,
    /// Anonymous mappings exactly as large as the guest's RAM (the guest
    /// memory the guest, or the VMM loading it, touched).
    pub guest_kb: u64,
    /// How many mappings were counted as guest RAM.
    pub guest_mappings: u32,
    /// Guest RAM backed by transparent huge pages (`AnonHugePages`).
    pub guest_thp_kb: u64,
    /// Whether every guest RAM mapping starts on a 2 MiB boundary (KVM can
    /// map guest memory with huge pages only where host and guest
    /// addresses agree modulo 2 MiB).
    pub guest_aligned_2m: bool,
    /// File-backed mappings (the executable and its libraries).
    pub file_kb: u64,
    /// Anonymous memory that is not guest RAM: heap, stacks, arenas.
    pub anon_kb: u64,
    /// The rest: `anon_inode:` mappings (KVM's per-vCPU `kvm_run`),
    /// `[vdso]`, ...
    pub other_kb: u64,
}

impl Rss {
    /// Resident memory beyond the guest's RAM.
    pub fn overhead_kb(&self) -> u64 {
        self.total_kb - self.guest_kb
    }

    pub fn to_json(self) -> Value {
        json!({
            "total_kb": self.total_kb,
            "guest_kb": self.guest_kb,
            "overhead_kb": self.overhead_kb(),
            "guest_mappings": self.guest_mappings,
            "guest_thp_kb": self.guest_thp_kb,
            "guest_aligned_2m": self.guest_aligned_2m,
            "file_kb": self.file_kb,
            "anon_kb": self.anon_kb,
            "other_kb": self.other_kb,
        })
    }
}

/// A mapping's header line: `start-end perms offset dev inode [path]` ->
/// (start, size, path).
fn parse_header(line: &str) -> Option<(u64, u64, String)> {
    let mut it = line.split_whitespace();
    let range = it.next()?;
    let (a, b) = range.split_once('-')?;
    let start = u64::from_str_radix(a, 16).ok()?;
    let end = u64::from_str_radix(b, 16).ok()?;
    // perms, offset, dev, inode, then the path (which may contain spaces).
    for _ in 0..4 {
        it.next()?;
    }
    let path = it.collect::<Vec<_>>().join(" ");
    Some((start, end.checked_sub(start)?, path))
}

/// Sorts the `Rss:` of every mapping in `smaps` text; anonymous mappings of
/// exactly `guest_bytes` are the guest's RAM.
pub fn parse_smaps(smaps: &str, guest_bytes: u64) -> Rss {
    let mut rss = Rss {
        guest_aligned_2m: true,
        ..Rss::default()
    };
    let mut current: Option<(u64, u64, String)> = None;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.ends_with(':') {
            let kb: u64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let Some((start, size, path)) = &current else {
                continue;
            };
            let is_guest = path.is_empty() && *size == guest_bytes;
            if first == "AnonHugePages:" && is_guest {
                rss.guest_thp_kb += kb;
            }
            if first != "Rss:" {
                continue;
            }
            rss.total_kb += kb;
            if is_guest {
                rss.guest_aligned_2m &= start % (2 << 20) == 0;
                rss.guest_kb += kb;
                rss.guest_mappings += 1;
            } else if path.starts_with('/') {
                rss.file_kb += kb;
            } else if path.is_empty() || path.starts_with("[heap]") || path.starts_with("[stack") {
                rss.anon_kb += kb;
            } else {
                rss.other_kb += kb;
            }
        } else if let Some(h) = parse_header(line) {
            current = Some(h);
        }
    }
    rss
}

/// Reads and sorts `/proc/PID/smaps`.
pub fn rss_of(pid: u32, guest_bytes: u64) -> std::io::Result<Rss> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    Ok(parse_smaps(&smaps, guest_bytes))
}

/// CPU time of every live thread of `pid` so far, in nanoseconds (first
/// field of `/proc/PID/task/*/schedstat`); threads that already exited
/// are not counted. `None` without schedstat.
pub fn cpu_ns_of(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    let mut any = false;
    for t in tasks.flatten() {
        let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) else {
            continue;
        };
        if let Some(ns) = s
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        {
            total += ns;
            any = true;
        }
    }
    any.then_some(total)
}

/// Every live thread of `pid`: its name (`comm`) and CPU time so far (ns,
/// from schedstat).
pub fn thread_cpu_of(pid: u32) -> Vec<(String, u64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let ns = std::fs::read_to_string(t.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()));
        if let Some(ns) = ns {
            out.push((comm.trim().to_string(), ns));
        }
    }
    out
}

/// The child processes of `pid` (its main thread's), e.g. the jailed VMM
/// that `mvm run` forks as root.
pub fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The process that runs the guest: as root `mvm run` forks its jailed
/// VMM (the only child), otherwise it is `pid` itself.
pub fn vmm_of(pid: u32) -> u32 {
    match children_of(pid).as_slice() {
        [child] => *child,
        _ => pid,
    }
}

/// Number of threads of `pid`.
pub fn threads_of(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55557c2e8000-55557c32b000 rw-p 00000000 00:00 0                          [heap]
Size:                268 kB
Rss:                 144 kB
VmFlags: rd wr mr mw me ac
7fc2c5c00000-7fc2cdc00000 rw-p 00000000 00:00 0 
Size:             131072 kB
Rss:                  20 kB
AnonHugePages:         0 kB
7fc2cdc7b000-7fc2cde45000 r-xp 0007a000 fe:00 5374708                    /work/my vmm/mvm
Size:               1832 kB
Rss:                1636 kB
7fc2ce049000-7fc2ce04c000 rw-s 00000000 00:10 1038                       anon_inode:kvm-vcpu:0
Rss:                   8 kB
7fff66494000-7fff664b5000 rw-p 00000000 00:00 0                          [stack]
Rss:                  16 kB
7fc2c0000000-7fc2c0021000 rw-p 00000000 00:00 0 
Rss:                   4 kB
";

    #[test]
    fn sorts_mappings() {
        let r = parse_smaps(SMAPS, 128 << 20);
        assert_eq!(
            r,
            Rss {
                total_kb: 144 + 20 + 1636 + 8 + 16 + 4,
                guest_kb: 20,
                guest_mappings: 1,
                guest_thp_kb: 0,
                guest_aligned_2m: true,
                file_kb: 1636,
                anon_kb: 144 + 16 + 4,
                other_kb: 8,
            }
        );
        assert_eq!(r.overhead_kb(), r.total_kb - 20);
        // Another guest size: nothing is guest RAM.
        let r = parse_smaps(SMAPS, 256 << 20);
        assert_eq!((r.guest_kb, r.guest_mappings), (0, 0));
        assert_eq!(r.anon_kb, 144 + 20 + 16 + 4);
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        let r = rss_of(me, 1).unwrap();
        assert!(r.total_kb > 0 && r.file_kb > 0);
        assert!(threads_of(me).unwrap() >= 1);
        if cpu_ns_of(me).is_some() {
            assert!(!thread_cpu_of(me).is_empty());
        }
        if let Some(ns) = cpu_ns_of(me) {
            assert!(ns > 0);
        }
    }
}
