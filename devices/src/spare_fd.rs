//! Accepting when the process is out of file descriptors. A listener on a
//! level-triggered event loop (or a poll loop) whose accept fails with
//! EMFILE stays readable, and the loop spins at 100% CPU until a
//! descriptor frees up. A descriptor held in reserve breaks that: close
//! it, accept the waiting connection and close that at once (its client
//! sees the connection end, not a hang), take the reserve again.

use std::io;
use std::os::unix::net::UnixDatagram;

/// One descriptor in reserve (an unbound socket: no path needed, so it
/// works inside a jail too).
#[derive(Debug)]
pub struct SpareFd(Option<UnixDatagram>);

impl Default for SpareFd {
    fn default() -> Self {
        Self::new()
    }
}

impl SpareFd {
    pub fn new() -> Self {
        Self(UnixDatagram::unbound().ok())
    }

    /// Whether an accept failed for want of descriptors.
    pub fn out_of_fds(e: &io::Error) -> bool {
        matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
    }

    /// Sheds one waiting connection: `accept` takes it (with the reserve's
    /// slot) and drops it. Returns whether one was shed.
    pub fn shed<T>(&mut self, accept: impl FnOnce() -> io::Result<T>) -> bool {
        self.0 = None;
        let shed = accept().is_ok();
        *self = Self::new();
        shed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::{UnixListener, UnixStream};

    #[test]
    fn shedding_closes_the_waiting_client() {
        let dir = std::env::temp_dir().join(format!("mvm-spare-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let l = UnixListener::bind(&path).unwrap();
        let mut client = UnixStream::connect(&path).unwrap();
        let mut spare = SpareFd::new();
        assert!(spare.0.is_some());
        assert!(spare.shed(|| l.accept()));
        assert!(spare.0.is_some(), "the reserve is taken again");
        let mut b = [0u8; 1];
        assert_eq!(client.read(&mut b).unwrap(), 0, "the client sees the end");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
