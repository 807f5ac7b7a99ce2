//! `mvm run` as a user runs it: exit statuses, one-line errors, console
//! routing. Guests are hand-made (the test machines' KVM may not boot
//! Linux; tests/e2e boots the real kernel nested).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mvm_test_guests::support::proc_status_field as field;
use mvm_test_guests::{code, elf_kernel, print, program};

fn mvm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mvm"))
        .args(args)
        .env_remove("MVM_KERNEL")
        .env("MVM_CACHE_DIR", "/nonexistent-mvm-cache")
        .env(
            "MVM_HOME",
            std::env::temp_dir().join(format!("mvm-cli-home-{}", std::process::id())),
        )
        .output()
        .expect("runs mvm")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mvm-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_kernel(dir: &Path, code: &[u8]) -> String {
    let p = dir.join("kernel");
    std::fs::write(&p, elf_kernel(code, true)).unwrap();
    p.to_string_lossy().into_owned()
}

/// Runtime errors are exactly one line on stderr, status 1.
/// A raw run (kernel + empty initramfs) of a hand-made kernel on this
/// host's KVM, with `extra` arguments after the common ones.
fn run_tiny(kernel: &str, memory: &str, extra: &[&str]) -> Output {
    let common = [
        "run",
        "--kernel",
        kernel,
        "--initrd",
        "/dev/null",
        "--allow-pvm-host",
        "--memory",
        memory,
    ];
    mvm(&[&common[..], extra].concat())
}

fn assert_one_line_error(o: &Output, needle: &str) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert_eq!(e.lines().count(), 1, "one line expected: {e}");
    assert!(e.starts_with("mvm: "), "{e}");
    assert!(e.contains(needle), "{needle:?} not in {e}");
}

#[test]
fn bad_input_gets_one_line_errors() {
    assert_one_line_error(
        &mvm(&["run", "--kernel", "/nonexistent/k"]),
        "/nonexistent/k",
    );
    assert_one_line_error(&mvm(&["run", "--kernel", "/etc/passwd"]), "is not a kernel");
    assert_one_line_error(&mvm(&["run"]), "no guest kernel");
    let dir = tempdir("bad");
    let k = write_kernel(&dir, code::SPIN);
    assert_one_line_error(
        &mvm(&[
            "run",
            "--kernel",
            &k,
            "--allow-pvm-host",
            "--initrd",
            "/nonexistent/i",
        ]),
        "initrd /nonexistent/i does not exist",
    );
    assert_one_line_error(&run_tiny(&k, "64T", &[]), "more than this host has");
    assert_one_line_error(
        &run_tiny(&k, "32", &["--vhost-user-fs", "/nonexistent/vfs.sock:vfs"]),
        "/nonexistent/vfs.sock is not a socket",
    );
    let d = dir.to_string_lossy().into_owned();
    assert_one_line_error(
        &run_tiny(
            &k,
            "32",
            &["--share", &format!("{d}:t"), "--vhost-user-fs", "/x.sock:t"],
        ),
        "share tag 't' is used twice",
    );
    // Usage errors come from clap: status 2, naming the value.
    for (args, needle) in [
        (vec!["run", "--vhost-user-fs", "nocolon"], "'nocolon'"),
        (vec!["run", "--vhost-user-fs", "/s:t:100"], "'/s:t:100'"),
        (vec!["run", "--vhost-user-fs", ":t"], "':t'"),
        (vec!["run", "--cpus", "0"], "'0'"),
        (vec!["run", "--cpus", "300"], "'300'"),
        (vec!["run", "--memory", "lots"], "'lots'"),
        (vec!["run", "--memory", "8M"], "too small"),
        (vec!["run", "--bogus"], "--bogus"),
        (vec!["run", "--allow-net", "fd00::/8"], "only IPv4"),
        (vec!["run", "--allow-net", "10.0.0.0/40"], "'10.0.0.0/40'"),
    ] {
        let o = mvm(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn guest_reset_exits_zero_with_console_on_stdout() {
    let dir = tempdir("reset");
    let k = write_kernel(
        &dir,
        &program(&[&print("booted\n"), code::RESET, code::HLT]),
    );
    let o = run_tiny(&k, "32M", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "booted\n");
    let _ = std::fs::remove_dir_all(dir);
}

/// A VM with a vhost-user-fs device on a real virtiofsd: guest RAM becomes
/// a memfd, the front end negotiates with the backend, the guest runs.
/// (The hand-made guest does not mount it; tests/e2e does, nested.)
#[test]
fn vhost_user_fs_backend_is_connected() {
    let virtiofsd = mvm_test_guests::support::virtiofsd().expect("virtiofsd is needed");
    let dir = tempdir("vhost-user-fs");
    let (sock, share) = (dir.join("vfs.sock"), dir.join("share"));
    std::fs::create_dir(&share).unwrap();
    let mut backend = Command::new(&virtiofsd)
        .arg("--socket-path")
        .arg(&sock)
        .arg("--shared-dir")
        .arg(&share)
        .args(["--sandbox", "none"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", virtiofsd.display()));
    for _ in 0..1000 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let k = write_kernel(
        &dir,
        &program(&[&print("booted\n"), code::RESET, code::HLT]),
    );
    let o = run_tiny(
        &k,
        "32M",
        &["--vhost-user-fs", &format!("{}:vfs:256", sock.display())],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "booted\n");
    // The backend saw its front end come and go: it ends by itself.
    let mut exited = false;
    for _ in 0..500 {
        if backend.try_wait().unwrap().is_some() {
            exited = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = backend.kill();
    let _ = backend.wait();
    assert!(exited, "virtiofsd still waiting: mvm never connected");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn console_can_go_to_a_file() {
    let dir = tempdir("file");
    let k = write_kernel(
        &dir,
        &program(&[&print("to a file\n"), code::RESET, code::HLT]),
    );
    let log = dir.join("console.log");
    let o = run_tiny(&k, "32", &["--console", log.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "to a file\n");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn guest_panic_and_fault_exit_non_zero() {
    let dir = tempdir("panic");
    let k = write_kernel(&dir, &program(&[code::WARM_FLAG, code::RESET, code::HLT]));
    let o = run_tiny(&k, "32", &[]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("panicked"));

    let k = write_kernel(&dir, &program(&[code::INT3, code::SPIN]));
    let o = run_tiny(&k, "32", &[]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("RIP 0x10000"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn pvm_host_is_explained() {
    let dir = tempdir("pvm");
    let k = write_kernel(&dir, &program(&[code::RESET, code::HLT]));
    let o = mvm(&[
        "run",
        "--kernel",
        &k,
        "--initrd",
        "/dev/null",
        "--memory",
        "32",
    ]);
    if Path::new("/sys/module/kvm_pvm").exists() {
        assert_one_line_error(&o, "PVM-backed");
        assert!(stderr(&o).contains("nested"));
    } else {
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn help_reads_well() {
    let o = mvm(&["run", "--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "--kernel",
        "--initrd",
        "--cmdline",
        "--cpus",
        "--memory",
        "--console",
        "Exit status",
        "$MVM_KERNEL",
    ] {
        assert!(help.contains(needle), "{needle} missing from help:\n{help}");
    }
    assert!(!help.contains("allow-pvm-host"));
}

fn status_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default()
}

/// `mvm run --initrd` as root: the VMM is a jailed child (as the sudoing
/// user when there is one), this process waits and cleans up; SIGTERM
/// stops it.
#[test]
fn raw_run_runs_its_vmm_jailed() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the jail is for a VMM started as root");
        return;
    }
    let dir = tempdir("jail");
    let k = write_kernel(&dir, &program(&[&print("up\n"), code::SPIN]));
    let console = dir.join("console.log");
    let mut parents = Vec::new();
    for (sudo, uid, caps) in [
        (None, "0 0 0 0", {
            let m = vmm::jail::ROOT_CAPS.iter().fold(0u64, |m, &c| m | 1 << c);
            format!("{m:016x}")
        }),
        (
            Some(("4242", "4343")),
            "4242 4242 4242 4242",
            "0000000000000000".into(),
        ),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mvm"));
        cmd.args([
            "run",
            "--kernel",
            &k,
            "--initrd",
            "/dev/null",
            "--allow-pvm-host",
            "--memory",
            "32",
            "--console",
            console.to_str().unwrap(),
        ])
        .env_remove("SUDO_UID")
        .env_remove("SUDO_GID");
        if let Some((u, g)) = sudo {
            cmd.env("SUDO_UID", u).env("SUDO_GID", g);
        }
        let mut child = cmd.spawn().unwrap();
        let parent = child.id();
        parents.push(parent);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while !std::fs::read_to_string(&console)
            .unwrap_or_default()
            .contains("up")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the guest did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let kids =
            std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).unwrap();
        let vmm: u32 = kids.split_whitespace().next().unwrap().parse().unwrap();
        for t in std::fs::read_dir(format!("/proc/{vmm}/task"))
            .unwrap()
            .flatten()
        {
            let s = std::fs::read_to_string(t.path().join("status")).unwrap();
            assert_eq!(field(&s, "Uid:"), uid, "{s}");
            assert_eq!(field(&s, "CapEff:"), caps, "{s}");
            assert_eq!(field(&s, "Seccomp:"), "2", "{s}");
            assert_eq!(field(&s, "NoNewPrivs:"), "1", "{s}");
        }
        // Its root: the console's folder and /proc, no /etc.
        let root = PathBuf::from(format!("/proc/{vmm}/root"));
        assert!(!root.join("etc").exists());
        assert!(root.join("proc/self").exists());
        // The waiting parent keeps its powers (it tears the network down).
        assert_ne!(field(&status_of(parent), "CapEff:"), "0000000000000000");
        // SAFETY: kill(2) of the mvm this test started.
        unsafe { libc::kill(parent as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status:?}");
        // The VMM goes with its run: it may still be leaving when mvm has
        // returned (KVM frees the VM as it exits), for moments only.
        let gone = |p| status_of(p).is_empty() || field(&status_of(p), "State:").starts_with('Z');
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !gone(vmm) {
            assert!(
                std::time::Instant::now() < deadline,
                "the VMM outlived its run"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::fs::remove_file(&console).unwrap();
    }
    // The scratch folders went with their runs.
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let left: Vec<String> = std::fs::read_dir(base)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            parents
                .iter()
                .any(|p| n.starts_with(&format!("mvm-run-{p}-")))
        })
        .collect();
    assert!(left.is_empty(), "scratch folders left behind: {left:?}");
}

/// `mvm run` of a tiny kernel with its scratch folder under `tmp` and its
/// output piped.
fn spawn_run(kernel: &str, tmp: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_mvm"))
        .args(["run", "--kernel", kernel, "--initrd", "/dev/null"])
        .args(["--allow-pvm-host", "--memory", "32"])
        .env("TMPDIR", tmp)
        .env_remove("XDG_RUNTIME_DIR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// A jailed `mvm run` returns as soon as its VM is closed: the status is
/// the guest's, the console output is whole and ends (the VMM, still
/// leaving, holds no standard stream), and nothing is left in the scratch
/// folder's place.
#[test]
fn raw_run_returns_the_guests_status_once_its_vm_is_closed() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the jail is for a VMM started as root");
        return;
    }
    let dir = tempdir("report");
    let tmp = dir.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    for (guest, status) in [
        (program(&[&print("bye\n"), code::RESET, code::HLT]), 0),
        (
            program(&[&print("bye\n"), code::WARM_FLAG, code::RESET, code::HLT]),
            3,
        ),
    ] {
        let k = write_kernel(&dir, &guest);
        let child = spawn_run(&k, &tmp);
        // Reads both streams to their end, then reaps mvm.
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(status), "{}", stderr(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "bye\n");
        let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
    // Stopped by SIGTERM once its scratch folder is there: 128 + 15.
    let k = write_kernel(&dir, &program(&[&print("up\n"), code::SPIN]));
    let child = spawn_run(&k, &tmp);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_dir(&tmp).unwrap().next().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no scratch folder in {tmp:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(143), "{}", stderr(&o));
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let _ = std::fs::remove_dir_all(dir);
}
