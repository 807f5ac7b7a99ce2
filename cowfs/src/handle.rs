//! Open file and directory handles (FUSE `fh`).
//!
//! Bounded twice: at most `cap` handles (each file handle is one host fd),
//! beyond which OPEN/OPENDIR/CREATE fail with EMFILE, and at most
//! `dir_bytes_cap` bytes of directory snapshots in all (ENFILE beyond), so a
//! guest that never releases cannot exhaust host fds or memory.

use std::collections::HashMap;
use std::os::fd::OwnedFd;

use rustix::io::Errno;

/// One entry of a directory snapshot.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub ino: u64,
    /// `DT_*` type.
    pub typ: u32,
}

impl DirEntry {
    fn cost(&self) -> usize {
        size_of::<Self>() + self.name.len()
    }
}

#[derive(Debug)]
pub enum Handle {
    File {
        fd: OwnedFd,
        writable: bool,
        /// The fd is on the upper layer (else a lower file opened read-only).
        upper: bool,
        /// The file's node ID: a read-only lower handle follows its file
        /// to the upper layer once it is copied up.
        nodeid: u64,
    },
    Dir {
        /// The directory's node ID (READDIRPLUS looks entries up in it).
        nodeid: u64,
        /// The merged listing taken at OPENDIR ("." and ".." first); the
        /// READDIR offset of entry `i` is `i + 1`.
        /// Shared so READDIR can walk it while the filesystem is borrowed
        /// mutably for lookups (no copy per call).
        entries: std::sync::Arc<[DirEntry]>,
    },
}

#[derive(Debug)]
pub struct HandleTable {
    map: HashMap<u64, Handle>,
    next: u64,
    cap: usize,
    dir_bytes: usize,
    dir_bytes_cap: usize,
}

impl HandleTable {
    pub fn new(cap: usize, dir_bytes_cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            next: 1,
            cap,
            dir_bytes: 0,
            dir_bytes_cap,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Fails with EMFILE when the table is full.
    pub fn check_room(&self) -> Result<(), Errno> {
        if self.map.len() >= self.cap {
            Err(Errno::MFILE)
        } else {
            Ok(())
        }
    }

    /// How many more snapshot bytes may be taken.
    pub fn dir_budget(&self) -> usize {
        self.dir_bytes_cap.saturating_sub(self.dir_bytes)
    }

    pub fn insert(&mut self, h: Handle) -> Result<u64, Errno> {
        self.check_room()?;
        if let Handle::Dir { entries, .. } = &h {
            let cost: usize = entries.iter().map(DirEntry::cost).sum();
            if cost > self.dir_budget() {
                return Err(Errno::NFILE);
            }
            self.dir_bytes += cost;
        }
        let fh = self.next;
        self.next = self.next.wrapping_add(1).max(1);
        self.map.insert(fh, h);
        Ok(fh)
    }

    pub fn get(&self, fh: u64) -> Result<&Handle, Errno> {
        self.map.get(&fh).ok_or(Errno::BADF)
    }

    pub fn get_mut(&mut self, fh: u64) -> Result<&mut Handle, Errno> {
        self.map.get_mut(&fh).ok_or(Errno::BADF)
    }

    pub fn remove(&mut self, fh: u64) -> Option<Handle> {
        let h = self.map.remove(&fh)?;
        if let Handle::Dir { entries, .. } = &h {
            let cost: usize = entries.iter().map(DirEntry::cost).sum();
            self.dir_bytes = self.dir_bytes.saturating_sub(cost);
        }
        Some(h)
    }

    /// Whether a file handle of node `nodeid` is open.
    pub fn has_file(&self, nodeid: u64) -> bool {
        self.map
            .values()
            .any(|h| matches!(h, Handle::File { nodeid: n, .. } if *n == nodeid))
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.dir_bytes = 0;
    }
}

/// Bytes a snapshot entry costs against the budget (for building one).
pub fn entry_cost(name_len: usize) -> usize {
    size_of::<DirEntry>() + name_len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(n: usize) -> Handle {
        Handle::Dir {
            nodeid: 1,
            entries: (0..n)
                .map(|i| DirEntry {
                    name: format!("{i:08}").into_bytes(),
                    ino: 1,
                    typ: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn caps() {
        let mut t = HandleTable::new(3, entry_cost(8) * 10);
        let a = t.insert(dir(4)).unwrap();
        t.insert(dir(4)).unwrap();
        assert_eq!(t.insert(dir(4)).unwrap_err(), Errno::NFILE);
        t.insert(dir(1)).unwrap();
        assert_eq!(t.insert(dir(0)).unwrap_err(), Errno::MFILE);
        assert!(t.remove(a).is_some());
        assert!(t.remove(a).is_none());
        t.insert(dir(4)).unwrap();
        assert_eq!(t.get(12345).unwrap_err(), Errno::BADF);
    }
}
