//! `mvm diff`: what an upper layer changes in its lower directory, and
//! the tree helpers [`crate::commit`] shares.
//!
//! Walks the two trees with dirfds and `*at()` calls, never following a
//! symlink (the upper layer's content comes from the guest). Meant for a
//! stopped VM (or at least a quiet share).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, Mode, OFlags};
use rustix::io::Errno;

use crate::layer::{fstat, St};
use crate::name;

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
    /// Executable files, git hooks or config, `.envrc`: files that run
    /// on the host. The commit applies them only once approved.
    #[error("these would run on the host and need approval: {}", paths(.0))]
    NeedsApproval(Vec<PathBuf>),
    #[error("{path} cannot be committed: {reason}")]
    Unsupported { path: PathBuf, reason: &'static str },
}

fn paths(p: &[PathBuf]) -> String {
    p.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn list(c: &[Conflict]) -> String {
    c.iter()
        .map(Conflict::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

pub(crate) fn path_buf(p: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(p))
}

pub(crate) fn join(parent: &[u8], n: &[u8]) -> Vec<u8> {
    crate::layer::join(parent, n)
}

pub(crate) fn open_root(p: &Path) -> Result<OwnedFd, CommitError> {
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
pub(crate) fn child(dir: BorrowedFd<'_>, n: &[u8]) -> Result<Option<(OwnedFd, St)>, Errno> {
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

/// The directory pinned by `dir` (an `O_PATH` fd is enough) opened for
/// reading: to list or fsync it.
pub(crate) fn open_dir(dir: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    rfs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Names in the directory pinned by `dir` (without `.`/`..`), sorted.
pub(crate) fn entries(dir: BorrowedFd<'_>) -> Result<Vec<Vec<u8>>, Errno> {
    let fd = open_dir(dir)?;
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

pub(crate) fn read_all(fd: &OwnedFd) -> Result<Vec<u8>, Errno> {
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

pub(crate) fn dir_fd(opath: &OwnedFd) -> Result<OwnedFd, Errno> {
    rfs::openat(
        opath,
        ".",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

pub(crate) fn diff_fds(lower: BorrowedFd<'_>, upper: BorrowedFd<'_>) -> Result<Vec<Change>, Errno> {
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

/// The object at `path` under `root`, resolved component by component
/// without following symlinks; None if absent (or a parent is not a
/// directory).
pub(crate) fn resolve(root: BorrowedFd<'_>, path: &[u8]) -> Result<Option<(OwnedFd, St)>, Errno> {
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
        // A parent that is a file or a symlink: no such object here.
        Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => Ok(None),
        Err(e) => Err(e),
    }
}
