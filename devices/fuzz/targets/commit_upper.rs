//! `cowfs::diff` and `cowfs::commit` over a hostile upper layer: whiteouts,
//! opaque markers, reserved names (the copy-up log, the commit journal and
//! its temporaries), odd names, symlinks pointing out, deep trees, odd
//! modes, hard links; committed (dry run, then for real) into a lower
//! directory inside a scratch project.
//!
//! Input: a sequence of operations building the upper, each an opcode byte
//! (low 3 bits) then its operands; a path is a count byte (1-4
//! components, low 2 bits) then per component a byte indexing `NAMES`, or
//! past its end a length byte and that many raw bytes:
//! - 0 mkdir P
//! - 1 file P, len u8, content
//! - 2 symlink P, target byte (`TARGETS`, past its end: len u8 + raw)
//! - 3 whiteout of P (`.wh.<name>` beside it)
//! - 4 opaque marker in directory P
//! - 5 reserved file at the upper root: name byte (`RESERVED`), len u16,
//!   content (a journal here is recovered by the commit)
//! - 6 chmod P, mode u16
//! - 7 P then a chain of up to 63 directories `d` under it
//!
//! Checks: no panic; nothing outside the lower and upper directories
//! changes (the project's own directory included).

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use devices::virtio::fs::cowfs::{commit, diff, Approval, CommitOptions};

#[path = "input.rs"]
mod input;
use input::Input;

#[path = "scratch.rs"]
mod scratch;

const NAMES: [&[u8]; 16] = [
    b"a.txt",
    b"dir",
    b"sub",
    b"b.txt",
    b"c",
    b"exec.sh",
    b"ln",
    b"new",
    b".wh.a.txt",
    b".wh.dir",
    b".wh..wh..opq",
    b".wh..wh..mvm-origins",
    b".wh..wh..tmp.commit.1.x",
    b"x y\n",
    b"\xff\xfe",
    b".wh.",
];

const RESERVED: [&[u8]; 4] = [
    b".wh..wh..mvm-commit",
    b".wh..wh..mvm-origins",
    b".wh..wh..tmp.commit-journal",
    b".wh..wh..tmp.origins",
];

/// Symlink targets; `OUT` is replaced by the absolute path of the
/// project's `outside` directory.
const TARGETS: [&str; 8] = [
    "../outside/f",
    "OUT/f",
    "OUT",
    "/",
    "..",
    "a.txt",
    "../../..",
    "dir/sub",
];

/// A path: a count byte, then each component (see the module comment).
fn path(input: &mut Input) -> Option<PathBuf> {
    let n = (input.u8()? & 3) + 1;
    let mut p = PathBuf::new();
    for _ in 0..n {
        let b = usize::from(input.u8()?);
        let c = match NAMES.get(b) {
            Some(c) => c.to_vec(),
            None => {
                let len = usize::from(input.u8()?);
                input.bytes(len).to_vec()
            }
        };
        // One component each, and never up (the builder writes only
        // inside the upper; escaping is cowfs's to refuse, not ours).
        if c.is_empty() || c.contains(&b'/') || c.contains(&0) || c == b"." || c == b".." {
            return None;
        }
        p.push(std::ffi::OsStr::from_bytes(&c));
    }
    Some(p)
}

/// `upper/rel` if no ancestor of it inside the upper is a symlink or a
/// non-directory (so the builder never writes through a link), with its
/// parents created.
fn inside(upper: &Path, rel: &Path) -> Option<PathBuf> {
    let mut p = upper.to_path_buf();
    let parent = rel.parent().unwrap_or(Path::new(""));
    for c in parent.components() {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return None,
            Err(_) => std::fs::create_dir(&p).ok()?,
        }
    }
    Some(upper.join(rel))
}

fn build(upper: &Path, outside: &Path, data: &[u8]) {
    let mut input = Input(data);
    while let Some(op) = input.u8() {
        let Some(rel) = (if op & 7 == 5 {
            Some(PathBuf::new())
        } else {
            path(&mut input)
        }) else {
            return;
        };
        let Some(at) = inside(upper, &rel) else {
            continue;
        };
        let Some(arg) = input.u8() else {
            return;
        };
        let nofollow = || {
            std::fs::symlink_metadata(&at)
                .map(|m| !m.is_symlink())
                .unwrap_or(false)
        };
        let _ = match op & 7 {
            0 => std::fs::create_dir(&at),
            1 => {
                let content = input.bytes(usize::from(arg)).to_vec();
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(&at)
                    .and_then(|mut f| std::io::Write::write_all(&mut f, &content))
            }
            2 => {
                let target = match TARGETS.get(usize::from(arg)) {
                    Some(t) => t.replace("OUT", &outside.to_string_lossy()).into_bytes(),
                    None => {
                        let len = usize::from(input.u8().unwrap_or(0));
                        input.bytes(len).to_vec()
                    }
                };
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &at)
            }
            3 => {
                let name = at.file_name().map(|n| n.as_bytes()).unwrap_or(b"x");
                let wh = at.with_file_name(std::ffi::OsStr::from_bytes(&[b".wh.", name].concat()));
                std::fs::write(wh, b"")
            }
            4 if nofollow() => std::fs::write(at.join(".wh..wh..opq"), b""),
            5 => {
                let name = RESERVED[usize::from(arg & 3)];
                let len = usize::from(u16::from_le_bytes([
                    input.u8().unwrap_or(0),
                    input.u8().unwrap_or(0),
                ]));
                let content = input.bytes(len).to_vec();
                std::fs::write(upper.join(std::ffi::OsStr::from_bytes(name)), content)
            }
            6 if nofollow() => {
                let mode = u32::from(u16::from_le_bytes([arg, input.u8().unwrap_or(0)]));
                std::fs::set_permissions(&at, std::fs::Permissions::from_mode(mode & 0o7777))
            }
            7 => {
                let mut p = at;
                for _ in 0..arg & 63 {
                    let _ = std::fs::create_dir(&p);
                    if !nofollow_at(&p) {
                        break;
                    }
                    p.push("d");
                }
                Ok(())
            }
            _ => Ok(()),
        };
    }
}

fn nofollow_at(p: &Path) -> bool {
    std::fs::symlink_metadata(p)
        .map(|m| m.is_dir())
        .unwrap_or(false)
}

pub fn run(data: &[u8]) {
    let base = scratch::dir("commit-upper-fuzz");
    let project = base.path();
    let (lower, upper, outside) = (
        project.join("lower"),
        project.join("upper"),
        project.join("outside"),
    );
    std::fs::create_dir_all(lower.join("dir/sub")).unwrap();
    std::fs::create_dir_all(outside.join("g")).unwrap();
    std::fs::create_dir(&upper).unwrap();
    std::fs::write(outside.join("f"), b"host secret").unwrap();
    std::fs::write(lower.join("a.txt"), b"a").unwrap();
    std::fs::write(lower.join("dir/b.txt"), b"b").unwrap();
    std::fs::write(lower.join("dir/sub/c"), b"c").unwrap();
    std::fs::write(lower.join("exec.sh"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        lower.join("exec.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("../outside", lower.join("ln")).unwrap();
    std::os::unix::fs::symlink("../outside/f", lower.join("dir/lnf")).unwrap();
    let before = scratch::state(project, &[&lower, &upper]);

    build(&upper, &outside, data);

    let _ = diff(&lower, &upper);
    let mut opts = CommitOptions {
        dry_run: true,
        approval: Approval::All,
        ..Default::default()
    };
    let _ = commit(&lower, &upper, &opts);
    opts.dry_run = false;
    let _ = commit(&lower, &upper, &opts);
    let _ = diff(&lower, &upper);

    let after = scratch::state(project, &[&lower, &upper]);
    scratch::unlock(project);
    assert!(
        after == before,
        "something outside the lower and upper changed"
    );
}
