//! Shares through our virtio-fs device: a copy-on-write project, a
//! read-only and a read-write share, worked on by a guest script
//! (tests/e2e/guest/fs-workout.sh) while the host checks its folders.

use super::{scenario, suite};

fn fs() -> (mvm_e2e::Scenario, std::collections::HashMap<String, String>) {
    let s = scenario("fs");
    let g = s
        .guest()
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix("fs_").map(|k| (k.to_string(), v)))
        .collect();
    (s, g)
}

fn file(name: &str) -> String {
    std::fs::read_to_string(suite().join("fs").join(name)).unwrap_or_default()
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn project_share_reads_through_to_the_host() {
    let (s, g) = fs();
    assert_eq!(s.status, Some(0), "{}", s.describe());
    assert_eq!(
        g.get("mount").map(String::as_str),
        Some("ok"),
        "{}",
        s.describe()
    );
    assert_eq!(g["read"], "hello project");
    assert_eq!(g["big_md5"], file("big.md5").trim());
    assert_eq!(g["deep"], "deep");
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn guest_sees_its_own_writes() {
    let (s, g) = fs();
    let check = |k: &str, want: &str| {
        assert_eq!(
            g.get(k).map(String::as_str),
            Some(want),
            "fs_{k}\n{}",
            s.describe()
        )
    };
    check("readme", "hello project|appended|");
    check("new", "new file");
    check("deleted", "gone");
    check("renamed", "rename me");
    check("old_name", "gone");
    check("mode", "600");
    check("symlink", "README.txt:hello project");
    check("links", "2");
    check("leaf", "leaf");
    check("moved_dir", "inner:gone");
    check("opaque", "fresh.txt ");
    check("truncated", "0");
    check("zeros", "2097152");
    check("many", "300");
    check("inode_stable", "yes");
    check("umount", "ok");
    let listing = &g["listing"];
    for name in [
        "new.txt",
        "renamed.txt",
        "dir2",
        "made",
        "hardlink.txt",
        "link-to-readme",
    ] {
        assert!(
            listing.split(' ').any(|n| n == name),
            "{name} not in {listing}"
        );
    }
    for gone in ["delete-me.txt", "rename-me.txt", "dir1"] {
        assert!(
            !listing.split(' ').any(|n| n == gone),
            "{gone} still in {listing}"
        );
    }
    assert!(
        !listing.contains(".wh."),
        "whiteouts leaked into the guest: {listing}"
    );
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn host_folders_are_unchanged_and_share_modes_hold() {
    let (s, g) = fs();
    assert_eq!(
        file("lower-unchanged").trim(),
        "yes",
        "{}\n{}",
        file("lower-diff"),
        s.describe()
    );
    assert!(
        g["ro_write"].contains("Read-only file system"),
        "{}",
        g["ro_write"]
    );
    assert_eq!(g["ro_read"], "read only");
    assert_eq!(g["rw_write"], "ok");
    assert_eq!(file("rw-content").trim(), "from the guest");
    assert!(
        file("scratch-left").trim().is_empty(),
        "{}",
        file("scratch-left")
    );
}

/// `dev_*` lines of the managed VM's git/build workout.
fn dev() -> std::collections::HashMap<String, String> {
    mvm_e2e::guest_lines(&file("dev-workout.out"))
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix("dev_").map(|k| (k.to_string(), v)))
        .collect()
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn git_and_a_build_in_a_copy_on_write_project() {
    let g = dev();
    let why = || {
        format!(
            "status {}\n--- out ---\n{}\n--- err ---\n{}\n--- create/start ---\n{}{}",
            file("dev-workout.status"),
            file("dev-workout.out"),
            file("dev-workout.err"),
            file("dev-create.log"),
            file("dev-start.log")
        )
    };
    assert_eq!(file("dev-workout.status").trim(), "0", "{}", why());
    for (k, want) in [
        ("git", "present"),
        ("init", "ok"),
        // The workout script travels in the project (the guest cannot
        // see the checkout), so the repository tracks it too.
        (
            "tracked",
            ".gitignore Makefile dev-workout.sh hello.c notes.txt ",
        ),
        ("status", " M notes.txt|"),
        ("branch", "ok"),
        ("feature_notes", "edited in the guest"),
        ("checkout", "ok"),
        ("main_notes", "first line|"),
        ("clean", "0"),
        ("log", "2"),
        ("fsck", "0"),
        ("make", "ok"),
        ("run", "hello from a build"),
        ("ignored", "!! hello|!! hello.o|"),
    ] {
        assert_eq!(
            g.get(k).map(String::as_str),
            Some(want),
            "dev_{k}\n{}",
            why()
        );
    }
    // The host's folder is untouched; the upper layer holds exactly the
    // repository and the build's outputs (notes.txt was edited and checked
    // out again: same content, so no change).
    assert_eq!(file("dev-lower-unchanged").trim(), "yes");
    let diff = file("dev-diff");
    let lines: Vec<&str> = diff.lines().collect();
    let outside_git: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| *l != "A .git" && !l.starts_with("A .git/"))
        .collect();
    assert_eq!(outside_git, ["A hello", "A hello.o"], "{diff}");
    for want in ["A .git", "A .git/HEAD", "A .git/refs/heads/feature"] {
        assert!(lines.contains(&want), "{want} not in the diff:\n{diff}");
    }
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn virtiofsd_serves_a_share_through_the_vhost_user_front_end() {
    let console = file("vfs-console.log");
    let why = || {
        format!(
            "status {}\n--- stderr ---\n{}\n--- virtiofsd ---\n{}\n--- console ---\n{console}",
            file("vfs-status"),
            file("vfs-stderr"),
            file("virtiofsd.log")
        )
    };
    assert_eq!(file("vfs-status").trim(), "0", "{}", why());
    let g = mvm_e2e::guest_lines(&console);
    let big = file("big.md5");
    for (k, want) in [
        ("mount", "ok"),
        ("read", "served by virtiofsd"),
        ("big_md5", big.trim()),
        ("write", "ok"),
        ("tree", "ok"),
        ("delete", "ok"),
        ("umount", "ok"),
    ] {
        assert_eq!(
            g.get(&format!("vfs_{k}")).map(String::as_str),
            Some(want),
            "vfs_{k}\n{}",
            why()
        );
    }
    // The guest's writes reached the host directory virtiofsd serves.
    assert_eq!(file("vfs-from-guest").trim(), "written through virtiofsd");
    assert_eq!(file("vfs-leaf").trim(), "leaf");
    let ls = file("vfs-host-ls");
    assert!(ls.lines().any(|l| l == "renamed"), "{ls}");
    assert!(!ls.lines().any(|l| l == "delete-me.txt"), "{ls}");
}
