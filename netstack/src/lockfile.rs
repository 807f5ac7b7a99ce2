//! Exclusive locks on files (flock(2)), the one implementation for mvm's
//! lock files: the lease store's here, each VM folder's in the manager.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Takes an exclusive lock on `path` (created if missing), held for as
/// long as the returned file is open. With `wait`, blocks until it is
/// free; without, None when another process holds it.
pub fn lock_exclusive(path: &Path, wait: bool) -> io::Result<Option<File>> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)?;
    let op = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    loop {
        // SAFETY: flock on a file descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(Some(file));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if !wait => return Ok(None),
            _ => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_waits_or_is_told() {
        let dir = std::env::temp_dir().join(format!("mvm-lockfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lock");
        let held = lock_exclusive(&path, false)
            .unwrap()
            .expect("free at first");
        assert!(lock_exclusive(&path, false).unwrap().is_none());
        let p = path.clone();
        let waiter = std::thread::spawn(move || lock_exclusive(&p, true).unwrap().is_some());
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(held);
        assert!(waiter.join().unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
