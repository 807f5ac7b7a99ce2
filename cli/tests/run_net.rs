//! `mvm run --initrd ... --net` on the real host network plane (bridge,
//! tap, nftables, the DHCP daemon), inside a network namespace this test
//! creates: whatever way the VM ends (reset, panic, Ctrl-C, SIGKILL and
//! the next run's reconcile), no tap, lease or rule of it remains.
//! Hand-made guests (this host's KVM may not boot Linux); a real guest
//! gets its lease in the nested suite (tests/e2e/jobs/net.sh).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mvm_test_guests::{code, elf_kernel, print, program};

struct Ns {
    name: String,
    home: PathBuf,
}

impl Ns {
    fn new(tag: &str) -> Ns {
        let name = format!("mvmrun-{tag}-{}", std::process::id());
        let _ = sh(&format!("ip netns del {name}"));
        assert!(sh(&format!(
            "ip netns add {name} && ip -n {name} link set lo up"
        ))
        .status
        .success());
        let home = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&home);
        Ns { name, home }
    }

    fn mvm(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, env!("CARGO_BIN_EXE_mvm")])
            .args(args)
            .env("MVM_HOME", &self.home)
            .env_remove("MVM_KERNEL");
        c
    }

    /// `mvm run --net` of `kernel` in the background, once its tap and
    /// lease exist.
    fn spawn_attached(&self, kernel: &str) -> std::process::Child {
        let child = self
            .mvm(&run_args(kernel))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // A complete lease, not the temporary file of its write.
        wait_for("the tap and lease", || {
            self.taps().len() == 1 && self.leases().iter().any(|l| l.ends_with(".json"))
        });
        child
    }

    fn sh(&self, cmd: &str) -> String {
        let o = sh(&format!("ip netns exec {} sh -c '{cmd}'", self.name));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn taps(&self) -> Vec<String> {
        self.sh("ip -o link show")
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| n.starts_with("mvm-"))
            .collect()
    }

    fn leases(&self) -> Vec<String> {
        std::fs::read_dir(self.home.join("net/leases"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn ruleset(&self) -> String {
        self.sh("nft list ruleset")
    }

    /// No tap, no lease, and the ruleset as the first run left it (the
    /// bridge, its table and the DHCP daemon stay: they are the host's).
    fn assert_clean(&self, what: &str, ruleset: &str) {
        assert_eq!(self.taps(), Vec::<String>::new(), "{what}: taps left");
        assert_eq!(self.leases(), Vec::<String>::new(), "{what}: leases left");
        assert_eq!(self.ruleset(), ruleset, "{what}: ruleset changed");
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.home.join("net/netd.pid")) {
            let _ = sh(&format!("kill {}", pid.trim()));
        }
        let _ = sh(&format!("ip netns del {}", self.name));
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn sh(cmd: &str) -> Output {
    Command::new("sh").arg("-c").arg(cmd).output().unwrap()
}

fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: needs root for network namespaces");
    }
    root
}

fn kernel(dir: &Path, name: &str, code: &[u8]) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, elf_kernel(code, true)).unwrap();
    p.to_string_lossy().into_owned()
}

fn run_args(k: &str) -> Vec<&str> {
    vec![
        "run",
        "--kernel",
        k,
        "--initrd",
        "/dev/null",
        "--allow-pvm-host",
        "--memory",
        "32",
        "--net",
    ]
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn raw_run_network_is_taken_down_however_the_vm_ends() {
    if !can_run() {
        return;
    }
    let ns = Ns::new("end");
    let dir = ns.home.join("kernels");
    let reset = kernel(
        &dir,
        "reset",
        &program(&[&print("up\n"), code::RESET, code::HLT]),
    );
    let panic = kernel(
        &dir,
        "panic",
        &program(&[code::WARM_FLAG, code::RESET, code::HLT]),
    );
    let spin = kernel(&dir, "spin", &program(&[&print("up\n"), code::SPIN]));

    // Reset: exit 0; the run said which tap, MAC and address it had.
    let o = ns.mvm(&run_args(&reset)).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("tap mvm-") && err.contains("10.77.0."),
        "{err}"
    );
    let rules = ns.ruleset();
    assert!(rules.contains("table inet mvm"), "{rules}");
    ns.assert_clean("after a reset", &rules);

    // --net vhost: where /dev/vhost-net is missing, one warning line and
    // the tap path.
    let mut args = run_args(&reset);
    args.push("vhost");
    let o = ns.mvm(&args).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let warned = err
        .lines()
        .filter(|l| l.contains("vhost-net unavailable"))
        .count();
    if !Path::new("/dev/vhost-net").exists() {
        assert_eq!(warned, 1, "{err}");
        assert!(err.contains("using the tap path"), "{err}");
    }
    ns.assert_clean("after a vhost run", &rules);

    // Panic: exit 3.
    let o = ns.mvm(&run_args(&panic)).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    ns.assert_clean("after a panic", &rules);

    // Ctrl-C while the guest runs: exit 130, after the tap is gone.
    let mut child = ns.spawn_attached(&spin);
    // SAFETY: kill(2) on our own child's pid (`ip netns exec` execs mvm).
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(child.wait().unwrap().code(), Some(130));
    ns.assert_clean("after Ctrl-C", &rules);

    // SIGKILL leaves the tap and lease; the next run reconciles them away.
    let mut child = ns.spawn_attached(&spin);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(ns.taps().len(), 1, "a killed run cannot clean up itself");
    let o = ns.mvm(&run_args(&reset)).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    ns.assert_clean("after SIGKILL and the next run", &rules);
}

#[test]
fn raw_run_net_bad_values_are_refused() {
    let o = Command::new(env!("CARGO_BIN_EXE_mvm"))
        .args(["run", "--initrd", "/dev/null", "--net", "fast"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("'fast'") && err.contains("vhost"), "{err}");
}

/// Copies of one project folder on the real network plane: three managed
/// VMs (`mvm up --name`) up at once, each with its own tap, lease and IP
/// and its own forward of the project's declared port (moved for the
/// second and third), its VMM's proxy listening there; `down --rm` leaves
/// no tap or lease.
#[test]
fn project_copies_get_their_own_tap_lease_address_and_port() {
    if !can_run() {
        return;
    }
    let ns = Ns::new("copies");
    let k = kernel(
        &ns.home.join("kernels"),
        "spin",
        &program(&[&print("up\n"), code::SPIN]),
    );
    let project = ns.home.join("web");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("mvm.toml"),
        "memory = 64\nroot = \"minimal\"\ncpus = 1\nports = [\"18290:3000\"]\n",
    )
    .unwrap();
    let p = project.to_str().unwrap();
    let mvm = |args: &[&str]| {
        let o = ns
            .mvm(args)
            .env("MVM_KERNEL", &k)
            .env("MVM_INIT", "/bin/true")
            .env("MVM_ALLOW_PVM_HOST", "1")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "mvm {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // Never leave a VMM behind, whatever fails below.
    struct Reap(PathBuf);
    impl Drop for Reap {
        fn drop(&mut self) {
            for e in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
                if let Ok(pid) = std::fs::read_to_string(e.path().join("pid")) {
                    let _ = sh(&format!("kill -9 {}", pid.trim()));
                }
            }
        }
    }
    let _reap = Reap(ns.home.join("vms"));
    let names = ["web", "web-2", "web-3"];
    for name in names {
        mvm(&["up", p, "--name", name]);
    }
    wait_for("three taps and leases", || {
        ns.taps().len() == 3 && ns.leases().len() == 3
    });
    let rows: Vec<serde_json::Value> = serde_json::from_str(&mvm(&["list", "--json"])).unwrap();
    let mut ips = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let row = rows.iter().find(|r| r["name"] == *name).unwrap();
        assert_eq!(row["state"], "running", "{name}");
        let ip = row["ip"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no IP"));
        ips.push(ip.to_string());
        let port = 18290 + i;
        assert_eq!(
            row["ports"],
            serde_json::json!([format!("127.0.0.1:{port}->3000/tcp")]),
            "{name}"
        );
    }
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 3, "{rows:?}");
    // Each copy's VMM listens on its own port.
    let listening = ns.sh("ss -ltnpH");
    for port in 18290..18293 {
        assert!(
            listening.contains(&format!("127.0.0.1:{port} ")),
            "{port}: {listening}"
        );
    }
    for name in names {
        mvm(&["down", p, "--name", name, "--rm"]);
    }
    assert_eq!(ns.taps(), Vec::<String>::new(), "taps left");
    assert_eq!(ns.leases(), Vec::<String>::new(), "leases left");
}
