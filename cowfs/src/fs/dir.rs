//! Directory listings: the merged view of one directory.

use std::collections::HashSet;

use rustix::fs::{self as rfs, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::Filesystem;
use crate::handle::{entry_cost, DirEntry, Handle};
use crate::inode::Presence;
use crate::layer::Layer;
use crate::name;

fn dt(t: FileType) -> u32 {
    match t {
        FileType::Fifo => 1,
        FileType::CharacterDevice => 2,
        FileType::Directory => 4,
        FileType::BlockDevice => 6,
        FileType::RegularFile => 8,
        FileType::Symlink => 10,
        FileType::Socket => 12,
        _ => 0,
    }
}

/// Raw entries of one layer directory (without `.` and `..`), as
/// (name, ino, DT type), stopping with ENFILE past `budget` bytes.
fn read_layer_dir(
    layer: &Layer,
    path: &[u8],
    budget: &mut usize,
) -> Result<Vec<(Vec<u8>, u64, u32)>, Errno> {
    let fd = layer.open_at(path, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
    if layer.is_masked_dir(path) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for e in rfs::Dir::new(fd)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        if layer.has_view() && layer.is_hidden(&crate::layer::join(path, n)) {
            continue;
        }
        let cost = entry_cost(n.len());
        *budget = budget.checked_sub(cost).ok_or(Errno::NFILE)?;
        out.push((n.to_vec(), e.ino(), dt(e.file_type())));
    }
    Ok(out)
}

impl Filesystem {
    /// The merged entries of the directory at `path` (without `.`/`..`):
    /// upper entries, then lower entries not shadowed or whited out;
    /// reserved names never appear. At most `budget` bytes (ENFILE beyond).
    pub(crate) fn list_merged(
        &mut self,
        path: &[u8],
        p: Presence,
        mut budget: usize,
    ) -> Result<Vec<DirEntry>, Errno> {
        let cow = self.cow();
        let mut out = Vec::new();
        let mut hidden: HashSet<Vec<u8>> = HashSet::new();
        if p.upper {
            let up = self.upper()?;
            let dev = up.dev;
            for (n, ino, typ) in read_layer_dir(up, path, &mut budget)? {
                if cow && name::is_reserved(&n) {
                    if let Some(w) = name::whited_out(&n) {
                        hidden.insert(w.to_vec());
                    }
                    continue;
                }
                let ino = self.guest_ino(true, dev, ino);
                if p.lower {
                    hidden.insert(n.clone());
                }
                out.push(DirEntry { name: n, ino, typ });
            }
        }
        if p.lower {
            let lo = self.lower()?;
            let dev = lo.dev;
            for (n, ino, typ) in read_layer_dir(lo, path, &mut budget)? {
                if hidden.contains(&n) || (cow && name::is_reserved(&n)) {
                    continue;
                }
                let ino = self.guest_ino(false, dev, ino);
                out.push(DirEntry { name: n, ino, typ });
            }
        }
        Ok(out)
    }

    /// OPENDIR: snapshots the merged listing into a handle.
    pub fn opendir(&mut self, id: u64) -> Result<u64, Errno> {
        let (path, p) = self.inodes.linked(id)?;
        if !p.is_dir {
            return Err(Errno::NOTDIR);
        }
        self.handles.check_room()?;
        let st = self.primary_stat(&path, p)?;
        let ino = self.attr(p, &st).ino;
        let budget = self.handles.dir_budget();
        let mut entries = vec![
            DirEntry {
                name: b".".to_vec(),
                ino,
                typ: 4,
            },
            DirEntry {
                name: b"..".to_vec(),
                ino,
                typ: 4,
            },
        ];
        entries.extend(self.list_merged(&path, p, budget)?);
        self.handles.insert(Handle::Dir {
            nodeid: id,
            entries: entries.into(),
        })
    }

    /// The snapshot of an open directory and its node ID.
    pub fn dir_entries(&self, fh: u64) -> Result<(u64, std::sync::Arc<[DirEntry]>), Errno> {
        match self.handles.get(fh)? {
            Handle::Dir { nodeid, entries } => Ok((*nodeid, entries.clone())),
            Handle::File { .. } => Err(Errno::NOTDIR),
        }
    }
}
