//! One `mvm` at a time per VM: an exclusive flock on the VM folder's
//! `lock` file, held for the duration of a command that changes the VM.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{bail, Context};

pub struct VmLock {
    _file: File,
}

impl VmLock {
    /// Takes the lock or fails at once naming the VM.
    pub fn acquire(vm_path: &Path, name: &str) -> anyhow::Result<VmLock> {
        Self::take(vm_path, "lock", name)
    }

    /// Another lock in the VM folder (`file`), e.g. one watcher per VM.
    pub fn acquire_named(vm_path: &Path, file: &str) -> anyhow::Result<VmLock> {
        Self::take(vm_path, file, file)
    }

    fn take(vm_path: &Path, file: &str, name: &str) -> anyhow::Result<VmLock> {
        let path = vm_path.join(file);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: flock on a file descriptor we own; no memory involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                bail!("another mvm command is working on VM '{name}'; try again when it is done");
            }
            return Err(err).with_context(|| format!("cannot lock {}", path.display()));
        }
        Ok(VmLock { _file: file })
    }
}
