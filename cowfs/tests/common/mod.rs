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

pub fn client_with(config: ShareConfig, limits: Limits) -> Client {
    let fs = Filesystem::with_limits(&config, limits).unwrap();
    let mut c = Client::new(Server::new(fs));
    c.init().unwrap();
    c
}

pub fn cow_client(l: &Layers) -> Client {
    client_with(
        ShareConfig {
            lower: l.lower.clone(),
            upper: Some(l.upper.clone()),
            mode: ShareMode::Cow,
        },
        Limits::default(),
    )
}

/// A content hash of a whole tree (names, types, modes, sizes, data,
/// symlink targets, link counts): equal before and after means untouched.
pub fn tree_hash(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let mut names: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
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
        out.insert(rel, format!("{desc} mtime={}.{}", m.mtime(), m.mtime_nsec()));
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
