//! Copy-up: bringing a lower object (and its parent directories) into the
//! upper layer before it is changed.
//!
//! A regular file is copied into a temporary `.wh..wh..tmp.*` file in the
//! upper parent, given the lower file's mode, owner (when running as root),
//! xattrs (where the host lets us) and times, then renamed into place with
//! RENAME_NOREPLACE, so a copy-up is all or nothing. Directories, symlinks
//! and special files are recreated with their metadata. Every copy-up logs
//! a snapshot of the lower object and the upper object's identity (see
//! [`crate::origin`]).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::Timespec;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, RenameFlags, Timestamps};
use rustix::io::Errno;

use super::Filesystem;
use crate::inode::Presence;
use crate::layer::{
    fstat, join, proc_fd_path, reopen, split, St, S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFREG,
};
use crate::name;

impl Filesystem {
    /// Makes sure the object at `path` (currently `p`) is in the upper
    /// layer, copying its data only if `data`. Returns its new presence.
    pub(crate) fn copy_up(
        &mut self,
        path: &[u8],
        p: Presence,
        data: bool,
    ) -> Result<Presence, Errno> {
        self.copy_up_file(path, p, data).map(|(p, _)| p)
    }

    /// [`copy_up`](Self::copy_up), also returning the new upper copy of a
    /// regular file open read-write when this call made it (the caller
    /// may keep it instead of opening the file again).
    pub(crate) fn copy_up_file(
        &mut self,
        path: &[u8],
        p: Presence,
        data: bool,
    ) -> Result<(Presence, Option<OwnedFd>), Errno> {
        self.upper()?;
        if p.upper {
            return Ok((p, None));
        }
        if p.is_dir {
            self.ensure_upper_dir(path)?;
            let p = Presence {
                upper: true,
                lower: true,
                is_dir: true,
            };
            return Ok((p, None));
        }
        let (parent, name) = split(path).ok_or(Errno::IO)?;
        // A parent the inode table knows to be in the upper layer needs no
        // walk to check it (the next copy-up in a directory is the common
        // case); should it be gone after all, the full check runs.
        let known = self.inodes.presence_at(parent).is_some_and(|pp| pp.upper);
        if !known {
            self.ensure_upper_dir(parent)?;
        }
        let fd = match self.copy_up_one(parent, name, data) {
            Err(Errno::NOENT) if known => {
                self.ensure_upper_dir(parent)?;
                self.copy_up_one(parent, name, data)?
            }
            r => r?,
        };
        let np = Presence::upper(false);
        self.inodes.set_presence(path, np);
        Ok((np, fd))
    }

    /// Makes sure the directory at `dir` exists in the upper layer, copying
    /// up every missing ancestor from the lower layer.
    pub(crate) fn ensure_upper_dir(&mut self, dir: &[u8]) -> Result<(), Errno> {
        match self.upper()?.stat(dir)? {
            Some(s) if s.is_dir() => return Ok(()),
            Some(_) => return Err(Errno::NOTDIR),
            None => {}
        }
        let mut prefix: Vec<u8> = Vec::new();
        for comp in dir.split(|&b| b == b'/') {
            let parent = prefix.clone();
            prefix = join(&parent, comp);
            match self.upper()?.stat(&prefix)? {
                Some(s) if s.is_dir() => continue,
                Some(_) => return Err(Errno::NOTDIR),
                None => {
                    self.copy_up_one(&parent, comp, false)?;
                    self.inodes.set_presence(
                        &prefix,
                        Presence {
                            upper: true,
                            lower: true,
                            is_dir: true,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// Copies the lower object `parent/name` into the existing upper
    /// directory `parent`; returns the copy of a regular file, open
    /// read-write.
    fn copy_up_one(
        &mut self,
        parent: &[u8],
        name: &[u8],
        data: bool,
    ) -> Result<Option<OwnedFd>, Errno> {
        let path = join(parent, name);
        let lfd = self.lower()?.path_fd(&path)?;
        let st = fstat(&lfd)?;
        let data_bytes = if data && st.is_reg() { st.size } else { 0 };
        self.room(crate::OBJECT_COST.saturating_add(data_bytes))?;
        let updir = self.upper()?.dir(parent)?;
        let as_root = self.as_root;
        let mode = self.host_mode(st.mode, st.is_dir());
        let mut copy = None;
        let new = match st.kind() {
            S_IFREG => {
                let tmp = self.tmp_name();
                let out = rfs::openat(
                    &updir,
                    tmp.as_slice(),
                    OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::RDWR
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )?;
                let done = (|| {
                    if data && st.size > 0 {
                        let input = reopen(lfd.as_fd(), OFlags::RDONLY | OFlags::NONBLOCK)?;
                        let now = fstat(&input)?;
                        if now.ino != st.ino || now.dev != st.dev || !now.is_reg() {
                            return Err(Errno::AGAIN);
                        }
                        copy_data(&input, &out, Some(st.size))?;
                    }
                    copy_xattrs(lfd.as_fd(), out.as_fd());
                    if as_root {
                        rfs::fchown(&out, Some(uid(st.uid)?), Some(gid(st.gid)?))?;
                    }
                    rfs::fchmod(&out, Mode::from_raw_mode(mode))?;
                    rfs::futimens(&out, &times_of(&st))?;
                    rfs::renameat_with(&updir, tmp.as_slice(), &updir, name, RenameFlags::NOREPLACE)
                })();
                if let Err(e) = done {
                    let _ = rfs::unlinkat(&updir, tmp.as_slice(), AtFlags::empty());
                    return Err(e);
                }
                let new = fstat(&out)?;
                copy = Some(out);
                new
            }
            S_IFDIR => {
                rfs::mkdirat(&updir, name, Mode::from_raw_mode(0o700))?;
                let fd = self.upper()?.dir(&path)?;
                copy_xattrs(lfd.as_fd(), fd.as_fd());
                self.copy_meta(&updir, name, &fd, &st)?
            }
            S_IFLNK => {
                let target = rfs::readlinkat(&lfd, "", Vec::new())?;
                rfs::symlinkat(target.as_c_str(), &updir, name)?;
                let fd = self.upper()?.path_fd(&path)?;
                self.copy_meta(&updir, name, &fd, &st)?
            }
            // Never a host device node made for the guest (see mknod).
            S_IFCHR | S_IFBLK => return Err(Errno::PERM),
            _ => {
                rfs::mknodat(
                    &updir,
                    name,
                    FileType::from_raw_mode(st.mode),
                    Mode::from_raw_mode(mode),
                    st.rdev,
                )?;
                let fd = self.upper()?.path_fd(&path)?;
                self.copy_meta(&updir, name, &fd, &st)?
            }
        };
        self.charge_new(&new, false);
        if let Some(o) = &mut self.origins {
            o.copied_up(&path, &st, new.ino);
        }
        // The copy belongs to the server's user: the guest keeps seeing
        // the lower object's owner.
        self.note_owner(&new, (st.uid, st.gid));
        Ok(copy)
    }

    /// Owner, mode and times of `st` onto the new upper object `name` in
    /// `dir` (pinned by the O_PATH fd `fd`).
    fn copy_meta(&self, dir: &OwnedFd, name: &[u8], fd: &OwnedFd, st: &St) -> Result<St, Errno> {
        if self.as_root {
            super::ops::chown_fd(fd, Some(st.uid), Some(st.gid))?;
        }
        if !st.is_symlink() {
            super::ops::chmod_fd(fd, self.host_mode(st.mode, st.is_dir()))?;
        }
        rfs::utimensat(dir, name, &times_of(st), AtFlags::SYMLINK_NOFOLLOW)?;
        fstat(fd)
    }

    /// Copies the whole merged tree at `top` into the upper layer and makes
    /// `top` opaque, so it no longer depends on the lower layer (done before
    /// renaming a directory with lower content). Bounded by the tree-copy
    /// limits: EXDEV beyond them, before anything is copied.
    pub(crate) fn copy_up_tree(&mut self, top: &[u8], p: Presence) -> Result<(), Errno> {
        let (max_entries, max_bytes) = (
            self.limits().max_tree_copy_entries,
            self.limits().max_tree_copy_bytes,
        );
        let mut todo: Vec<(Vec<u8>, Presence)> = Vec::new();
        let mut stack = vec![(top.to_vec(), p)];
        let mut bytes = 0u64;
        while let Some((path, pres)) = stack.pop() {
            if todo.len() >= max_entries {
                return Err(Errno::XDEV);
            }
            if pres.is_dir {
                for e in self.list_merged(&path, pres, usize::MAX)? {
                    if let Some((cp, st)) = self.probe(&path, pres, &e.name)? {
                        // Refused before anything is copied (see mknod).
                        if !cp.upper && matches!(st.kind(), S_IFCHR | S_IFBLK) {
                            return Err(Errno::PERM);
                        }
                        if !cp.upper && st.is_reg() {
                            bytes = bytes.saturating_add(st.size);
                            if bytes > max_bytes {
                                return Err(Errno::XDEV);
                            }
                        }
                        stack.push((join(&path, &e.name), cp));
                    }
                }
            }
            todo.push((path, pres));
        }
        // Parents come before their children in `todo`.
        for (path, pres) in &todo {
            self.copy_up(path, *pres, true)?;
        }
        for (path, pres) in &todo {
            if pres.is_dir {
                self.clear_reserved(path)?;
            }
        }
        self.make_marker(top, name::OPAQUE_MARKER)?;
        let kinds: std::collections::HashMap<&[u8], bool> = todo
            .iter()
            .map(|(p, pr)| (p.as_slice(), pr.is_dir))
            .collect();
        for (_, path) in self.inodes.below(top) {
            if let Some(&is_dir) = kinds.get(path.as_slice()) {
                self.inodes.set_presence(&path, Presence::upper(is_dir));
            }
        }
        Ok(())
    }

    /// Removes whiteouts, opaque markers and leftover temporaries from the
    /// upper directory `dir` (before it is removed or replaced, or once it
    /// no longer depends on the lower layer).
    pub(crate) fn clear_reserved(&self, dir: &[u8]) -> Result<(), Errno> {
        let up = self.upper()?;
        let fd = up.open_at(dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        let names: Vec<Vec<u8>> = rfs::Dir::new(fd)?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_bytes().to_vec())
            .filter(|n| name::is_reserved(n) && n.as_slice() != name::ORIGIN_LOG)
            .collect();
        let d = up.dir(dir)?;
        for n in names {
            match rfs::unlinkat(&d, n.as_slice(), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn uid(raw: u32) -> Result<rfs::Uid, Errno> {
    if raw == u32::MAX {
        return Err(Errno::INVAL);
    }
    Ok(rfs::Uid::from_raw(raw))
}

fn gid(raw: u32) -> Result<rfs::Gid, Errno> {
    if raw == u32::MAX {
        return Err(Errno::INVAL);
    }
    Ok(rfs::Gid::from_raw(raw))
}

pub(crate) fn times_of(st: &St) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.atime,
            tv_nsec: st.atime_nsec.into(),
        },
        last_modification: Timespec {
            tv_sec: st.mtime,
            tv_nsec: st.mtime_nsec.into(),
        },
    }
}

/// Copies all of `input` to `output` (both at their current offsets, which
/// are 0 here): copy_file_range where the host supports it, else read/write.
pub(crate) fn copy_data(input: &OwnedFd, output: &OwnedFd, size: Option<u64>) -> Result<(), Errno> {
    let mut copied = 0u64;
    loop {
        match rfs::copy_file_range(input, None, output, None, 1 << 30) {
            Ok(0) => return Ok(()),
            // The size seen when the copy-up began is the snapshot: no
            // extra call to find the end.
            Ok(n) if size.is_some_and(|s| copied + n as u64 >= s) => return Ok(()),
            Ok(n) => copied += n as u64,
            Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => break,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = match rustix::io::read(input, &mut buf[..]) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        };
        let mut done = 0;
        while done < n {
            match rustix::io::write(output, &buf[done..n]) {
                Ok(0) => return Err(Errno::IO),
                Ok(w) => done += w,
                Err(Errno::INTR) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// An xattr a copy-up never carries: file capabilities on a root VMM's
/// upper copy, whose content the guest then chooses, would be a host
/// privilege as a set-user-ID bit would (see `host_mode`).
const FILE_CAPS: &str = "security.capability";

/// Copies the xattrs the host lets us read and write but file
/// capabilities; failures (no xattr support, `trusted.*`/`security.*`
/// without privileges) are skipped.
pub(crate) fn copy_xattrs(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    let (src, dst) = (proc_fd_path(from), proc_fd_path(to));
    // Most files have no xattrs: ask with a small buffer first (zeroing
    // 128 KiB per copy-up is not free), the full size only on ERANGE.
    let mut list = vec![0u8; 1024];
    let n = match rfs::listxattr(src.as_str(), &mut list[..]) {
        Ok(0) => return,
        Ok(n) => n,
        Err(Errno::RANGE) => {
            list.resize(super::io::XATTR_MAX, 0);
            match rfs::listxattr(src.as_str(), &mut list[..]) {
                Ok(n) => n,
                Err(_) => return,
            }
        }
        Err(_) => return,
    };
    let mut value = vec![0u8; super::io::XATTR_MAX];
    for xname in list[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let Ok(xname) = std::str::from_utf8(xname) else {
            continue;
        };
        if xname == FILE_CAPS {
            continue;
        }
        if let Ok(len) = rfs::getxattr(src.as_str(), xname, &mut value[..]) {
            let _ = rfs::setxattr(dst.as_str(), xname, &value[..len], rfs::XattrFlags::empty());
        }
    }
}
