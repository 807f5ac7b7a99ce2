//! `mvm diff` / `mvm commit`: what an upper layer changes in its lower
//! directory, and applying it.
//!
//! Both walk the two trees with dirfds and `*at()` calls, never following
//! a symlink (the upper layer's content comes from the guest). Meant for a
//! stopped VM (or at least a quiet share).
//!
//! [`commit`] refuses, before changing anything, when the host's copy of
//! any path it would touch changed since the guest first shadowed it: the
//! lower object must match the snapshot in the copy-up log (inode, size,
//! mtime, mode), a deleted directory's whole lower subtree included, and an
//! added path must not exist on the host. Applied files are written to a
//! temporary name and renamed into place; set-user/group-ID bits are
//! dropped (a guest must not plant setuid files in the project). After a
//! commit the log gets fresh snapshots, so `diff` is empty and a later
//! commit of more changes works.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use crate::layer::{fstat, St};
use crate::name;
use crate::origin::{self, Records, Snapshot};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One path (relative to the share root) the upper layer changes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    pub kind: ChangeKind,
    pub path: PathBuf,
}

impl std::fmt::Display for Change {
    /// `A path`, `M path` or `D path`, like `git status --short`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let k = match self.kind {
            ChangeKind::Added => 'A',
            ChangeKind::Modified => 'M',
            ChangeKind::Deleted => 'D',
        };
        write!(f, "{k} {}", self.path.display())
    }
}

/// Why a path cannot be committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub path: PathBuf,
    pub reason: &'static str,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// What [`commit`] did (or, with `dry_run`, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub changes: Vec<Change>,
    pub applied: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("the host copy changed since the VM first touched it: {}", list(.0))]
    Conflicts(Vec<Conflict>),
}

fn list(c: &[Conflict]) -> String {
    c.iter()
        .map(Conflict::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn path_buf(p: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(p))
}

fn join(parent: &[u8], n: &[u8]) -> Vec<u8> {
    crate::layer::join(parent, n)
}

fn open_root(p: &Path) -> Result<OwnedFd, CommitError> {
    rfs::open(
        p,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| CommitError::Open {
        path: p.to_path_buf(),
        source: e.into(),
    })
}

/// An `O_PATH` fd of `name` in `dir`, not following it.
fn child(dir: BorrowedFd<'_>, n: &[u8]) -> Result<Option<(OwnedFd, St)>, Errno> {
    match rfs::openat(
        dir,
        n,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => {
            let st = fstat(&fd)?;
            Ok(Some((fd, st)))
        }
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Names in the directory pinned by `dir` (without `.`/`..`), sorted.
fn entries(dir: BorrowedFd<'_>) -> Result<Vec<Vec<u8>>, Errno> {
    let fd = rfs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut v = Vec::new();
    for e in rfs::Dir::new(fd)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            v.push(n.to_vec());
        }
    }
    v.sort();
    Ok(v)
}

fn read_all(fd: &OwnedFd) -> Result<Vec<u8>, Errno> {
    let f = crate::layer::reopen(fd.as_fd(), OFlags::RDONLY | OFlags::NONBLOCK)?;
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(f), &mut out)
        .map_err(|e| crate::layer::errno_of(&e))?;
    Ok(out)
}

/// Whether a non-directory upper object differs from the lower one.
fn differs(u: &(OwnedFd, St), l: &(OwnedFd, St)) -> Result<bool, Errno> {
    let (us, ls) = (&u.1, &l.1);
    if us.kind() != ls.kind() || us.mode != ls.mode || us.uid != ls.uid || us.gid != ls.gid {
        return Ok(true);
    }
    if us.is_symlink() {
        return Ok(rfs::readlinkat(&u.0, "", Vec::new())? != rfs::readlinkat(&l.0, "", Vec::new())?);
    }
    if us.is_reg() {
        return Ok(us.size != ls.size || read_all(&u.0)? != read_all(&l.0)?);
    }
    Ok(us.rdev != ls.rdev)
}

struct Walker {
    out: Vec<Change>,
}

impl Walker {
    fn push(&mut self, kind: ChangeKind, p: &[u8]) {
        self.out.push(Change {
            kind,
            path: path_buf(p),
        });
    }

    /// Everything below `upper` is new.
    fn added_tree(&mut self, upper: BorrowedFd<'_>, path: &[u8]) -> Result<(), Errno> {
        for n in entries(upper)? {
            if name::is_reserved(&n) {
                continue;
            }
            let p = join(path, &n);
            self.push(ChangeKind::Added, &p);
            if let Some((fd, st)) = child(upper, &n)? {
                if st.is_dir() {
                    self.added_tree(fd.as_fd(), &p)?;
                }
            }
        }
        Ok(())
    }

    /// Compares the upper directory `upper` with the lower one `lower` at
    /// `path` (`lower` None: nothing of the lower layer is visible there).
    fn dir(
        &mut self,
        lower: Option<BorrowedFd<'_>>,
        upper: BorrowedFd<'_>,
        path: &[u8],
        opaque: bool,
    ) -> Result<(), Errno> {
        let all = entries(upper)?;
        let opaque = opaque || all.iter().any(|n| n == name::OPAQUE_MARKER);
        let mut present = BTreeSet::new();
        let mut whiteouts = BTreeSet::new();
        for n in &all {
            if let Some(w) = name::whited_out(n) {
                whiteouts.insert(w.to_vec());
            } else if !name::is_reserved(n) {
                present.insert(n.clone());
            }
        }
        if let Some(lower) = lower {
            for n in entries(lower)? {
                if present.contains(&n) || name::is_reserved(&n) {
                    continue;
                }
                if whiteouts.contains(&n) || opaque {
                    self.push(ChangeKind::Deleted, &join(path, &n));
                }
            }
        }
        for n in &present {
            let p = join(path, n);
            let Some(u) = child(upper, n)? else { continue };
            let l = match lower {
                Some(lower) => child(lower, n)?,
                None => None,
            };
            match (u.1.is_dir(), l) {
                (true, Some(l)) if l.1.is_dir() => {
                    let (us, ls) = (&u.1, &l.1);
                    if us.mode != ls.mode || us.uid != ls.uid || us.gid != ls.gid {
                        self.push(ChangeKind::Modified, &p);
                    }
                    self.dir(Some(l.0.as_fd()), u.0.as_fd(), &p, opaque)?;
                }
                (true, Some(_)) => {
                    self.push(ChangeKind::Modified, &p);
                    self.added_tree(dir_fd(&u.0)?.as_fd(), &p)?;
                }
                (true, None) => {
                    self.push(ChangeKind::Added, &p);
                    self.added_tree(dir_fd(&u.0)?.as_fd(), &p)?;
                }
                (false, Some(l)) => {
                    if l.1.is_dir() || differs(&u, &l)? {
                        self.push(ChangeKind::Modified, &p);
                    }
                }
                (false, None) => self.push(ChangeKind::Added, &p),
            }
        }
        Ok(())
    }
}

fn dir_fd(opath: &OwnedFd) -> Result<OwnedFd, Errno> {
    rfs::openat(
        opath,
        ".",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn diff_fds(lower: BorrowedFd<'_>, upper: BorrowedFd<'_>) -> Result<Vec<Change>, Errno> {
    let mut w = Walker { out: Vec::new() };
    w.dir(Some(lower), upper, b"", false)?;
    w.out
        .sort_by(|a, b| a.path.cmp(&b.path).then(a.kind.cmp(&b.kind)));
    Ok(w.out)
}

/// The changes the upper layer makes to the lower directory, sorted by
/// path. A deleted or replaced directory is one entry (its content is not
/// listed); an added directory lists everything in it.
pub fn diff(lower: &Path, upper: &Path) -> Result<Vec<Change>, CommitError> {
    let (l, u) = (open_root(lower)?, open_root(upper)?);
    diff_fds(l.as_fd(), u.as_fd()).map_err(|source| CommitError::Read {
        path: upper.to_path_buf(),
        source,
    })
}

/// The lower object at `path`, resolved component by component without
/// following symlinks; None if absent (or a parent is not a directory).
fn resolve(root: BorrowedFd<'_>, path: &[u8]) -> Result<Option<(OwnedFd, St)>, Errno> {
    let path: &[u8] = if path.is_empty() { b"." } else { path };
    match rfs::openat2(
        root,
        path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        crate::layer::RESOLVE,
    ) {
        Ok(fd) => {
            let st = fstat(&fd)?;
            Ok(Some((fd, st)))
        }
        Err(Errno::NOENT | Errno::NOTDIR) => Ok(None),
        Err(e) => Err(e),
    }
}

fn matches(s: Option<&Snapshot>, st: &St) -> bool {
    s.is_some_and(|s| *s == Snapshot::of(st))
}

/// Checks a lower subtree about to be deleted against the snapshots.
fn check_tree(
    fd: &OwnedFd,
    path: &[u8],
    recs: &Records,
    out: &mut Vec<Conflict>,
) -> Result<(), Errno> {
    for n in entries(dir_fd(fd)?.as_fd())? {
        let p = join(path, &n);
        let Some((cfd, st)) = child(fd.as_fd(), &n)? else {
            continue;
        };
        if !matches(recs.snapshots.get(&p), &st) {
            out.push(Conflict {
                path: path_buf(&p),
                reason: "changed on the host (inside a deleted directory)",
            });
        } else if st.is_dir() {
            check_tree(&cfd, &p, recs, out)?;
        }
    }
    Ok(())
}

fn conflicts(
    lower: BorrowedFd<'_>,
    changes: &[Change],
    recs: &Records,
) -> Result<Vec<Conflict>, Errno> {
    let mut out = Vec::new();
    for c in changes {
        let p = c.path.as_os_str().as_bytes();
        let now = resolve(lower, p)?;
        let conflict = |reason| Conflict {
            path: c.path.clone(),
            reason,
        };
        match (c.kind, now) {
            (ChangeKind::Added, Some(_)) => out.push(conflict("created on the host meanwhile")),
            (ChangeKind::Added, None) => {}
            (_, None) => out.push(conflict("deleted on the host meanwhile")),
            (kind, Some((fd, st))) => {
                if !matches(recs.snapshots.get(p), &st) {
                    out.push(conflict(if recs.snapshots.contains_key(p) {
                        "changed on the host since the VM copied it"
                    } else {
                        "created or replaced on the host meanwhile (no record of the host copy)"
                    }));
                } else if kind == ChangeKind::Deleted && st.is_dir() {
                    check_tree(&fd, p, recs, &mut out)?;
                }
            }
        }
    }
    Ok(out)
}

/// Removes `n` in `dir` and, for a directory, everything below it.
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

/// Makes the lower object at `path` a copy of the upper one (not
/// recursive: added directories' content comes as its own changes).
fn apply_one(
    lower: BorrowedFd<'_>,
    upper: BorrowedFd<'_>,
    path: &[u8],
    tmp_n: &mut u64,
) -> Result<(), Errno> {
    let (parent, n) = crate::layer::split(path).ok_or(Errno::INVAL)?;
    let (ud, ln) = (
        resolve(upper, parent)?.ok_or(Errno::NOENT)?.0,
        resolve(lower, parent)?.ok_or(Errno::NOENT)?.0,
    );
    let (ufd, ust) = child(ud.as_fd(), n)?.ok_or(Errno::NOENT)?;
    let existing = child(ln.as_fd(), n)?;
    let mode = Mode::from_raw_mode(ust.mode & 0o1777);
    if ust.is_dir() {
        match existing {
            Some((_, st)) if st.is_dir() => {}
            Some(_) => {
                remove_tree(ln.as_fd(), n)?;
                rfs::mkdirat(&ln, n, Mode::from_raw_mode(0o700))?;
            }
            None => rfs::mkdirat(&ln, n, Mode::from_raw_mode(0o700))?,
        }
        let d = rfs::openat(
            &ln,
            n,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        rfs::chmod(crate::layer::proc_fd_path(d.as_fd()).as_str(), mode)?;
        return Ok(());
    }
    *tmp_n += 1;
    let tmp = [
        name::TMP_PREFIX,
        format!("commit.{}.{}", std::process::id(), tmp_n).as_bytes(),
    ]
    .concat();
    let made = (|| {
        if ust.is_reg() {
            let out = rfs::openat(
                &ln,
                tmp.as_slice(),
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?;
            let input = crate::layer::reopen(ufd.as_fd(), OFlags::RDONLY | OFlags::NONBLOCK)?;
            crate::fs::copy_data(&input, &out, None)?;
            rfs::fchmod(&out, mode)?;
            rfs::futimens(&out, &crate::fs::times_of(&ust))?;
        } else if ust.is_symlink() {
            let target = rfs::readlinkat(&ufd, "", Vec::new())?;
            rfs::symlinkat(target.as_c_str(), &ln, tmp.as_slice())?;
        } else {
            rfs::mknodat(
                &ln,
                tmp.as_slice(),
                FileType::from_raw_mode(ust.mode),
                mode,
                ust.rdev,
            )?;
        }
        if matches!(&existing, Some((_, st)) if st.is_dir()) {
            remove_tree(ln.as_fd(), n)?;
        }
        rfs::renameat_with(&ln, tmp.as_slice(), &ln, n, RenameFlags::empty())
    })();
    if made.is_err() {
        let _ = rfs::unlinkat(&ln, tmp.as_slice(), AtFlags::empty());
    }
    made
}

/// Applies the upper layer onto the lower directory: deletions first, then
/// additions and modifications, parents before children. With `dry_run`,
/// only checks and reports. Refuses with [`CommitError::Conflicts`] (and
/// changes nothing) if the host copy of any touched path changed.
pub fn commit(lower: &Path, upper: &Path, dry_run: bool) -> Result<Report, CommitError> {
    let (l, u) = (open_root(lower)?, open_root(upper)?);
    let read_err = |source| CommitError::Read {
        path: upper.to_path_buf(),
        source,
    };
    let changes = diff_fds(l.as_fd(), u.as_fd()).map_err(read_err)?;
    let recs = origin::read_records(u.as_fd()).map_err(read_err)?;
    let found = conflicts(l.as_fd(), &changes, &recs).map_err(|source| CommitError::Read {
        path: lower.to_path_buf(),
        source,
    })?;
    if !found.is_empty() {
        return Err(CommitError::Conflicts(found));
    }
    if dry_run {
        return Ok(Report {
            changes,
            applied: false,
        });
    }
    let mut tmp_n = 0;
    let mut fresh = BTreeMap::new();
    for c in changes.iter().filter(|c| c.kind == ChangeKind::Deleted) {
        let p = c.path.as_os_str().as_bytes();
        let (parent, n) = crate::layer::split(p)
            .ok_or(Errno::INVAL)
            .map_err(read_err)?;
        let write_err = |source| CommitError::Write {
            path: lower.join(&c.path),
            source,
        };
        if let Some((d, _)) = resolve(l.as_fd(), parent).map_err(write_err)? {
            remove_tree(d.as_fd(), n).map_err(write_err)?;
        }
    }
    for c in changes.iter().filter(|c| c.kind != ChangeKind::Deleted) {
        let p = c.path.as_os_str().as_bytes();
        let write_err = |source| CommitError::Write {
            path: lower.join(&c.path),
            source,
        };
        apply_one(l.as_fd(), u.as_fd(), p, &mut tmp_n).map_err(write_err)?;
        if let Some((_, st)) = resolve(l.as_fd(), p).map_err(write_err)? {
            fresh.insert(p.to_vec(), Snapshot::of(&st));
        }
    }
    // The upper layer now mirrors the host for these paths: record it.
    let lines: String = fresh
        .iter()
        .map(|(p, s)| origin::snapshot_line(p, s))
        .collect();
    if !lines.is_empty() {
        origin::append(u.as_fd(), &lines).map_err(|source| CommitError::Write {
            path: upper.to_path_buf(),
            source,
        })?;
    }
    Ok(Report {
        changes,
        applied: true,
    })
}
