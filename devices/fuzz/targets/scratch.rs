//! Scratch directories for the targets that build hostile trees on disk
//! (`origin_log`, `commit_upper`), and the check that nothing outside the
//! tree they hand to cowfs changed. Each target includes it by path and
//! uses part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A fresh directory, in `/dev/shm` where there is one (a tmpfs: no disk
/// I/O per input); removed on drop.
pub fn dir(prefix: &str) -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let parent = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(parent)
        .unwrap()
}

/// What an object looks like: mode, size, content (files), target (links).
#[derive(Debug, PartialEq, Eq)]
pub struct Object {
    mode: u32,
    size: u64,
    data: Vec<u8>,
}

/// `root` itself and everything under it, except the subtrees in `skip`.
pub fn state(root: &Path, skip: &[&Path]) -> BTreeMap<PathBuf, Object> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let data = if m.is_file() {
            std::fs::read(&p).unwrap_or_default()
        } else if m.is_symlink() {
            std::fs::read_link(&p)
                .unwrap_or_default()
                .into_os_string()
                .into_encoded_bytes()
        } else {
            Vec::new()
        };
        if m.is_dir() {
            for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                if !skip.contains(&e.path().as_path()) {
                    todo.push(e.path());
                }
            }
        }
        let size = if m.is_dir() { 0 } else { m.size() };
        out.insert(
            p,
            Object {
                mode: m.mode(),
                size,
                data,
            },
        );
    }
    out
}

/// Makes `root` and everything under it removable again (a hostile input
/// may have left a directory without search or write permission).
pub fn unlock(root: &Path) {
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700));
                todo.extend(
                    std::fs::read_dir(&p)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|e| e.path()),
                );
            }
            _ => {}
        }
    }
}
