//! Name and metadata operations: lookup, attributes, creating and deleting
//! names.

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::Timespec;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timestamps, UTIME_NOW, UTIME_OMIT};
use rustix::io::Errno;

use super::{Entry, Filesystem};
use crate::abi::{fattr, Attr, SetattrIn};
use crate::handle::Handle;
use crate::inode::Presence;
use crate::layer::{fstat, join, proc_fd_path, reopen, split, Layer, St};
use crate::layer::{S_IFBLK, S_IFCHR, S_IFIFO, S_IFMT, S_IFREG, S_IFSOCK};
use crate::name;

/// Longest symlink target accepted (PATH_MAX - 1).
pub const MAX_SYMLINK: usize = 4095;

/// chmod of the object pinned by an O_PATH fd (not a symlink).
pub(crate) fn chmod_fd(fd: &OwnedFd, mode: u32) -> Result<(), Errno> {
    if fstat(fd)?.is_symlink() {
        return Err(Errno::OPNOTSUPP);
    }
    rfs::chmod(
        proc_fd_path(fd.as_fd()).as_str(),
        Mode::from_raw_mode(mode & 0o7777),
    )
}

/// chown of the object pinned by an O_PATH fd (never following it).
pub(crate) fn chown_fd(fd: &OwnedFd, uid: Option<u32>, gid: Option<u32>) -> Result<(), Errno> {
    let uid = uid.filter(|&u| u != u32::MAX).map(rfs::Uid::from_raw);
    let gid = gid.filter(|&g| g != u32::MAX).map(rfs::Gid::from_raw);
    rfs::chownat(
        fd,
        "",
        uid,
        gid,
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
    )
}

/// The upper directory fd and final name used to address `path` with
/// `*at()` calls (`.` in the root for the root itself).
fn dir_and_name<'p>(layer: &Layer, path: &'p [u8]) -> Result<(OwnedFd, &'p [u8]), Errno> {
    match split(path) {
        Some((parent, name)) => Ok((layer.dir(parent)?, name)),
        None => Ok((layer.dir(b"")?, b".")),
    }
}

fn timespec(set: bool, now: bool, sec: u64, nsec: u32) -> Timespec {
    if now {
        Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_NOW,
        }
    } else if set {
        Timespec {
            tv_sec: sec as i64,
            tv_nsec: i64::from(nsec.min(999_999_999)),
        }
    } else {
        Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        }
    }
}

fn timestamps(a: &SetattrIn) -> Timestamps {
    Timestamps {
        last_access: timespec(
            a.valid & fattr::ATIME != 0,
            a.valid & fattr::ATIME_NOW != 0,
            a.atime,
            a.atimensec,
        ),
        last_modification: timespec(
            a.valid & fattr::MTIME != 0,
            a.valid & fattr::MTIME_NOW != 0,
            a.mtime,
            a.mtimensec,
        ),
    }
}

impl Filesystem {
    fn dir_inode(&mut self, id: u64) -> Result<(Vec<u8>, Presence), Errno> {
        let (path, p) = self.inodes.linked(id)?;
        if !p.is_dir {
            return Err(Errno::NOTDIR);
        }
        Ok((path, p))
    }

    pub fn lookup(&mut self, parent: u64, name: &[u8]) -> Result<Entry, Errno> {
        name::check(name)?;
        if self.cow() && name::is_reserved(name) {
            return Err(Errno::NOENT);
        }
        let (ppath, pp) = self.dir_inode(parent)?;
        let (p, st) = self.probe(&ppath, pp, name)?.ok_or(Errno::NOENT)?;
        Ok(self.entry(&join(&ppath, name), p, &st))
    }

    /// [`lookup`](Self::lookup) for a batch of names in one directory
    /// (READDIRPLUS): `dirs` starts as `None` and keeps the parent's
    /// directories open between the calls of one batch.
    pub(crate) fn lookup_in(
        &mut self,
        parent: u64,
        name: &[u8],
        dirs: &mut Option<super::ParentDirs>,
    ) -> Result<Entry, Errno> {
        name::check(name)?;
        if self.cow() && name::is_reserved(name) {
            return Err(Errno::NOENT);
        }
        let d = match dirs {
            Some(d) => d,
            None => {
                let (ppath, pp) = self.dir_inode(parent)?;
                dirs.insert(self.parent_dirs(&ppath, pp)?)
            }
        };
        let (p, st) = self
            .probe_with(&d.path, d.presence, name, Some(d))?
            .ok_or(Errno::NOENT)?;
        Ok(self.entry(&join(&d.path, name), p, &st))
    }

    pub fn forget(&mut self, id: u64, n: u64) {
        self.inodes.forget(id, n);
    }

    pub fn getattr(&mut self, id: u64, fh: Option<u64>) -> Result<Attr, Errno> {
        if let Some(fh) = fh {
            let _ = self.follow_copy_up(fh);
            if let Ok(Handle::File { fd, upper, .. }) = self.handles.get(fh) {
                let upper = *upper;
                let st = fstat(fd)?;
                let p = Presence {
                    upper,
                    lower: !upper,
                    is_dir: false,
                };
                return Ok(self.attr(p, &st));
            }
        }
        let (path, p) = self.inodes.linked(id)?;
        let st = self.primary_stat(&path, p)?;
        Ok(self.attr(p, &st))
    }

    pub fn setattr(&mut self, id: u64, a: &SetattrIn) -> Result<Attr, Errno> {
        if a.valid & fattr::FH != 0 {
            if let Some(attr) = self.setattr_by_handle(a)? {
                return Ok(attr);
            }
        }
        let (path, p) = self.inodes.linked(id)?;
        self.upper()?;
        let want = fattr::MODE
            | fattr::UID
            | fattr::GID
            | fattr::SIZE
            | fattr::ATIME
            | fattr::MTIME
            | fattr::ATIME_NOW
            | fattr::MTIME_NOW;
        if a.valid & want == 0 {
            let st = self.primary_stat(&path, p)?;
            return Ok(self.attr(p, &st));
        }
        let truncate_all = a.valid & fattr::SIZE != 0 && a.size == 0;
        let p = self.copy_up(&path, p, !truncate_all)?;
        let up = self.upper()?;
        let fd = up.path_fd(&path)?;
        let mut new_owner = None;
        if a.valid & (fattr::UID | fattr::GID) != 0 {
            let uid = (a.valid & fattr::UID != 0).then_some(a.uid);
            let gid = (a.valid & fattr::GID != 0).then_some(a.gid);
            if self.records_owners() {
                new_owner = Some((uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX)));
            } else {
                chown_fd(&fd, uid, gid)?;
            }
        }
        if a.valid & fattr::MODE != 0 {
            chmod_fd(&fd, self.host_mode(a.mode, p.is_dir))?;
        }
        if a.valid & fattr::SIZE != 0 {
            if !fstat(&fd)?.is_reg() {
                return Err(Errno::INVAL);
            }
            let w = reopen(fd.as_fd(), OFlags::WRONLY | OFlags::NONBLOCK)?;
            // A longer file is sparse: only the blocks freed change.
            self.budgeted(&w, |_| 0, || rfs::ftruncate(&w, a.size))?;
        }
        let times = a.valid & (fattr::ATIME | fattr::MTIME | fattr::ATIME_NOW | fattr::MTIME_NOW);
        if times != 0 {
            let ts = timestamps(a);
            let (d, n) = dir_and_name(up, &path)?;
            rfs::utimensat(&d, n, &ts, AtFlags::SYMLINK_NOFOLLOW)?;
        }
        let st = fstat(&fd)?;
        if let Some(owner) = new_owner {
            self.note_owner(&st, owner);
        }
        Ok(self.attr(p, &st))
    }

    /// SETATTR through an open, writable upper handle (ftruncate,
    /// fchmod, futimens...): works for unlinked files too and needs no
    /// path. None if `a.fh` is not such a handle.
    fn setattr_by_handle(&mut self, a: &SetattrIn) -> Result<Option<Attr>, Errno> {
        let fd = match self.handles.get(a.fh) {
            Ok(Handle::File {
                fd,
                writable: true,
                upper: true,
                ..
            }) => fd,
            _ => return Ok(None),
        };
        let mut new_owner = None;
        if a.valid & (fattr::UID | fattr::GID) != 0 {
            let uid =
                (a.valid & fattr::UID != 0 && a.uid != u32::MAX).then(|| rfs::Uid::from_raw(a.uid));
            let gid =
                (a.valid & fattr::GID != 0 && a.gid != u32::MAX).then(|| rfs::Gid::from_raw(a.gid));
            if self.records_owners() {
                new_owner = Some((
                    uid.map_or(u32::MAX, |u| u.as_raw()),
                    gid.map_or(u32::MAX, |g| g.as_raw()),
                ));
            } else {
                rfs::fchown(fd, uid, gid)?;
            }
        }
        if a.valid & fattr::MODE != 0 {
            rfs::fchmod(fd, Mode::from_raw_mode(self.host_mode(a.mode, false)))?;
        }
        if a.valid & fattr::SIZE != 0 {
            self.budgeted(fd, |_| 0, || rfs::ftruncate(fd, a.size))?;
        }
        if a.valid & (fattr::ATIME | fattr::MTIME | fattr::ATIME_NOW | fattr::MTIME_NOW) != 0 {
            rfs::futimens(fd, &timestamps(a))?;
        }
        let st = fstat(fd)?;
        if let Some(owner) = new_owner {
            self.note_owner(&st, owner);
        }
        Ok(Some(self.attr(Presence::upper(false), &st)))
    }

    pub fn readlink(&mut self, id: u64) -> Result<Vec<u8>, Errno> {
        let (path, p) = self.inodes.linked(id)?;
        let fd = self.primary(p)?.path_fd(&path)?;
        if !fstat(&fd)?.is_symlink() {
            return Err(Errno::INVAL);
        }
        Ok(rfs::readlinkat(&fd, "", Vec::new())?.into_bytes())
    }

    /// Checks that `name` can be created in `parent` and brings `parent`
    /// into the upper layer. Returns (parent path, whether a whiteout for
    /// `name` is there, i.e. the lower layer has it).
    fn prepare_new(&mut self, parent: u64, name: &[u8]) -> Result<(Vec<u8>, bool), Errno> {
        let (ppath, pp) = self.check_new(parent, name)?;
        self.prepare_new_in(ppath, pp, name)
    }

    /// [`prepare_new`](Self::prepare_new) once the caller checked `name`
    /// with [`check_name_new`](Self::check_name_new) and found it absent.
    fn prepare_new_in(
        &mut self,
        ppath: Vec<u8>,
        pp: Presence,
        name: &[u8],
    ) -> Result<(Vec<u8>, bool), Errno> {
        self.room(crate::OBJECT_COST)?;
        let pp = self.copy_up(&ppath, pp, false)?;
        self.inodes.set_presence(&ppath, pp);
        let whiteout = self.cow() && pp.lower && self.lower()?.stat(&join(&ppath, name))?.is_some();
        Ok((ppath, whiteout))
    }

    /// The checks of [`prepare_new`](Self::prepare_new) without side
    /// effects, in the VFS's order: name, writable share, parent, EEXIST.
    fn check_new(&mut self, parent: u64, name: &[u8]) -> Result<(Vec<u8>, Presence), Errno> {
        let (ppath, pp) = self.check_name_new(parent, name)?;
        if self.probe(&ppath, pp, name)?.is_some() {
            return Err(Errno::EXIST);
        }
        Ok((ppath, pp))
    }

    /// [`check_new`](Self::check_new) but for whether `name` exists.
    fn check_name_new(&mut self, parent: u64, name: &[u8]) -> Result<(Vec<u8>, Presence), Errno> {
        name::check(name)?;
        self.upper()?;
        if self.cow() && name::is_reserved(name) {
            return Err(Errno::INVAL);
        }
        self.dir_inode(parent)
    }

    /// After a new upper object replaced a whiteout.
    fn finish_replace(&mut self, ppath: &[u8], name: &[u8], whiteout: bool) -> Result<(), Errno> {
        if whiteout {
            self.remove_whiteout(ppath, name)?;
        }
        Ok(())
    }

    pub fn mkdir(
        &mut self,
        parent: u64,
        name: &[u8],
        mode: u32,
        owner: (u32, u32),
    ) -> Result<Entry, Errno> {
        let (ppath, whiteout) = self.prepare_new(parent, name)?;
        let d = self.upper()?.dir(&ppath)?;
        rfs::mkdirat(&d, name, Mode::from_raw_mode(0o700))?;
        let path = join(&ppath, name);
        let st = match self.finish_new(&d, name, Some(self.host_mode(mode, true)), owner) {
            Ok(st) => st,
            Err(e) => {
                let _ = rfs::unlinkat(&d, name, AtFlags::REMOVEDIR);
                return Err(e);
            }
        };
        self.new_upper_object(&st, owner);
        if whiteout {
            // The lower directory of the same name must not show through.
            self.make_marker(&path, name::OPAQUE_MARKER)?;
        }
        self.finish_replace(&ppath, name, whiteout)?;
        Ok(self.entry(&path, Presence::upper(true), &st))
    }

    pub fn mknod(
        &mut self,
        parent: u64,
        name: &[u8],
        mode: u32,
        owner: (u32, u32),
    ) -> Result<Entry, Errno> {
        let kind = mode & S_IFMT;
        match kind {
            S_IFREG | S_IFIFO | S_IFSOCK => {}
            // Device nodes on the host are never made for the guest: run
            // as root, one would give whoever reaches the upper layer (or a
            // commit, the project) the host device. EPERM is what an
            // unprivileged container answers, and tools cope with it;
            // storing an inert stand-in would show the guest a device
            // that does not work.
            S_IFCHR | S_IFBLK => return Err(Errno::PERM),
            _ => return Err(Errno::INVAL),
        }
        let (ppath, whiteout) = self.prepare_new(parent, name)?;
        let d = self.upper()?.dir(&ppath)?;
        if kind == S_IFREG {
            rfs::openat(
                &d,
                name,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?;
        } else {
            rfs::mknodat(
                &d,
                name,
                FileType::from_raw_mode(kind),
                Mode::from_raw_mode(0o600),
                0,
            )?;
        }
        let st = self.finish_new(&d, name, Some(self.host_mode(mode, false)), owner)?;
        self.new_upper_object(&st, owner);
        self.finish_replace(&ppath, name, whiteout)?;
        Ok(self.entry(&join(&ppath, name), Presence::upper(false), &st))
    }

    pub fn symlink(
        &mut self,
        parent: u64,
        name: &[u8],
        target: &[u8],
        owner: (u32, u32),
    ) -> Result<Entry, Errno> {
        if target.is_empty() || target.contains(&0) {
            return Err(Errno::INVAL);
        }
        if target.len() > MAX_SYMLINK {
            return Err(Errno::NAMETOOLONG);
        }
        let (ppath, whiteout) = self.prepare_new(parent, name)?;
        let d = self.upper()?.dir(&ppath)?;
        rfs::symlinkat(target, &d, name)?;
        let st = self.finish_new(&d, name, None, owner)?;
        self.new_upper_object(&st, owner);
        self.finish_replace(&ppath, name, whiteout)?;
        Ok(self.entry(&join(&ppath, name), Presence::upper(false), &st))
    }

    /// CREATE: a new regular file, opened. An existing name is opened
    /// instead unless `O_EXCL` is set.
    pub fn create(
        &mut self,
        parent: u64,
        name: &[u8],
        flags: u32,
        mode: u32,
        owner: (u32, u32),
    ) -> Result<(Entry, u64), Errno> {
        self.handles.check_room()?;
        let oflags = super::io::open_flags(flags);
        match self.lookup(parent, name) {
            Ok(e) if flags & OFlags::EXCL.bits() == 0 => {
                return match self.open(e.nodeid, flags) {
                    Ok(fh) => Ok((e, fh)),
                    Err(err) => {
                        self.forget(e.nodeid, 1);
                        Err(err)
                    }
                };
            }
            Ok(e) => {
                self.forget(e.nodeid, 1);
                return Err(Errno::EXIST);
            }
            Err(Errno::NOENT) => {}
            Err(e) => return Err(e),
        }
        // The lookup just found no `name`: no second probe.
        let (ppath, pp) = self.check_name_new(parent, name)?;
        let (ppath, whiteout) = self.prepare_new_in(ppath, pp, name)?;
        let d = self.upper()?.dir(&ppath)?;
        let fd = rfs::openat(
            &d,
            name,
            (oflags & !OFlags::TRUNC)
                | OFlags::CREATE
                | OFlags::EXCL
                | OFlags::NOFOLLOW
                | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        // The new file's own fd takes its owner and mode (no O_PATH
        // reopen, no /proc path).
        let finish = || -> Result<St, Errno> {
            if self.as_root {
                // All ones means "unchanged", as for chown(2).
                let uid = (owner.0 != u32::MAX).then(|| rfs::Uid::from_raw(owner.0));
                let gid = (owner.1 != u32::MAX).then(|| rfs::Gid::from_raw(owner.1));
                rfs::fchown(&fd, uid, gid)?;
            }
            rfs::fchmod(&fd, Mode::from_raw_mode(self.host_mode(mode, false)))?;
            fstat(&fd)
        };
        let st = match finish() {
            Ok(st) => st,
            Err(e) => {
                let _ = rfs::unlinkat(&d, name, AtFlags::empty());
                return Err(e);
            }
        };
        self.new_upper_object(&st, owner);
        self.finish_replace(&ppath, name, whiteout)?;
        let writable = oflags.intersects(OFlags::WRONLY | OFlags::RDWR);
        let entry = self.entry(&join(&ppath, name), Presence::upper(false), &st);
        let fh = self.handles.insert(Handle::File {
            fd,
            writable,
            upper: true,
            nodeid: entry.nodeid,
        })?;
        Ok((entry, fh))
    }

    pub fn link(&mut self, old: u64, newparent: u64, newname: &[u8]) -> Result<Entry, Errno> {
        let (opath, op) = self.inodes.linked(old)?;
        self.check_new(newparent, newname)?;
        if op.is_dir {
            return Err(Errno::PERM);
        }
        let (ppath, whiteout) = self.prepare_new(newparent, newname)?;
        self.copy_up(&opath, op, true)?;
        let up = self.upper()?;
        let (od, oname) = dir_and_name(up, &opath)?;
        let d = up.dir(&ppath)?;
        rfs::linkat(&od, oname, &d, newname, AtFlags::empty())?;
        let st = Layer::stat_in(d.as_fd(), newname)?.ok_or(Errno::NOENT)?;
        self.charge_new(&st, true);
        self.finish_replace(&ppath, newname, whiteout)?;
        Ok(self.entry(&join(&ppath, newname), Presence::upper(false), &st))
    }

    pub fn unlink(&mut self, parent: u64, name: &[u8]) -> Result<(), Errno> {
        self.remove(parent, name, false)
    }

    pub fn rmdir(&mut self, parent: u64, name: &[u8]) -> Result<(), Errno> {
        self.remove(parent, name, true)
    }

    fn remove(&mut self, parent: u64, name: &[u8], dir: bool) -> Result<(), Errno> {
        name::check(name)?;
        self.upper()?;
        if self.cow() && name::is_reserved(name) {
            return Err(Errno::NOENT);
        }
        let (ppath, pp) = self.dir_inode(parent)?;
        let (cp, _) = self.probe(&ppath, pp, name)?.ok_or(Errno::NOENT)?;
        let path = join(&ppath, name);
        match (dir, cp.is_dir) {
            (false, true) => return Err(Errno::ISDIR),
            (true, false) => return Err(Errno::NOTDIR),
            _ => {}
        }
        if dir && !self.list_merged(&path, cp, usize::MAX)?.is_empty() {
            return Err(Errno::NOTEMPTY);
        }
        let lower = self.lower_has(pp, &path)?;
        if let (Some(_), Err(e)) = (&lower, name::whiteout(name)) {
            return Err(e);
        }
        self.remove_upper(&ppath, name, cp)?;
        if let Some(l) = lower {
            self.whiteout(&ppath, name, &l)?;
        }
        self.inodes.unlink(&path);
        Ok(())
    }

    /// Removes the upper object `name` in `ppath` if there is one (an
    /// upper directory must be empty but for reserved entries).
    pub(crate) fn remove_upper(
        &mut self,
        ppath: &[u8],
        name: &[u8],
        cp: Presence,
    ) -> Result<(), Errno> {
        if !cp.upper {
            return Ok(());
        }
        let path = join(ppath, name);
        if cp.is_dir {
            self.clear_reserved(&path)?;
        }
        let d = self.upper()?.dir(ppath)?;
        let st: St = Layer::stat_in(d.as_fd(), name)?.ok_or(Errno::NOENT)?;
        let flags = if cp.is_dir {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        rfs::unlinkat(&d, name, flags)?;
        let node = self.inodes.id_of(&path);
        self.upper_deleted(&st, node);
        Ok(())
    }

    pub fn access(&mut self, id: u64, mask: u32) -> Result<(), Errno> {
        let (path, p) = self.inodes.linked(id)?;
        const W_OK: u32 = 2;
        if mask & W_OK != 0 && self.upper.is_none() {
            return Err(Errno::ROFS);
        }
        self.primary_stat(&path, p).map(|_| ())
    }
}
