//! The copy-up log: `.wh..wh..mvm-origins` at the upper root, append-only
//! text, one record per line (paths hex-encoded):
//!
//! ```text
//! mvm-cowfs-origins 1
//! S <hex path> <ino> <size> <mtime_sec> <mtime_nsec> <mode>   lower object at path, when first shadowed
//! I <upper ino> <lower dev> <lower ino>                        upper object copied up from lower object
//! O <upper ino> <uid> <gid>                                    the guest's owner of that upper object
//! D <upper ino>                                                that upper object is gone
//! ```
//!
//! `S` records say what the host's copy looked like when the guest first
//! replaced, modified or deleted it (copy-up, whiteout, rename over):
//! [`crate::commit`] refuses to overwrite a host file that no longer
//! matches. The latest `S` line for a path wins (commit appends fresh ones
//! after applying). `I` records keep inode numbers stable across copy-up:
//! the guest keeps seeing the lower inode number of a copied-up object.
//! `O` records are written only by a server that cannot chown (a jailed
//! VMM running as a user, see [`crate::Filesystem::record_owners`]): the
//! host file belongs to that user, the guest sees the owner it gave.
//! The log is compacted when loaded, and while served once it holds far
//! more lines than live records (a guest may chown in a loop).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{self as rfs, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use crate::layer::St;
use crate::name::{ORIGIN_LOG, TMP_PREFIX};

const HEADER: &str = "mvm-cowfs-origins 1";

/// What a lower object looked like when it was first shadowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub ino: u64,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    pub mode: u32,
}

impl Snapshot {
    pub fn of(st: &St) -> Self {
        Self {
            ino: st.ino,
            size: st.size,
            mtime_sec: st.mtime,
            mtime_nsec: st.mtime_nsec,
            mode: st.mode,
        }
    }
}

#[derive(Debug, Default)]
pub struct Records {
    pub snapshots: HashMap<Vec<u8>, Snapshot>,
    /// upper ino -> (lower dev, lower ino)
    pub identities: HashMap<u64, (u64, u64)>,
    /// upper ino -> the guest's (uid, gid)
    pub owners: HashMap<u64, (u32, u32)>,
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    if s.is_empty() {
        s.push('-');
    }
    s
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if s == "-" {
        return Some(Vec::new());
    }
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

pub fn snapshot_line(path: &[u8], s: &Snapshot) -> String {
    format!(
        "S {} {} {} {} {} {}\n",
        hex(path),
        s.ino,
        s.size,
        s.mtime_sec,
        s.mtime_nsec,
        s.mode
    )
}

impl Records {
    /// Parses a log; malformed lines are skipped (the log lives in a
    /// directory the guest can fill, though never by name).
    pub fn parse(text: &str) -> Self {
        let mut r = Self::default();
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            match f.as_slice() {
                ["S", path, ino, size, sec, nsec, mode] => {
                    let parsed = (|| {
                        Some((
                            unhex(path)?,
                            Snapshot {
                                ino: ino.parse().ok()?,
                                size: size.parse().ok()?,
                                mtime_sec: sec.parse().ok()?,
                                mtime_nsec: nsec.parse().ok()?,
                                mode: mode.parse().ok()?,
                            },
                        ))
                    })();
                    if let Some((p, s)) = parsed {
                        r.snapshots.insert(p, s);
                    }
                }
                ["I", up, dev, ino] => {
                    if let (Ok(up), Ok(dev), Ok(ino)) = (up.parse(), dev.parse(), ino.parse()) {
                        r.identities.insert(up, (dev, ino));
                    }
                }
                ["O", up, uid, gid] => {
                    if let (Ok(up), Ok(uid), Ok(gid)) = (up.parse(), uid.parse(), gid.parse()) {
                        r.owners.insert(up, (uid, gid));
                    }
                }
                ["D", up] => {
                    if let Ok(up) = up.parse::<u64>() {
                        r.identities.remove(&up);
                        r.owners.remove(&up);
                    }
                }
                _ => {}
            }
        }
        r
    }

    fn render(&self) -> String {
        let mut s = format!("{HEADER}\n");
        for (p, snap) in &self.snapshots {
            s.push_str(&snapshot_line(p, snap));
        }
        for (up, (dev, ino)) in &self.identities {
            let _ = writeln!(s, "I {up} {dev} {ino}");
        }
        for (up, (uid, gid)) in &self.owners {
            let _ = writeln!(s, "O {up} {uid} {gid}");
        }
        s
    }

    fn len(&self) -> usize {
        self.snapshots.len() + self.identities.len() + self.owners.len()
    }
}

/// The content of the regular file `name` in `dir` (never following a
/// symlink); None if there is none.
pub(crate) fn read_file(dir: BorrowedFd<'_>, name: &[u8]) -> Result<Option<Vec<u8>>, Errno> {
    let fd = match rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    if !crate::layer::fstat(&fd)?.is_reg() {
        return Err(Errno::INVAL);
    }
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(fd), &mut data)
        .map_err(|e| crate::layer::errno_of(&e))?;
    Ok(Some(data))
}

/// Reads the log of an upper directory (empty if there is none).
pub fn read_records(upper_root: BorrowedFd<'_>) -> Result<Records, Errno> {
    Ok(match read_file(upper_root, ORIGIN_LOG)? {
        Some(text) => Records::parse(&String::from_utf8_lossy(&text)),
        None => Records::default(),
    })
}

/// Appends lines to the log of an upper directory (creating it), durably.
pub fn append(upper_root: BorrowedFd<'_>, text: &str) -> Result<(), Errno> {
    let fd = open_append(upper_root)?;
    let mut f = std::fs::File::from(fd);
    f.write_all(text.as_bytes())
        .map_err(|e| crate::layer::errno_of(&e))?;
    rfs::fsync(&f)
}

fn open_append(upper_root: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    rfs::openat(
        upper_root,
        ORIGIN_LOG,
        OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
}

/// The server's view of the log: records in memory, appends on disk.
#[derive(Debug)]
pub struct OriginLog {
    file: std::fs::File,
    pub records: Records,
    /// Lines appended since the last compaction.
    appended: usize,
    /// The upper root, to compact into.
    root: OwnedFd,
}

/// Rewrites the log of `upper_root` with just `records` (through a
/// temporary file and a rename); the new log, open for appending.
fn compact(upper_root: BorrowedFd<'_>, records: &Records) -> Result<std::fs::File, Errno> {
    let tmp = [TMP_PREFIX, b"origins"].concat();
    let fd = rfs::openat(
        upper_root,
        tmp.as_slice(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    std::fs::File::from(fd)
        .write_all(records.render().as_bytes())
        .map_err(|e| crate::layer::errno_of(&e))?;
    rfs::renameat_with(
        upper_root,
        tmp.as_slice(),
        upper_root,
        ORIGIN_LOG,
        RenameFlags::empty(),
    )?;
    Ok(std::fs::File::from(open_append(upper_root)?))
}

/// Lines appended beyond the live records before the log is rewritten.
const COMPACT_SLACK: usize = 65_536;

impl OriginLog {
    /// Loads and compacts the log of `upper_root`.
    pub fn open(upper_root: BorrowedFd<'_>) -> Result<Self, Errno> {
        let records = read_records(upper_root)?;
        let file = compact(upper_root, &records)?;
        let root = rfs::openat(
            upper_root,
            ".",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            file,
            records,
            appended: 0,
            root,
        })
    }

    fn write(&mut self, line: &str) {
        if let Err(e) = self.file.write_all(line.as_bytes()) {
            crate::warn_limited!(error = %e, "cowfs: cannot append to the copy-up log");
        }
        self.appended += line.matches('\n').count();
        if self.appended > self.records.len() + COMPACT_SLACK {
            match compact(self.root.as_fd(), &self.records) {
                Ok(file) => {
                    self.file = file;
                    self.appended = 0;
                }
                Err(e) => crate::warn_limited!(error = %e, "cowfs: cannot compact the copy-up log"),
            }
        }
    }

    /// Records the lower object at `path` unless it was recorded before.
    pub fn snapshot(&mut self, path: &[u8], lower: &St) {
        if self.records.snapshots.contains_key(path) {
            return;
        }
        let s = Snapshot::of(lower);
        self.write(&snapshot_line(path, &s));
        self.records.snapshots.insert(path.to_vec(), s);
    }

    /// A copy-up: [`snapshot`](Self::snapshot) of the lower object and
    /// [`set_identity`](Self::set_identity) of its upper copy, in one write.
    pub fn copied_up(&mut self, path: &[u8], lower: &St, upper_ino: u64) {
        let mut text = String::new();
        if !self.records.snapshots.contains_key(path) {
            let s = Snapshot::of(lower);
            text = snapshot_line(path, &s);
            self.records.snapshots.insert(path.to_vec(), s);
        }
        let identity = (lower.dev, lower.ino);
        text.push_str(&format!("I {upper_ino} {} {}\n", identity.0, identity.1));
        self.records.identities.insert(upper_ino, identity);
        self.write(&text);
    }

    pub fn identity(&self, upper_ino: u64) -> Option<(u64, u64)> {
        self.records.identities.get(&upper_ino).copied()
    }

    pub fn set_identity(&mut self, upper_ino: u64, lower: (u64, u64)) {
        self.write(&format!("I {upper_ino} {} {}\n", lower.0, lower.1));
        self.records.identities.insert(upper_ino, lower);
    }

    /// The upper object `upper_ino` was deleted (its last link).
    pub fn drop_identity(&mut self, upper_ino: u64) {
        let had_identity = self.records.identities.remove(&upper_ino).is_some();
        let had_owner = self.records.owners.remove(&upper_ino).is_some();
        if had_identity || had_owner {
            self.write(&format!("D {upper_ino}\n"));
        }
    }

    /// The owner the guest gave upper object `upper_ino`, if recorded.
    pub fn owner(&self, upper_ino: u64) -> Option<(u32, u32)> {
        self.records.owners.get(&upper_ino).copied()
    }

    /// Records the guest's owner of upper object `upper_ino`; `u32::MAX`
    /// keeps that half as it was (`current` when none was recorded).
    pub fn set_owner(&mut self, upper_ino: u64, owner: (u32, u32), current: (u32, u32)) {
        let was = self.owner(upper_ino).unwrap_or(current);
        let uid = if owner.0 == u32::MAX { was.0 } else { owner.0 };
        let gid = if owner.1 == u32::MAX { was.1 } else { owner.1 };
        if self.owner(upper_ino) == Some((uid, gid)) {
            return;
        }
        self.write(&format!("O {upper_ino} {uid} {gid}\n"));
        self.records.owners.insert(upper_ino, (uid, gid));
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let s = Snapshot {
            ino: 7,
            size: 9,
            mtime_sec: -3,
            mtime_nsec: 5,
            mode: 0o100644,
        };
        let text = format!(
            "{HEADER}\n{}I 10 1 7\nI 11 1 8\nD 11\ngarbage\nS zz 1 2 3 4 5\nS {}\nO 10 5 6\nO 12 7 8\nD 12\nO 13 x 1\n",
            snapshot_line(b"a/\nb", &s),
            hex(b"x")
        );
        let r = Records::parse(&text);
        assert_eq!(r.snapshots.get(&b"a/\nb"[..]), Some(&s));
        assert_eq!(r.snapshots.len(), 1);
        assert_eq!(r.identities.get(&10), Some(&(1, 7)));
        assert!(!r.identities.contains_key(&11));
        // Owners: kept, dropped with their object, malformed ones skipped.
        assert_eq!(r.owners.get(&10), Some(&(5, 6)));
        assert_eq!(r.owners.len(), 1);
        let again = Records::parse(&r.render());
        assert_eq!(again.snapshots, r.snapshots);
        assert_eq!(again.identities, r.identities);
        assert_eq!(again.owners, r.owners);
        assert_eq!(unhex(&hex(b"")), Some(vec![]));
    }

    #[test]
    fn log_survives_reopen() {
        let d = tempfile::tempdir().unwrap();
        let root = rfs::open(d.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let st = St {
            ino: 42,
            size: 3,
            ..St::default()
        };
        {
            let mut log = OriginLog::open(root.as_fd()).unwrap();
            log.snapshot(b"f", &st);
            log.snapshot(b"f", &St::default());
            log.set_identity(100, (1, 42));
            log.set_identity(101, (1, 43));
            log.drop_identity(101);
            let g = St {
                dev: 1,
                ino: 7,
                size: 5,
                ..St::default()
            };
            log.copied_up(b"g", &g, 102);
        }
        let log = OriginLog::open(root.as_fd()).unwrap();
        assert_eq!(log.records.snapshots[&b"g"[..]].ino, 7);
        assert_eq!(log.identity(102), Some((1, 7)));
        assert_eq!(log.records.snapshots[&b"f"[..]].ino, 42);
        assert_eq!(log.identity(100), Some((1, 42)));
        assert_eq!(log.identity(101), None);
    }

    #[test]
    fn a_chown_loop_does_not_grow_the_log_without_bound() {
        let d = tempfile::tempdir().unwrap();
        let root = rfs::open(d.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let mut log = OriginLog::open(root.as_fd()).unwrap();
        for i in 0..(2 * COMPACT_SLACK as u32 + 10) {
            log.set_owner(9, (i % 2, 0), (0, 0));
        }
        use std::os::unix::ffi::OsStrExt;
        let size = std::fs::metadata(d.path().join(std::ffi::OsStr::from_bytes(ORIGIN_LOG)))
            .unwrap()
            .len();
        // Never more than the slack's worth of lines (about 10 bytes each).
        assert!(size < 16 * COMPACT_SLACK as u64, "{size} bytes");
        drop(log);
        let log = OriginLog::open(root.as_fd()).unwrap();
        assert_eq!(log.owner(9), Some((1, 0)));
    }
}
