//! `mvm commit` as a real process: a guest's folder-for-file replacement
//! cannot make it delete a deep host edit, files that run on the host need
//! `--yes`, and a commit killed with SIGKILL at each of its points leaves
//! the host folder whole (as before or as committed, once the next mvm
//! command on the VM finished it) with no temporaries, and the next commit
//! works. The guest's changes are made through the cowfs server itself,
//! into the VM's upper layer, as a running guest would.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cowfs::abi::ROOT_ID;
use cowfs::client::Client;
use cowfs::{Filesystem, ShareConfig, ShareMode};
use mvm_test_guests::{code, elf_kernel, program};

struct Env {
    home: PathBuf,
    kernel: PathBuf,
    project: PathBuf,
}

impl Env {
    /// MVM_HOME with a persistent VM `web` on a project folder holding
    /// a.txt, tool.sh (0755) and dir/{b.txt, sub/c.txt}.
    fn new(name: &str) -> Env {
        let home = std::env::temp_dir().join(format!("mvm-commit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).unwrap();
        let kernel = home.join("tiny.elf");
        std::fs::write(&kernel, elf_kernel(&program(&[code::SPIN]), true)).unwrap();
        let project = home.join("proj");
        std::fs::create_dir_all(project.join("dir/sub")).unwrap();
        std::fs::write(project.join("a.txt"), b"host a\n").unwrap();
        std::fs::write(project.join("tool.sh"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            project.join("tool.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(project.join("dir/b.txt"), b"bee").unwrap();
        std::fs::write(project.join("dir/sub/c.txt"), b"host edit target").unwrap();
        let env = Env {
            home,
            kernel,
            project,
        };
        let p = env.project.to_str().unwrap().to_string();
        env.ok(&["create", "web", "--persistent", "--project", &p]);
        let mode = std::fs::metadata(env.home.join("vms/web")).unwrap().mode();
        assert_eq!(mode & 0o777, 0o700, "the VM folder is its owner's only");
        env
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mvm"));
        c.args(args)
            .env("MVM_HOME", &self.home)
            .env("MVM_KERNEL", &self.kernel)
            .env("MVM_INIT", "/bin/true")
            .env("MVM_ALLOW_PVM_HOST", "1")
            .env_remove("MVM_TEST_COMMIT_PAUSE")
            .stdin(Stdio::null());
        c
    }

    fn mvm(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.mvm(args);
        assert!(o.status.success(), "mvm {args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// The guest's view of the project, over the VM's upper layer.
    fn guest(&self) -> Client {
        let upper = self.home.join("vms/web/state/upper/project");
        std::fs::create_dir_all(&upper).unwrap();
        let fs = Filesystem::new(&ShareConfig {
            lower: self.project.clone(),
            upper: Some(upper),
            mode: ShareMode::Cow,
            masked: Vec::new(),
            visible: None,
            hidden: Vec::new(),
        })
        .unwrap();
        let mut c = Client::new(cowfs::Server::new(fs));
        c.init().unwrap();
        c
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The guest replaces the folder `dir` with a file.
fn replace_dir_with_file(c: &mut Client) {
    c.remove_tree("dir").unwrap();
    c.create_file(ROOT_ID, b"dir", 0o644, b"a file now")
        .unwrap();
}

/// Edits a file, replaces a folder by a file, adds an executable and a
/// folder.
fn guest_work(env: &Env) {
    let mut c = env.guest();
    c.write_file("a.txt", 0, b"GUEST", false).unwrap();
    replace_dir_with_file(&mut c);
    c.create_file(ROOT_ID, b"new.sh", 0o755, b"#!/bin/sh\necho new\n")
        .unwrap();
    let d = c.mkdir(ROOT_ID, b"newdir", 0o755).unwrap();
    c.create_file(d.nodeid, b"n.txt", 0o644, b"n").unwrap();
}

/// Kind, mode and content of everything in a folder.
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let desc = if m.is_dir() {
                stack.push(p.clone());
                format!("dir {:o}", m.mode())
            } else {
                format!("file {:o} {:?}", m.mode(), std::fs::read(&p).unwrap())
            };
            out.insert(rel, desc);
        }
    }
    out
}

fn temporaries(t: &BTreeMap<String, String>) -> Vec<&String> {
    t.keys()
        .filter(|k| k.split('/').any(|n| n.starts_with(".wh.")))
        .collect()
}

#[test]
fn a_folder_replaced_by_a_file_cannot_delete_a_deep_host_edit() {
    let env = Env::new("deep");
    replace_dir_with_file(&mut env.guest());
    // The host edits a file deep in that folder, in place.
    std::fs::write(env.project.join("dir/sub/c.txt"), b"HOST EDIT, keep me").unwrap();
    let before = tree(&env.project);
    let o = env.mvm(&["commit", "web", "--yes"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        err.contains("refusing to commit") && err.contains("dir/sub/c.txt"),
        "{err}"
    );
    assert_eq!(tree(&env.project), before, "nothing applied");
    assert_eq!(
        std::fs::read(env.project.join("dir/sub/c.txt")).unwrap(),
        b"HOST EDIT, keep me"
    );
}

#[test]
fn files_that_run_on_the_host_need_yes() {
    let env = Env::new("yes");
    guest_work(&env);
    let before = tree(&env.project);
    let o = env.mvm(&["commit", "web"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{}", text(&o));
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains("without --yes: new.sh;"), "{err}");
    assert_eq!(tree(&env.project), before, "nothing applied");
    // A dry run says what needs it.
    let err = env.ok(&["commit", "web", "--dry-run"]);
    assert!(err.contains("need --yes: new.sh"), "{err}");
    env.ok(&["commit", "web", "--yes"]);
    assert_eq!(
        std::fs::read(env.project.join("new.sh")).unwrap(),
        b"#!/bin/sh\necho new\n"
    );
}

/// `mvm commit web` on a real terminal (util-linux `script` gives it a
/// pseudo-terminal), answering `answer` to its question; what the
/// terminal showed.
fn commit_on_a_terminal(env: &Env, answer: &str) -> String {
    use std::io::{Read, Write};
    let cmd = env.command(&[]);
    let mut c = Command::new("script");
    c.args([
        "-qec",
        &format!("'{}' commit web", env!("CARGO_BIN_EXE_mvm")),
        "/dev/null",
    ])
    .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
    .env_remove("MVM_TEST_COMMIT_PAUSE")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().expect("util-linux script");
    // Held open until mvm ends: an early EOF would hang the terminal up.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(answer.as_bytes()).unwrap();
    let status = child.wait().unwrap();
    drop(stdin);
    let mut shown = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut shown)
        .unwrap();
    assert!(status.code().is_some(), "{status}: {shown}");
    shown
}

#[test]
fn on_a_terminal_commit_asks_and_applies_only_on_yes() {
    let env = Env::new("prompt");
    guest_work(&env);
    let before = tree(&env.project);
    let shown = commit_on_a_terminal(&env, "n\n");
    assert!(
        shown.contains("run on the host")
            && shown.contains("new.sh")
            && shown.contains("Apply them? [y/N]"),
        "{shown}"
    );
    assert_eq!(tree(&env.project), before, "a no applies nothing: {shown}");
    let shown = commit_on_a_terminal(&env, "y\n");
    assert_eq!(
        std::fs::read(env.project.join("new.sh")).unwrap(),
        b"#!/bin/sh\necho new\n",
        "{shown}"
    );
}

/// Runs `mvm commit web --yes` until it reports being paused at `point`,
/// then kills it with SIGKILL. False if it finished before that point.
fn commit_killed_at(env: &Env, point: u32) -> bool {
    let mut child = env
        .command(&["commit", "web", "--yes"])
        .env("MVM_TEST_COMMIT_PAUSE", point.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let marker = format!("mvm: paused at commit point {point}");
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    // Blocks until the line comes, or ends when the process exits.
    let mut paused = false;
    let mut seen = Vec::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        if line == marker {
            paused = true;
            break;
        }
        seen.push(line);
    }
    if paused {
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
    } else {
        let status = child.wait().unwrap();
        assert!(status.success(), "point {point}: {status} {seen:?}");
    }
    paused
}

#[test]
fn a_commit_killed_at_any_point_leaves_the_host_folder_whole() {
    // The host folder a whole commit makes.
    let committed = {
        let env = Env::new("whole");
        guest_work(&env);
        env.ok(&["commit", "web", "--yes"]);
        tree(&env.project)
    };
    assert!(temporaries(&committed).is_empty());
    let mut point = 1;
    while {
        let env = Env::new(&format!("kill{point}"));
        guest_work(&env);
        let before = tree(&env.project);
        let killed = commit_killed_at(&env, point);
        if killed {
            // The next command on the VM finishes the commit.
            let err = env.ok(&["diff", "web"]);
            let (want, how) = if point <= 2 {
                (&before, "undone")
            } else {
                (&committed, "completed")
            };
            assert!(
                err.contains(&format!(
                    "interrupted commit to {} was {how}",
                    env.project.display()
                )),
                "point {point}: {err}"
            );
            let now = tree(&env.project);
            assert!(temporaries(&now).is_empty(), "point {point}: {now:?}");
            assert_eq!(&now, want, "point {point}");
            // And the next commit works.
            env.ok(&["commit", "web", "--yes"]);
            assert_eq!(tree(&env.project), committed, "point {point}");
        }
        killed
    } {
        point += 1;
    }
    assert!(point > 8, "the commit passed only {} points", point - 1);
}
