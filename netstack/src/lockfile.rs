//! Exclusive lock files (std's `File::lock`, flock(2) on Linux), the one
//! implementation for mvm's lock files: the lease store's here, each VM
//! folder's and the volumes' in the manager.

use std::fs::{File, TryLockError};
use std::io;
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
    loop {
        let taken = if wait {
            file.lock().map_err(TryLockError::Error)
        } else {
            file.try_lock()
        };
        match taken {
            Ok(()) => return Ok(Some(file)),
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(TryLockError::Error(e)) => return Err(e),
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
