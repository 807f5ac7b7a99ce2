//! Open files: open, read, write, sync, allocate, seek, release; xattrs.

use std::os::fd::AsFd;

use rustix::fs::{self as rfs, FallocateFlags, OFlags, SeekFrom, XattrFlags};
use rustix::io::Errno;

use super::Filesystem;
use crate::handle::Handle;
use crate::layer::{fstat, proc_fd_path, reopen};
use crate::transport::{ReplyWriter, RequestReader};

/// Largest xattr value or list handled (XATTR_SIZE_MAX).
pub const XATTR_MAX: usize = 64 * 1024;

/// The open(2) flags the guest may pass through to the host: access mode,
/// append, truncate and sync flags. Everything else (O_CREAT, O_PATH,
/// O_DIRECTORY, O_NOFOLLOW games, O_DIRECT, O_NOATIME...) is dropped.
pub(crate) fn open_flags(flags: u32) -> OFlags {
    let f = OFlags::from_bits_retain(flags);
    let access = match flags & 3 {
        0 => OFlags::RDONLY,
        1 => OFlags::WRONLY,
        _ => OFlags::RDWR,
    };
    access | (f & (OFlags::APPEND | OFlags::TRUNC | OFlags::DSYNC | OFlags::SYNC))
}

impl Filesystem {
    fn file(&self, fh: u64) -> Result<(&std::os::fd::OwnedFd, bool), Errno> {
        match self.handles.get(fh)? {
            Handle::File { fd, writable, .. } => Ok((fd, *writable)),
            Handle::Dir { .. } => Err(Errno::BADF),
        }
    }

    pub fn open(&mut self, id: u64, flags: u32) -> Result<u64, Errno> {
        let (path, p) = self.inodes.linked(id)?;
        if p.is_dir {
            return Err(Errno::ISDIR);
        }
        self.handles.check_room()?;
        let oflags = open_flags(flags);
        let write =
            oflags.intersects(OFlags::WRONLY | OFlags::RDWR) || oflags.contains(OFlags::TRUNC);
        let (p, copy) = if write {
            self.upper()?;
            self.copy_up_file(&path, p, !oflags.contains(OFlags::TRUNC))?
        } else {
            (p, None)
        };
        // The copy-up's own read-write fd serves a plain write open (its
        // file is new: empty when O_TRUNC asked for no data); sync flags
        // cannot be added later, so those opens go the long way.
        let plain = OFlags::WRONLY | OFlags::RDWR | OFlags::APPEND | OFlags::TRUNC;
        let fd = match copy {
            Some(fd) if (oflags & !plain).is_empty() => {
                if oflags.contains(OFlags::APPEND) {
                    rfs::fcntl_setfl(&fd, OFlags::APPEND)?;
                }
                fd
            }
            _ => {
                let pfd = self.primary(p)?.path_fd(&path)?;
                // Only regular files are opened on the host: opening a FIFO
                // could block the VMM, a device node could have side effects.
                if !fstat(&pfd)?.is_reg() {
                    return Err(Errno::ACCESS);
                }
                // O_TRUNC frees an upper file's blocks.
                self.budgeted(&pfd, |_| 0, || reopen(pfd.as_fd(), oflags))?
            }
        };
        self.handles.insert(Handle::File {
            fd,
            writable: write,
            upper: p.upper,
            nodeid: id,
        })
    }

    /// A read-only handle opened on the lower layer whose file has been
    /// copied up since reads the upper copy from now on (as overlayfs
    /// does), so it sees the writes made through other handles.
    pub(super) fn follow_copy_up(&mut self, fh: u64) -> Result<(), Errno> {
        let Handle::File {
            upper: false,
            nodeid,
            ..
        } = self.handles.get(fh)?
        else {
            return Ok(());
        };
        let nodeid = *nodeid;
        let Ok((path, p)) = self.inodes.linked(nodeid) else {
            return Ok(());
        };
        if !p.upper {
            return Ok(());
        }
        let pfd = self.upper()?.path_fd(&path)?;
        if !fstat(&pfd)?.is_reg() {
            return Ok(());
        }
        let new = reopen(pfd.as_fd(), OFlags::RDONLY)?;
        if let Handle::File { fd, upper, .. } = self.handles.get_mut(fh)? {
            *fd = new;
            *upper = true;
        }
        Ok(())
    }

    /// HANDLE_KILLPRIV_V2: a writer without CAP_FSETID wrote or
    /// truncated the file open as `fh`. Only a writable upper handle is
    /// touched: the kernel asks this only after a write or an O_TRUNC
    /// open, which copy up, so a request naming a read-only handle (a
    /// lower file of a cow or ro share) is a hostile one and changes
    /// nothing.
    pub fn kill_suidgid(&mut self, fh: u64) -> Result<(), Errno> {
        match self.handles.get(fh)? {
            Handle::File {
                fd,
                writable: true,
                upper: true,
                ..
            } => kill_privs(fd.as_fd()),
            Handle::File { .. } => Ok(()),
            Handle::Dir { .. } => Err(Errno::BADF),
        }
    }

    /// [`kill_suidgid`](Self::kill_suidgid) by node (SETATTR without a
    /// handle); only an upper (writable) object is touched.
    pub fn kill_suidgid_node(&mut self, id: u64) -> Result<(), Errno> {
        let (path, p) = self.inodes.linked(id)?;
        if !p.upper || p.is_dir {
            return Ok(());
        }
        let fd = self.upper()?.path_fd(&path)?;
        kill_privs(fd.as_fd())
    }

    /// Reads up to `count` bytes at `offset` into `reply` at `at`, straight
    /// from the file; short only at end of file (or after an error once
    /// some bytes were read).
    pub fn read<W: ReplyWriter + ?Sized>(
        &mut self,
        fh: u64,
        offset: u64,
        reply: &mut W,
        at: usize,
        count: usize,
    ) -> Result<usize, Errno> {
        self.follow_copy_up(fh)?;
        let (fd, _) = self.file(fh)?;
        let mut done = 0;
        while done < count {
            let off = offset.checked_add(done as u64).ok_or(Errno::INVAL)?;
            match reply.read_from(fd.as_fd(), at + done, count - done, off) {
                Ok(0) => break,
                Ok(n) => done += n.min(count - done),
                Err(e) => match errno(&e) {
                    Errno::INTR => {}
                    e if done == 0 => return Err(e),
                    _ => break,
                },
            }
        }
        Ok(done)
    }

    /// Writes the next `count` bytes of `data` at `offset`, straight from
    /// the request; short only if the file takes no more.
    pub fn write<R: RequestReader + ?Sized>(
        &self,
        fh: u64,
        offset: u64,
        data: &mut R,
        count: usize,
    ) -> Result<usize, Errno> {
        let (fd, writable) = self.file(fh)?;
        if !writable {
            return Err(Errno::BADF);
        }
        // An overwrite inside a fully allocated file takes no more room;
        // anything else may take up to `count` bytes more.
        let need = |st: &crate::layer::St| {
            let end = offset.saturating_add(count as u64);
            if end <= st.size && st.blocks.saturating_mul(512) >= st.size {
                0
            } else {
                count as u64
            }
        };
        self.budgeted(fd, need, || Self::write_all_of(fd, offset, data, count))
    }

    fn write_all_of<R: RequestReader + ?Sized>(
        fd: &std::os::fd::OwnedFd,
        offset: u64,
        data: &mut R,
        count: usize,
    ) -> Result<usize, Errno> {
        let mut done = 0;
        while done < count {
            let off = offset.checked_add(done as u64).ok_or(Errno::FBIG)?;
            match data.write_to(fd.as_fd(), count - done, off) {
                Ok(0) => break,
                Ok(n) => done += n.min(count - done),
                Err(e) => match errno(&e) {
                    Errno::INTR => {}
                    e if done == 0 => return Err(e),
                    _ => break,
                },
            }
        }
        Ok(done)
    }

    pub fn flush(&self, fh: u64) -> Result<(), Errno> {
        self.handles.get(fh).map(|_| ())
    }

    pub fn fsync(&self, fh: u64, datasync: bool) -> Result<(), Errno> {
        match self.handles.get(fh)? {
            Handle::File { fd, .. } if datasync => rfs::fdatasync(fd),
            Handle::File { fd, .. } => rfs::fsync(fd),
            Handle::Dir { .. } => Ok(()),
        }
    }

    pub fn release(&mut self, fh: u64) -> Result<(), Errno> {
        let h = self.handles.remove(fh).ok_or(Errno::BADF)?;
        if let Handle::File {
            fd,
            upper: true,
            nodeid,
            ..
        } = &h
        {
            if !self.orphans.is_empty() && !self.handles.has_file(*nodeid) {
                if let Ok(st) = fstat(fd) {
                    self.handle_closed(&st);
                }
            }
        }
        Ok(())
    }

    pub fn fallocate(&self, fh: u64, offset: u64, length: u64, mode: u32) -> Result<(), Errno> {
        let (fd, writable) = self.file(fh)?;
        if !writable {
            return Err(Errno::BADF);
        }
        let flags = FallocateFlags::from_bits_retain(mode);
        // Punching or collapsing frees; everything else may allocate.
        let frees = flags.intersects(FallocateFlags::PUNCH_HOLE | FallocateFlags::COLLAPSE_RANGE);
        let need = |_: &crate::layer::St| if frees { 0 } else { length };
        self.budgeted(fd, need, || rfs::fallocate(fd, flags, offset, length))
    }

    pub fn lseek(&self, fh: u64, offset: u64, whence: u32) -> Result<u64, Errno> {
        let (fd, _) = self.file(fh)?;
        let pos = match whence {
            0 => SeekFrom::Start(offset),
            1 => SeekFrom::Current(offset as i64),
            2 => SeekFrom::End(offset as i64),
            3 => SeekFrom::Data(offset),
            4 => SeekFrom::Hole(offset),
            _ => return Err(Errno::INVAL),
        };
        rfs::seek(fd, pos)
    }

    /// GETXATTR: the value (at most `XATTR_MAX`).
    pub fn getxattr(&mut self, id: u64, xname: &str) -> Result<Vec<u8>, Errno> {
        let (path, p) = self.inodes.linked(id)?;
        let fd = self.primary(p)?.path_fd(&path)?;
        if fstat(&fd)?.is_symlink() {
            return Err(Errno::NODATA);
        }
        let mut buf = vec![0u8; XATTR_MAX];
        let n = rfs::getxattr(proc_fd_path(fd.as_fd()).as_str(), xname, &mut buf[..])?;
        buf.truncate(n);
        Ok(buf)
    }

    /// LISTXATTR: NUL-separated names.
    pub fn listxattr(&mut self, id: u64) -> Result<Vec<u8>, Errno> {
        let (path, p) = self.inodes.linked(id)?;
        let fd = self.primary(p)?.path_fd(&path)?;
        if fstat(&fd)?.is_symlink() {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; XATTR_MAX];
        let n = rfs::listxattr(proc_fd_path(fd.as_fd()).as_str(), &mut buf[..])?;
        buf.truncate(n);
        Ok(buf)
    }

    /// SETXATTR / REMOVEXATTR (`value` None). Only the `user.` namespace is
    /// writable: `security.*` or `trusted.*` set by a guest could mean
    /// something to the host (file capabilities, overlayfs metadata), and
    /// POSIX ACLs (`system.*`) are not supported. Other namespaces get
    /// EOPNOTSUPP, which tools like `cp -a` take as "not supported here".
    pub fn setxattr(
        &mut self,
        id: u64,
        xname: &str,
        value: Option<&[u8]>,
        flags: u32,
    ) -> Result<(), Errno> {
        if !xname.starts_with("user.") {
            return Err(Errno::OPNOTSUPP);
        }
        let (path, p) = self.inodes.linked(id)?;
        self.upper()?;
        if value.is_some_and(|v| v.len() > XATTR_MAX) {
            return Err(Errno::TOOBIG);
        }
        let p = self.copy_up(&path, p, true)?;
        let fd = self.primary(p)?.path_fd(&path)?;
        if fstat(&fd)?.is_symlink() {
            return Err(Errno::PERM);
        }
        let target = proc_fd_path(fd.as_fd());
        match value {
            Some(v) => rfs::setxattr(
                target.as_str(),
                xname,
                v,
                XattrFlags::from_bits_truncate(flags),
            ),
            None => rfs::removexattr(target.as_str(), xname),
        }
    }
}

/// The errno of a transport or syscall error (EIO for one without).
fn errno(e: &std::io::Error) -> Errno {
    Errno::from_io_error(e).unwrap_or(Errno::IO)
}

/// What the kernel itself does when a writer lacks CAP_FSETID: drop the
/// set-user-ID bit, the set-group-ID bit where group execute is set, and
/// file capabilities. Regular files only.
fn kill_privs(fd: std::os::fd::BorrowedFd<'_>) -> Result<(), Errno> {
    let st = fstat(fd)?;
    if !st.is_reg() {
        return Ok(());
    }
    let mut kill = 0o4000;
    if st.mode & 0o010 != 0 {
        kill |= 0o2000;
    }
    let path = proc_fd_path(fd);
    if st.mode & kill != 0 {
        rfs::chmod(
            path.as_str(),
            rfs::Mode::from_raw_mode(st.mode & 0o7777 & !kill),
        )?;
    }
    match rfs::removexattr(path.as_str(), "security.capability") {
        Ok(()) | Err(Errno::NODATA) | Err(Errno::OPNOTSUPP) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_flags_are_filtered() {
        let f =
            open_flags((OFlags::WRONLY | OFlags::CREATE | OFlags::PATH | OFlags::APPEND).bits());
        assert_eq!(f, OFlags::WRONLY | OFlags::APPEND);
        assert_eq!(open_flags(3), OFlags::RDWR);
        assert_eq!(
            open_flags(OFlags::DIRECT.bits() | OFlags::NOFOLLOW.bits()),
            OFlags::RDONLY
        );
    }
}
