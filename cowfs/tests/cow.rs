//! Copy-on-write semantics, driven through encoded FUSE requests.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::*;
use cowfs::abi::{self, op, RENAME_EXCHANGE, RENAME_NOREPLACE, ROOT_ID};
use cowfs::client::{request, Client};
use cowfs::{Filesystem, Limits, Server, ShareConfig, ShareMode};

#[test]
fn reads_fall_through_and_writes_copy_up() {
    let l = layers();
    let before = tree_hash(&l.lower);
    let mut c = cow_client(&l);
    assert_eq!(c.read_file("a.txt").unwrap(), b"hello lower\n");
    assert_eq!(c.read_file("dir/sub/c.txt").unwrap(), b"sea");
    let ino_before = c.resolve("dir/sub/c.txt").unwrap().attr.ino;
    assert_eq!(
        ino_before,
        fs::metadata(l.lower.join("dir/sub/c.txt")).unwrap().ino()
    );

    c.write_file("dir/sub/c.txt", 3, b" shell", false).unwrap();
    assert_eq!(c.read_file("dir/sub/c.txt").unwrap(), b"sea shell");
    assert_eq!(
        fs::read(l.upper.join("dir/sub/c.txt")).unwrap(),
        b"sea shell"
    );
    // Inode numbers survive copy-up; the parents were copied up too.
    assert_eq!(c.resolve("dir/sub/c.txt").unwrap().attr.ino, ino_before);
    assert_eq!(
        c.resolve("dir").unwrap().attr.ino,
        fs::metadata(l.lower.join("dir")).unwrap().ino()
    );
    assert!(l.upper.join("dir/sub").is_dir());
    // Other lower files still show through the copied-up directories.
    assert_eq!(c.read_file("dir/b.txt").unwrap(), b"bee");
    assert_eq!(names(&mut c, "dir"), ["b.txt", "sub"]);

    // Truncate-on-open copies up without data; mode and times are kept.
    c.write_file("exec.sh", 0, b"new", true).unwrap();
    assert_eq!(c.read_file("exec.sh").unwrap(), b"new");
    let a = c.resolve("exec.sh").unwrap().attr;
    assert_eq!(a.mode & 0o7777, 0o755);
    assert_eq!(tree_hash(&l.lower), before);
}

#[test]
fn setattr_copies_up_and_keeps_times() {
    let l = layers();
    let before = tree_hash(&l.lower);
    let mut c = cow_client(&l);
    let e = c.resolve("a.txt").unwrap();
    let a = c.chmod(e.nodeid, 0o600).unwrap();
    assert_eq!(a.mode & 0o7777, 0o600);
    assert_eq!(a.mtime, e.attr.mtime, "copy-up keeps mtime");
    assert_eq!(fs::read(l.upper.join("a.txt")).unwrap(), b"hello lower\n");
    let a = c.truncate(e.nodeid, 5).unwrap();
    assert_eq!(a.size, 5);
    assert_eq!(c.read_file("a.txt").unwrap(), b"hello");
    // utimes
    let t = c
        .setattr(
            e.nodeid,
            &abi::SetattrIn {
                valid: abi::fattr::MTIME | abi::fattr::ATIME,
                mtime: 1_000_000,
                atime: 2_000_000,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!((t.mtime, t.atime), (1_000_000, 2_000_000));
    // utimes on a lower-only symlink copies the symlink up.
    let lnk = c.resolve("link").unwrap();
    let t = c
        .setattr(
            lnk.nodeid,
            &abi::SetattrIn {
                valid: abi::fattr::MTIME,
                mtime: 5,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(t.mtime, 5);
    assert_eq!(c.readlink(lnk.nodeid).unwrap(), b"a.txt");
    assert_eq!(
        fs::read_link(l.upper.join("link")).unwrap().to_str(),
        Some("a.txt")
    );
    assert_eq!(tree_hash(&l.lower), before);
}

#[test]
fn deletes_leave_hidden_whiteouts() {
    let l = layers();
    let before = tree_hash(&l.lower);
    let mut c = cow_client(&l);
    c.unlink(ROOT_ID, b"a.txt").unwrap();
    assert_eq!(c.lookup(ROOT_ID, b"a.txt").unwrap_err(), ENOENT);
    assert!(l.upper.join(".wh.a.txt").exists());
    let root = names(&mut c, "");
    assert!(!root.contains(&"a.txt".to_string()));
    assert!(root.iter().all(|n| !n.starts_with(".wh.")), "{root:?}");
    assert_eq!(c.lookup(ROOT_ID, b".wh.a.txt").unwrap_err(), ENOENT);
    assert_eq!(c.unlink(ROOT_ID, b"a.txt").unwrap_err(), ENOENT);

    // Recreate: the whiteout goes, the new file is upper-only.
    let (_, fh) = c.create(ROOT_ID, b"a.txt", O_WRONLY, 0o644).unwrap();
    c.write(fh, 0, b"fresh").unwrap();
    c.release(fh).unwrap();
    assert!(!l.upper.join(".wh.a.txt").exists());
    assert_eq!(c.read_file("a.txt").unwrap(), b"fresh");

    // A copied-up file deleted: whiteout too (the lower copy is still there).
    c.write_file("dir/b.txt", 0, b"B", false).unwrap();
    let dir = c.resolve("dir").unwrap().nodeid;
    c.unlink(dir, b"b.txt").unwrap();
    assert_eq!(c.lookup(dir, b"b.txt").unwrap_err(), ENOENT);
    assert!(!l.upper.join("dir/b.txt").exists());
    assert!(l.upper.join("dir/.wh.b.txt").exists());

    // Guests cannot make or touch reserved names.
    assert_eq!(c.mkdir(ROOT_ID, b".wh.x", 0o755).unwrap_err(), EINVAL);
    assert_eq!(
        c.create(ROOT_ID, b".wh..wh..opq", 0, 0o644).unwrap_err(),
        EINVAL
    );
    assert_eq!(
        c.unlink(ROOT_ID, b".wh..wh..mvm-origins").unwrap_err(),
        ENOENT
    );
    assert_eq!(tree_hash(&l.lower), before);
}

#[test]
fn rmdir_and_mkdir_make_an_opaque_directory() {
    let l = layers();
    let before = tree_hash(&l.lower);
    let mut c = cow_client(&l);
    let dir = c.resolve("dir").unwrap().nodeid;
    assert_eq!(c.rmdir(ROOT_ID, b"dir").unwrap_err(), ENOTEMPTY);
    let sub = c.resolve("dir/sub").unwrap().nodeid;
    c.unlink(sub, b"c.txt").unwrap();
    c.rmdir(dir, b"sub").unwrap();
    c.unlink(dir, b"b.txt").unwrap();
    assert!(names(&mut c, "dir").is_empty());
    c.rmdir(ROOT_ID, b"dir").unwrap();
    assert_eq!(c.lookup(ROOT_ID, b"dir").unwrap_err(), ENOENT);
    assert_eq!(
        c.getattr(dir).unwrap_err(),
        ENOENT,
        "stale node after rmdir"
    );
    let d = c.mkdir(ROOT_ID, b"dir", 0o750).unwrap();
    assert_eq!(d.attr.mode & 0o7777, 0o750);
    assert!(
        names(&mut c, "dir").is_empty(),
        "opaque: lower content hidden"
    );
    assert!(l.upper.join("dir/.wh..wh..opq").exists());
    c.mknod(d.nodeid, b"fifo", 0o010644, 0).unwrap();
    assert_eq!(names(&mut c, "dir"), ["fifo"]);
    // Device nodes are refused.
    assert_eq!(
        c.mknod(d.nodeid, b"sda", 0o060600, 0x800).unwrap_err(),
        EPERM
    );
    // rmdir of a lower-only empty directory.
    c.rmdir(ROOT_ID, b"empty").unwrap();
    assert!(l.upper.join(".wh.empty").exists());
    assert_eq!(tree_hash(&l.lower), before);
}

#[test]
fn renames_across_layers() {
    let l = layers();
    let before = tree_hash(&l.lower);
    let mut c = cow_client(&l);
    let a_ino = c.resolve("a.txt").unwrap().attr.ino;
    let dir = c.resolve("dir").unwrap().nodeid;
    // File: lower -> new name in another directory.
    c.rename(ROOT_ID, b"a.txt", dir, b"moved.txt", 0).unwrap();
    assert_eq!(c.lookup(ROOT_ID, b"a.txt").unwrap_err(), ENOENT);
    assert_eq!(c.read_file("dir/moved.txt").unwrap(), b"hello lower\n");
    assert_eq!(c.resolve("dir/moved.txt").unwrap().attr.ino, a_ino);
    // Directory with lower content: tree copied up, old name whited out.
    let sub_node = c.resolve("dir/sub").unwrap().nodeid;
    c.rename(ROOT_ID, b"dir", ROOT_ID, b"dir2", 0).unwrap();
    assert_eq!(c.lookup(ROOT_ID, b"dir").unwrap_err(), ENOENT);
    assert_eq!(names(&mut c, "dir2"), ["b.txt", "moved.txt", "sub"]);
    assert_eq!(c.read_file("dir2/sub/c.txt").unwrap(), b"sea");
    // Node IDs follow the rename.
    assert_eq!(c.getattr(sub_node).unwrap().mode & 0o170000, 0o040000);
    assert_eq!(c.lookup(sub_node, b"c.txt").unwrap().attr.size, 3);
    // Rename over an existing lower file.
    c.rename(ROOT_ID, b"hard1", ROOT_ID, b"exec.sh", 0).unwrap();
    assert_eq!(c.read_file("exec.sh").unwrap(), b"linked");
    assert_eq!(c.lookup(ROOT_ID, b"hard1").unwrap_err(), ENOENT);
    // NOREPLACE and EXCHANGE.
    assert_eq!(
        c.rename(ROOT_ID, b"exec.sh", ROOT_ID, b"link", RENAME_NOREPLACE)
            .unwrap_err(),
        EEXIST
    );
    c.rename(ROOT_ID, b"exec.sh", ROOT_ID, b"link", RENAME_EXCHANGE)
        .unwrap();
    assert_eq!(c.read_file("link").unwrap(), b"linked");
    let l2 = c.resolve("exec.sh").unwrap().nodeid;
    assert_eq!(c.readlink(l2).unwrap(), b"a.txt");
    // Directory onto an empty lower directory: opaque.
    c.mkdir(ROOT_ID, b"newdir", 0o755).unwrap();
    c.rename(ROOT_ID, b"newdir", ROOT_ID, b"empty", 0).unwrap();
    assert!(l.upper.join("empty/.wh..wh..opq").exists());
    // Errors.
    let d2 = c.resolve("dir2").unwrap().nodeid;
    assert_eq!(
        c.rename(ROOT_ID, b"dir2", d2, b"inside", 0).unwrap_err(),
        EINVAL
    );
    assert_eq!(
        c.rename(ROOT_ID, b"dir2", ROOT_ID, b"exec.sh", 0)
            .unwrap_err(),
        ENOTDIR
    );
    assert_eq!(
        c.rename(ROOT_ID, b"exec.sh", ROOT_ID, b"dir2", 0)
            .unwrap_err(),
        EISDIR
    );
    assert_eq!(
        c.rename(ROOT_ID, b"nope", ROOT_ID, b"x", 0).unwrap_err(),
        ENOENT
    );
    assert_eq!(
        c.rename(ROOT_ID, b"exec.sh", ROOT_ID, b"x", 4).unwrap_err(),
        EINVAL
    );
    assert_eq!(tree_hash(&l.lower), before);
}

#[test]
fn big_directory_renames_fall_back_to_exdev() {
    let l = layers();
    for i in 0..20 {
        fs::write(l.lower.join(format!("dir/f{i}")), b"x").unwrap();
    }
    let mut c = client_with(
        cow_config(&l),
        Limits {
            max_tree_copy_entries: 10,
            ..Limits::default()
        },
    );
    assert_eq!(
        c.rename(ROOT_ID, b"dir", ROOT_ID, b"d2", 0).unwrap_err(),
        EXDEV
    );
    assert!(
        !l.upper.join("dir").exists(),
        "nothing copied before refusing"
    );
    c.rename(ROOT_ID, b"empty", ROOT_ID, b"e2", 0).unwrap();
}

#[test]
fn links_and_symlinks() {
    let l = layers();
    let mut c = cow_client(&l);
    let a = c.resolve("a.txt").unwrap();
    let e = c.link(a.nodeid, ROOT_ID, b"a.hard").unwrap();
    assert_eq!(e.attr.nlink, 2);
    assert_eq!(e.attr.ino, a.attr.ino);
    assert_eq!(fs::metadata(l.upper.join("a.hard")).unwrap().nlink(), 2);
    let dir = c.resolve("dir").unwrap();
    assert_eq!(c.link(dir.nodeid, ROOT_ID, b"dirlink").unwrap_err(), EPERM);
    let s = c.symlink(ROOT_ID, b"sym", b"/etc/passwd").unwrap();
    assert_eq!(s.attr.mode & 0o170000, 0o120000);
    assert_eq!(c.readlink(s.nodeid).unwrap(), b"/etc/passwd");
    assert_eq!(c.readlink(a.nodeid).unwrap_err(), EINVAL);
    // Lower hard links keep their link count until copied up.
    assert_eq!(c.resolve("hard2").unwrap().attr.nlink, 2);
}

#[test]
fn readdir_offsets_and_plus() {
    let l = layers();
    let mut c = cow_client(&l);
    let fh = c.opendir(ROOT_ID).unwrap();
    let all = c.readdir(fh, 0, 65536, false).unwrap();
    let names: Vec<_> = all
        .iter()
        .map(|i| String::from_utf8_lossy(&i.name).into_owned())
        .collect();
    assert_eq!(&names[..2], [".", ".."]);
    assert!(names.contains(&"a.txt".to_string()));
    // Resume from every offset: the rest of the listing, in order.
    for (k, item) in all.iter().enumerate() {
        let rest = c.readdir(fh, item.off, 65536, false).unwrap();
        assert_eq!(rest.len(), all.len() - k - 1);
    }
    // A tiny buffer yields one entry at a time, never a partial one.
    let one = c.readdir(fh, 0, 40, false).unwrap();
    assert_eq!(one.len(), 1);
    assert!(c.readdir(fh, 0, 10, false).unwrap().is_empty());
    c.releasedir(fh).unwrap();
    assert_eq!(c.releasedir(fh).unwrap_err(), EBADF);

    // READDIRPLUS counts one lookup per entry except . and ..
    let before = c.server.filesystem().inode_count();
    let fh = c.opendir(ROOT_ID).unwrap();
    let plus = c.readdir(fh, 0, 65536, true).unwrap();
    assert_eq!(plus[0].entry.unwrap().nodeid, 0);
    assert_eq!(plus[1].entry.unwrap().nodeid, 0);
    let a = plus.iter().find(|i| i.name == b"a.txt").unwrap();
    assert_eq!(a.entry.unwrap().attr.size, 12);
    assert_eq!(a.typ, 8);
    assert!(c.server.filesystem().inode_count() >= before + plus.len() - 2);
    for i in &plus[2..] {
        c.forget(i.entry.unwrap().nodeid, 1);
    }
    assert_eq!(c.server.filesystem().inode_count(), before);
}

#[test]
fn ro_and_rw_modes() {
    let l = layers();
    let before = tree_hash(&l.lower);
    let fs_ro = Filesystem::new(&ShareConfig {
        lower: l.lower.clone(),
        upper: None,
        mode: ShareMode::Ro,
        masked: Vec::new(),
        visible: None,
        hidden: Vec::new(),
    })
    .unwrap();
    let mut c = Client::new(Server::new(fs_ro));
    c.init().unwrap();
    assert_eq!(c.read_file("a.txt").unwrap(), b"hello lower\n");
    let a = c.resolve("a.txt").unwrap().nodeid;
    assert_eq!(c.open(a, O_WRONLY).unwrap_err(), EROFS);
    assert_eq!(c.open(a, O_TRUNC).unwrap_err(), EROFS);
    assert_eq!(c.chmod(a, 0o777).unwrap_err(), EROFS);
    assert_eq!(c.unlink(ROOT_ID, b"a.txt").unwrap_err(), EROFS);
    assert_eq!(c.mkdir(ROOT_ID, b"x", 0o755).unwrap_err(), EROFS);
    assert_eq!(c.create(ROOT_ID, b"x", 0, 0o644).unwrap_err(), EROFS);
    assert_eq!(
        c.rename(ROOT_ID, b"a.txt", ROOT_ID, b"b", 0).unwrap_err(),
        EROFS
    );
    assert_eq!(tree_hash(&l.lower), before);
    assert_eq!(fs::read_dir(&l.upper).unwrap().count(), 0);

    let fs_rw = Filesystem::new(&ShareConfig {
        lower: l.lower.clone(),
        upper: None,
        mode: ShareMode::Rw,
        masked: Vec::new(),
        visible: None,
        hidden: Vec::new(),
    })
    .unwrap();
    let mut c = Client::new(Server::new(fs_rw));
    c.init().unwrap();
    c.write_file("a.txt", 0, b"HELLO", false).unwrap();
    assert_eq!(fs::read(l.lower.join("a.txt")).unwrap(), b"HELLO lower\n");
    c.mkdir(ROOT_ID, b".wh.allowed", 0o755).unwrap();
    assert!(l.lower.join(".wh.allowed").is_dir());
    c.rename(ROOT_ID, b"dir", ROOT_ID, b"dir2", 0).unwrap();
    assert_eq!(fs::read(l.lower.join("dir2/sub/c.txt")).unwrap(), b"sea");
    c.unlink(ROOT_ID, b"a.txt").unwrap();
    assert!(!l.lower.join("a.txt").exists());
    assert_eq!(fs::read_dir(&l.upper).unwrap().count(), 0);
}

#[test]
fn config_errors() {
    let l = layers();
    let bad = |lower: &std::path::Path, upper: Option<&std::path::Path>, mode| {
        Filesystem::new(&ShareConfig {
            lower: lower.to_path_buf(),
            upper: upper.map(|u| u.to_path_buf()),
            mode,
            masked: Vec::new(),
            visible: None,
            hidden: Vec::new(),
        })
        .unwrap_err()
        .to_string()
    };
    assert!(bad(&l.lower, None, ShareMode::Cow).contains("upper"));
    assert!(bad(&l.lower, Some(&l.upper), ShareMode::Ro).contains("no upper"));
    assert!(bad(&l.lower, Some(&l.lower.join("dir")), ShareMode::Cow).contains("inside"));
    assert!(bad(&l.lower.join("missing"), None, ShareMode::Ro).contains("missing"));
    assert!("cow".parse::<ShareMode>().is_ok());
    assert!("xx"
        .parse::<ShareMode>()
        .unwrap_err()
        .to_string()
        .contains("xx"));
}

#[test]
fn protocol_edges() {
    let l = layers();
    let fs = Filesystem::new(&cow_config(&l)).unwrap();
    let mut c = Client::new(Server::new(fs));
    // Before INIT: EIO.
    assert_eq!(c.getattr(ROOT_ID).unwrap_err(), EIO);
    let init = c.init().unwrap();
    assert_eq!((init.major, init.minor), (7, 41));
    assert_eq!(init.max_write, cowfs::MAX_WRITE);
    assert_ne!(init.flags & abi::init::DO_READDIRPLUS as u32, 0);
    assert_eq!(init.flags & abi::init::WRITEBACK_CACHE as u32, 0);
    // Unknown and unsupported opcodes.
    assert_eq!(c.call(9999, ROOT_ID, &[]).unwrap_err(), ENOSYS);
    assert_eq!(
        c.call(op::GETLK, ROOT_ID, &[&[0u8; 64]]).unwrap_err(),
        ENOSYS
    );
    // Truncated arguments and unterminated names.
    assert_eq!(
        c.call(op::LOOKUP, ROOT_ID, &[b"a.txt"]).unwrap_err(),
        EINVAL
    );
    assert_eq!(
        c.call(op::MKDIR, ROOT_ID, &[&[0u8; 4]]).unwrap_err(),
        EINVAL
    );
    assert_eq!(
        c.call(op::SETATTR, ROOT_ID, &[&[0u8; 87]]).unwrap_err(),
        EINVAL
    );
    assert_eq!(
        c.call(op::WRITE, ROOT_ID, &[&[0u8; 10]]).unwrap_err(),
        EINVAL
    );
    // Header length beyond the buffer, and below the header size.
    let mut req = request(op::GETATTR, ROOT_ID, 77, &[&[0u8; 16]]);
    req[0..4].copy_from_slice(&1000u32.to_le_bytes());
    assert_eq!(c.send(&req).unwrap().0, EINVAL);
    req[0..4].copy_from_slice(&8u32.to_le_bytes());
    assert_eq!(c.send(&req).unwrap().0, EINVAL);
    assert!(c.send(&req[..20]).is_none(), "no header: no reply");
    // Unknown node IDs and handles.
    assert_eq!(c.getattr(123456).unwrap_err(), ESTALE);
    assert_eq!(c.read(999, 0, 10).unwrap_err(), EBADF);
    assert_eq!(c.write(999, 0, b"x").unwrap_err(), EBADF);
    // A write claiming more data than it carries.
    let w = abi::WriteIn {
        fh: 1,
        size: 100,
        ..Default::default()
    };
    assert_eq!(
        c.call(op::WRITE, 0, &[zerocopy::IntoBytes::as_bytes(&w), b"short"])
            .unwrap_err(),
        EINVAL
    );
    // Reply capacity: too small for an entry -> ENOMEM, nothing counted.
    let count = c.server.filesystem().inode_count();
    c.capacity = 100;
    assert_eq!(c.lookup(ROOT_ID, b"a.txt").unwrap_err(), 12);
    assert_eq!(c.server.filesystem().inode_count(), count);
    c.capacity = 10;
    let req = request(op::GETATTR, ROOT_ID, 1, &[&[0u8; 16]]);
    assert!(c.send(&req).is_none(), "no room even for a header");
    c.capacity = 1 << 20;
    // Reads are cut to the capacity.
    let e = c.resolve("a.txt").unwrap();
    let fh = c.open(e.nodeid, 0).unwrap();
    c.capacity = 16 + 5;
    assert_eq!(c.read(fh, 0, 4096).unwrap(), b"hello");
    c.capacity = 1 << 20;
    // FORGET gets no reply; INTERRUPT is ignored.
    assert!(c
        .send(&request(op::FORGET, e.nodeid, 5, &[&1u64.to_le_bytes()]))
        .is_none());
    assert!(c
        .send(&request(op::INTERRUPT, 0, 6, &[&5u64.to_le_bytes()]))
        .is_none());
    // BATCH_FORGET with a lying count.
    let mut b = 1000u32.to_le_bytes().to_vec();
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&e.nodeid.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    assert!(c.send(&request(op::BATCH_FORGET, 0, 7, &[&b])).is_none());
    // STATFS, ACCESS, LSEEK, FSYNC, FLUSH, FALLOCATE on a read-only handle.
    c.call(op::STATFS, ROOT_ID, &[]).unwrap();
    c.call(op::ACCESS, ROOT_ID, &[&[4, 0, 0, 0, 0, 0, 0, 0]])
        .unwrap();
    let ls = abi::LseekIn {
        fh,
        offset: 2,
        whence: 0,
        padding: 0,
    };
    assert_eq!(
        c.call(op::LSEEK, 0, &[zerocopy::IntoBytes::as_bytes(&ls)])
            .unwrap(),
        2u64.to_le_bytes()
    );
    let fa = abi::FallocateIn {
        fh,
        offset: 0,
        length: 10,
        mode: 0,
        padding: 0,
    };
    assert_eq!(
        c.call(op::FALLOCATE, 0, &[zerocopy::IntoBytes::as_bytes(&fa)])
            .unwrap_err(),
        EBADF
    );
    c.call(op::FSYNC, 0, &[&fh.to_le_bytes(), &[0; 8]]).unwrap();
    c.release(fh).unwrap();
    // DESTROY, then everything but INIT is EIO again.
    c.call(op::DESTROY, 0, &[]).unwrap();
    assert_eq!(c.getattr(ROOT_ID).unwrap_err(), EIO);
    c.init().unwrap();
    c.getattr(ROOT_ID).unwrap();
}

#[test]
fn xattrs() {
    let l = layers();
    let mut c = cow_client(&l);
    let a = c.resolve("a.txt").unwrap().nodeid;
    let mut args = 4u32.to_le_bytes().to_vec();
    args.extend_from_slice(&0u32.to_le_bytes());
    args.extend_from_slice(b"user.test\0");
    args.extend_from_slice(b"abcd");
    match c.call(op::SETXATTR, a, &[&args]) {
        // tmpfs before 6.6 has no user xattrs: then nothing more to check.
        Err(95) => return,
        r => {
            r.unwrap();
        }
    }
    let mut g = 0u32.to_le_bytes().to_vec();
    g.extend_from_slice(&[0; 4]);
    g.extend_from_slice(b"user.test\0");
    assert_eq!(
        c.call(op::GETXATTR, a, &[&g]).unwrap(),
        4u32.to_le_bytes()
            .iter()
            .chain(&[0; 4])
            .copied()
            .collect::<Vec<_>>()
    );
    g[0] = 64;
    assert_eq!(c.call(op::GETXATTR, a, &[&g]).unwrap(), b"abcd");
    g[0] = 2;
    assert_eq!(c.call(op::GETXATTR, a, &[&g]).unwrap_err(), 34);
    let list = c
        .call(op::LISTXATTR, a, &[&[0, 1, 0, 0, 0, 0, 0, 0]])
        .unwrap();
    assert!(list.windows(9).any(|w| w == b"user.test"));
    let mut bad = args.clone();
    bad[8..17].copy_from_slice(b"trusted.x");
    assert_eq!(c.call(op::SETXATTR, a, &[&bad]).unwrap_err(), 95);
    c.call(op::REMOVEXATTR, a, &[b"user.test\0"]).unwrap();
    assert!(
        fs::read(l.upper.join("a.txt")).is_ok(),
        "setxattr copied up"
    );
}

#[test]
fn copy_up_on_open_keeps_the_open_flags() {
    let l = layers();
    let mut c = cow_client(&l);
    // O_WRONLY | O_APPEND: the write at offset 0 still appends.
    let a = c.resolve("a.txt").unwrap().nodeid;
    let fh = c.open(a, 0o2001).unwrap();
    c.write(fh, 0, b"more\n").unwrap();
    c.release(fh).unwrap();
    assert_eq!(
        fs::read(l.upper.join("a.txt")).unwrap(),
        b"hello lower\nmore\n"
    );
    // O_RDWR | O_TRUNC: empty, then written.
    let b = c.resolve("dir/b.txt").unwrap().nodeid;
    let fh = c.open(b, 0o1002).unwrap();
    c.write(fh, 0, b"new").unwrap();
    assert_eq!(c.read(fh, 0, 16).unwrap(), b"new");
    c.release(fh).unwrap();
    assert_eq!(fs::read(l.upper.join("dir/b.txt")).unwrap(), b"new");
    // O_WRONLY | O_DSYNC: opened again with the sync flag, data copied.
    let s = c.resolve("dir/sub/c.txt").unwrap().nodeid;
    let fh = c.open(s, 0o10001).unwrap();
    c.write(fh, 3, b"!").unwrap();
    c.release(fh).unwrap();
    assert_eq!(fs::read(l.upper.join("dir/sub/c.txt")).unwrap(), b"sea!");
    assert_eq!(fs::read(l.lower.join("a.txt")).unwrap(), b"hello lower\n");
}

#[test]
fn opened_files_ask_for_no_flush() {
    use zerocopy::{FromBytes, IntoBytes};
    let l = layers();
    let mut c = cow_client(&l);
    let root = ROOT_ID;
    let create = abi::CreateIn {
        flags: 0o101,
        mode: 0o644,
        umask: 0,
        open_flags: 0,
    };
    let mut args = create.as_bytes().to_vec();
    args.extend_from_slice(b"new.txt\0");
    let reply = c.call(op::CREATE, root, &[&args]).unwrap();
    let out = abi::OpenOut::read_from_bytes(&reply[abi::ENTRY_OUT_SIZE..]).unwrap();
    assert_ne!(out.open_flags & abi::FOPEN_NOFLUSH, 0);
    let a = c.resolve("a.txt").unwrap().nodeid;
    let open = abi::OpenIn {
        flags: 0,
        open_flags: 0,
    };
    let reply = c.call(op::OPEN, a, &[open.as_bytes()]).unwrap();
    let out = abi::OpenOut::read_from_bytes(&reply).unwrap();
    assert_ne!(out.open_flags & abi::FOPEN_NOFLUSH, 0);
}

#[test]
fn xattrs_switched_off_are_enosys() {
    let l = layers();
    let mut c = cow_client(&l);
    let a = c.resolve("a.txt").unwrap().nodeid;
    c.server.set_xattr(false);
    let mut set = 4u32.to_le_bytes().to_vec();
    set.extend_from_slice(&0u32.to_le_bytes());
    set.extend_from_slice(b"user.test\0abcd");
    let mut get = 64u32.to_le_bytes().to_vec();
    get.extend_from_slice(&[0; 4]);
    get.extend_from_slice(b"security.capability\0");
    // ENOSYS (38): the Linux client then stops sending these.
    assert_eq!(c.call(op::GETXATTR, a, &[&get]).unwrap_err(), 38);
    let list = [0, 1, 0, 0, 0, 0, 0, 0];
    assert_eq!(c.call(op::LISTXATTR, a, &[&list]).unwrap_err(), 38);
    assert_eq!(c.call(op::SETXATTR, a, &[&set]).unwrap_err(), 38);
    let remove = b"user.test\0";
    assert_eq!(c.call(op::REMOVEXATTR, a, &[remove]).unwrap_err(), 38);
    assert!(!l.upper.join("a.txt").exists(), "nothing was copied up");
    c.server.set_xattr(true);
    assert_eq!(c.call(op::GETXATTR, a, &[&get]).unwrap_err(), 61);
}

#[test]
fn handle_and_inode_tables_are_bounded() {
    let l = layers();
    let mut c = client_with(
        cow_config(&l),
        Limits {
            max_inodes: 16,
            max_handles: 8,
            ..Limits::default()
        },
    );
    let a = c.resolve("a.txt").unwrap().nodeid;
    let mut fhs = Vec::new();
    for _ in 0..8 {
        fhs.push(c.open(a, 0).unwrap());
    }
    assert_eq!(c.open(a, 0).unwrap_err(), EMFILE);
    assert_eq!(c.opendir(ROOT_ID).unwrap_err(), EMFILE);
    c.release(fhs.pop().unwrap()).unwrap();
    c.open(a, 0).unwrap();
    // A guest that never forgets: the table stays at its cap.
    for i in 0..100 {
        c.create(ROOT_ID, format!("f{i}").as_bytes(), 0, 0o644)
            .map(|_| ())
            .unwrap_or(());
        let _ = c.lookup(ROOT_ID, b"a.txt");
    }
    assert!(c.server.filesystem().inode_count() <= 16);
    c.lookup(ROOT_ID, b"dir").unwrap();
}

#[test]
fn readers_follow_a_copy_up() {
    let l = layers();
    let mut c = cow_client(&l);
    let a = c.resolve("a.txt").unwrap().nodeid;
    let reader = c.open(a, 0).unwrap();
    assert_eq!(c.read(reader, 0, 5).unwrap(), b"hello");
    c.write_file("a.txt", 0, b"HELLO", false).unwrap();
    assert_eq!(c.read(reader, 0, 5).unwrap(), b"HELLO");
    let g = abi::GetattrIn {
        getattr_flags: abi::GETATTR_FH,
        dummy: 0,
        fh: reader,
    };
    c.truncate(a, 2).unwrap();
    let out = c
        .call(op::GETATTR, a, &[zerocopy::IntoBytes::as_bytes(&g)])
        .unwrap();
    let (attr, _) = <abi::AttrOut as zerocopy::FromBytes>::read_from_prefix(&out).unwrap();
    assert_eq!(attr.attr.size, 2);
    c.release(reader).unwrap();
}

#[test]
fn setattr_through_a_handle_works_after_unlink() {
    let l = layers();
    let mut c = cow_client(&l);
    let e = c.resolve("dir/b.txt").unwrap();
    let fh = c.open(e.nodeid, O_RDWR).unwrap();
    let dir = c.resolve("dir").unwrap().nodeid;
    c.unlink(dir, b"b.txt").unwrap();
    let a = c
        .setattr(
            e.nodeid,
            &abi::SetattrIn {
                valid: abi::fattr::SIZE | abi::fattr::FH | abi::fattr::MODE,
                fh,
                size: 1,
                mode: 0o600,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!((a.size, a.mode & 0o7777), (1, 0o600));
    assert_eq!(c.read(fh, 0, 10).unwrap(), b"b");
    // Without a handle the unlinked node is gone.
    assert_eq!(c.truncate(e.nodeid, 0).unwrap_err(), ENOENT);
    c.release(fh).unwrap();
}

/// READDIRPLUS answers each entry from the parent's directories opened
/// once; what it reports must be exactly what a LOOKUP of that name says,
/// across every kind of layering (lower only, copied up, whited out,
/// opaque, new in the upper).
#[test]
fn readdirplus_entries_match_lookups() {
    let l = layers();
    let mut c = cow_client(&l);
    c.write_file("dir/b.txt", 0, b"B", false).unwrap(); // copy-up
    let (p, n) = c.parent_of("dir/sub/c.txt").unwrap();
    c.unlink(p, n).unwrap(); // whiteout
    let (p, n) = c.parent_of("dir/sub").unwrap();
    c.rmdir(p, n).unwrap(); // whiteout of a directory
    let sub = c.mkdir(p, b"sub", 0o750).unwrap().nodeid; // ... recreated: opaque
    let (_, fh) = c.create(sub, b"new.txt", 1, 0o644).unwrap();
    c.release(fh).unwrap();
    let made = c.mkdir(ROOT_ID, b"made", 0o755).unwrap().nodeid; // upper only
    let (_, fh) = c.create(made, b"x", 1, 0o600).unwrap();
    c.write(fh, 0, b"x").unwrap();
    c.release(fh).unwrap();
    let (p, n) = c.parent_of("a.txt").unwrap();
    c.unlink(p, n).unwrap();
    for dir in ["", "dir", "dir/sub", "made", "empty"] {
        let node = if dir.is_empty() {
            ROOT_ID
        } else {
            c.resolve(dir).unwrap().nodeid
        };
        for item in c.list(node).unwrap() {
            let name = String::from_utf8(item.name.clone()).unwrap();
            let path = if dir.is_empty() {
                name.clone()
            } else {
                format!("{dir}/{name}")
            };
            let plus = item.entry.unwrap().attr;
            let looked = c.resolve(&path).unwrap().attr;
            assert_eq!(
                (plus.ino, plus.mode, plus.size, plus.nlink),
                (looked.ino, looked.mode, looked.size, looked.nlink),
                "{path}"
            );
        }
    }
    let names = |c: &mut Client, d: &str| {
        let node = c.resolve(d).unwrap().nodeid;
        let mut v: Vec<_> = c.list(node).unwrap().into_iter().map(|i| i.name).collect();
        v.sort();
        v
    };
    assert_eq!(names(&mut c, "dir/sub"), [b"new.txt".to_vec()]);
    assert!(!names(&mut c, "").contains(&b"a.txt".to_vec()));
}

/// HANDLE_KILLPRIV_V2: offered at INIT (so the guest kernel stops asking
/// GETXATTR before every write); the server then drops set-ID bits when
/// a writer without CAP_FSETID writes or truncates, and only then.
#[test]
fn killpriv_v2_drops_set_id_bits_when_asked() {
    use std::os::unix::fs::PermissionsExt;
    use zerocopy::IntoBytes;
    let l = layers();
    for f in ["suid1", "suid2", "suid3"] {
        fs::write(l.lower.join(f), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(l.lower.join(f), fs::Permissions::from_mode(0o6755)).unwrap();
    }
    let mut c = cow_client(&l);
    let i = abi::InitInCompat {
        major: 7,
        minor: 41,
        max_readahead: 1 << 17,
        flags: abi::init::HANDLE_KILLPRIV_V2 as u32,
    };
    let ext = abi::InitInExt::default();
    let b = c
        .call(op::INIT, 0, &[i.as_bytes(), ext.as_bytes()])
        .unwrap();
    let out: abi::InitOut = zerocopy::FromBytes::read_from_prefix(&b[..]).unwrap().0;
    assert_ne!(u64::from(out.flags) & abi::init::HANDLE_KILLPRIV_V2, 0);

    let write = |c: &mut Client, path: &str, kill: bool| {
        let e = c.resolve(path).unwrap();
        let fh = c.open(e.nodeid, 1).unwrap();
        let w = abi::WriteIn {
            fh,
            offset: 0,
            size: 1,
            write_flags: if kill { abi::WRITE_KILL_SUIDGID } else { 0 },
            ..Default::default()
        };
        c.call(op::WRITE, e.nodeid, &[w.as_bytes(), b"#"]).unwrap();
        c.release(fh).unwrap();
        c.resolve(path).unwrap().attr.mode & 0o7777
    };
    // A writer with CAP_FSETID (no flag): bits stay, but a root server
    // keeps no set-ID bit in the upper layer at all.
    let kept = if rustix::process::geteuid().is_root() {
        0o755
    } else {
        0o6755
    };
    assert_eq!(write(&mut c, "suid1", false), kept);
    // Without: set-user-ID and (group-executable) set-group-ID go.
    assert_eq!(write(&mut c, "suid2", true), 0o755);
    assert_eq!(
        fs::metadata(l.upper.join("suid2"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o755
    );
    // A truncate asking for it.
    let e = c.resolve("suid3").unwrap();
    let s = abi::SetattrIn {
        valid: abi::fattr::SIZE | abi::fattr::KILL_SUIDGID,
        size: 0,
        ..Default::default()
    };
    assert_eq!(c.setattr(e.nodeid, &s).unwrap().mode & 0o7777, 0o755);
    // The host's files are untouched.
    for f in ["suid1", "suid2", "suid3"] {
        let m = fs::metadata(l.lower.join(f)).unwrap().permissions().mode();
        assert_eq!(m & 0o7777, 0o6755, "{f}");
    }
}
