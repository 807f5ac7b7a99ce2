//! Managed VMs: create/start/stop/restart/rm/list/logs with real VMM
//! processes. The guest is a hand-made kernel that prints and spins (the
//! test machines' KVM cannot boot Linux; the nested suite boots the real
//! guest with its agent).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use mvm_test_guests::support::proc_status_field as status_field;
use mvm_test_guests::{code, elf_kernel, print, program};

struct Env {
    home: PathBuf,
    kernel: PathBuf,
}

impl Env {
    fn new(name: &str) -> Env {
        let home = std::env::temp_dir().join(format!("mvm-life-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).unwrap();
        let kernel = home.join("tiny.elf");
        // Prints, then spins: a VM that stays up until stopped.
        let guest = program(&[&print("tiny guest up\n"), code::SPIN]);
        std::fs::write(&kernel, elf_kernel(&guest, true)).unwrap();
        Env { home, kernel }
    }

    fn mvm(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mvm"))
            .args(args)
            .env("MVM_HOME", &self.home)
            .env("MVM_KERNEL", &self.kernel)
            // The tiny guest ignores its initramfs; any file serves as init.
            .env("MVM_INIT", "/bin/true")
            .env("MVM_ALLOW_PVM_HOST", "1")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.mvm(args);
        assert!(
            o.status.success(),
            "mvm {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn fails(&self, args: &[&str], needle: &str) {
        let o = self.mvm(args);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "mvm {args:?} should fail");
        assert!(e.contains(needle), "mvm {args:?}: {needle:?} not in {e}");
        assert_eq!(e.trim_end().lines().count(), 1, "one line expected: {e}");
    }

    fn vm_dir(&self, name: &str) -> PathBuf {
        self.home.join("vms").join(name)
    }

    fn state(&self, name: &str) -> String {
        let json = self.ok(&["list", "--json"]);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
        rows.iter()
            .find(|r| r["name"] == name)
            .map(|r| r["state"].as_str().unwrap().to_string())
            .unwrap_or_else(|| "absent".into())
    }

    fn pid(&self, name: &str) -> i32 {
        std::fs::read_to_string(self.vm_dir(name).join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Never leave VMM processes behind, even when an assertion failed.
        if let Ok(entries) = std::fs::read_dir(self.home.join("vms")) {
            for e in entries.flatten() {
                if let Ok(pid) = std::fs::read_to_string(e.path().join("pid")) {
                    if let Ok(pid) = pid.trim().parse::<i32>() {
                        // SAFETY: kill(2) of a VMM this test started.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn create_validates_and_leaves_nothing_on_failure() {
    let env = Env::new("create");
    env.fails(&["create", "Bad_Name"], "invalid VM name 'Bad_Name'");
    env.fails(
        &["create", "web", "--project", "/nonexistent/project"],
        "'/nonexistent/project' does not exist",
    );
    env.fails(
        &["create", "web", "--memory", "64T"],
        "more than this host has",
    );
    env.fails(
        &["create", "web", "--kernel", "/etc/hostname"],
        "is not a kernel",
    );
    for (flag, value, needle) in [
        ("--disk", "lots", "invalid disk size 'lots'"),
        ("--disk", "10M", "disk size '10M' is too small"),
        ("--seccomp", "maybe", "unknown seccomp mode 'maybe'"),
    ] {
        let o = env.mvm(&["create", "web", flag, value]);
        assert_eq!(o.status.code(), Some(2));
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(needle), "{e}");
    }
    let o = env.mvm(&["create", "web", "--port", "0:80"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("'0:80'"));
    // A port in use on the host is refused.
    let busy = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    env.fails(
        &["create", "web", "--port", &format!("{port}:80")],
        "already in use",
    );
    env.fails(
        &["create", "web", "-p", "18080:80", "-p", "18080:81"],
        "forwarded twice",
    );
    // Allowed networks and forward addresses: one line naming the value.
    let o = env.mvm(&["create", "web", "--allow-net", "10.1.2.3/16"]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("10.1.2.3/16") && e.contains("did you mean 10.1.0.0/16"),
        "{e}"
    );
    let o = env.mvm(&["create", "web", "-p", "lan:8080:80"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("\"lan\" is not an IPv4 address"));
    env.fails(
        &["create", "web", "--no-net", "--allow-net", "10.0.0.0/8"],
        "--allow-net needs a network interface",
    );
    // Nothing was written by the failures.
    let vms = env.home.join("vms");
    let leftovers: Vec<_> = std::fs::read_dir(&vms)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let project = env.home.join("proj");
    std::fs::create_dir(&project).unwrap();
    env.ok(&[
        "create",
        "web",
        "--project",
        project.to_str().unwrap(),
        "--cpus",
        "2",
        "--memory",
        "64M",
        "-p",
        "18081:80",
        "-e",
        "A=1",
    ]);
    env.fails(&["create", "web"], "already exists");
    env.fails(
        &["create", "other", "-p", "18081:80"],
        "already forwarded to VM 'web'",
    );
    let spec = std::fs::read_to_string(env.vm_dir("web").join("vm.toml")).unwrap();
    assert!(
        spec.contains("memory_mib = 64") && spec.contains("18081:80/tcp"),
        "{spec}"
    );
    assert_eq!(env.state("web"), "stopped");
}

#[test]
fn start_stop_restart_rm() {
    let env = Env::new("cycle");
    env.ok(&["create", "vm1", "--memory", "64M", "--no-net"]);
    env.ok(&[
        "create", "vm2", "--memory", "64M", "--cpus", "1", "--no-net",
    ]);
    env.ok(&["start", "vm1"]);
    env.ok(&["start", "vm2"]);
    assert_eq!(env.state("vm1"), "running");
    assert_eq!(env.state("vm2"), "running");
    let (p1, p2) = (env.pid("vm1"), env.pid("vm2"));
    assert_ne!(p1, p2);
    // Idempotent start.
    assert!(env.ok(&["start", "vm1"]).contains("already running"));
    assert_eq!(env.pid("vm1"), p1);

    // The console is captured.
    wait_for("console output", || {
        env.ok(&["logs", "vm1"]).contains("tiny guest up")
    });

    // A running VM is not removed without --force.
    env.fails(&["rm", "vm1"], "is running");

    env.ok(&["stop", "vm1"]);
    assert_eq!(env.state("vm1"), "stopped");
    assert!(!alive(p1));
    assert!(!env.vm_dir("vm1").join("api.sock").exists());
    assert!(!env.vm_dir("vm1").join("pid").exists());
    assert!(env.ok(&["stop", "vm1"]).contains("not running"));

    env.ok(&["restart", "vm2"]);
    assert_eq!(env.state("vm2"), "running");
    assert_ne!(env.pid("vm2"), p2);
    assert!(!alive(p2));

    env.ok(&["rm", "--force", "vm2"]);
    assert!(!env.vm_dir("vm2").exists());
    env.ok(&["rm", "vm1"]);
    assert_eq!(env.state("vm1"), "absent");
    env.fails(&["start", "vm1"], "no VM named 'vm1'");
}

#[test]
fn killed_vmm_shows_as_crashed_and_start_recovers() {
    let env = Env::new("crash");
    env.ok(&["create", "c1", "--memory", "64M", "--no-net"]);
    env.ok(&["start", "c1"]);
    let pid = env.pid("c1");
    // SAFETY: kill(2) of the VMM this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_for("the VMM to die", || !alive(pid));
    assert_eq!(env.state("c1"), "crashed");
    env.ok(&["start", "c1"]);
    assert_eq!(env.state("c1"), "running");
    assert_ne!(env.pid("c1"), pid);
    env.ok(&["stop", "c1"]);
}

#[test]
fn concurrent_starts_give_one_vmm() {
    let env = Env::new("race");
    env.ok(&["create", "r1", "--memory", "64M", "--no-net"]);
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_mvm"))
            .args(["start", "r1"])
            .env("MVM_HOME", &env.home)
            .env("MVM_KERNEL", &env.kernel)
            .env("MVM_INIT", "/bin/true")
            .env("MVM_ALLOW_PVM_HOST", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children: Vec<_> = (0..3).map(|_| spawn()).collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for o in &outputs {
        // Each either started it, found it running, or was told another
        // mvm is at work; never a second VMM.
        assert!(
            o.status.success()
                || String::from_utf8_lossy(&o.stderr).contains("another mvm command")
        );
    }
    assert_eq!(env.state("r1"), "running");
    let vmms = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.contains("_vmm") && c.contains(env.vm_dir("r1").to_str().unwrap())
                })
                .unwrap_or(false)
        })
        .count();
    assert_eq!(vmms, 1);
    env.ok(&["stop", "r1"]);
}

/// `mvm up`/`mvm down` on a project folder: created from mvm.toml, reused,
/// re-read when stopped, stopped and removed; a broken mvm.toml leaves
/// nothing behind.
#[test]
fn project_up_down() {
    let env = Env::new("up");
    let project = env.home.join("My Project");
    std::fs::create_dir(&project).unwrap();
    let p = project.to_str().unwrap();
    let write = |text: &str| std::fs::write(project.join("mvm.toml"), text).unwrap();

    write("memory = 64\nnetwork = false\nbogus = 1\n");
    env.fails(&["up", p], "mvm.toml:3:1: key `bogus`: unknown field");
    assert!(!env.vm_dir("my-project").exists());

    write("memory = 64\nnetwork = false\nroot = \"minimal\"\ncpus = 1\n");
    let dry = env.ok(&["up", p, "--dry-run", "-e", "A=1"]);
    assert!(
        dry.contains("name = \"my-project\"") && dry.contains("A = \"1\""),
        "{dry}"
    );
    assert!(!env.vm_dir("my-project").exists(), "dry run created a VM");

    let out = env.ok(&["up", p]);
    assert!(out.contains("VM 'my-project' is up"), "{out}");
    assert_eq!(env.state("my-project"), "running");
    let pid = env.pid("my-project");
    // Again: the running VM is reused.
    env.ok(&["up", p]);
    assert_eq!(env.pid("my-project"), pid);
    // Another project cannot take the name.
    let other = env.home.join("other");
    std::fs::create_dir(&other).unwrap();
    env.fails(
        &["up", other.to_str().unwrap(), "--name", "my-project"],
        "belongs to another project",
    );

    env.ok(&["down", p]);
    assert_eq!(env.state("my-project"), "stopped");
    assert!(!alive(pid));
    // A changed mvm.toml applies at the next up.
    write("memory = 80\nnetwork = false\nroot = \"minimal\"\ncpus = 1\n");
    env.ok(&["up", p]);
    let spec = std::fs::read_to_string(env.vm_dir("my-project").join("vm.toml")).unwrap();
    assert!(spec.contains("memory_mib = 80"), "{spec}");
    env.ok(&["down", p, "--rm"]);
    assert_eq!(env.state("my-project"), "absent");
    assert!(!env.vm_dir("my-project").exists());
    // Down again: nothing to do, not an error.
    assert!(env.ok(&["down", p]).contains("no VM 'my-project'"));
}

/// direnv from Debian in a scripted bash: entering the folder brings the VM
/// up and exports MVM_VM; leaving it (the shell lives on elsewhere) stops
/// the VM after the grace period.
#[test]
fn direnv_enter_and_leave() {
    use std::io::BufRead;
    if Command::new("direnv").arg("version").output().is_err() {
        eprintln!("skipped: direnv is not installed (scripts/install-deps.sh installs it)");
        return;
    }
    let env = Env::new("direnv");
    let project = env.home.join("dproj");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(
        project.join("mvm.toml"),
        "memory = 64\nnetwork = false\nroot = \"minimal\"\ncpus = 1\n[direnv]\ngrace_secs = 1\n",
    )
    .unwrap();
    let p = project.to_str().unwrap();
    assert!(env.ok(&["init", "--direnv", p]).contains(".envrc"));
    assert!(env
        .ok(&["direnv"])
        .contains("eval \"$(mvm direnv --enter)\""));
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_mvm")).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let script = format!(
        "set -e\n\
         eval \"$(direnv hook bash)\"\n\
         direnv allow {p}\n\
         cd {p}; _direnv_hook 2>/dev/null\n\
         echo \"entered MVM_VM=$MVM_VM\"\n\
         read _ignored\n\
         cd /; _direnv_hook 2>/dev/null\n\
         echo \"left MVM_VM=${{MVM_VM:-unset}}\"\n\
         read _ignored\n"
    );
    let mut bash = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &script])
        .env("MVM_HOME", &env.home)
        .env("MVM_KERNEL", &env.kernel)
        .env("MVM_INIT", "/bin/true")
        .env("MVM_ALLOW_PVM_HOST", "1")
        .env("HOME", &env.home)
        .env("XDG_DATA_HOME", env.home.join("xdg-data"))
        .env("XDG_CONFIG_HOME", env.home.join("xdg-config"))
        .env("PATH", path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = bash.stdin.take().unwrap();
    let mut lines = std::io::BufReader::new(bash.stdout.take().unwrap()).lines();
    let mut next = || lines.next().unwrap().unwrap();
    assert_eq!(next(), "entered MVM_VM=dproj");
    assert_eq!(env.state("dproj"), "running");
    let lease = env
        .vm_dir("dproj")
        .join("leases")
        .join(bash.id().to_string());
    assert!(
        lease.exists(),
        "the lease names the shell: {}",
        lease.display()
    );
    // Still in the folder after the grace period: it keeps running.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(env.state("dproj"), "running");
    use std::io::Write;
    writeln!(stdin).unwrap();
    assert_eq!(next(), "left MVM_VM=unset");
    // The shell lives on in /: the watcher sees it left and stops the VM.
    wait_for("the VM to stop after leaving", || {
        env.state("dproj") == "stopped"
    });
    assert!(!lease.exists());
    writeln!(stdin).unwrap();
    assert!(bash.wait().unwrap().success());
    env.ok(&["rm", "dproj"]);
}

/// Copies of one project folder (`mvm up --name`, `mvm create --project`),
/// three of them up at once: each its own VM (ID, folder), the project's
/// declared port moved to a free one for each copy but the first (said on
/// stderr, kept across `up`, shown by `mvm port` and `mvm list --json`); a
/// port in use on the host is skipped too; an explicit `-p` that is taken
/// is still refused, naming the port.
#[test]
fn copies_of_one_project() {
    let env = Env::new("copies");
    let project = env.home.join("web");
    std::fs::create_dir(&project).unwrap();
    let p = project.to_str().unwrap();
    std::fs::write(
        project.join("mvm.toml"),
        "memory = 64\nnetwork = false\nroot = \"minimal\"\ncpus = 1\nports = [\"18190:3000\"]\n",
    )
    .unwrap();
    let declared = 18190u16;
    // 18190..=18192 must be free on this host for the test's arithmetic.
    for port in declared..declared + 4 {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is in use on this host"
        );
    }
    let up = |name: &str| {
        Command::new(env!("CARGO_BIN_EXE_mvm"))
            .args(["up", p, "--name", name])
            .env("MVM_HOME", &env.home)
            .env("MVM_KERNEL", &env.kernel)
            .env("MVM_INIT", "/bin/true")
            .env("MVM_ALLOW_PVM_HOST", "1")
            .spawn_output()
    };
    // The first copy takes the declared port; two more come up at once.
    let first = env.mvm(&["up", p]);
    assert!(first.status.success(), "{first:?}");
    assert!(!String::from_utf8_lossy(&first.stderr).contains("is taken"));
    let (a, b) = (up("web-2"), up("web-3"));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    let mut moved = Vec::new();
    for (name, o) in [("web-2", &a), ("web-3", &b)] {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{name}: {err}");
        let line = err
            .lines()
            .find(|l| l.contains("is taken"))
            .unwrap_or_else(|| panic!("{name} said no move: {err}"));
        assert!(
            line.starts_with(&format!(
                "mvm: host port {declared} is taken (VM 'web'); VM '{name}' forwards "
            )) && line.ends_with(":3000 instead"),
            "{line}"
        );
        assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("VM '{name}' is up")));
    }
    let names = ["web", "web-2", "web-3"];
    let mut ids = Vec::new();
    let mut hosts = Vec::new();
    for name in names {
        assert_eq!(env.state(name), "running", "{name}");
        let spec = std::fs::read_to_string(env.vm_dir(name).join("vm.toml")).unwrap();
        let id = spec
            .lines()
            .find_map(|l| l.strip_prefix("id = "))
            .unwrap()
            .to_string();
        ids.push(id);
        // `mvm port` shows the real forward.
        let ports = env.ok(&["port", name]);
        let host: u16 = ports
            .trim()
            .strip_prefix("127.0.0.1:")
            .and_then(|r| r.strip_suffix("->3000/tcp"))
            .unwrap_or_else(|| panic!("{name}: {ports}"))
            .parse()
            .unwrap();
        hosts.push(host);
        if name != "web" {
            moved.push(host);
        }
    }
    assert_eq!(hosts[0], declared);
    moved.sort();
    assert_eq!(moved, [declared + 1, declared + 2], "{hosts:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "distinct IDs");
    let pids: Vec<i32> = names.iter().map(|n| env.pid(n)).collect();
    assert!(pids[0] != pids[1] && pids[1] != pids[2] && pids[0] != pids[2]);
    // `mvm list --json` shows each copy's own port.
    let rows: Vec<serde_json::Value> = serde_json::from_str(&env.ok(&["list", "--json"])).unwrap();
    for (name, host) in names.iter().zip(&hosts) {
        let row = rows.iter().find(|r| r["name"] == *name).unwrap();
        assert_eq!(
            row["ports"],
            serde_json::json!([format!("127.0.0.1:{host}->3000/tcp")]),
            "{name}"
        );
        assert_eq!(row["project"], p);
    }
    // Up again: the moved port stays, nothing is said, the VM is reused.
    let again = env.mvm(&["up", p, "--name", "web-2"]);
    assert!(again.status.success());
    assert!(!String::from_utf8_lossy(&again.stderr).contains("is taken"));
    assert_eq!(env.pid("web-2"), pids[1]);
    assert_eq!(
        env.ok(&["port", "web-2"]),
        format!("127.0.0.1:{}->3000/tcp\n", hosts[1])
    );

    // direnv exports a copy's own port.
    let me = std::process::id().to_string();
    let exports = env.ok(&[
        "direnv",
        "--enter",
        p,
        "--name",
        "web-2",
        "--shell-pid",
        &me,
    ]);
    assert!(
        exports.contains("export MVM_VM='web-2'")
            && exports.contains(&format!("export MVM_PORT_3000='{}'", hosts[1])),
        "{exports}"
    );
    assert_eq!(env.pid("web-2"), pids[1]);

    // A port a host process holds is skipped as well.
    let _held = std::net::TcpListener::bind(("127.0.0.1", declared + 3)).unwrap();
    let o = env.mvm(&["create", "web-4", "--project", p]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "host port {declared} is taken (VM 'web'); VM 'web-4' forwards {}:3000 instead",
            declared + 4
        )),
        "{err}"
    );
    // Explicit forwards are never moved: taken, they are refused (one
    // line after what detection found).
    let refused = |port: &str, needle: &str| {
        let o = env.mvm(&["create", "web-5", "--project", p, "-p", port]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "-p {port} should be refused");
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| *l != "mvm: found mvm.toml")
            .collect();
        assert_eq!(lines.len(), 1, "one line expected: {err}");
        assert!(lines[0].contains(needle), "{needle:?} not in {err}");
    };
    refused(
        &format!("{declared}:3000"),
        &format!("host port {declared} is already forwarded to VM 'web'"),
    );
    refused(
        &format!("{}:80", declared + 3),
        &format!("host port {}/tcp is already in use", declared + 3),
    );
    assert!(!env.vm_dir("web-5").exists());

    for name in ["web-2", "web-3"] {
        assert!(env
            .ok(&["down", p, "--name", name, "--rm"])
            .contains("removed"));
    }
    env.ok(&["down", p, "--rm"]);
    env.ok(&["rm", "web-4"]);
    assert!(env.ok(&["list", "--json"]).trim() == "[]");
}

/// A command's output, waited for on a thread (so several run at once).
trait SpawnOutput {
    fn spawn_output(&mut self) -> std::thread::JoinHandle<Output>;
}

impl SpawnOutput for Command {
    fn spawn_output(&mut self) -> std::thread::JoinHandle<Output> {
        let child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::spawn(move || child.wait_with_output().unwrap())
    }
}

/// Capability bits of `vmm::jail::ROOT_CAPS`.
fn root_caps_mask() -> u64 {
    vmm::jail::ROOT_CAPS.iter().fold(0, |m, &c| m | 1 << c)
}

#[test]
fn the_vmm_runs_jailed() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the jail is for a VMM started as root");
        return;
    }
    let env = Env::new("jail");
    env.ok(&["create", "vm1", "--memory", "64M", "--no-net"]);
    env.ok(&["start", "vm1"]);
    wait_for("console output", || {
        env.ok(&["logs", "vm1"]).contains("tiny guest up")
    });
    let pid = env.pid("vm1");
    // Every thread: filtered, no new privileges, root's powers cut to
    // serving files.
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .collect();
    assert!(tasks.len() >= 2, "a vCPU and the event loop at least");
    for t in tasks {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap();
        let caps = |k| u64::from_str_radix(&status_field(&status, k), 16).unwrap();
        assert_eq!(status_field(&status, "Seccomp:"), "2", "{status}");
        assert_eq!(status_field(&status, "NoNewPrivs:"), "1", "{status}");
        assert_eq!(caps("CapEff:"), root_caps_mask(), "{status}");
        assert_eq!(caps("CapPrm:"), root_caps_mask(), "{status}");
        assert_eq!(caps("CapBnd:"), root_caps_mask(), "{status}");
        assert_eq!(caps("CapAmb:"), 0, "{status}");
    }
    // Its root holds its own folder and a /proc of its own, nothing else.
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let vm_dir = std::fs::canonicalize(env.vm_dir("vm1")).unwrap();
    assert!(root
        .join(vm_dir.strip_prefix("/").unwrap())
        .join("console.log")
        .exists());
    for gone in ["etc/shadow", "root", "home", "dev/kvm", "usr", "sys"] {
        assert!(!root.join(gone).exists(), "{gone} is in the jail");
    }
    let mut top: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    let first = vm_dir.components().nth(1).unwrap();
    let mut want = vec![
        "proc".to_string(),
        first.as_os_str().to_string_lossy().into_owned(),
    ];
    want.sort();
    assert_eq!(top, want);
    // The host's mount table did not change: the jail's mounts are the
    // VMM's own.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&*vm_dir.to_string_lossy()), "{mounts}");
    // It still stops cleanly and removes its runtime files from inside.
    env.ok(&["stop", "vm1"]);
    assert!(!alive(pid));
    assert!(!env.vm_dir("vm1").join("api.sock").exists());

    // --no-jail (debugging): root's full powers, the host's root.
    env.ok(&["create", "vm2", "--memory", "64M", "--no-net", "--no-jail"]);
    env.ok(&["start", "vm2"]);
    let pid = env.pid("vm2");
    assert!(PathBuf::from(format!("/proc/{pid}/root/etc")).exists());
    env.ok(&["rm", "--force", "vm2"]);
}

#[test]
fn a_users_project_is_served_by_a_vmm_running_as_that_user() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the jail is for a VMM started as root");
        return;
    }
    let env = Env::new("jail-user");
    let project = env.home.join("proj");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("app.txt"), "hello").unwrap();
    std::os::unix::fs::chown(&project, Some(4242), Some(4343)).unwrap();
    let p = project.to_str().unwrap();
    env.ok(&["create", "u", "--project", p, "--memory", "64M", "--no-net"]);
    env.ok(&["start", "u"]);
    wait_for("console output", || {
        env.ok(&["logs", "u"]).contains("tiny guest up")
    });
    // The pid the manager knows is the root supervisor; its one child is
    // the VMM, as the project's user with no capabilities.
    let parent = env.pid("u");
    let children =
        std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).unwrap();
    let kids: Vec<i32> = children
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(kids.len(), 1, "{children}");
    let vmm = kids[0];
    for t in std::fs::read_dir(format!("/proc/{vmm}/task"))
        .unwrap()
        .flatten()
    {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap();
        let caps = |k| u64::from_str_radix(&status_field(&status, k), 16).unwrap();
        assert!(
            status_field(&status, "Uid:") == "4242 4242 4242 4242",
            "{status}"
        );
        assert!(
            status_field(&status, "Gid:") == "4343 4343 4343 4343",
            "{status}"
        );
        assert_eq!(status_field(&status, "Groups:"), "", "{status}");
        assert_eq!(caps("CapEff:"), 0, "{status}");
        assert_eq!(caps("CapPrm:"), 0, "{status}");
        assert_eq!(status_field(&status, "Seccomp:"), "2", "{status}");
        assert_eq!(status_field(&status, "NoNewPrivs:"), "1", "{status}");
    }
    // The supervisor keeps only what cleaning the run folder takes.
    let status = std::fs::read_to_string(format!("/proc/{parent}/status")).unwrap();
    assert_eq!(
        status_field(&status, "CapEff:"),
        "000000000000002e",
        "{status}"
    );
    // The copy-on-write layer is the user's.
    let uppers: Vec<_> = std::fs::read_dir(env.vm_dir("u").join("run/upper"))
        .unwrap()
        .flatten()
        .collect();
    assert!(!uppers.is_empty());
    for u in uppers {
        use std::os::unix::fs::MetadataExt;
        let m = u.metadata().unwrap();
        assert_eq!((m.uid(), m.gid()), (4242, 4343), "{}", u.path().display());
    }
    // A state dump on SIGUSR1 to the known pid reaches the VMM.
    // SAFETY: kill(2) of the supervisor this test started.
    unsafe { libc::kill(parent, libc::SIGUSR1) };
    wait_for("the state dump", || {
        std::fs::read_to_string(env.vm_dir("u").join("vmm.log"))
            .unwrap_or_default()
            .contains("state dump (SIGUSR1)")
    });
    env.ok(&["stop", "u"]);
    assert!(!alive(parent) && !alive(vmm));
    assert_eq!(env.state("u"), "stopped");
    assert!(!env.vm_dir("u").join("api.sock").exists());
    // Killing the known pid kills the VM: crashed, and start recovers.
    env.ok(&["start", "u"]);
    let (parent, vmm) = {
        let p = env.pid("u");
        let c = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap();
        (
            p,
            c.split_whitespace().next().unwrap().parse::<i32>().unwrap(),
        )
    };
    // SAFETY: kill(2) of the supervisor this test started.
    unsafe { libc::kill(parent, libc::SIGKILL) };
    wait_for("the VMM to die with its supervisor", || !alive(vmm));
    assert_eq!(env.state("u"), "crashed");
    env.ok(&["start", "u"]);
    assert_eq!(env.state("u"), "running");
    env.ok(&["rm", "--force", "u"]);
}

#[test]
fn volumes_create_attach_lock_and_outlive_their_vms() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new("volumes");
    let vols = env.home.join("volumes");
    // Bad names and sizes: one line naming the value and what is accepted.
    env.fails(
        &["volume", "create", "Bad!", "--size", "64M"],
        "invalid volume name 'Bad!': use 1 to 20 lowercase letters",
    );
    env.fails(
        &["volume", "create", &"x".repeat(21), "--size", "64M"],
        "invalid volume name",
    );
    for (size, needle) in [
        ("1X", "invalid volume size '1X': use MiB or a size such as"),
        ("8M", "invalid volume size '8M': use at least 16M"),
        ("17T", "at most 16T"),
    ] {
        let o = env.mvm(&["volume", "create", "data", "--size", size]);
        assert_eq!(o.status.code(), Some(2));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(needle),
            "{size}"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(&vols)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.iter().all(|n| n == ".lock"),
        "nothing partial: {leftovers:?}"
    );

    assert!(env
        .ok(&["volume", "create", "data", "--size", "64M"])
        .contains("created volume 'data' (64M)"));
    let img = vols.join("data.img");
    let meta = std::fs::metadata(&img).unwrap();
    assert_eq!(meta.len(), 64 << 20);
    assert!(
        meta.blocks() * 512 < 1 << 20,
        "sparse: {} blocks",
        meta.blocks()
    );
    assert!(std::fs::read_to_string(vols.join("data.toml"))
        .unwrap()
        .contains("size_mib = 64"));
    env.fails(
        &["volume", "create", "data", "--size", "64M"],
        "a volume named 'data' already exists",
    );

    // --volume: an existing volume, a valid guest path.
    env.fails(
        &["create", "vm1", "--no-net", "--volume", "nope:/data"],
        "volume 'nope' does not exist: create it with `mvm volume create nope --size 10G`",
    );
    for (arg, needle) in [
        ("data:rel", "guest path 'rel' must be absolute"),
        ("data:/project/x", "must not be under /project"),
        ("data:/", "guest path '/' is the root"),
        ("data:/d:rx", "unknown mode 'rx'"),
        ("Data:/d", "invalid volume name 'Data'"),
    ] {
        let o = env.mvm(&["create", "vm1", "--volume", arg]);
        assert_eq!(o.status.code(), Some(2), "{arg}");
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(needle), "{arg}: {e}");
    }
    env.fails(
        &[
            "create", "vm1", "--no-net", "--volume", "data:/a", "--volume", "data:/b",
        ],
        "volume 'data' is attached twice",
    );
    assert!(!env.vm_dir("vm1").exists());

    let (m, n) = (["--memory", "64M"], "--no-net");
    env.ok(&["create", "vm1", m[0], m[1], n, "--volume", "data:/data"]);
    env.ok(&["create", "vm2", m[0], m[1], n, "--volume", "data:/srv:ro"]);
    let spec = std::fs::read_to_string(env.vm_dir("vm1").join("vm.toml")).unwrap();
    assert!(
        spec.contains("[[volumes]]") && spec.contains("guest = \"/data\""),
        "{spec}"
    );
    env.fails(
        &["volume", "rm", "data"],
        "volume 'data' is attached to VM 'vm1'",
    );

    // Running: the VMM holds the image; a second VM cannot attach it.
    env.ok(&["start", "vm1"]);
    let config = std::fs::read_to_string(env.vm_dir("vm1").join("vmm.json")).unwrap();
    assert!(
        config.contains("data.img") && config.contains("mvm.volume=data:/data"),
        "{config}"
    );
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok(&["volume", "list", "--json"])).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "data");
    assert_eq!(list[0]["size_mib"], 64);
    assert_eq!(list[0]["in_use"], true);
    assert_eq!(list[0]["attached_to"], serde_json::json!(["vm1", "vm2"]));
    env.fails(
        &["start", "vm2"],
        "volume 'data' is in use by running VM 'vm1'",
    );
    assert_eq!(env.state("vm2"), "stopped");
    env.fails(&["rm", "--volumes", "--force", "vm9"], "no VM named 'vm9'");

    // Stopped, the other VM gets it (read-only).
    env.ok(&["stop", "vm1"]);
    env.ok(&["start", "vm2"]);
    let config = std::fs::read_to_string(env.vm_dir("vm2").join("vmm.json")).unwrap();
    assert!(
        config.contains("\"read_only\":true") || config.contains("\"read_only\": true"),
        "{config}"
    );
    env.ok(&["stop", "vm2"]);

    // Volumes outlive `rm`; `rm --volumes` removes those no other VM has.
    env.ok(&["rm", "vm1"]);
    assert!(img.exists());
    let o = env.mvm(&["create", "vm3", m[0], m[1], n, "--volume", "data:/data"]);
    assert!(o.status.success());
    let o = env.mvm(&["rm", "--volumes", "vm2"]);
    assert!(o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("kept volume 'data': VM 'vm3' attaches it too")
    );
    assert!(img.exists());
    let o = env.mvm(&["rm", "--volumes", "vm3"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("removed volume 'data'"));
    assert!(!img.exists() && !vols.join("data.toml").exists());
    env.fails(&["volume", "rm", "data"], "no volume named 'data'");

    // mvm.toml's volumes are created, with their size, when the VM starts.
    let project = env.home.join("pg");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(
        project.join("mvm.toml"),
        "volumes = [{ name = \"pgdata\", guest = \"/var/lib/postgresql\", size = \"10X\" }]\n",
    )
    .unwrap();
    let p = project.to_str().unwrap();
    env.fails(
        &["create", "pg", "--project", p, n],
        "invalid volume size '10X'",
    );
    std::fs::write(
        project.join("mvm.toml"),
        "volumes = [{ name = \"pgdata\", guest = \"/var/lib/postgresql\", size = \"32M\" }]\n",
    )
    .unwrap();
    env.ok(&["create", "pg", "--project", p, m[0], m[1], n]);
    assert!(!vols.join("pgdata.img").exists(), "created on first use");
    let o = env.mvm(&["start", "pg"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("created volume 'pgdata' (32 MiB)"));
    assert_eq!(
        std::fs::metadata(vols.join("pgdata.img")).unwrap().len(),
        32 << 20
    );
    // The volume is recorded as the project's: its own (untrusted) mvm.toml
    // still gets it; another project's untrusted mvm.toml naming it does
    // not (it may hold this project's data), until trusted.
    let meta = std::fs::read_to_string(vols.join("pgdata.toml")).unwrap();
    let canonical = std::fs::canonicalize(&project).unwrap();
    assert!(
        meta.contains(&format!("project = \"{}\"", canonical.display())),
        "{meta}"
    );
    let o = env.mvm(&["config", p]);
    assert!(o.status.success());
    assert!(!String::from_utf8_lossy(&o.stderr).contains("not trusted"));
    let thief = env.home.join("thief");
    std::fs::create_dir(&thief).unwrap();
    std::fs::write(
        thief.join("mvm.toml"),
        "volumes = [{ name = \"pgdata\", guest = \"/loot\" }]\n",
    )
    .unwrap();
    let t = thief.to_str().unwrap();
    let o = env.mvm(&["config", t]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.contains("skipped: volume pgdata (not made by this project)"),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains("/loot"));
    env.ok(&["rm", "--force", "--volumes", "pg"]);
    assert!(!vols.join("pgdata.img").exists());
}

/// /dev/kvm opened up to every user while it lives (the test user must
/// open it); its mode comes back after.
struct KvmOpenToAll(u32);

impl KvmOpenToAll {
    fn new() -> KvmOpenToAll {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata("/dev/kvm").unwrap().permissions().mode();
        std::fs::set_permissions("/dev/kvm", std::fs::Permissions::from_mode(0o666)).unwrap();
        KvmOpenToAll(mode)
    }
}

impl Drop for KvmOpenToAll {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions("/dev/kvm", std::fs::Permissions::from_mode(self.0));
    }
}

#[test]
fn a_vmm_started_by_a_user_is_jailed_in_its_own_user_namespace() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let setpriv = Command::new("setpriv").arg("--version").output();
    if !root || setpriv.is_err() || vmm::jail::user_namespaces_allowed().is_err() {
        eprintln!("skipped: needs root (to become a test user), setpriv and user namespaces");
        return;
    }
    let env = Env::new("jail-userns");
    std::os::unix::fs::chown(&env.home, Some(4242), Some(4242)).unwrap();
    std::os::unix::fs::chown(&env.kernel, Some(4242), Some(4242)).unwrap();
    let _kvm = KvmOpenToAll::new();
    let as_user = |args: &[&str]| {
        let o = Command::new("setpriv")
            .args(["--reuid", "4242", "--regid", "4242", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_mvm"))
            .args(args)
            .env("HOME", &env.home)
            .env("MVM_HOME", env.home.join("mvm"))
            .env("MVM_KERNEL", &env.kernel)
            .env("MVM_INIT", "/bin/true")
            .env("MVM_ALLOW_PVM_HOST", "1")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "mvm {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    as_user(&["create", "n", "--memory", "64M", "--no-net"]);
    as_user(&["start", "n"]);
    let dir = env.home.join("mvm/vms/n");
    let pid: i32 = std::fs::read_to_string(dir.join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for("console output", || {
        std::fs::read_to_string(dir.join("console.log"))
            .unwrap_or_default()
            .contains("tiny guest up")
    });
    let log = std::fs::read_to_string(dir.join("vmm.log")).unwrap_or_default();
    assert!(!log.contains("without its jail"), "{log}");
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let s = std::fs::read_to_string(t.path().join("status")).unwrap();
        assert!(status_field(&s, "Uid:") == "4242 4242 4242 4242", "{s}");
        assert_eq!(status_field(&s, "CapEff:"), "0000000000000000", "{s}");
        assert_eq!(status_field(&s, "CapBnd:"), "0000000000000000", "{s}");
        assert_eq!(status_field(&s, "Seccomp:"), "2", "{s}");
    }
    // A user namespace of its own, a root of its own.
    let ns = |p: String| std::fs::read_link(p).unwrap();
    assert_ne!(
        ns(format!("/proc/{pid}/ns/user")),
        ns("/proc/self/ns/user".into())
    );
    let mut top: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/root"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    let first = std::fs::canonicalize(&dir).unwrap();
    let first = first.components().nth(1).unwrap();
    let mut want = vec![
        "proc".to_string(),
        first.as_os_str().to_string_lossy().into_owned(),
    ];
    want.sort();
    assert_eq!(top, want);
    as_user(&["rm", "--force", "n"]);
    assert!(!alive(pid));
}
