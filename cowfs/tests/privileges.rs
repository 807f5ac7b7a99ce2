//! Set-ID bits, file capabilities and device nodes: a hostile guest can
//! neither strip them from the host's files (cow and ro shares change no
//! lower file in place) nor plant them on the host (a root server keeps
//! none in what it writes).

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;
use cowfs::abi::{self, fattr, op, ROOT_ID};
use cowfs::client::Client;
use cowfs::{Limits, ShareConfig, ShareMode};
use zerocopy::IntoBytes;

/// `security.capability` of `cap_net_bind_service=ep` (VFS_CAP_REVISION_2).
const CAP_NET_BIND_EP: [u8; 20] = [
    0x01, 0, 0, 0x02, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Adds `suid` (04755), `sgid` (02755) and `capbin` (0755 with a file
/// capability, when the host lets us set one) to the lower tree.
fn privileged_files(lower: &Path) -> bool {
    for (name, mode) in [("suid", 0o4755), ("sgid", 0o2755), ("capbin", 0o755)] {
        fs::write(lower.join(name), b"#!/bin/sh\necho privileged\n").unwrap();
        fs::set_permissions(lower.join(name), fs::Permissions::from_mode(mode)).unwrap();
    }
    rustix::fs::setxattr(
        lower.join("capbin").as_path(),
        "security.capability",
        &CAP_NET_BIND_EP,
        rustix::fs::XattrFlags::empty(),
    )
    .is_ok()
}

/// (name, value) of every xattr of a file, sorted.
type Xattrs = Vec<(String, Vec<u8>)>;

/// Name, mode, content and xattrs of each privileged file: what must not
/// change.
fn host_state(lower: &Path) -> Vec<(String, u32, Vec<u8>, Xattrs)> {
    ["suid", "sgid", "capbin"]
        .iter()
        .map(|n| {
            let p = lower.join(n);
            (
                n.to_string(),
                fs::metadata(&p).unwrap().mode(),
                fs::read(&p).unwrap(),
                xattrs(&p),
            )
        })
        .collect()
}

fn xattrs(p: &Path) -> Xattrs {
    let mut list = vec![0u8; 4096];
    let n = rustix::fs::llistxattr(p, &mut list[..]).unwrap_or(0);
    let mut out = Vec::new();
    for name in list[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let name = String::from_utf8(name.to_vec()).unwrap();
        let mut v = vec![0u8; 4096];
        let len = rustix::fs::lgetxattr(p, name.as_str(), &mut v[..]).unwrap();
        v.truncate(len);
        out.push((name, v));
    }
    out.sort();
    out
}

fn client(l: &Layers, mode: ShareMode) -> Client {
    client_with(
        ShareConfig {
            lower: l.lower.clone(),
            upper: (mode == ShareMode::Cow).then(|| l.upper.clone()),
            mode,
            masked: Vec::new(),
            visible: None,
            hidden: Vec::new(),
        },
        Limits::default(),
    )
}

fn open_with(c: &mut Client, node: u64, flags: u32, open_flags: u32) -> Result<u64, i32> {
    let o = abi::OpenIn { flags, open_flags };
    let b = c.call(op::OPEN, node, &[o.as_bytes()])?;
    Ok(u64::from_le_bytes(b[..8].try_into().unwrap()))
}

fn create_existing(c: &mut Client, name: &str, flags: u32) -> Result<u64, i32> {
    let ci = abi::CreateIn {
        flags,
        mode: 0o644,
        umask: 0,
        open_flags: abi::OPEN_KILL_SUIDGID,
    };
    let b = c.call(
        op::CREATE,
        ROOT_ID,
        &[ci.as_bytes(), &cowfs::client::cstr(name.as_bytes())],
    )?;
    let at = abi::ENTRY_OUT_SIZE;
    Ok(u64::from_le_bytes(b[at..at + 8].try_into().unwrap()))
}

fn xattr_args(name: &str, value: Option<&[u8]>) -> Vec<u8> {
    let mut a = Vec::new();
    if let Some(v) = value {
        a.extend_from_slice(&(v.len() as u32).to_le_bytes());
        a.extend_from_slice(&0u32.to_le_bytes());
    }
    a.extend_from_slice(name.as_bytes());
    a.push(0);
    a.extend_from_slice(value.unwrap_or_default());
    a
}

/// Every request a guest kernel could send to strip privileges from, or
/// otherwise change, a file it only reads: each must leave the host file
/// as it was (the reply may succeed, changing nothing, or fail).
fn hostile_requests(c: &mut Client, name: &str) -> Vec<(String, Result<(), i32>)> {
    let node = c.resolve(name).unwrap().nodeid;
    let mut out = Vec::new();
    let mut note = |what: &str, r: Result<(), i32>| out.push((format!("{name}: {what}"), r));
    // OPEN read-only, asking to kill set-ID bits (the reported hole).
    let r = open_with(c, node, 0, abi::OPEN_KILL_SUIDGID);
    note("OPEN O_RDONLY + KILL_SUIDGID", r.map(|_| ()));
    let ro_fh = open_with(c, node, 0, 0).unwrap();
    // CREATE of the existing name, read-only, with the kill flag.
    note(
        "CREATE existing + KILL_SUIDGID",
        create_existing(c, name, 0).map(|_| ()),
    );
    // SETATTR with only the kill flag, by node and by the read-only handle.
    for (what, valid) in [
        ("SETATTR KILL_SUIDGID", fattr::KILL_SUIDGID),
        (
            "SETATTR KILL_SUIDGID by read-only fh",
            fattr::KILL_SUIDGID | fattr::FH,
        ),
    ] {
        let s = abi::SetattrIn {
            valid,
            fh: ro_fh,
            ..Default::default()
        };
        note(what, c.setattr(node, &s).map(|_| ()));
    }
    // WRITE and FALLOCATE through the read-only handle.
    let w = abi::WriteIn {
        fh: ro_fh,
        size: 1,
        write_flags: abi::WRITE_KILL_SUIDGID,
        ..Default::default()
    };
    note(
        "WRITE + KILL_SUIDGID on a read-only fh",
        c.call(op::WRITE, node, &[w.as_bytes(), b"#"]).map(|_| ()),
    );
    let f = abi::FallocateIn {
        fh: ro_fh,
        length: 4096,
        ..Default::default()
    };
    note(
        "FALLOCATE on a read-only fh",
        c.call(op::FALLOCATE, node, &[f.as_bytes()]).map(|_| ()),
    );
    // Capabilities by xattr.
    note(
        "REMOVEXATTR security.capability",
        c.call(
            op::REMOVEXATTR,
            node,
            &[&xattr_args("security.capability", None)],
        )
        .map(|_| ()),
    );
    note(
        "SETXATTR security.capability",
        c.call(
            op::SETXATTR,
            node,
            &[&xattr_args("security.capability", Some(&[0; 20]))],
        )
        .map(|_| ()),
    );
    let fs = abi::FsyncIn {
        fh: ro_fh,
        ..Default::default()
    };
    note(
        "FSYNC on a read-only fh",
        c.call(op::FSYNC, node, &[fs.as_bytes()]).map(|_| ()),
    );
    c.release(ro_fh).unwrap();
    out
}

/// The hole: OPEN/CREATE with FUSE_OPEN_KILL_SUIDGID on a
/// read-only lower handle stripped the host file's set-ID bits and file
/// capabilities, in cow and ro shares alike.
#[test]
fn hostile_requests_never_change_a_lower_file() {
    for mode in [ShareMode::Cow, ShareMode::Ro] {
        let l = layers();
        let caps = privileged_files(&l.lower);
        assert!(caps || !as_root(), "root can set security.capability");
        let before = host_state(&l.lower);
        let mut c = client(&l, mode);
        for name in ["suid", "sgid", "capbin"] {
            for (what, reply) in hostile_requests(&mut c, name) {
                assert_eq!(host_state(&l.lower), before, "{mode:?} {what} -> {reply:?}");
            }
            // The guest still sees the host file as it is.
            let e = c.resolve(name).unwrap();
            let host = fs::metadata(l.lower.join(name)).unwrap();
            assert_eq!(e.attr.mode, host.mode(), "{mode:?} {name}");
        }
        if mode == ShareMode::Cow {
            // None of it copied anything up.
            for name in ["suid", "sgid", "capbin"] {
                assert!(!l.upper.join(name).exists(), "{name} copied up");
            }
        }
        // A ro share refuses every write path outright.
        if mode == ShareMode::Ro {
            let node = c.resolve("suid").unwrap().nodeid;
            assert_eq!(
                open_with(&mut c, node, O_WRONLY | O_TRUNC, abi::OPEN_KILL_SUIDGID),
                Err(EROFS)
            );
            assert_eq!(c.chmod(node, 0o755).unwrap_err(), EROFS);
            assert_eq!(
                create_existing(&mut c, "suid", O_WRONLY | O_TRUNC),
                Err(EROFS)
            );
            assert_eq!(host_state(&l.lower), before);
        }
    }
}

/// A real O_TRUNC open by a writer without CAP_FSETID kills the
/// privileges of the upper copy only; the host file keeps its own.
#[test]
fn killing_privileges_acts_on_the_upper_copy() {
    let l = layers();
    privileged_files(&l.lower);
    let before = host_state(&l.lower);
    let mut c = client(&l, ShareMode::Cow);
    for name in ["suid", "capbin"] {
        let node = c.resolve(name).unwrap().nodeid;
        let fh = open_with(&mut c, node, O_WRONLY | O_TRUNC, abi::OPEN_KILL_SUIDGID).unwrap();
        c.write(fh, 0, b"#!/bin/sh\n").unwrap();
        c.release(fh).unwrap();
        let up = l.upper.join(name);
        assert_eq!(fs::metadata(&up).unwrap().mode() & 0o7777, 0o755, "{name}");
        assert!(
            xattrs(&up).iter().all(|(n, _)| n != "security.capability"),
            "{name}: the upper copy has no file capability"
        );
    }
    assert_eq!(host_state(&l.lower), before);
}

/// Run as root, nothing the server writes carries a set-ID bit or a file
/// capability, and no device node is made (by MKNOD or by copy-up).
#[test]
fn a_root_server_plants_no_privileges_on_the_host() {
    if !as_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let l = layers();
    privileged_files(&l.lower);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        l.lower.join("dir/null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    let before = host_state(&l.lower);
    let lower_tree = tree_hash(&l.lower);
    let mut c = client(&l, ShareMode::Cow);
    let mode_of = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;

    // Created set-ID: the bits are dropped on the host (and so in what
    // the guest sees).
    let (e, fh) = c.create(ROOT_ID, b"made-suid", O_WRONLY, 0o104755).unwrap();
    c.release(fh).unwrap();
    assert_eq!(e.attr.mode & 0o7777, 0o755);
    assert_eq!(mode_of(&l.upper.join("made-suid")), 0o755);
    let e = c.mknod(ROOT_ID, b"made-reg", 0o106755, 0).unwrap();
    assert_eq!(mode_of(&l.upper.join("made-reg")), 0o755);
    // chmod u+s / g+s, by node and by handle.
    c.chmod(e.nodeid, 0o6755).unwrap();
    assert_eq!(mode_of(&l.upper.join("made-reg")), 0o755);
    let fh = c.open(e.nodeid, O_RDWR).unwrap();
    let s = abi::SetattrIn {
        valid: fattr::MODE | fattr::FH,
        fh,
        mode: 0o4700,
        ..Default::default()
    };
    assert_eq!(c.setattr(e.nodeid, &s).unwrap().mode & 0o7777, 0o700);
    c.release(fh).unwrap();
    // A directory keeps its set-group-ID bit (group inheritance only).
    c.mkdir(ROOT_ID, b"shared", 0o2775).unwrap();
    assert_eq!(mode_of(&l.upper.join("shared")), 0o2775);

    // Copy-up (a metadata change) of set-ID and capability files.
    for name in ["suid", "sgid", "capbin"] {
        let node = c.resolve(name).unwrap().nodeid;
        let s = abi::SetattrIn {
            valid: fattr::MTIME_NOW | fattr::ATIME_NOW,
            ..Default::default()
        };
        c.setattr(node, &s).unwrap();
        let up = l.upper.join(name);
        assert_eq!(mode_of(&up), 0o755, "{name}");
        assert!(xattrs(&up).is_empty(), "{name}: {:?}", xattrs(&up));
    }

    // Device nodes: MKNOD is refused, and so is a copy-up of the host's.
    for kind in [0o020000, 0o060000] {
        assert_eq!(
            c.mknod(ROOT_ID, b"dev", kind | 0o666, 0x0103).unwrap_err(),
            EPERM
        );
    }
    let null = c.resolve("dir/null").unwrap().nodeid;
    assert_eq!(c.chmod(null, 0o600).unwrap_err(), EPERM);
    assert_eq!(
        c.rename(ROOT_ID, b"dir", ROOT_ID, b"moved", 0).unwrap_err(),
        EPERM
    );
    assert!(!l.upper.join("dir/null").exists() && !l.upper.join("moved").exists());

    assert_eq!(host_state(&l.lower), before);
    assert_eq!(tree_hash(&l.lower), lower_tree);
}
