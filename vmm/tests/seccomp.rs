//! seccomp on real KVM: once a VM runs, every thread of the VMM's process
//! is filtered (Seccomp: 2, NoNewPrivs: 1), a vCPU thread carries its own
//! filter on top, and a call outside the lists kills the process, from a
//! vCPU and from the event loop's thread.
//!
//! The filters cover the whole process, so the VM runs in a child: this
//! test binary again, running only `child_vm` with MVM_SECCOMP_CHILD set.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mvm_test_guests::{code, elf_kernel, print, program};
use vmm::api::{call, ApiRequest};
use vmm::seccomp::Seccomp;
use vmm::{Console, Vm, VmConfig};

/// The child's VM: prints "up", then spins until killed.
#[test]
fn child_vm() {
    let Some(dir) = std::env::var_os("MVM_SECCOMP_CHILD") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let kernel = dir.join("kernel");
    let guest = program(&[&print("up\n"), code::SPIN]);
    std::fs::File::create(&kernel)
        .unwrap()
        .write_all(&elf_kernel(&guest, true))
        .unwrap();
    let mut config = VmConfig::new(&kernel);
    config.memory_mib = 32;
    config.cpus = 2;
    config.console = Console::File(dir.join("console"));
    config.api_socket = Some(dir.join("api.sock"));
    config.allow_pvm_host = true;
    config.seccomp = Seccomp::Kill;
    let vm = Vm::new(&config).expect("VM builds");
    vm.run().expect("VM runs");
}

struct Vmm {
    child: Child,
    dir: PathBuf,
}

impl Vmm {
    fn start(name: &str, violation: Option<&str>) -> Vmm {
        let dir = std::env::temp_dir().join(format!("mvm-seccomp-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "child_vm", "--nocapture", "--test-threads", "1"])
            .env("MVM_SECCOMP_CHILD", &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(kind) = violation {
            cmd.env("MVM_TEST_SECCOMP_VIOLATION", kind);
        }
        Vmm {
            child: cmd.spawn().unwrap(),
            dir,
        }
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.join("console")).unwrap_or_default()
    }

    /// How the child ended, within `limit`.
    fn ended(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the VMM did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `Field:` of a /proc status file.
fn field(status: &str, name: &str) -> Option<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

#[test]
fn every_thread_is_filtered_and_vcpus_twice() {
    let vmm = Vmm::start("threads", None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !vmm.console().contains("up") {
        assert!(Instant::now() < deadline, "the guest never printed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let tasks = format!("/proc/{}/task", vmm.child.id());
    // vCPU 1 may start just after vCPU 0 printed.
    let statuses = loop {
        let statuses: Vec<String> = std::fs::read_dir(&tasks)
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
            .collect();
        // A vCPU counts once its own filter is on.
        let vcpus = statuses
            .iter()
            .filter(|s| field(s, "Name").is_some_and(|n| n.starts_with("vcpu")))
            .filter(|s| field(s, "Seccomp_filters").is_none_or(|n| n == "2"))
            .count();
        if vcpus == 2 {
            break statuses;
        }
        assert!(Instant::now() < deadline, "{vcpus} vCPU threads");
        std::thread::sleep(Duration::from_millis(20));
    };
    for status in &statuses {
        let comm = field(status, "Name").unwrap();
        assert_eq!(field(status, "Seccomp").as_deref(), Some("2"), "{comm}");
        assert_eq!(field(status, "NoNewPrivs").as_deref(), Some("1"), "{comm}");
        // Older kernels do not show the count. KVM's own workers in the
        // process (kvm-nx-lpage-recovery) copy a vCPU's filters.
        if let Some(n) = field(status, "Seccomp_filters") {
            assert!(n == "1" || n == "2", "{comm}: {n}");
        }
    }
}

#[test]
fn a_forbidden_call_kills_the_vmm() {
    for kind in ["vcpu", "process"] {
        let mut vmm = Vmm::start(kind, Some(kind));
        let status = vmm.ended(Duration::from_secs(60));
        assert_eq!(status.signal(), Some(libc::SIGSYS), "{kind}: {status:?}");
    }
}

#[test]
fn without_a_violation_the_guest_runs_on() {
    // The hook's call is harmless without a filter, and the filtered VM
    // stays up: it does not die of a call the lists forgot.
    let mut vmm = Vmm::start("runs", None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !vmm.console().contains("up") {
        assert!(Instant::now() < deadline, "the guest never printed");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The API on the event loop, a dump from every vCPU, pause and
    // resume, then a stop and the exit path: all within the lists.
    let socket = vmm.dir.join("api.sock");
    let t = Duration::from_secs(30);
    for request in [
        ApiRequest::Status,
        ApiRequest::Debug,
        ApiRequest::Pause,
        ApiRequest::Resume,
    ] {
        let reply = call(&socket, &request, t).unwrap();
        assert!(reply.ok, "{request:?}: {reply:?}");
    }
    assert!(vmm.child.try_wait().unwrap().is_none(), "the VMM died");
    call(&socket, &ApiRequest::Stop, t).unwrap();
    let status = vmm.ended(Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
}
