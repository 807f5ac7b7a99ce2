//! A hostile guest trying to reach outside the share: every attempt must
//! fail safe, and neither the lower tree nor anything outside the share may
//! change.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};

use common::*;
use cowfs::abi::{op, ROOT_ID};
use cowfs::client::cstr;

struct World {
    l: Layers,
    outside: std::path::PathBuf,
}

fn world() -> World {
    let l = layers();
    let outside = l.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"top secret").unwrap();
    // Host-made symlinks in the lower layer that point out of the share.
    symlink("../outside", l.lower.join("out-rel")).unwrap();
    symlink(&outside, l.lower.join("out-abs")).unwrap();
    symlink(outside.join("secret"), l.lower.join("secret-link")).unwrap();
    // A host-made hard link from inside the lower layer to a file outside.
    fs::hard_link(outside.join("secret"), l.lower.join("hard-out")).unwrap();
    World { l, outside }
}

#[test]
fn bad_names_are_refused() {
    let w = world();
    let before = tree_hash(&w.l.lower);
    let mut c = cow_client(&w.l);
    for name in [
        &b".."[..],
        b".",
        b"../outside",
        b"/etc/passwd",
        b"dir/b.txt",
        b"a/",
        b"",
    ] {
        assert_eq!(
            c.lookup(ROOT_ID, name).unwrap_err(),
            EINVAL,
            "lookup {name:?}"
        );
        assert_eq!(
            c.mkdir(ROOT_ID, name, 0o755).unwrap_err(),
            EINVAL,
            "mkdir {name:?}"
        );
        assert_eq!(
            c.create(ROOT_ID, name, 0, 0o644).unwrap_err(),
            EINVAL,
            "create {name:?}"
        );
        assert_eq!(
            c.unlink(ROOT_ID, name).unwrap_err(),
            EINVAL,
            "unlink {name:?}"
        );
        assert_eq!(
            c.rename(ROOT_ID, b"a.txt", ROOT_ID, name, 0).unwrap_err(),
            EINVAL
        );
        assert_eq!(c.symlink(ROOT_ID, name, b"x").unwrap_err(), EINVAL);
    }
    let long = vec![b'x'; 256];
    assert_eq!(c.lookup(ROOT_ID, &long).unwrap_err(), ENAMETOOLONG);
    assert_eq!(
        c.create(ROOT_ID, &long, 0, 0o644).unwrap_err(),
        ENAMETOOLONG
    );
    assert_eq!(
        c.symlink(ROOT_ID, b"s", &vec![b'y'; 5000]).unwrap_err(),
        ENAMETOOLONG
    );
    // An embedded NUL ends the name: "a.txt\0/../x" is just "a.txt".
    let mut req = cstr(b"a.txt");
    req.extend_from_slice(b"/../x\0");
    assert!(c.call(op::LOOKUP, ROOT_ID, &[&req]).is_ok());
    // Parents that are not directories.
    let a = c.resolve("a.txt").unwrap().nodeid;
    assert_eq!(c.lookup(a, b"x").unwrap_err(), ENOTDIR);
    assert_eq!(c.create(a, b"x", 0, 0o644).unwrap_err(), ENOTDIR);
    assert_eq!(tree_hash(&w.l.lower), before);
}

#[test]
fn symlinks_are_never_followed_on_the_host() {
    let w = world();
    let before = tree_hash(&w.l.lower);
    let outside_before = tree_hash(&w.outside);
    let mut c = cow_client(&w.l);
    // A guest-made absolute symlink used as a path component.
    let s = c
        .symlink(ROOT_ID, b"esc", w.outside.to_str().unwrap().as_bytes())
        .unwrap();
    assert_eq!(c.lookup(s.nodeid, b"secret").unwrap_err(), ENOTDIR);
    assert_eq!(
        c.create(s.nodeid, b"planted", 0, 0o644).unwrap_err(),
        ENOTDIR
    );
    assert_eq!(c.mkdir(s.nodeid, b"planted", 0o755).unwrap_err(), ENOTDIR);
    assert_eq!(c.opendir(s.nodeid).unwrap_err(), ENOTDIR);
    assert_eq!(c.open(s.nodeid, 0).unwrap_err(), EACCES);
    assert_eq!(c.open(s.nodeid, O_RDWR).unwrap_err(), EACCES);
    // Host-made symlinks out of the share, relative and absolute.
    for name in ["out-rel", "out-abs", "secret-link"] {
        let e = c.resolve(name).unwrap();
        assert_eq!(e.attr.mode & 0o170000, 0o120000);
        assert_eq!(
            c.lookup(e.nodeid, b"secret").unwrap_err(),
            ENOTDIR,
            "{name}"
        );
        assert_eq!(c.open(e.nodeid, 0).unwrap_err(), EACCES, "{name}");
        assert_eq!(
            c.open(e.nodeid, O_WRONLY | O_TRUNC).unwrap_err(),
            EACCES,
            "{name}"
        );
        // Changing it copies the symlink itself up, never the target.
        assert!(c.chmod(e.nodeid, 0o777).is_err());
        assert!(c.truncate(e.nodeid, 0).is_err());
        let mut x = 4u32.to_le_bytes().to_vec();
        x.extend_from_slice(&[0; 4]);
        x.extend_from_slice(b"user.x\0abcd");
        assert!(c.call(op::SETXATTR, e.nodeid, &[&x]).is_err());
    }
    // Hard links of symlinks link the symlink, not what it points at.
    let sl = c.resolve("secret-link").unwrap().nodeid;
    let hl = c.link(sl, ROOT_ID, b"hard-secret").unwrap();
    assert_eq!(hl.attr.mode & 0o170000, 0o120000);
    assert_eq!(
        c.link(s.nodeid, ROOT_ID, b"hard-esc").unwrap().attr.mode & 0o170000,
        0o120000
    );
    // Unknown node IDs cannot name anything.
    assert_eq!(c.link(0xdead_beef, ROOT_ID, b"h").unwrap_err(), ESTALE);
    assert_eq!(c.link(0, ROOT_ID, b"h").unwrap_err(), ESTALE);
    // Writing or linking a lower hard link to an outside file copies it up:
    // the outside inode is never written or linked again.
    c.write_file("hard-out", 0, b"guest data", false).unwrap();
    let ho = c.resolve("hard-out").unwrap().nodeid;
    c.link(ho, ROOT_ID, b"hard-out2").unwrap();
    assert_eq!(c.read_file("hard-out2").unwrap(), b"guest data");
    assert_eq!(fs::read(w.outside.join("secret")).unwrap(), b"top secret");
    assert_eq!(fs::metadata(w.outside.join("secret")).unwrap().nlink(), 2);
    assert_eq!(tree_hash(&w.outside), outside_before);
    assert_eq!(tree_hash(&w.l.lower), before);
}

#[test]
fn a_symlink_swapped_in_for_a_directory_is_not_followed() {
    let w = world();
    let before = tree_hash(&w.l.lower);
    let outside_before = tree_hash(&w.outside);
    let mut c = cow_client(&w.l);
    let c_txt = c.resolve("dir/sub/c.txt").unwrap().nodeid;
    let sub = c.resolve("dir/sub").unwrap().nodeid;
    // The host (or a race) puts a symlink where the copy-up expects the
    // upper directory to be created.
    symlink(&w.outside, w.l.upper.join("dir")).unwrap();
    let err = c.open(c_txt, O_WRONLY).unwrap_err();
    assert!([ELOOP, ENOTDIR].contains(&err), "{err}");
    assert!(c.chmod(c_txt, 0o777).is_err());
    assert!(c.create(sub, b"n", 0, 0o644).is_err());
    // The merged view now shows the host's symlink; it leads nowhere.
    assert_eq!(c.resolve("dir/sub").unwrap_err(), ENOTDIR);
    fs::remove_file(w.l.upper.join("dir")).unwrap();
    // Once the upper directory exists, a swap of it is not followed either.
    c.write_file("dir/b.txt", 0, b"B", false).unwrap();
    fs::rename(w.l.upper.join("dir"), w.l.upper.join("dir.real")).unwrap();
    symlink(&w.outside, w.l.upper.join("dir")).unwrap();
    assert!(c.write_file("dir/b.txt", 0, b"X", false).is_err());
    assert!(c.read_file("dir/b.txt").is_err());
    let dir = c
        .resolve("dir")
        .unwrap_or_else(|_| c.resolve("").unwrap())
        .nodeid;
    let _ = c.unlink(dir, b"b.txt");
    let _ = c.create(dir, b"planted", 0, 0o644);
    assert_eq!(tree_hash(&w.outside), outside_before);
    // The same for the lower layer: a swapped lower directory is not read.
    let lower2 = w.l.dir.path().join("lower2");
    fs::create_dir_all(lower2.join("d")).unwrap();
    let upper2 = w.l.dir.path().join("upper2");
    fs::create_dir(&upper2).unwrap();
    let mut c2 = client_with(
        cowfs::ShareConfig {
            lower: lower2.clone(),
            upper: Some(upper2),
            mode: cowfs::ShareMode::Cow,
            masked: Vec::new(),
            visible: None,
            hidden: Vec::new(),
        },
        cowfs::Limits::default(),
    );
    let d = c2.resolve("d").unwrap().nodeid;
    fs::remove_dir(lower2.join("d")).unwrap();
    symlink(&w.outside, lower2.join("d")).unwrap();
    assert!(c2.lookup(d, b"secret").is_err());
    assert!(c2.opendir(d).is_err());
    assert_eq!(tree_hash(&w.outside), outside_before);
    assert_eq!(tree_hash(&w.l.lower), before);
}

#[test]
fn whiteouts_cannot_be_named_or_renamed_onto() {
    let w = world();
    let mut c = cow_client(&w.l);
    c.unlink(ROOT_ID, b"a.txt").unwrap();
    assert_eq!(c.lookup(ROOT_ID, b".wh.a.txt").unwrap_err(), ENOENT);
    assert_eq!(
        c.rename(ROOT_ID, b"exec.sh", ROOT_ID, b".wh.a.txt", 0)
            .unwrap_err(),
        EINVAL
    );
    assert_eq!(
        c.rename(ROOT_ID, b".wh.a.txt", ROOT_ID, b"x", 0)
            .unwrap_err(),
        ENOENT
    );
    let ex = c.resolve("exec.sh").unwrap().nodeid;
    assert_eq!(c.link(ex, ROOT_ID, b".wh.exec.sh").unwrap_err(), EINVAL);
    assert_eq!(
        c.symlink(ROOT_ID, b".wh..wh..opq", b"x").unwrap_err(),
        EINVAL
    );
    // Renaming onto the whited-out name itself is a plain create.
    c.rename(ROOT_ID, b"exec.sh", ROOT_ID, b"a.txt", 0).unwrap();
    assert_eq!(c.read_file("a.txt").unwrap(), b"#!/bin/sh\n");
    assert!(!w.l.upper.join(".wh.a.txt").exists());
    assert!(w.l.upper.join(".wh.exec.sh").exists());
    // A directory renamed onto a whited-out lower directory hides it.
    c.rmdir(ROOT_ID, b"empty").unwrap();
    let d = c.mkdir(ROOT_ID, b"d", 0o755).unwrap();
    c.create(d.nodeid, b"f", 0, 0o644).unwrap();
    c.rename(ROOT_ID, b"d", ROOT_ID, b"empty", 0).unwrap();
    assert_eq!(names(&mut c, "empty"), ["f"]);
    assert_eq!(
        names(&mut c, "")
            .iter()
            .filter(|n| n.starts_with(".wh"))
            .count(),
        0
    );
    // Names too long to white out cannot be deleted from the lower layer.
    let long = "l".repeat(253);
    fs::write(w.l.lower.join(&long), b"").unwrap();
    let before = tree_hash(&w.l.lower);
    assert_eq!(
        c.unlink(ROOT_ID, long.as_bytes()).unwrap_err(),
        ENAMETOOLONG
    );
    assert!(c.lookup(ROOT_ID, long.as_bytes()).is_ok());
    assert_eq!(tree_hash(&w.l.lower), before);
}

#[test]
fn a_guest_that_never_forgets_or_releases_stays_bounded() {
    let w = world();
    let mut c = client_with(
        cowfs::ShareConfig {
            lower: w.l.lower.clone(),
            upper: Some(w.l.upper.clone()),
            mode: cowfs::ShareMode::Cow,
            masked: Vec::new(),
            visible: None,
            hidden: Vec::new(),
        },
        cowfs::Limits {
            max_inodes: 64,
            max_handles: 16,
            max_dir_bytes: 4096,
            ..cowfs::Limits::default()
        },
    );
    for i in 0..500 {
        let _ = c.mkdir(ROOT_ID, format!("d{i}").as_bytes(), 0o755);
        let a = c.lookup(ROOT_ID, b"a.txt").map(|e| e.nodeid).unwrap_or(1);
        let _ = c.open(a, 0);
        let _ = c.opendir(ROOT_ID);
    }
    let fs = c.server.filesystem();
    assert!(fs.inode_count() <= 64, "{}", fs.inode_count());
    assert!(fs.handle_count() <= 16, "{}", fs.handle_count());
    // A directory too large for the snapshot budget: ENFILE, not OOM.
    let fh = c.opendir(ROOT_ID);
    assert!(fh.is_err());
}
