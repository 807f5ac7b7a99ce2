//! Staging: the new content of every `put` step, copied from the upper
//! layer into its staged name beside the target and fsynced, before the
//! journal says `apply`.

use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{self as rfs, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::journal::{fsync_dir, Step, StepKind};
use crate::diff::{child, dir_fd, entries, resolve};
use crate::layer::{proc_fd_path, reopen, split, S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFREG};
use crate::name;

/// Stages every `put` of `steps`: the host folder gets only new names.
pub(super) fn stage_all(
    lower: BorrowedFd<'_>,
    upper: BorrowedFd<'_>,
    steps: &[Step],
) -> Result<(), Errno> {
    for s in steps.iter().filter(|s| s.kind == StepKind::Put) {
        let (parent, name) = split(&s.target).ok_or(Errno::INVAL)?;
        let host = resolve(lower, parent)?.ok_or(Errno::NOENT)?.0;
        let guest = resolve(upper, parent)?.ok_or(Errno::NOENT)?.0;
        copy(guest.as_fd(), name, host.as_fd(), &s.staged)?;
        fsync_dir(host.as_fd())?;
    }
    Ok(())
}

/// Copies the upper object `from/name` (a directory with everything in
/// it but reserved names) to the new name `to/to_name`, fsynced. No
/// set-ID bit reaches the host: a guest must not plant set-ID files in
/// the project.
fn copy(
    from: BorrowedFd<'_>,
    name: &[u8],
    to: BorrowedFd<'_>,
    to_name: &[u8],
) -> Result<(), Errno> {
    let (fd, st) = child(from, name)?.ok_or(Errno::NOENT)?;
    let mode = Mode::from_raw_mode(st.mode & 0o1777);
    match st.kind() {
        S_IFDIR => {
            rfs::mkdirat(to, to_name, Mode::from_raw_mode(0o700))?;
            let made = rfs::openat(
                to,
                to_name,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let src = dir_fd(&fd)?;
            for n in entries(src.as_fd())? {
                if !name::is_reserved(&n) {
                    copy(src.as_fd(), &n, made.as_fd(), &n)?;
                }
            }
            // The mode last: a read-only directory is filled first.
            rfs::chmod(proc_fd_path(made.as_fd()).as_str(), mode)?;
            fsync_dir(made.as_fd())
        }
        S_IFREG => {
            let out = rfs::openat(
                to,
                to_name,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?;
            let input = reopen(fd.as_fd(), OFlags::RDONLY | OFlags::NONBLOCK)?;
            crate::fs::copy_data(&input, &out, None)?;
            rfs::fchmod(&out, mode)?;
            rfs::futimens(&out, &crate::fs::times_of(&st))?;
            rfs::fsync(&out)
        }
        S_IFLNK => {
            let target = rfs::readlinkat(&fd, "", Vec::new())?;
            rfs::symlinkat(target.as_c_str(), to, to_name)
        }
        // Refused by the plan already; never a host device from a guest.
        S_IFCHR | S_IFBLK => Err(Errno::PERM),
        _ => rfs::mknodat(to, to_name, FileType::from_raw_mode(st.mode), mode, 0),
    }
}
