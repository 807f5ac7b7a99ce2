//! A server that cannot chown (a jailed VMM running as a user) keeps the
//! owners the guest gives in the copy-up log: the guest sees them, across
//! a restart too, while the host files stay the server's user's.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::*;
use cowfs::abi::{fattr, SetattrIn};
use cowfs::client::Client;
use cowfs::{Filesystem, Limits, Server};

fn recording_client(l: &Layers) -> Client {
    let mut fs = Filesystem::with_limits(&cow_config(l), Limits::default()).unwrap();
    fs.record_owners();
    let mut c = Client::new(Server::new(fs));
    c.init().unwrap();
    c
}

fn chown(c: &mut Client, path: &str, uid: u32, gid: u32) {
    let node = c.resolve(path).unwrap().nodeid;
    c.setattr(
        node,
        &SetattrIn {
            valid: fattr::UID | fattr::GID,
            uid,
            gid,
            ..Default::default()
        },
    )
    .unwrap();
}

fn owner(c: &mut Client, path: &str) -> (u32, u32) {
    let a = c.resolve(path).unwrap().attr;
    (a.uid, a.gid)
}

#[test]
fn guest_owners_are_recorded_not_given_to_host_files() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to give the lower file another owner");
        return;
    }
    let me = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    let l = layers();
    std::os::unix::fs::chown(l.lower.join("a.txt"), Some(1000), Some(1001)).unwrap();
    let mut c = recording_client(&l);

    // A lower file shows its host owner; after a copy-up, still.
    assert_eq!(owner(&mut c, "a.txt"), (1000, 1001));
    c.write_file("a.txt", 0, b"guest", false).unwrap();
    assert_eq!(owner(&mut c, "a.txt"), (1000, 1001));
    let up = fs::metadata(l.upper.join("a.txt")).unwrap();
    assert_eq!((up.uid(), up.gid()), me, "the copy is the server's user's");

    // chown: the guest sees it, the host file does not change owner.
    chown(&mut c, "a.txt", 4242, 4343);
    assert_eq!(owner(&mut c, "a.txt"), (4242, 4343));
    let up = fs::metadata(l.upper.join("a.txt")).unwrap();
    assert_eq!((up.uid(), up.gid()), me);
    // Half a chown keeps the other half.
    chown(&mut c, "a.txt", u32::MAX, 77);
    assert_eq!(owner(&mut c, "a.txt"), (4242, 77));

    // A new file and directory take the requester's owner, then a chown.
    c.create_file(cowfs::abi::ROOT_ID, b"new", 0o644, b"x")
        .unwrap();
    c.mkdir(cowfs::abi::ROOT_ID, b"newdir", 0o755).unwrap();
    chown(&mut c, "new", 7, 8);
    chown(&mut c, "newdir", 9, 10);
    assert_eq!(owner(&mut c, "new"), (7, 8));
    assert_eq!(owner(&mut c, "newdir"), (9, 10));
    let up = fs::metadata(l.upper.join("new")).unwrap();
    assert_eq!((up.uid(), up.gid()), me);

    // Set-ID bits never reach the host copy.
    let node = c.resolve("new").unwrap().nodeid;
    c.chmod(node, 0o4755).unwrap();
    let mode = fs::metadata(l.upper.join("new"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755);

    // A restart: the owners come back from the log.
    drop(c);
    let mut c = recording_client(&l);
    assert_eq!(owner(&mut c, "a.txt"), (4242, 77));
    assert_eq!(owner(&mut c, "new"), (7, 8));
    assert_eq!(owner(&mut c, "newdir"), (9, 10));

    // A deleted file's record goes with it: a new file that gets the same
    // host inode number does not inherit the old owner.
    let ino = fs::metadata(l.upper.join("new")).unwrap().ino();
    c.unlink(cowfs::abi::ROOT_ID, b"new").unwrap();
    for i in 0..50 {
        let name = format!("again{i}");
        c.create_file(cowfs::abi::ROOT_ID, name.as_bytes(), 0o644, b"y")
            .unwrap();
        assert_eq!(owner(&mut c, &name), (0, 0), "{name}");
        if fs::metadata(l.upper.join(&name)).unwrap().ino() == ino {
            break;
        }
    }
    drop(c);
    let mut c = recording_client(&l);
    assert_eq!(owner(&mut c, "again0"), (0, 0));
}

#[test]
fn an_adopted_upper_layer_keeps_showing_the_owners_it_had() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to chown");
        return;
    }
    let l = layers();
    // What a root server left: guest owners on the host files.
    {
        let mut c = cow_client(&l);
        c.create_file(cowfs::abi::ROOT_ID, b"mine", 0o644, b"x")
            .unwrap();
        c.mkdir(cowfs::abi::ROOT_ID, b"d", 0o755).unwrap();
        chown(&mut c, "mine", 5, 6);
        chown(&mut c, "d", 7, 8);
        c.write_file("dir/b.txt", 0, b"B", false).unwrap();
    }
    let changed = cowfs::adopt_upper(&l.upper, 4242, 4343).unwrap();
    assert!(changed >= 4, "{changed}");
    for p in ["", "mine", "d", "dir", "dir/b.txt"] {
        let m = fs::symlink_metadata(l.upper.join(p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (4242, 4343), "{p}");
    }
    let mut c = recording_client(&l);
    assert_eq!(owner(&mut c, "mine"), (5, 6));
    assert_eq!(owner(&mut c, "d"), (7, 8));
    assert_eq!(owner(&mut c, "dir/b.txt"), (0, 0));
    // Adopting again changes nothing and keeps the records.
    drop(c);
    assert_eq!(cowfs::adopt_upper(&l.upper, 4242, 4343).unwrap(), 0);
    let mut c = recording_client(&l);
    assert_eq!(owner(&mut c, "mine"), (5, 6));
}
