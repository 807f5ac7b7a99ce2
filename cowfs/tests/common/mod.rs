//! Shared fixtures: temp layer trees and a client over a fresh server.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cowfs::client::Client;
use cowfs::{Filesystem, Limits, Server, ShareConfig, ShareMode};

pub struct Layers {
    pub dir: tempfile::TempDir,
    pub lower: PathBuf,
    pub upper: PathBuf,
}

/// lower/: a.txt, dir/{b.txt, sub/c.txt}, empty/, link -> a.txt,
/// hard1 + hard2 (hard links), exec.sh (0755)
pub fn layers() -> Layers {
    let dir = tempfile::tempdir().unwrap();
    let lower = dir.path().join("lower");
    let upper = dir.path().join("upper");
    fs::create_dir_all(lower.join("dir/sub")).unwrap();
    fs::create_dir_all(lower.join("empty")).unwrap();
    fs::create_dir_all(&upper).unwrap();
    fs::write(lower.join("a.txt"), b"hello lower\n").unwrap();
    fs::write(lower.join("dir/b.txt"), b"bee").unwrap();
    fs::write(lower.join("dir/sub/c.txt"), b"sea").unwrap();
    fs::write(lower.join("hard1"), b"linked").unwrap();
    fs::hard_link(lower.join("hard1"), lower.join("hard2")).unwrap();
    fs::write(lower.join("exec.sh"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(lower.join("exec.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink("a.txt", lower.join("link")).unwrap();
    Layers { dir, lower, upper }
}

/// Returns once a file written now gets a later mtime than any file in
/// `dir` written before the call: file times come from a coarse clock, so
/// two writes close together can share one. Waits for the clock to move
/// (seen on a probe file) instead of guessing its granularity.
pub fn next_mtime_tick(dir: &Path) {
    let probe = dir.join(".mtime-probe");
    let mtime = |p: &Path| {
        let m = fs::metadata(p).unwrap();
        (m.mtime(), m.mtime_nsec())
    };
    fs::write(&probe, b"").unwrap();
    let first = mtime(&probe);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        fs::write(&probe, b"").unwrap();
        if mtime(&probe) > first {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the file clock never moved"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    fs::remove_file(&probe).unwrap();
}

pub fn client_with(config: ShareConfig, limits: Limits) -> Client {
    let fs = Filesystem::with_limits(&config, limits).unwrap();
    let mut c = Client::new(Server::new(fs));
    c.init().unwrap();
    c
}

/// The cow share of `l`: its lower and upper, no masks, no view.
pub fn cow_config(l: &Layers) -> ShareConfig {
    ShareConfig {
        lower: l.lower.clone(),
        upper: Some(l.upper.clone()),
        mode: ShareMode::Cow,
        masked: Vec::new(),
        visible: None,
        hidden: Vec::new(),
    }
}

pub fn cow_client(l: &Layers) -> Client {
    client_with(cow_config(l), Limits::default())
}

/// A content hash of a whole tree (names, types, modes, sizes, data,
/// symlink targets, link counts): equal before and after means untouched.
pub fn tree_hash(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let desc = if m.file_type().is_symlink() {
            format!("link {:?}", fs::read_link(&p).unwrap())
        } else if m.is_dir() {
            format!("dir {:o}", m.mode())
        } else {
            let data = fs::read(&p).unwrap();
            format!(
                "file {:o} {} {} {:x}",
                m.mode(),
                m.nlink(),
                data.len(),
                fnv(&data)
            )
        };
        out.insert(
            rel,
            format!("{desc} mtime={}.{}", m.mtime(), m.mtime_nsec()),
        );
        if m.is_dir() {
            walk(root, &p, out);
        }
    }
}

pub fn fnv(data: &[u8]) -> u64 {
    let mut h = 0xcbf29ce484222325u64;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Names in a directory as the guest sees them, sorted.
pub fn names(c: &mut Client, path: &str) -> Vec<String> {
    let node = c.resolve(path).unwrap().nodeid;
    let mut v: Vec<String> = c
        .list(node)
        .unwrap()
        .into_iter()
        .map(|i| String::from_utf8(i.name).unwrap())
        .collect();
    v.sort();
    v
}

pub const ENOENT: i32 = 2;
pub const EIO: i32 = 5;
pub const EBADF: i32 = 9;
pub const EACCES: i32 = 13;
pub const EPERM: i32 = 1;
pub const EEXIST: i32 = 17;
pub const EXDEV: i32 = 18;
pub const ENOTDIR: i32 = 20;
pub const EISDIR: i32 = 21;
pub const EINVAL: i32 = 22;
pub const EMFILE: i32 = 24;
pub const EROFS: i32 = 30;
pub const ENAMETOOLONG: i32 = 36;
pub const ENOSYS: i32 = 38;
pub const ENOTEMPTY: i32 = 39;
pub const ELOOP: i32 = 40;
pub const ESTALE: i32 = 116;
pub const O_WRONLY: u32 = 1;
pub const O_RDWR: u32 = 2;
pub const O_TRUNC: u32 = 0o1000;
pub const O_EXCL: u32 = 0o200;

/// What a merged view holds at one path, comparable between the guest's
/// view (through the server) and a host directory (e.g. an overlayfs mount).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Obj {
    /// "dir", "file", "link", "fifo", ...
    pub kind: &'static str,
    pub mode: u32,
    pub size: u64,
    /// File content hash or symlink target.
    pub data: String,
    /// Link count of non-directories.
    pub nlink: u32,
}

fn kind_of(mode: u32) -> &'static str {
    match mode & 0o170000 {
        0o040000 => "dir",
        0o100000 => "file",
        0o120000 => "link",
        0o010000 => "fifo",
        0o140000 => "sock",
        _ => "other",
    }
}

/// The merged view as the guest sees it.
pub fn guest_tree(c: &mut Client) -> BTreeMap<String, Obj> {
    let mut out = BTreeMap::new();
    guest_walk(c, cowfs::abi::ROOT_ID, "", &mut out);
    out
}

fn guest_walk(c: &mut Client, node: u64, path: &str, out: &mut BTreeMap<String, Obj>) {
    for item in c.list(node).unwrap() {
        let name = String::from_utf8(item.name).unwrap();
        let p = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}/{name}")
        };
        let e = c.lookup(node, name.as_bytes()).unwrap();
        let kind = kind_of(e.attr.mode);
        let data = match kind {
            "file" => format!("{:x}", fnv(&c.read_file(&p).unwrap())),
            "link" => String::from_utf8(c.readlink(e.nodeid).unwrap()).unwrap(),
            _ => String::new(),
        };
        out.insert(
            p.clone(),
            Obj {
                kind,
                mode: e.attr.mode & 0o7777,
                size: if kind == "dir" { 0 } else { e.attr.size },
                data,
                nlink: if kind == "dir" { 0 } else { e.attr.nlink },
            },
        );
        if kind == "dir" {
            guest_walk(c, e.nodeid, &p, out);
        }
        c.forget(e.nodeid, 1);
    }
}

/// A host directory tree in the same terms.
pub fn host_tree(root: &Path) -> BTreeMap<String, Obj> {
    let mut out = BTreeMap::new();
    host_walk(root, root, &mut out);
    out
}

fn host_walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Obj>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = fs::symlink_metadata(&p).unwrap();
        let kind = kind_of(m.mode());
        let data = match kind {
            "file" => format!("{:x}", fnv(&fs::read(&p).unwrap())),
            "link" => fs::read_link(&p).unwrap().to_string_lossy().into_owned(),
            _ => String::new(),
        };
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        out.insert(
            rel,
            Obj {
                kind,
                mode: m.mode() & 0o7777,
                size: if kind == "dir" { 0 } else { m.size() },
                data,
                nlink: if kind == "dir" { 0 } else { m.nlink() as u32 },
            },
        );
        if kind == "dir" {
            host_walk(root, &p, out);
        }
    }
}

/// Asserts two trees are equal, naming the first differences.
pub fn assert_same(what: &str, a: &BTreeMap<String, Obj>, b: &BTreeMap<String, Obj>) {
    let mut diffs = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => diffs.push(format!("{k}: only in first ({v:?})")),
            Some(w) if w != v => diffs.push(format!("{k}: {v:?} != {w:?}")),
            _ => {}
        }
    }
    for (k, w) in b {
        if !a.contains_key(k) {
            diffs.push(format!("{k}: only in second ({w:?})"));
        }
    }
    assert!(diffs.is_empty(), "{what}:\n{}", diffs.join("\n"));
}
