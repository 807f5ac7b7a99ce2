//! Views: a root share that shows only allowed host paths (a system view of
//! the host's `/`), minus hidden secrets inside them, with the upper layer
//! kept where the guest cannot see it.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

use common::client_with;
use cowfs::client::Client;
use cowfs::{CowfsError, Filesystem, Limits, ShareConfig, ShareMode};

const ENOENT: i32 = 2;

/// A fake host root: system trees, secrets among them, homes, mvm's state
/// (where the upper lives).
struct Host {
    _dir: tempfile::TempDir,
    root: PathBuf,
    upper: PathBuf,
}

fn host() -> Host {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for d in [
        "usr/bin",
        "etc/ssh",
        "etc/sudoers.d",
        "home/alice/.ssh",
        "home/alice/.config",
        "root",
        "srv",
        "proc/1",
        "state/vm",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    for (f, data) in [
        ("usr/bin/python3", "#!python"),
        ("etc/passwd", "root:x:0:0::/root:/bin/sh"),
        ("etc/shadow", "root:SECRET"),
        ("etc/ssh/ssh_config", "Host *"),
        ("etc/ssh/ssh_host_ed25519_key", "SECRET KEY"),
        ("etc/sudoers.d/admin", "SECRET"),
        ("home/alice/.ssh/id_ed25519", "SECRET KEY"),
        ("home/alice/.gitconfig", "[user]"),
        ("home/alice/.config/tool.toml", "x = 1"),
        ("root/.bash_history", "SECRET"),
        ("srv/data", "x"),
    ] {
        fs::write(root.join(f), data).unwrap();
    }
    symlink("usr/bin", root.join("bin")).unwrap();
    let upper = root.join("state/vm/upper");
    fs::create_dir_all(&upper).unwrap();
    Host {
        _dir: dir,
        root,
        upper,
    }
}

fn config(h: &Host, visible: &[&str], hidden: &[&str]) -> ShareConfig {
    ShareConfig {
        lower: h.root.clone(),
        upper: Some(h.upper.clone()),
        mode: ShareMode::Cow,
        masked: vec![h.root.join("proc")],
        visible: Some(visible.iter().map(|p| h.root.join(p)).collect()),
        hidden: hidden.iter().map(|p| h.root.join(p)).collect(),
    }
}

fn names(c: &mut Client, path: &str) -> Vec<String> {
    let node = c.resolve(path).unwrap().nodeid;
    let mut n: Vec<String> = c
        .list(node)
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .collect();
    n.sort();
    n
}

#[test]
fn only_visible_paths_exist_and_hidden_ones_are_absent() {
    let h = host();
    let mut c = client_with(
        config(
            &h,
            &["usr", "bin", "etc", "proc", "home/alice/.gitconfig"],
            &[
                "etc/shadow",
                "etc/sudoers.d",
                "etc/ssh/ssh_host_ed25519_key",
            ],
        ),
        Limits::default(),
    );
    // The root lists only the view; a visible symlink stays a symlink.
    assert_eq!(names(&mut c, "/"), ["bin", "etc", "home", "proc", "usr"]);
    let bin = c.resolve("bin").unwrap().nodeid;
    assert_eq!(c.readlink(bin).unwrap(), b"usr/bin");
    assert_eq!(c.read_file("usr/bin/python3").unwrap(), b"#!python");
    assert_eq!(
        c.read_file("etc/passwd").unwrap(),
        b"root:x:0:0::/root:/bin/sh"
    );
    assert_eq!(c.read_file("etc/ssh/ssh_config").unwrap(), b"Host *");
    // A home path given alone: its folders on the way list only it.
    assert_eq!(names(&mut c, "home"), ["alice"]);
    assert_eq!(names(&mut c, "home/alice"), [".gitconfig"]);
    assert_eq!(c.read_file("home/alice/.gitconfig").unwrap(), b"[user]");
    // Secrets: absent, never readable, whatever the path to them.
    for secret in [
        "etc/shadow",
        "etc/sudoers.d",
        "etc/sudoers.d/admin",
        "etc/ssh/ssh_host_ed25519_key",
        "home/alice/.ssh",
        "home/alice/.ssh/id_ed25519",
        "home/alice/.config/tool.toml",
        "root",
        "root/.bash_history",
        "srv/data",
        "state",
        "state/vm/upper",
    ] {
        assert_eq!(c.resolve(secret).err(), Some(ENOENT), "{secret}");
    }
    assert!(!names(&mut c, "etc").contains(&"shadow".to_string()));
    assert_eq!(names(&mut c, "etc/ssh"), ["ssh_config"]);
    // A masked folder inside the view is still an empty mount point.
    assert!(names(&mut c, "proc").is_empty());
    // The guest may make its own /root or /etc/shadow: they land in the
    // upper, and the host's stay as they were.
    let root = c.mkdir(1, b"root", 0o700).unwrap();
    assert!(c.list(root.nodeid).unwrap().is_empty());
    let etc = c.resolve("etc").unwrap().nodeid;
    c.create_file(etc, b"shadow", 0o600, b"guest").unwrap();
    assert_eq!(c.read_file("etc/shadow").unwrap(), b"guest");
    assert_eq!(fs::read(h.root.join("etc/shadow")).unwrap(), b"root:SECRET");
    assert!(h.upper.join("etc/shadow").exists());
}

#[test]
fn an_upper_inside_the_lower_is_accepted_only_where_the_guest_cannot_see() {
    let h = host();
    // The upper is inside a visible tree: refused.
    assert!(matches!(
        Filesystem::new(&config(&h, &["state"], &[])),
        Err(CowfsError::Nested(_))
    ));
    // Hidden inside a visible tree: accepted.
    assert!(Filesystem::new(&config(&h, &["state"], &["state/vm"])).is_ok());
}

#[test]
fn read_only_shares_take_a_view_too() {
    let h = host();
    let mut c = client_with(
        ShareConfig {
            lower: h.root.join("home/alice"),
            upper: None,
            mode: ShareMode::Ro,
            masked: Vec::new(),
            visible: Some(vec![
                h.root.join("home/alice/.gitconfig"),
                h.root.join("home/alice/.config"),
            ]),
            hidden: Vec::new(),
        },
        Limits::default(),
    );
    assert_eq!(names(&mut c, "/"), [".config", ".gitconfig"]);
    assert_eq!(c.read_file(".config/tool.toml").unwrap(), b"x = 1");
    assert_eq!(c.resolve(".ssh/id_ed25519").err(), Some(ENOENT));
    assert_eq!(c.resolve(".ssh").err(), Some(ENOENT));
}
