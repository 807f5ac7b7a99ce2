//! `diff` and `commit` of an upper layer made through the server.

mod common;

use std::fs;
use std::path::PathBuf;

use common::*;
use cowfs::abi::ROOT_ID;
use cowfs::{commit, diff, Approval, Change, ChangeKind, CommitError, CommitOptions, Report};

/// A commit with every file that runs on the host approved (`--yes`).
fn commit_all(l: &Layers, dry_run: bool) -> Result<Report, CommitError> {
    let opts = CommitOptions {
        dry_run,
        approval: Approval::All,
        ..Default::default()
    };
    commit(&l.lower, &l.upper, &opts)
}

fn changes(v: &[(ChangeKind, &str)]) -> Vec<Change> {
    v.iter()
        .map(|(k, p)| Change {
            kind: *k,
            path: PathBuf::from(p),
        })
        .collect()
}

/// Modifies, deletes, adds and renames through the guest.
fn work(c: &mut cowfs::client::Client) {
    c.write_file("a.txt", 0, b"HELLO", false).unwrap();
    let dir = c.resolve("dir").unwrap().nodeid;
    c.unlink(dir, b"b.txt").unwrap();
    let (_, fh) = c.create(ROOT_ID, b"new.txt", O_WRONLY, 0o644).unwrap();
    c.write(fh, 0, b"new").unwrap();
    c.release(fh).unwrap();
    let nd = c.mkdir(ROOT_ID, b"newdir", 0o755).unwrap();
    c.symlink(nd.nodeid, b"ln", b"../a.txt").unwrap();
    c.rename(dir, b"sub", ROOT_ID, b"sub2", 0).unwrap();
    let e = c.resolve("exec.sh").unwrap();
    c.chmod(e.nodeid, 0o700).unwrap();
    // Copied up but unchanged: not a change.
    let h = c.resolve("hard1").unwrap();
    c.setattr(
        h.nodeid,
        &cowfs::abi::SetattrIn {
            valid: cowfs::abi::fattr::MODE,
            mode: 0o644,
            ..Default::default()
        },
    )
    .unwrap();
}

#[test]
fn diff_lists_changes_and_commit_applies_them() {
    let l = layers();
    let mut c = cow_client(&l);
    work(&mut c);
    let expected = changes(&[
        (ChangeKind::Modified, "a.txt"),
        (ChangeKind::Deleted, "dir/b.txt"),
        (ChangeKind::Deleted, "dir/sub"),
        (ChangeKind::Modified, "exec.sh"),
        (ChangeKind::Added, "new.txt"),
        (ChangeKind::Added, "newdir"),
        (ChangeKind::Added, "newdir/ln"),
        (ChangeKind::Added, "sub2"),
        (ChangeKind::Added, "sub2/c.txt"),
    ]);
    assert_eq!(diff(&l.lower, &l.upper).unwrap(), expected);
    assert_eq!(expected[0].to_string(), "M a.txt");

    let before = tree_hash(&l.lower);
    let r = commit_all(&l, true).unwrap();
    assert!(!r.applied);
    assert_eq!(r.changes, expected);
    assert_eq!(tree_hash(&l.lower), before, "dry run changes nothing");

    let merged = guest_tree(&mut c);
    let r = commit_all(&l, false).unwrap();
    assert!(r.applied);
    let mut host = host_tree(&l.lower);
    let mut merged = merged;
    // Hard links are not recreated by a commit; compare without counts.
    for t in [&mut host, &mut merged] {
        for o in t.values_mut() {
            o.nlink = 0;
        }
    }
    assert_same("host after commit vs merged view", &merged, &host);
    assert_eq!(diff(&l.lower, &l.upper).unwrap(), vec![]);

    // More work after a commit commits too.
    c.write_file("a.txt", 0, b"J", false).unwrap();
    commit_all(&l, false).unwrap();
    assert_eq!(fs::read(l.lower.join("a.txt")).unwrap(), b"JELLO lower\n");
}

#[test]
fn commit_refuses_when_the_host_changed() {
    let l = layers();
    let mut c = cow_client(&l);
    work(&mut c);
    // The host edits a file the guest modified, creates one the guest
    // added, and changes a file inside a directory the guest deleted.
    next_mtime_tick(l.dir.path());
    fs::write(l.lower.join("a.txt"), b"host edit").unwrap();
    fs::write(l.lower.join("new.txt"), b"host new").unwrap();
    fs::write(l.lower.join("dir/sub/c.txt"), b"host sea, longer").unwrap();
    let before = tree_hash(&l.lower);
    for dry_run in [true, false] {
        let err = commit_all(&l, dry_run).unwrap_err();
        let CommitError::Conflicts(list) = &err else {
            panic!("{err}")
        };
        let mut paths: Vec<_> = list
            .iter()
            .map(|c| c.path.to_string_lossy().into_owned())
            .collect();
        paths.sort();
        assert_eq!(paths, ["a.txt", "dir/sub/c.txt", "new.txt"], "{err}");
        assert!(
            err.to_string().contains("a.txt: changed on the host"),
            "{err}"
        );
    }
    assert_eq!(tree_hash(&l.lower), before, "nothing applied");
}

#[test]
fn diff_of_an_opaque_directory() {
    let l = layers();
    let mut c = cow_client(&l);
    c.remove_tree("dir").unwrap();
    let d = c.mkdir(ROOT_ID, b"dir", 0o755).unwrap();
    c.create(d.nodeid, b"b.txt", 0, 0o644).unwrap();
    let got = diff(&l.lower, &l.upper).unwrap();
    assert_eq!(
        got,
        changes(&[
            (ChangeKind::Modified, "dir/b.txt"),
            (ChangeKind::Deleted, "dir/sub")
        ])
    );
    commit_all(&l, false).unwrap();
    assert_eq!(fs::read(l.lower.join("dir/b.txt")).unwrap(), b"");
    assert!(!l.lower.join("dir/sub").exists());
}
