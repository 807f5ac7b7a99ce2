//! Handing an upper layer to the user a jailed VMM runs as: every object
//! becomes that user's, and the owner it had (the guest's, given by a
//! root server) moves to the copy-up log, where a server with
//! [`crate::Filesystem::record_owners`] shows it from.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::layer::St;
use crate::origin::OriginLog;

/// Gives every object of the upper layer at `upper` (the root included)
/// to `uid`:`gid`, recording in its copy-up log the owner each had unless
/// one is recorded already. Returns how many objects changed hands. Run
/// as root, before the server that will serve the layer is built.
pub fn adopt_upper(upper: &Path, uid: u32, gid: u32) -> Result<usize, Errno> {
    let root = rfs::open(
        upper,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut log = OriginLog::open(root.as_fd())?;
    let mut changed = 0;
    let mut dirs: Vec<OwnedFd> = Vec::new();
    let st = St::from(rfs::fstat(&root)?);
    changed += adopt_one(&mut log, root.as_fd(), c"", &st, (uid, gid))?;
    dirs.push(root);
    while let Some(dir) = dirs.pop() {
        let mut names = Vec::new();
        for ent in rfs::Dir::read_from(&dir)? {
            let ent = ent?;
            let name = ent.file_name();
            if name != c"." && name != c".." {
                names.push(name.to_owned());
            }
        }
        for name in names {
            let st = match rfs::statat(&dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(s) => St::from(s),
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e),
            };
            changed += adopt_one(&mut log, dir.as_fd(), name.as_c_str(), &st, (uid, gid))?;
            if st.is_dir() {
                dirs.push(rfs::openat(
                    &dir,
                    name.as_c_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?);
            }
        }
    }
    // The log itself: the server appends to it and compacts it by name.
    let log_fd = log.fd();
    rfs::fchown(
        log_fd,
        Some(rfs::Uid::from_raw(uid)),
        Some(rfs::Gid::from_raw(gid)),
    )?;
    Ok(changed)
}

/// `name` in `dir` (empty: `dir` itself) to `owner`, its old owner logged.
fn adopt_one(
    log: &mut OriginLog,
    dir: BorrowedFd<'_>,
    name: &std::ffi::CStr,
    st: &St,
    owner: (u32, u32),
) -> Result<usize, Errno> {
    if (st.uid, st.gid) == owner {
        return Ok(0);
    }
    // mvm's own files (the log, whiteout markers' kin) have no guest owner.
    let internal = name.to_bytes().starts_with(crate::name::TMP_PREFIX)
        || name.to_bytes() == crate::name::ORIGIN_LOG;
    if !internal && log.owner(st.ino).is_none() {
        log.set_owner(st.ino, (st.uid, st.gid), (st.uid, st.gid));
    }
    let flags = if name.is_empty() {
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::EMPTY_PATH
    } else {
        AtFlags::SYMLINK_NOFOLLOW
    };
    rfs::chownat(
        dir,
        name,
        Some(rfs::Uid::from_raw(owner.0)),
        Some(rfs::Gid::from_raw(owner.1)),
        flags,
    )?;
    Ok(usize::from(!internal))
}
