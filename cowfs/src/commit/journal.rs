//! The commit journal, `.wh..wh..mvm-commit` at the upper root (a name
//! the guest can neither see nor make): text, one record per line, paths
//! and names hex-encoded.
//!
//! ```text
//! mvm-cowfs-commit 1
//! phase staging|apply
//! put <target> <staged name> <aside name>    staged object renamed onto target
//! remove <target> <aside name>               target renamed aside (removed at the end)
//! chmod <target> <mode>                      an existing directory's new mode
//! snapshot <path>                            re-snapshot once applied
//! ```
//!
//! Staged and set-aside objects live beside their target (same directory,
//! so same filesystem: renames are atomic) under reserved `.wh..wh..tmp.`
//! names. The journal is replaced whole (written to a temporary name,
//! fsynced, renamed, directory fsynced), so a reader sees the old one or
//! the new one. Every step is idempotent: redoing one that was done, or
//! half done, finishes it.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use crate::diff::{child, entries, open_dir, resolve};
use crate::layer::{proc_fd_path, split};
use crate::name::TMP_PREFIX;
use crate::origin::{self, hex, unhex, Snapshot};

const JOURNAL: &[u8] = b".wh..wh..mvm-commit";
const HEADER: &str = "mvm-cowfs-commit 1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StepKind {
    /// Put the staged object at the target (replacing what is there).
    Put,
    /// Remove the target (a file or a whole directory).
    Remove,
    /// Set an existing directory's mode.
    Chmod(u32),
}

/// One change to the host folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Step {
    pub kind: StepKind,
    /// Relative to the lower root.
    pub target: Vec<u8>,
    /// The new object's name beside the target while staged (`Put`).
    pub staged: Vec<u8>,
    /// The name the old object is renamed to before it is removed.
    pub aside: Vec<u8>,
}

impl Step {
    pub fn new(kind: StepKind, target: &[u8]) -> Self {
        Self {
            kind,
            target: target.to_vec(),
            staged: Vec::new(),
            aside: Vec::new(),
        }
    }

    /// Names the temporaries of step number `i` of this process's commit.
    pub fn name_temporaries(&mut self, i: usize) {
        let base = [
            temporary_prefix().as_slice(),
            format!("{}.{i}", std::process::id()).as_bytes(),
        ]
        .concat();
        if self.kind == StepKind::Put {
            self.staged = [&base[..], b".new"].concat();
        }
        if !matches!(self.kind, StepKind::Chmod(_)) {
            self.aside = [&base[..], b".old"].concat();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Copies are being staged: an interrupted commit is rolled back.
    Staging,
    /// The commit is decided: an interrupted one is rolled forward.
    Apply,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) struct Journal {
    pub phase: Phase,
    pub steps: Vec<Step>,
    pub snapshots: Vec<Vec<u8>>,
}

/// How every staged or set-aside name begins.
fn temporary_prefix() -> Vec<u8> {
    [TMP_PREFIX, b"commit."].concat()
}

/// Where a journal is written before it is renamed into force.
fn unfinished_name() -> Vec<u8> {
    [TMP_PREFIX, b"commit-journal"].concat()
}

fn unlink_if_there(dir: BorrowedFd<'_>, n: &[u8]) -> Result<(), Errno> {
    match rfs::unlinkat(dir, n, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// fsync of the directory pinned by `dir` (an `O_PATH` fd is enough).
pub(super) fn fsync_dir(dir: BorrowedFd<'_>) -> Result<(), Errno> {
    rfs::fsync(open_dir(dir)?)
}

/// Removes `n` in `dir` and, for a directory, everything below it; absent
/// is fine.
fn remove_tree(dir: BorrowedFd<'_>, n: &[u8]) -> Result<(), Errno> {
    match rfs::unlinkat(dir, n, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e),
    }
    let sub = rfs::openat(
        dir,
        n,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for c in entries(sub.as_fd())? {
        remove_tree(sub.as_fd(), &c)?;
    }
    rfs::unlinkat(dir, n, AtFlags::REMOVEDIR)
}

/// The host directory holding `target` and the target's name; None if
/// that directory is gone.
fn parent<'t>(
    lower: BorrowedFd<'_>,
    target: &'t [u8],
) -> Result<Option<(OwnedFd, &'t [u8])>, Errno> {
    let (dir, name) = split(target).ok_or(Errno::INVAL)?;
    Ok(resolve(lower, dir)?.map(|(fd, _)| (fd, name)))
}

impl Journal {
    pub fn new(steps: Vec<Step>, snapshots: Vec<Vec<u8>>) -> Self {
        Self {
            phase: Phase::Staging,
            steps,
            snapshots,
        }
    }

    fn render(&self) -> String {
        let mut s = format!("{HEADER}\n");
        let phase = match self.phase {
            Phase::Staging => "staging",
            Phase::Apply => "apply",
        };
        let _ = writeln!(s, "phase {phase}");
        for st in &self.steps {
            let t = hex(&st.target);
            let _ = match st.kind {
                StepKind::Put => writeln!(s, "put {t} {} {}", hex(&st.staged), hex(&st.aside)),
                StepKind::Remove => writeln!(s, "remove {t} {}", hex(&st.aside)),
                StepKind::Chmod(m) => writeln!(s, "chmod {t} {m}"),
            };
        }
        for p in &self.snapshots {
            let _ = writeln!(s, "snapshot {}", hex(p));
        }
        s
    }

    /// Parses a journal; any malformed line makes it unusable (EINVAL):
    /// a commit is never finished from a guess.
    fn parse(text: &str) -> Result<Self, Errno> {
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(Errno::INVAL);
        }
        let phase = match lines.next() {
            Some("phase staging") => Phase::Staging,
            Some("phase apply") => Phase::Apply,
            _ => return Err(Errno::INVAL),
        };
        let mut j = Self::new(Vec::new(), Vec::new());
        j.phase = phase;
        // A relative path of real names: a `..` (or `.`) would let a step
        // reach past the lower root (`chmod ..` changed its parent).
        let name = |s: &str| {
            unhex(s)
                .filter(|n| {
                    n.split(|&b| b == b'/')
                        .all(|c| !matches!(c, b"" | b"." | b".."))
                })
                .ok_or(Errno::INVAL)
        };
        // Recovery deletes staged and set-aside names: only ever ours, and
        // one name beside the target.
        let temporary = |s: &str| {
            name(s).and_then(|n| {
                (n.starts_with(&temporary_prefix()) && !n.contains(&b'/'))
                    .then_some(n)
                    .ok_or(Errno::INVAL)
            })
        };
        for line in lines {
            let f: Vec<&str> = line.split(' ').collect();
            let step = |kind, target: &str, staged: Option<&str>, aside: Option<&str>| {
                Ok::<_, Errno>(Step {
                    kind,
                    target: name(target)?,
                    staged: staged.map(temporary).transpose()?.unwrap_or_default(),
                    aside: aside.map(temporary).transpose()?.unwrap_or_default(),
                })
            };
            match f.as_slice() {
                ["put", t, s, a] => j.steps.push(step(StepKind::Put, t, Some(s), Some(a))?),
                ["remove", t, a] => j.steps.push(step(StepKind::Remove, t, None, Some(a))?),
                ["chmod", t, m] => {
                    let m = m.parse().map_err(|_| Errno::INVAL)?;
                    j.steps.push(step(StepKind::Chmod(m), t, None, None)?);
                }
                ["snapshot", p] => j.snapshots.push(name(p)?),
                _ => return Err(Errno::INVAL),
            }
        }
        Ok(j)
    }

    /// The journal of an interrupted commit, if there is one.
    pub fn read(upper: BorrowedFd<'_>) -> Result<Option<Self>, Errno> {
        let Some(bytes) = origin::read_file(upper, JOURNAL)? else {
            return Ok(None);
        };
        let text = String::from_utf8(bytes).map_err(|_| Errno::INVAL)?;
        Self::parse(&text).map(Some)
    }

    /// Replaces the journal with this one, durably.
    pub fn write(&self, upper: BorrowedFd<'_>) -> Result<(), Errno> {
        let tmp = unfinished_name();
        let fd = rfs::openat(
            upper,
            tmp.as_slice(),
            OFlags::CREATE | OFlags::TRUNC | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let mut f = std::fs::File::from(fd);
        f.write_all(self.render().as_bytes())
            .map_err(|e| crate::layer::errno_of(&e))?;
        rfs::fsync(&f)?;
        rfs::renameat(upper, tmp.as_slice(), upper, JOURNAL)?;
        fsync_dir(upper)
    }

    /// Removes the journal (and a half-written one), durably.
    pub fn remove(upper: BorrowedFd<'_>) -> Result<(), Errno> {
        unlink_if_there(upper, JOURNAL)?;
        Self::remove_unfinished(upper)?;
        fsync_dir(upper)
    }

    /// Removes a journal whose writing was interrupted (never renamed
    /// into place, so never in force).
    pub fn remove_unfinished(upper: BorrowedFd<'_>) -> Result<(), Errno> {
        unlink_if_there(upper, &unfinished_name())
    }

    /// Removes whatever was staged: the host folder is as before.
    pub fn roll_back(&self, lower: BorrowedFd<'_>) -> Result<(), Errno> {
        for s in self.steps.iter().filter(|s| s.kind == StepKind::Put) {
            if let Some((dir, _)) = parent(lower, &s.target)? {
                remove_tree(dir.as_fd(), &s.staged)?;
                fsync_dir(dir.as_fd())?;
            }
        }
        Ok(())
    }

    /// Does every step (again), records fresh snapshots and removes the
    /// set-aside objects: the host folder is as committed. `at(k)` is
    /// called after step k (1-based), after the snapshots (`steps + 1`)
    /// and after the cleanup (`steps + 2`).
    pub fn roll_forward(
        &self,
        lower: BorrowedFd<'_>,
        upper: BorrowedFd<'_>,
        at: &dyn Fn(u32),
    ) -> Result<(), Errno> {
        let mut k = 0;
        for s in &self.steps {
            if let Some((dir, name)) = parent(lower, &s.target)? {
                apply(dir.as_fd(), name, s)?;
                fsync_dir(dir.as_fd())?;
            }
            k += 1;
            at(k);
        }
        let mut lines = String::new();
        for p in &self.snapshots {
            if let Some((_, st)) = resolve(lower, p)? {
                lines.push_str(&origin::snapshot_line(p, &Snapshot::of(&st)));
            }
        }
        if !lines.is_empty() {
            origin::append(upper, &lines)?;
        }
        at(k + 1);
        for s in &self.steps {
            if let Some((dir, _)) = parent(lower, &s.target)? {
                for n in [&s.aside, &s.staged] {
                    if !n.is_empty() {
                        remove_tree(dir.as_fd(), n)?;
                    }
                }
                fsync_dir(dir.as_fd())?;
            }
        }
        at(k + 2);
        Ok(())
    }
}

/// One step in the host directory `dir` (the target is `dir/name`).
fn apply(dir: BorrowedFd<'_>, name: &[u8], s: &Step) -> Result<(), Errno> {
    match s.kind {
        StepKind::Put => {
            let Some((_, staged)) = child(dir, &s.staged)? else {
                // Renamed into place already.
                return Ok(());
            };
            if let Some((_, old)) = child(dir, name)? {
                // A rename replaces a file, not a directory (nor a file
                // by a directory): the old one goes aside first.
                if old.is_dir() || staged.is_dir() {
                    rfs::renameat_with(dir, name, dir, s.aside.as_slice(), RenameFlags::NOREPLACE)?;
                }
            }
            rfs::renameat(dir, s.staged.as_slice(), dir, name)
        }
        StepKind::Remove => match child(dir, name)? {
            Some(_) => {
                rfs::renameat_with(dir, name, dir, s.aside.as_slice(), RenameFlags::NOREPLACE)
            }
            None => Ok(()),
        },
        StepKind::Chmod(mode) => match child(dir, name)? {
            Some((fd, st)) if st.is_dir() => rfs::chmod(
                proc_fd_path(fd.as_fd()).as_str(),
                Mode::from_raw_mode(mode & 0o1777),
            ),
            _ => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trip() {
        let mut steps = vec![
            Step::new(StepKind::Put, b"a b/c\n"),
            Step::new(StepKind::Remove, b"dir"),
            Step::new(StepKind::Chmod(0o755), b"d"),
        ];
        for (i, s) in steps.iter_mut().enumerate() {
            s.name_temporaries(i);
        }
        assert!(steps[0].staged.starts_with(TMP_PREFIX) && steps[0].aside.ends_with(b".old"));
        assert!(steps[1].staged.is_empty() && !steps[1].aside.is_empty());
        assert!(steps[2].aside.is_empty());
        let mut j = Journal::new(steps, vec![b"a b/c\n".to_vec()]);
        j.phase = Phase::Apply;
        assert_eq!(Journal::parse(&j.render()).unwrap(), j);
        for bad in [
            "",
            "mvm-cowfs-commit 1\nphase later\n",
            "mvm-cowfs-commit 1\nphase apply\nput 61\n",
            // A host file named as a temporary (recovery would delete it).
            "mvm-cowfs-commit 1\nphase staging\nput 61 62 2e77682e2e77682e746d702e636f6d6d69742e31\n",
            // Targets up or beside the root, a temporary that is a path.
            "mvm-cowfs-commit 1\nphase apply\nchmod 2e2e 0\n",
            "mvm-cowfs-commit 1\nphase apply\nremove 612f2e2e 2e77682e2e77682e2e746d702e636f6d6d69742e31\n",
            "mvm-cowfs-commit 1\nphase apply\nchmod 2e 0\n",
            "mvm-cowfs-commit 1\nphase apply\nchmod 612f2f62 0\n",
            "mvm-cowfs-commit 1\nphase staging\nput 61 2e77682e2e77682e2e746d702e636f6d6d69742e312f78 2e77682e2e77682e2e746d702e636f6d6d69742e31\n",
        ] {
            assert_eq!(Journal::parse(bad), Err(Errno::INVAL), "{bad:?}");
        }
    }
}
