//! The table of inodes the guest knows (FUSE node IDs).
//!
//! Inodes are keyed by their merged path: a node ID names "the object at
//! this path" and follows it through renames. Hard links therefore get one
//! node ID per name (their attributes, `st_ino` included, are the same).
//! Node IDs are never reused (generation is always 0).
//!
//! Bounded: at most `cap` inodes and `byte_cap` bytes of them (a path
//! may be 4 KiB long, so a count alone would let a deep tree cost the
//! host gigabytes). When full, the least recently used inode
//! is evicted even if the guest still holds lookups on it (a guest that
//! never sends FORGET must not grow host memory); later requests naming it
//! get ESTALE and the guest's kernel looks the name up again.

use std::collections::{BTreeMap, HashMap};

use rustix::io::Errno;

use crate::abi::ROOT_ID;

/// Where an object of the merged view lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Presence {
    /// The object exists in the upper layer.
    pub upper: bool,
    /// The lower object at this path is part of the merged view: it is the
    /// object itself (no upper), or the lower half of a merged directory.
    pub lower: bool,
    pub is_dir: bool,
}

impl Presence {
    pub const fn upper(is_dir: bool) -> Self {
        Self {
            upper: true,
            lower: false,
            is_dir,
        }
    }
}

#[derive(Debug)]
pub struct Inode {
    /// Merged path relative to the share root (`""` for the root).
    pub path: Vec<u8>,
    pub presence: Presence,
    pub nlookup: u64,
    /// False once the name was unlinked or renamed over: the node only
    /// lives on for open handles and until the guest forgets it.
    pub linked: bool,
    tick: u64,
}

#[derive(Debug)]
pub struct InodeTable {
    nodes: HashMap<u64, Inode>,
    /// Ordered, so everything below a directory is one range.
    by_path: BTreeMap<Vec<u8>, u64>,
    /// tick -> node ID, oldest first (the root is not in it).
    lru: BTreeMap<u64, u64>,
    next_id: u64,
    tick: u64,
    cap: usize,
    /// Host bytes the table holds ([`node_bytes`] per inode) and the bound.
    bytes: usize,
    byte_cap: usize,
}

/// Bytes one inode costs the host: its path twice (the node and the path
/// index) and the entries' fixed parts, roughly.
pub fn node_bytes(path_len: usize) -> usize {
    2 * path_len + 160
}

impl InodeTable {
    pub fn new(cap: usize, root: Presence) -> Self {
        let mut t = Self {
            nodes: HashMap::new(),
            by_path: BTreeMap::new(),
            lru: BTreeMap::new(),
            next_id: ROOT_ID + 1,
            tick: 0,
            cap: cap.max(2),
            bytes: node_bytes(0),
            byte_cap: usize::MAX,
        };
        t.nodes.insert(
            ROOT_ID,
            Inode {
                path: Vec::new(),
                presence: root,
                nlookup: 1,
                linked: true,
                tick: 0,
            },
        );
        t.by_path.insert(Vec::new(), ROOT_ID);
        t
    }

    /// Also bounds the bytes the table holds (at least room for the root
    /// and one deep path).
    pub fn with_byte_cap(mut self, byte_cap: usize) -> Self {
        self.byte_cap = byte_cap.max(2 * node_bytes(4096));
        self
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Host bytes the inodes hold (an estimate, see [`node_bytes`]).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn touch(&mut self, id: u64) {
        if id == ROOT_ID {
            return;
        }
        self.tick += 1;
        let tick = self.tick;
        if let Some(node) = self.nodes.get_mut(&id) {
            self.lru.remove(&node.tick);
            node.tick = tick;
            self.lru.insert(tick, id);
        }
    }

    /// The inode `id` (ESTALE if unknown or evicted); marks it recently used.
    pub fn get(&mut self, id: u64) -> Result<&Inode, Errno> {
        if !self.nodes.contains_key(&id) {
            return Err(Errno::STALE);
        }
        self.touch(id);
        self.nodes.get(&id).ok_or(Errno::STALE)
    }

    /// Like [`get`](Self::get) but requires the inode to still have a name.
    pub fn linked(&mut self, id: u64) -> Result<(Vec<u8>, Presence), Errno> {
        let node = self.get(id)?;
        if !node.linked {
            return Err(Errno::NOENT);
        }
        Ok((node.path.clone(), node.presence))
    }

    pub fn id_of(&self, path: &[u8]) -> Option<u64> {
        self.by_path.get(path).copied()
    }

    /// Records one more lookup of the object at `path`, creating its inode
    /// if needed, and returns its node ID.
    pub fn lookup(&mut self, path: &[u8], presence: Presence) -> u64 {
        if let Some(id) = self.by_path.get(path).copied() {
            if let Some(node) = self.nodes.get_mut(&id) {
                node.presence = presence;
                node.nlookup = node.nlookup.saturating_add(1);
            }
            self.touch(id);
            return id;
        }
        let cost = node_bytes(path.len());
        while self.nodes.len() >= self.cap || self.bytes.saturating_add(cost) > self.byte_cap {
            let Some((_, victim)) = self.lru.pop_first() else {
                break;
            };
            self.remove(victim);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.nodes.insert(
            id,
            Inode {
                path: path.to_vec(),
                presence,
                nlookup: 1,
                linked: true,
                tick: 0,
            },
        );
        self.by_path.insert(path.to_vec(), id);
        self.bytes += cost;
        self.touch(id);
        id
    }

    fn remove(&mut self, id: u64) {
        if id == ROOT_ID {
            return;
        }
        if let Some(node) = self.nodes.remove(&id) {
            self.bytes = self.bytes.saturating_sub(node_bytes(node.path.len()));
            self.lru.remove(&node.tick);
            if node.linked && self.by_path.get(&node.path) == Some(&id) {
                self.by_path.remove(&node.path);
            }
        }
    }

    /// FORGET: drops `n` lookups; the inode goes when none are left.
    pub fn forget(&mut self, id: u64, n: u64) {
        if id == ROOT_ID {
            return;
        }
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        node.nlookup = node.nlookup.saturating_sub(n);
        if node.nlookup == 0 {
            self.remove(id);
        }
    }

    /// Updates the presence of the inode at `path`, if the guest knows it.
    /// The presence last recorded for the object at `path`, if it has an
    /// inode.
    pub fn presence_at(&self, path: &[u8]) -> Option<Presence> {
        let id = self.by_path.get(path)?;
        self.nodes.get(id).map(|n| n.presence)
    }

    pub fn set_presence(&mut self, path: &[u8], presence: Presence) {
        if let Some(id) = self.by_path.get(path) {
            if let Some(node) = self.nodes.get_mut(id) {
                node.presence = presence;
            }
        }
    }

    /// The name `path` (and everything below it) is gone: its inodes keep
    /// living for open handles, but no longer resolve by path.
    pub fn unlink(&mut self, path: &[u8]) {
        for p in self.paths_below(path) {
            if let Some(id) = self.by_path.remove(&p) {
                if let Some(node) = self.nodes.get_mut(&id) {
                    node.linked = false;
                }
            }
        }
    }

    /// `path` itself and the known paths below it: one range of the
    /// ordered index (`path/` up to `path0`, as '0' follows '/').
    fn paths_below(&self, path: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if self.by_path.contains_key(path) {
            out.push(path.to_vec());
        }
        if path.is_empty() {
            out.extend(self.by_path.keys().filter(|k| !k.is_empty()).cloned());
            return out;
        }
        let mut lo = path.to_vec();
        lo.push(b'/');
        let mut hi = path.to_vec();
        hi.push(b'/' + 1);
        out.extend(self.by_path.range(lo..hi).map(|(k, _)| k.clone()));
        out
    }

    /// `from` (and everything below it) was renamed to `to`. Whatever was
    /// at `to` must have been [`unlink`](Self::unlink)ed first. `presence`
    /// maps each moved inode's old presence to its new one.
    pub fn rename(
        &mut self,
        from: &[u8],
        to: &[u8],
        presence: impl Fn(&[u8], Presence) -> Presence,
    ) {
        let moved = self.paths_below(from);
        for old in moved {
            let Some(id) = self.by_path.remove(&old) else {
                continue;
            };
            let mut new = to.to_vec();
            new.extend_from_slice(&old[from.len()..]);
            if let Some(node) = self.nodes.get_mut(&id) {
                node.presence = presence(&new, node.presence);
                // A longer name costs more; eviction catches up at the
                // next lookup.
                self.bytes = self
                    .bytes
                    .saturating_sub(node_bytes(node.path.len()))
                    .saturating_add(node_bytes(new.len()));
                node.path = new.clone();
            }
            self.by_path.insert(new, id);
        }
    }

    /// Inodes at or below `path`, with their paths (for bulk updates).
    pub fn below(&self, path: &[u8]) -> Vec<(u64, Vec<u8>)> {
        self.paths_below(path)
            .into_iter()
            .filter_map(|p| Some((*self.by_path.get(&p)?, p)))
            .collect()
    }

    /// Drops everything but the root (DESTROY / a new INIT).
    pub fn clear(&mut self, root: Presence) {
        *self = Self::new(self.cap, root).with_byte_cap(self.byte_cap);
    }
}

/// Whether `p` is `base` or lies below it.
pub fn is_at_or_below(p: &[u8], base: &[u8]) -> bool {
    if base.is_empty() {
        return true;
    }
    p.starts_with(base) && (p.len() == base.len() || p[base.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: Presence = Presence::upper(false);

    #[test]
    fn lookup_forget_and_reuse() {
        let mut t = InodeTable::new(100, Presence::upper(true));
        let a = t.lookup(b"a", F);
        assert_eq!(t.lookup(b"a", F), a);
        assert_eq!(t.get(a).unwrap().nlookup, 2);
        t.forget(a, 1);
        assert!(t.get(a).is_ok());
        t.forget(a, 5);
        assert_eq!(t.get(a).unwrap_err(), Errno::STALE);
        let a2 = t.lookup(b"a", F);
        assert_ne!(a, a2, "node IDs are never reused");
        t.forget(ROOT_ID, u64::MAX);
        assert!(t.get(ROOT_ID).is_ok());
    }

    #[test]
    fn bounded_by_lru_eviction() {
        let mut t = InodeTable::new(10, Presence::upper(true));
        let first = t.lookup(b"f0", F);
        for i in 1..1000 {
            t.lookup(format!("f{i}").as_bytes(), F);
            // Keep f0 hot.
            t.get(first).unwrap();
        }
        assert!(t.len() <= 10);
        assert!(t.get(first).is_ok());
        assert!(t.get(ROOT_ID).is_ok());
        assert!(t.id_of(b"f1").is_none());
        assert_eq!(t.by_path.len(), t.nodes.len());
    }

    #[test]
    fn bounded_in_bytes_for_long_paths() {
        let cap = 64 * 1024;
        let mut t = InodeTable::new(1 << 20, Presence::upper(true)).with_byte_cap(cap);
        let long = vec![b'x'; 4000];
        for i in 0..1000u32 {
            let mut p = long.clone();
            p.extend_from_slice(&i.to_le_bytes());
            t.lookup(&p, F);
            assert!(t.bytes() <= cap, "{} bytes", t.bytes());
        }
        assert!(t.len() < 20, "{} inodes of 4 KiB paths in 64 KiB", t.len());
        assert!(t.get(ROOT_ID).is_ok());
        // Evicting brings the count back down to what is held.
        let held: usize = t.nodes.values().map(|n| node_bytes(n.path.len())).sum();
        assert_eq!(held, t.bytes());
    }

    #[test]
    fn rename_and_unlink_subtrees() {
        let mut t = InodeTable::new(100, Presence::upper(true));
        let d = t.lookup(b"d", Presence::upper(true));
        let f = t.lookup(b"d/f", F);
        let other = t.lookup(b"dx", F);
        let d0 = t.lookup(b"d0", F);
        let dot = t.lookup(b"d.x", F);
        let deep = t.lookup(b"d/f/g/h", F);
        t.rename(b"d", b"e/d", |_, p| p);
        assert_eq!(t.get(d).unwrap().path, b"e/d");
        assert_eq!(t.get(f).unwrap().path, b"e/d/f");
        assert_eq!(t.get(other).unwrap().path, b"dx");
        assert_eq!(t.get(d0).unwrap().path, b"d0");
        assert_eq!(t.get(dot).unwrap().path, b"d.x");
        assert_eq!(t.get(deep).unwrap().path, b"e/d/f/g/h");
        t.unlink(b"e");
        assert!(!t.get(f).unwrap().linked);
        assert_eq!(t.linked(f).unwrap_err(), Errno::NOENT);
        assert!(t.get(other).unwrap().linked);
        // An unlinked inode forgotten later does not disturb a new one.
        let f2 = t.lookup(b"e/d/f", F);
        t.forget(f, 1);
        assert_eq!(t.id_of(b"e/d/f"), Some(f2));
    }
}
