//! mvm-init as a real PID 1: in new PID, mount, network, UTS and IPC
//! namespaces, chrooted into a tmpfs that only that mount namespace sees,
//! so its mounts, `kill(-1)`, unmounting, read-only remount and final
//! `reboot()` (which, outside the initial PID namespace, only ends that
//! namespace) cannot touch the host. Needs root, unshare(1) and a static
//! busybox; skipped otherwise. The kernel command line comes from the
//! `MVM_INIT_CMDLINE` test hook and the agent serves a Unix socket
//! (`mvm.agent_unix=`), reached through `/proc/<pid>/root`. `MVM_INIT_BIN`
//! runs another build (e.g. the static release binary) instead of this one.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent_proto::client::{self, Client};
use agent_proto::{ExecRequest, ExitStatus, ShutdownAction};

const BUSYBOX: &str = "/bin/busybox";

fn usable() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return false;
    }
    let ok = |c: &mut Command| {
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ok(Command::new("unshare").args(["--pid", "--fork", "--mount", "true"])) {
        eprintln!("skipped: unshare does not work here");
        return false;
    }
    let out = Command::new("ldd").arg(BUSYBOX).output();
    let static_bb = Path::new(BUSYBOX).exists()
        && out.is_ok_and(|o| {
            !o.status.success() || String::from_utf8_lossy(&o.stdout).contains("not a dynamic")
        });
    if !static_bb {
        eprintln!("skipped: no static {BUSYBOX}");
        return false;
    }
    true
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mvm-init-ns-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A root tree: /init (this build of mvm-init and its shared libraries),
/// busybox with a few applets, /etc/passwd.
fn stage(tag: &str) -> PathBuf {
    let s = tempdir(&format!("{tag}-stage"));
    // MVM_INIT_BIN: test another build, e.g. the static release binary.
    let init =
        std::env::var("MVM_INIT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_mvm-init").into());
    let init = init.as_str();
    std::fs::copy(init, s.join("init")).unwrap();
    let ldd = Command::new("ldd").arg(init).output().unwrap();
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let dest = s.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(lib, dest).unwrap();
    }
    std::fs::create_dir_all(s.join("bin")).unwrap();
    std::fs::copy(BUSYBOX, s.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "echo", "hostname", "sleep", "ls", "id"] {
        std::os::unix::fs::symlink("busybox", s.join("bin").join(applet)).unwrap();
    }
    std::fs::create_dir_all(s.join("etc")).unwrap();
    std::fs::create_dir_all(s.join("root")).unwrap();
    std::fs::write(s.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    s
}

/// Starts mvm-init as PID 1 of fresh namespaces; returns the unshare
/// process and the host pid of the namespace's init.
fn boot(tag: &str, cmdline: &str) -> (Child, u32, PathBuf, PathBuf) {
    let stage = stage(tag);
    let root = tempdir(&format!("{tag}-root"));
    let script = r#"set -e; mount -t tmpfs -o mode=0755 tmpfs "$1"; cp -a "$2"/. "$1"/; cd "$1"; exec chroot . /init"#;
    let child = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount",
            "--propagation",
            "private",
            "--uts",
            "--ipc",
            "--net",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&root)
        .arg(&stage)
        .env("MVM_INIT_CMDLINE", cmdline)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // unshare --fork: init is unshare's only child.
    let upid = child.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    let init_pid = loop {
        let kids = std::fs::read_to_string(format!("/proc/{upid}/task/{upid}/children"))
            .unwrap_or_default();
        if let Some(p) = kids.split_whitespace().next().and_then(|p| p.parse().ok()) {
            break p;
        }
        assert!(Instant::now() < deadline, "unshare started no child");
        std::thread::sleep(Duration::from_millis(10));
    };
    (child, init_pid, stage, root)
}

fn wait_exit(child: &mut Child, secs: u64) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (st, err);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("the namespace did not end; console:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run(sock: &Path, script: &str) -> (ExitStatus, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let req = ExecRequest {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    };
    let st = client::exec(
        client::connect_unix(sock, None).unwrap(),
        &req,
        None::<Cursor<Vec<u8>>>,
        &mut out,
        &mut err,
    )
    .unwrap();
    (
        st,
        String::from_utf8_lossy(&out).into_owned() + &String::from_utf8_lossy(&err),
    )
}

#[test]
fn pid1_boots_serves_reaps_and_shuts_down() {
    if !usable() {
        return;
    }
    let (mut child, init_pid, stage, root) = boot(
        "up",
        "console=ttyS0 mvm.hostname=nsbox mvm.agent_unix=/run/agent.sock mvm.debug=1",
    );
    let sock = PathBuf::from(format!("/proc/{init_pid}/root/run/agent.sock"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut c = loop {
        if let Ok(s) = client::connect_unix(&sock, None) {
            if let Ok(c) = Client::handshake(s, "ns-test") {
                break c;
            }
        }
        if let Ok(Some(_)) = child.try_wait() {
            let (_, err) = wait_exit(&mut child, 1);
            panic!("init exited early; console:\n{err}");
        }
        assert!(Instant::now() < deadline, "the agent never came up");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(c.agent().hostname, "nsbox");
    c.ping().unwrap();

    let (st, out) = run(
        &sock,
        "hostname; cat /proc/1/cmdline; echo; ls -d /proc/self /dev/pts /dev/shm /tmp /run",
    );
    assert!(st.success(), "{out}");
    assert!(out.starts_with("nsbox\n/init"), "{out}");
    for d in ["/dev/pts", "/dev/shm", "/tmp", "/run"] {
        assert!(out.contains(d), "{d} missing: {out}");
    }

    // An orphan: it waits until its parent is gone (it is then PID 1's
    // child) and exits; PID 1 must reap it. It records its pid, so the
    // test waits for that process to leave /proc (a zombie stays there
    // until reaped) instead of guessing a delay.
    let (st, _) = run(
        &sock,
        "sh -c 'echo $$ > /tmp/orphan.pid; until grep -q \"^PPid:.1$\" /proc/$$/status; do sleep 0.01; done; exit 3' >/dev/null 2>&1 & exit 0",
    );
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (st, _) = run(
            &sock,
            "test -s /tmp/orphan.pid && test ! -e /proc/$(cat /tmp/orphan.pid)",
        );
        if st.success() {
            break;
        }
        assert!(Instant::now() < deadline, "the orphan was never reaped");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, states) = run(
        &sock,
        "for f in /proc/[0-9]*/stat; do read pid comm state rest < $f && echo \"$pid $comm $state\"; done",
    );
    assert!(
        !states.lines().any(|l| l.ends_with(" Z")),
        "zombies left:\n{states}"
    );

    c.shutdown(ShutdownAction::Poweroff).unwrap();
    let (_, console) = wait_exit(&mut child, 30);
    assert!(console.contains("power-off requested"), "{console}");
    assert!(console.contains("resetting"), "{console}");
    let _ = std::fs::remove_dir_all(stage);
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn pid1_fatal_error_is_reported_and_resets() {
    if !usable() {
        return;
    }
    let (mut child, _, stage, root) = boot(
        "fatal",
        "mvm.share=nosuchtag:/mnt/x mvm.agent_unix=/run/agent.sock",
    );
    let (_, console) = wait_exit(&mut child, 30);
    assert!(
        console.contains("mvm-init: fatal: mounting virtio-fs 'nosuchtag' on /mnt/x"),
        "{console}"
    );
    assert!(console.contains("rebooting"), "{console}");
    let _ = std::fs::remove_dir_all(stage);
    let _ = std::fs::remove_dir_all(root);
}
