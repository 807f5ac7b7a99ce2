//! Feeds the virtio-fs FUSE server (cowfs, in a copy-on-write share over
//! real temporary directories) arbitrary request sequences, and checks that
//! it never panics, keeps its tables within their limits, answers with
//! well-formed replies that fit the buffer, and never changes the lower
//! directory (names, modes, sizes, times, content and xattrs: the lower
//! tree holds a set-user-ID file and one with a file capability, which a
//! hostile KILL_SUIDGID, SETATTR or xattr request must not strip).
//!
//! Input: a sequence of requests, each
//! `[op u8][node u8][patch u8][cap u8][len u8][len argument bytes]`:
//! - `op` indexes OPCODES (values past it are sent as raw opcodes);
//! - `node` picks the header's node ID: 0 the root, 255 the next 8 input
//!   bytes raw, else one of the node IDs replies handed out;
//! - `patch` overwrites the first 8 argument bytes (where fh, newdir or
//!   oldnodeid live): 1 a node ID handed out, 2 a file handle handed out;
//! - `cap` picks the reply capacity from CAPS (bit 7: also corrupt the
//!   header's length field with the argument length);
//! - the server is INITed first; names in arguments come from the input.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use devices::virtio::fs::cowfs::abi::{self, op};
use devices::virtio::fs::cowfs::client::{request, Client};
use devices::virtio::fs::cowfs::{Filesystem, Limits, Server, ShareConfig, ShareMode};

const OPCODES: [u32; 40] = [
    op::LOOKUP,
    op::FORGET,
    op::GETATTR,
    op::SETATTR,
    op::READLINK,
    op::SYMLINK,
    op::MKNOD,
    op::MKDIR,
    op::UNLINK,
    op::RMDIR,
    op::RENAME,
    op::LINK,
    op::OPEN,
    op::READ,
    op::WRITE,
    op::STATFS,
    op::RELEASE,
    op::FSYNC,
    op::SETXATTR,
    op::GETXATTR,
    op::LISTXATTR,
    op::REMOVEXATTR,
    op::FLUSH,
    op::INIT,
    op::OPENDIR,
    op::READDIR,
    op::RELEASEDIR,
    op::FSYNCDIR,
    op::ACCESS,
    op::CREATE,
    op::INTERRUPT,
    op::DESTROY,
    op::BATCH_FORGET,
    op::FALLOCATE,
    op::READDIRPLUS,
    op::RENAME2,
    op::LSEEK,
    op::GETLK,
    op::COPY_FILE_RANGE,
    op::STATX,
];

const CAPS: [usize; 8] = [4096, 1 << 20, 0, 15, 16, 20, 150, 300];

const LIMITS: Limits = Limits {
    max_inodes: 64,
    // Small like the rest, so the fuzzer reaches the byte-bounded eviction.
    max_inode_bytes: 1 << 16,
    max_handles: 16,
    max_dir_bytes: 1 << 16,
    max_tree_copy_entries: 32,
    max_tree_copy_bytes: 1 << 16,
};

/// `security.capability` of `cap_net_bind_service=ep` (revision 2).
const FILE_CAP: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// What must not change of one lower object.
#[derive(Debug, PartialEq)]
struct Object {
    size: u64,
    mode: u32,
    mtime: (i64, i64),
    ino: u64,
    /// A regular file's content.
    data: Vec<u8>,
    /// (name, value) of every xattr, sorted.
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

struct Fixture {
    base: PathBuf,
    lower: PathBuf,
    lower_state: BTreeMap<PathBuf, Object>,
}

fn xattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut list = vec![0u8; 4096];
    let n = rustix::fs::llistxattr(p, &mut list[..]).unwrap_or(0);
    let mut out: Vec<_> = list[..n]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|name| {
            let mut v = vec![0u8; 4096];
            let len = rustix::fs::lgetxattr(p, name, &mut v[..]).unwrap_or(0);
            v.truncate(len);
            (name.to_vec(), v)
        })
        .collect();
    out.sort();
    out
}

/// Every object under `root`.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Object> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let data = if m.is_file() {
                std::fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            let obj = Object {
                size: m.size(),
                mode: m.mode(),
                mtime: (m.mtime(), m.mtime_nsec()),
                ino: m.ino(),
                data,
                xattrs: xattrs(&p),
            };
            out.insert(p.clone(), obj);
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let parent = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        // Fixtures of earlier runs (libFuzzer exits without destructors).
        for e in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("fuse-fuzz-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let base = parent.join(format!("fuse-fuzz-{}", std::process::id()));
        let lower = base.join("lower");
        std::fs::create_dir_all(lower.join("dir/sub")).unwrap();
        std::fs::create_dir_all(lower.join("empty")).unwrap();
        std::fs::write(lower.join("a"), b"lower file a").unwrap();
        std::fs::write(lower.join("dir/b"), vec![7u8; 5000]).unwrap();
        std::fs::write(lower.join("dir/sub/c"), b"c").unwrap();
        std::os::unix::fs::symlink("/etc", lower.join("etc-link")).unwrap();
        std::os::unix::fs::symlink("dir", lower.join("dir-link")).unwrap();
        std::fs::hard_link(lower.join("a"), lower.join("a-hard")).unwrap();
        // Privileged files (the capability only where the host lets us
        // set one: as root).
        use std::os::unix::fs::PermissionsExt;
        for (name, mode) in [("suid", 0o4755), ("capbin", 0o755)] {
            std::fs::write(lower.join(name), b"#!/bin/sh\n").unwrap();
            std::fs::set_permissions(lower.join(name), std::fs::Permissions::from_mode(mode))
                .unwrap();
        }
        let _ = rustix::fs::setxattr(
            lower.join("capbin").as_path(),
            "security.capability",
            &FILE_CAP,
            rustix::fs::XattrFlags::empty(),
        );
        let lower_state = snapshot(&lower);
        Fixture {
            base,
            lower,
            lower_state,
        }
    })
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u64(&mut self) -> Option<u64> {
        let (head, rest) = self.0.split_first_chunk::<8>()?;
        self.0 = rest;
        Some(u64::from_le_bytes(*head))
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
}

fn pick(list: &[u64], sel: u8) -> Option<u64> {
    (!list.is_empty()).then(|| list[usize::from(sel) % list.len()])
}

pub fn run(data: &[u8]) {
    let f = fixture();
    let upper = tempfile::Builder::new()
        .prefix("upper")
        .tempdir_in(&f.base)
        .unwrap();
    let fs = Filesystem::with_limits(
        &ShareConfig {
            lower: f.lower.clone(),
            upper: Some(upper.path().to_path_buf()),
            mode: ShareMode::Cow,
            masked: Vec::new(),
            visible: None,
            hidden: Vec::new(),
        },
        LIMITS,
    )
    .unwrap();
    let mut c = Client::new(Server::new(fs));
    c.init().unwrap();

    let mut nodes: Vec<u64> = Vec::new();
    let mut fhs: Vec<u64> = Vec::new();
    let mut input = Input(data);
    let mut unique = 100u64;
    while let (Some(o), Some(n), Some(patch), Some(cap), Some(len)) =
        (input.u8(), input.u8(), input.u8(), input.u8(), input.u8())
    {
        let opcode = OPCODES.get(usize::from(o)).copied().unwrap_or(u32::from(o));
        let nodeid = match n {
            0 => abi::ROOT_ID,
            255 => input.u64().unwrap_or(0),
            _ => pick(&nodes, n).unwrap_or(abi::ROOT_ID),
        };
        let mut args = input.bytes(usize::from(len)).to_vec();
        let patched = match patch {
            1 => pick(&nodes, n),
            2 => pick(&fhs, n),
            _ => None,
        };
        if let (Some(v), Some(dst)) = (patched, args.get_mut(..8)) {
            dst.copy_from_slice(&v.to_le_bytes());
        }
        unique += 1;
        let mut req = request(opcode, nodeid, unique, &[&args]);
        if cap & 0x80 != 0 {
            req[0..4].copy_from_slice(&u32::from(len).to_le_bytes());
        }
        c.capacity = CAPS[usize::from(cap & 7)];
        let mut out = Vec::new();
        let written = c.server.handle(&req, c.capacity, &mut out).unwrap();
        assert_eq!(written, out.len());
        assert!(
            written <= c.capacity,
            "reply of {written} bytes for capacity {}",
            c.capacity
        );
        if written == 0 {
            continue;
        }
        let h = abi::OutHeader {
            len: u32::from_le_bytes(out[0..4].try_into().unwrap()),
            error: i32::from_le_bytes(out[4..8].try_into().unwrap()),
            unique: u64::from_le_bytes(out[8..16].try_into().unwrap()),
        };
        assert_eq!(h.len as usize, written);
        assert_eq!(h.unique, unique);
        assert!(h.error <= 0 && h.error > -4096);
        assert!(h.error == 0 || written == 16, "error reply with a payload");
        let payload = &out[16..];
        if h.error == 0 {
            match opcode {
                op::LOOKUP | op::MKDIR | op::MKNOD | op::SYMLINK | op::LINK | op::CREATE => {
                    if payload.len() >= 8 {
                        nodes.push(u64::from_le_bytes(payload[0..8].try_into().unwrap()));
                    }
                    if opcode == op::CREATE && payload.len() >= abi::ENTRY_OUT_SIZE + 8 {
                        let fh = &payload[abi::ENTRY_OUT_SIZE..abi::ENTRY_OUT_SIZE + 8];
                        fhs.push(u64::from_le_bytes(fh.try_into().unwrap()));
                    }
                }
                op::OPEN | op::OPENDIR if payload.len() >= 8 => {
                    fhs.push(u64::from_le_bytes(payload[0..8].try_into().unwrap()));
                }
                op::READDIRPLUS => {
                    if let Ok(items) =
                        devices::virtio::fs::cowfs::client::parse_dirents(payload, true)
                    {
                        nodes.extend(
                            items
                                .iter()
                                .filter_map(|i| i.entry.map(|e| e.nodeid))
                                .filter(|&n| n != 0),
                        );
                    }
                }
                _ => {}
            }
        }
        nodes.truncate(256);
        fhs.truncate(256);
        let fs = c.server.filesystem();
        assert!(fs.inode_count() <= LIMITS.max_inodes);
        assert!(fs.handle_count() <= LIMITS.max_handles);
    }
    assert_eq!(
        snapshot(&f.lower),
        f.lower_state,
        "the lower directory changed"
    );
}
