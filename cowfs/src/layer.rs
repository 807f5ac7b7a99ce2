//! One layer directory on the host and the only ways the server touches it.
//!
//! Every path handed to a [`Layer`] is a merged path relative to the layer
//! root, built from names that passed [`crate::name::check`] (no `/`, NUL,
//! `.` or `..`). Resolution goes through `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` from the held root dirfd:
//! no symlink, in any component, is ever followed on the host, and nothing
//! resolves outside the root even if the host tree changes underneath. The
//! final component is then used with `*at()` calls relative to a dirfd with
//! `AT_SYMLINK_NOFOLLOW` / `O_NOFOLLOW`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// The resolution rules for every guest-derived path.
pub(crate) const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

pub(crate) const S_IFMT: u32 = 0o170000;
pub(crate) const S_IFDIR: u32 = 0o040000;
pub(crate) const S_IFREG: u32 = 0o100000;
pub(crate) const S_IFLNK: u32 = 0o120000;
pub(crate) const S_IFIFO: u32 = 0o010000;
pub(crate) const S_IFSOCK: u32 = 0o140000;
pub(crate) const S_IFCHR: u32 = 0o020000;
pub(crate) const S_IFBLK: u32 = 0o060000;

/// The parts of `struct stat` the server uses, in fixed-width types.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct St {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    pub blksize: u64,
    pub blocks: u64,
    pub atime: i64,
    pub atime_nsec: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub ctime: i64,
    pub ctime_nsec: u32,
}

impl St {
    pub fn kind(&self) -> u32 {
        self.mode & S_IFMT
    }
    pub fn is_dir(&self) -> bool {
        self.kind() == S_IFDIR
    }
    pub fn is_reg(&self) -> bool {
        self.kind() == S_IFREG
    }
    pub fn is_symlink(&self) -> bool {
        self.kind() == S_IFLNK
    }
}

// The field types of `struct stat` differ between architectures; on some the
// casts below are no-ops.
#[allow(clippy::unnecessary_cast)]
impl From<rfs::Stat> for St {
    fn from(s: rfs::Stat) -> Self {
        Self {
            dev: s.st_dev as u64,
            ino: s.st_ino as u64,
            mode: s.st_mode as u32,
            nlink: s.st_nlink as u64,
            uid: s.st_uid as u32,
            gid: s.st_gid as u32,
            rdev: s.st_rdev as u64,
            size: s.st_size.max(0) as u64,
            blksize: s.st_blksize.max(0) as u64,
            blocks: s.st_blocks.max(0) as u64,
            atime: s.st_atime as i64,
            atime_nsec: s.st_atime_nsec as u32,
            mtime: s.st_mtime as i64,
            mtime_nsec: s.st_mtime_nsec as u32,
            ctime: s.st_ctime as i64,
            ctime_nsec: s.st_ctime_nsec as u32,
        }
    }
}

pub(crate) fn fstat(fd: impl AsFd) -> Result<St, Errno> {
    rfs::fstat(fd).map(St::from)
}

/// A layer root: an `O_PATH` dirfd held for the server's lifetime.
#[derive(Debug)]
pub(crate) struct Layer {
    root: OwnedFd,
    pub dev: u64,
    /// Directories (relative to the root) whose contents do not exist for
    /// the guest: they show as empty directories.
    masked: Vec<Vec<u8>>,
    /// When set, only these paths, what is below them and the directories
    /// on the way to them exist; everything else is absent.
    visible: Option<Vec<Vec<u8>>>,
    /// Paths that are absent, with everything below them.
    hidden: Vec<Vec<u8>>,
}

/// `path` lies strictly below `dir`.
fn below(path: &[u8], dir: &[u8]) -> bool {
    (dir.is_empty() && !path.is_empty())
        || path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

/// `""` (the root) becomes `"."`, which openat2 resolves to the root itself.
fn rel(path: &[u8]) -> &[u8] {
    if path.is_empty() {
        b"."
    } else {
        path
    }
}

/// Splits a merged path into (parent, name); the root has no parent.
pub(crate) fn split(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.is_empty() {
        return None;
    }
    Some(match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[][..], path),
    })
}

/// `parent/name`, or `name` at the root.
pub(crate) fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    if !parent.is_empty() {
        p.extend_from_slice(parent);
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

impl Layer {
    /// Opens a configured layer directory. The configured path itself is
    /// trusted (it comes from the VMM's config), so symlinks in it are fine.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let root = rfs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let dev = fstat(&root)?.dev;
        Ok(Self {
            root,
            dev,
            masked: Vec::new(),
            visible: None,
            hidden: Vec::new(),
        })
    }

    /// Hides what is below these root-relative directories.
    pub fn set_masked(&mut self, masked: Vec<Vec<u8>>) {
        self.masked = masked;
    }

    /// True when `path` is a masked directory itself (listed as empty).
    pub fn is_masked_dir(&self, path: &[u8]) -> bool {
        self.masked.iter().any(|m| m.as_slice() == path)
    }

    /// Shows only `visible` (and the directories leading to it), minus
    /// `hidden`; both root-relative.
    pub fn set_view(&mut self, visible: Option<Vec<Vec<u8>>>, hidden: Vec<Vec<u8>>) {
        self.visible = visible;
        self.hidden = hidden;
    }

    /// True when `path` lies below a masked directory.
    fn is_below_mask(&self, path: &[u8]) -> bool {
        self.masked.iter().any(|m| below(path, m))
    }

    /// True when `path` is outside the view: not visible, or hidden.
    pub fn is_hidden(&self, path: &[u8]) -> bool {
        if path.is_empty() {
            return false;
        }
        if self.hidden.iter().any(|h| h == path || below(path, h)) {
            return true;
        }
        self.visible.as_ref().is_some_and(|v| {
            !v.iter()
                .any(|a| a == path || below(path, a) || below(a, path))
        })
    }

    /// True when this layer filters anything by path.
    pub fn has_view(&self) -> bool {
        self.visible.is_some() || !self.hidden.is_empty()
    }

    /// What the guest must not reach: below a mask or outside the view.
    fn is_absent(&self, path: &[u8]) -> bool {
        self.is_below_mask(path) || self.is_hidden(path)
    }

    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Opens `path` beneath the root with `flags` (O_NOFOLLOW and O_CLOEXEC
    /// are always added); no symlink is followed in any component.
    pub fn open_at(&self, path: &[u8], flags: OFlags, mode: Mode) -> Result<OwnedFd, Errno> {
        if self.is_absent(path) {
            return Err(Errno::NOENT);
        }
        rfs::openat2(
            &self.root,
            rel(path),
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            mode,
            RESOLVE,
        )
    }

    /// An `O_PATH` fd for the object at `path` (a symlink itself, not its
    /// target).
    pub fn path_fd(&self, path: &[u8]) -> Result<OwnedFd, Errno> {
        self.open_at(path, OFlags::PATH, Mode::empty())
    }

    /// An `O_PATH` fd for the directory at `path`.
    pub fn dir(&self, path: &[u8]) -> Result<OwnedFd, Errno> {
        self.open_at(path, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
    }

    /// `lstat` of `path`, `None` if it does not exist. A symlink or a
    /// non-directory among the parents counts as "does not exist" only for
    /// ENOENT/ENOTDIR; ELOOP (a symlink where a directory was expected,
    /// i.e. a host-side swap) is an error.
    pub fn stat(&self, path: &[u8]) -> Result<Option<St>, Errno> {
        match self.path_fd(path) {
            Ok(fd) => fstat(&fd).map(Some),
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `lstat` of `name` in `dir`, an open directory of this layer at
    /// the parent of `path` (`path` is that parent joined with `name`):
    /// [`stat`](Self::stat) without the walk from the root. `name` is one
    /// checked component, so nothing is resolved beyond `dir`.
    pub fn stat_child(
        &self,
        dir: BorrowedFd<'_>,
        path: &[u8],
        name: &[u8],
    ) -> Result<Option<St>, Errno> {
        if self.is_absent(path) {
            return Ok(None);
        }
        Self::stat_in(dir, name)
    }

    /// `lstat` of `name` in the already-open directory `dir`.
    pub fn stat_in(dir: BorrowedFd<'_>, name: &[u8]) -> Result<Option<St>, Errno> {
        match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(s) => Ok(Some(St::from(s))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A path through `/proc/self/fd` to one of our own fds, to apply the
/// path-only calls (chmod, xattrs) to exactly the object that fd pins.
pub(crate) fn proc_fd_path(fd: BorrowedFd<'_>) -> String {
    use std::os::fd::AsRawFd;
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Opens the object pinned by an `O_PATH` fd with real access flags, via
/// its `/proc/self/fd` link (the kernel reopens the same inode; nothing is
/// resolved by name again).
pub(crate) fn reopen(fd: BorrowedFd<'_>, flags: OFlags) -> Result<OwnedFd, Errno> {
    rfs::open(
        proc_fd_path(fd).as_str(),
        flags | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

pub(crate) fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_io_error(e).unwrap_or(Errno::IO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_join() {
        assert_eq!(split(b""), None);
        assert_eq!(split(b"a"), Some((&b""[..], &b"a"[..])));
        assert_eq!(split(b"a/b/c"), Some((&b"a/b"[..], &b"c"[..])));
        assert_eq!(join(b"", b"x"), b"x");
        assert_eq!(join(b"a/b", b"x"), b"a/b/x");
    }

    #[test]
    fn symlinks_are_never_followed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("dir")).unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("esc")).unwrap();
        std::os::unix::fs::symlink("dir", d.path().join("rel")).unwrap();
        let l = Layer::open(d.path()).unwrap();
        assert!(l.dir(b"dir").is_ok());
        assert_eq!(l.dir(b"esc").unwrap_err(), Errno::NOTDIR);
        assert_eq!(l.stat(b"esc/passwd").unwrap_err(), Errno::LOOP);
        assert_eq!(l.stat(b"rel/x").unwrap_err(), Errno::LOOP);
        assert!(l.stat(b"esc").unwrap().unwrap().is_symlink());
        assert_eq!(l.stat(b"../x").unwrap_err(), Errno::XDEV);
    }

    #[test]
    fn views_show_only_allowed_paths_minus_hidden_ones() {
        let mut l = Layer::open(Path::new("/")).unwrap();
        l.set_view(
            Some(vec![b"usr".to_vec(), b"home/a/.gitconfig".to_vec()]),
            vec![b"usr/secret".to_vec()],
        );
        for shown in ["usr", "usr/bin/x", "home", "home/a", "home/a/.gitconfig"] {
            assert!(!l.is_hidden(shown.as_bytes()), "{shown}");
        }
        for absent in [
            "root",
            "usr2",
            "home/b",
            "home/a/.ssh",
            "home/a/.gitconfig2",
            "usr/secret",
            "usr/secret/x",
        ] {
            assert!(l.is_hidden(absent.as_bytes()), "{absent}");
        }
        assert!(!l.is_hidden(b""));
    }
}
