//! Nested boot benchmark, run inside the L2 host (benches/jobs/nested-boot.sh
//! through tests/nested/run-l2.sh): boots our guest kernel with the busybox
//! test initramfs, alternately with `mvm run`, QEMU microvm and Firecracker
//! (the references), and timestamps the console lines as they arrive on the VMM's
//! stdout: process start to the first console byte, to the guest init's
//! first line, to the process exit after the guest reboots; plus the
//! guest's own uptime as init printed it.
//!
//! Under TCG the absolute times mean little; compare mvm with the
//! references (ratios).
//! See benches/README.md.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use mvm_benches::args;
use mvm_benches::child::{deadline_in, Running};
use mvm_benches::clock::StartupReport;
use mvm_benches::stats::{self, cell, median, ratio};
use serde_json::{json, Value};

/// nested-boot: process start to guest init and to exit, mvm vs QEMU
/// microvm, same kernel and initramfs (run inside the nested L2 host).
#[derive(Parser)]
#[command(name = "nested-boot")]
struct Cli {
    #[command(flatten)]
    nested: args::Nested,
    /// QEMU for the reference (default: qemu-system-x86_64 from PATH;
    /// `none` skips it).
    #[arg(long, value_name = "PATH")]
    qemu: Option<String>,
    /// Firecracker for the second reference (none when not given).
    #[arg(long, value_name = "PATH")]
    firecracker: Option<PathBuf>,
    /// Measured boots of each, after one warm-up each.
    #[arg(long, value_name = "N", default_value_t = 20)]
    boots: usize,
    /// Guest memory.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    memory: u64,
    /// vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    cpus: u32,
    /// Results: nested-boot.json and console/.
    #[arg(long, env = "MVM_OUT", default_value = "nested-boot")]
    out: PathBuf,
    /// Limit for one boot.
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    timeout: f64,
    /// Appended to both guests' kernel command lines (for diagnostics,
    /// e.g. 'loglevel=7').
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    cmdline: String,
    /// Trivial static binary for the exec floor (default: `noop` beside
    /// this one).
    #[arg(long, value_name = "PATH")]
    noop: Option<PathBuf>,
    /// An extra argument for every `mvm run` (repeatable), e.g.
    /// `--mvm-arg=--no-jail --mvm-arg=--seccomp=off` to boot it as bare
    /// as the reference Firecracker (no jailer, no filters).
    #[arg(long = "mvm-arg", value_name = "ARG", allow_hyphen_values = true)]
    mvm_args: Vec<String>,
}

/// mvm's default command line; QEMU gets it (through [`qemu_cmdline_from`])
/// only if the warm-up mvm boot does not show us the real one.
const FALLBACK_CMDLINE: &str = "console=ttyS0 reboot=k,panic_warm panic=-1 pci=off nomodule quiet";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Vmm {
    Mvm,
    Qemu,
    Firecracker,
}

impl Vmm {
    fn name(self) -> &'static str {
        match self {
            Vmm::Mvm => "mvm",
            Vmm::Qemu => "qemu",
            Vmm::Firecracker => "firecracker",
        }
    }
}

/// One boot, seconds from the spawn.
#[derive(Default, Debug)]
struct Boot {
    first_byte_s: Option<f64>,
    init_started_s: Option<f64>,
    uptime_line_s: Option<f64>,
    guest_uptime_s: Option<f64>,
    /// The kernel's "reboot: Restarting system" line.
    restart_line_s: Option<f64>,
    /// mvm only (MVM_STARTUP_REPORT): the boot vCPU's first KVM_RUN.
    first_kvm_run_s: Option<f64>,
    cpu_to_first_kvm_run_s: Option<f64>,
    /// mvm only: its start-up stages, (name, seconds from the spawn to
    /// the stage's end, CPU seconds used by then).
    stages: Vec<(String, f64, f64)>,
    exit_s: f64,
    status: i32,
    cpu_s: f64,
    maxrss_mib: f64,
    rebooted: bool,
    timed_out: bool,
    /// When init's first line arrived: CPU seconds of the VMM's vCPU
    /// thread(s) and of its other threads.
    vcpu_cpu_at_init_s: Option<f64>,
    other_cpu_at_init_s: Option<f64>,
    threads_at_init: Vec<(String, f64)>,
    /// Guest RAM at init: resident, backed by huge pages, 2 MiB-aligned.
    guest_rss_at_init_mib: Option<f64>,
    guest_thp_at_init_mib: Option<f64>,
    guest_aligned_2m: Option<bool>,
    cmdline: Option<String>,
}

impl Boot {
    fn ok(&self) -> bool {
        self.status == 0 && self.init_started_s.is_some() && self.rebooted && !self.timed_out
    }

    /// Host time (since spawn) at which the guest's clock read 0: the VMM's
    /// start-up plus the kernel's boot before its clock starts.
    fn guest_clock_start_s(&self) -> Option<f64> {
        Some(self.uptime_line_s? - self.guest_uptime_s?)
    }

    /// Per-thread CPU time of the running VMM (`pids`: the process and,
    /// for a jailed mvm, its forked VMM); vCPU threads are `vcpuN` (mvm),
    /// `CPU N/KVM` (QEMU) and `fc_vcpu N` (Firecracker).
    fn sample_threads(&mut self, pids: &[u32]) {
        let threads: Vec<(String, u64)> = pids
            .iter()
            .flat_map(|&pid| mvm_benches::procfs::thread_cpu_of(pid))
            .collect();
        if threads.is_empty() {
            return;
        }
        let is_vcpu =
            |n: &str| n.starts_with("vcpu") || n.ends_with("/KVM") || n.starts_with("fc_vcpu");
        let sum = |vcpu: bool| {
            threads
                .iter()
                .filter(|(n, _)| is_vcpu(n) == vcpu)
                .map(|(_, ns)| *ns as f64 / 1e9)
                .sum::<f64>()
        };
        self.vcpu_cpu_at_init_s = Some(sum(true));
        self.other_cpu_at_init_s = Some(sum(false));
        self.threads_at_init = threads
            .iter()
            .map(|(n, ns)| (n.clone(), *ns as f64 / 1e9))
            .collect();
    }

    /// From the guest's last console line to the VMM's exit: the reset
    /// itself and the VMM's teardown.
    fn teardown_s(&self) -> Option<f64> {
        Some(self.exit_s - self.restart_line_s?)
    }

    fn to_json(&self) -> Value {
        json!({
            "ok": self.ok(),
            "status": self.status,
            "timed_out": self.timed_out,
            "first_byte_s": self.first_byte_s,
            "init_started_s": self.init_started_s,
            "uptime_line_s": self.uptime_line_s,
            "guest_uptime_s": self.guest_uptime_s,
            "guest_clock_start_s": self.guest_clock_start_s(),
            "first_kvm_run_s": self.first_kvm_run_s,
            "cpu_to_first_kvm_run_s": self.cpu_to_first_kvm_run_s,
            "stages": self.stages.iter().map(|(n, t, c)| json!({ "stage": n, "end_s": t, "cpu_s": c })).collect::<Vec<_>>(),
            "restart_line_s": self.restart_line_s,
            "teardown_s": self.teardown_s(),
            "vcpu_cpu_at_init_s": self.vcpu_cpu_at_init_s,
            "other_cpu_at_init_s": self.other_cpu_at_init_s,
            "guest_rss_at_init_mib": self.guest_rss_at_init_mib,
            "guest_thp_at_init_mib": self.guest_thp_at_init_mib,
            "guest_aligned_2m": self.guest_aligned_2m,
            "threads_at_init": self.threads_at_init.iter().map(|(n, s)| json!({ "name": n, "cpu_s": s })).collect::<Vec<_>>(),
            "exit_s": self.exit_s,
            "cpu_s": self.cpu_s,
            "maxrss_mib": self.maxrss_mib,
        })
    }
}

struct Bench {
    mvm: PathBuf,
    qemu: Option<PathBuf>,
    firecracker: Option<PathBuf>,
    kernel: PathBuf,
    initrd: PathBuf,
    memory_mib: u64,
    cpus: u32,
    timeout: f64,
    console_dir: PathBuf,
    qemu_cmdline: String,
    /// Appended to mvm's (`--cmdline`); QEMU's already contains it.
    extra_cmdline: String,
    /// Extra arguments of `mvm run` (`--mvm-arg`).
    mvm_args: Vec<String>,
}

impl Bench {
    /// The references configured, in the order they boot after mvm.
    fn references(&self) -> Vec<Vmm> {
        let mut r = Vec::new();
        if self.qemu.is_some() {
            r.push(Vmm::Qemu);
        }
        if self.firecracker.is_some() {
            r.push(Vmm::Firecracker);
        }
        r
    }

    fn firecracker_config(&self) -> PathBuf {
        self.console_dir.join("firecracker.json")
    }

    /// Firecracker's VM: the same kernel, initramfs, vCPUs and memory,
    /// mvm's command line without its devices (Firecracker adds entries
    /// for its own), and an entropy device as mvm's virtio-rng. It exits
    /// on the guest's i8042 reset, as mvm does.
    fn write_firecracker_config(&self, mvm_cmdline: &str) -> std::io::Result<()> {
        let cmdline: Vec<&str> = mvm_cmdline
            .split_whitespace()
            .filter(|a| !a.starts_with("virtio_mmio.device="))
            .collect();
        let config = json!({
            "boot-source": {
                "kernel_image_path": self.kernel,
                "initrd_path": self.initrd,
                "boot_args": cmdline.join(" "),
            },
            "drives": [],
            "machine-config": { "vcpu_count": self.cpus, "mem_size_mib": self.memory_mib },
            "entropy": {},
        });
        std::fs::write(self.firecracker_config(), config.to_string())
    }
}

fn secs(from: u64, to: u64) -> f64 {
    to.saturating_sub(from) as f64 / 1e9
}

impl Bench {
    fn command(&self, vmm: Vmm) -> Command {
        match vmm {
            Vmm::Mvm => {
                let mut c = Command::new(&self.mvm);
                c.arg("run")
                    .arg("--kernel")
                    .arg(&self.kernel)
                    .arg("--initrd")
                    .arg(&self.initrd)
                    .arg("--cpus")
                    .arg(self.cpus.to_string())
                    .arg("--memory")
                    .arg(self.memory_mib.to_string())
                    .args(&self.mvm_args)
                    .env_remove("MVM_LOG");
                if !self.extra_cmdline.is_empty() {
                    c.arg("--cmdline").arg(&self.extra_cmdline);
                }
                c
            }
            Vmm::Qemu => {
                let mut c = Command::new(self.qemu.as_ref().expect("QEMU is configured"));
                c.args([
                    "-M",
                    "microvm,acpi=off,rtc=on",
                    "-accel",
                    "kvm",
                    "-cpu",
                    "host",
                ])
                .arg("-smp")
                .arg(self.cpus.to_string())
                .arg("-m")
                .arg(self.memory_mib.to_string())
                .args([
                    "-nodefaults",
                    "-no-user-config",
                    "-nographic",
                    "-serial",
                    "stdio",
                    "-no-reboot",
                    "-device",
                    "virtio-rng-device",
                    // Thread names ("CPU 0/KVM") for the per-thread CPU.
                    "-name",
                    "bench,debug-threads=on",
                ])
                .arg("-kernel")
                .arg(&self.kernel)
                .arg("-initrd")
                .arg(&self.initrd)
                .arg("-append")
                .arg(&self.qemu_cmdline);
                c
            }
            Vmm::Firecracker => {
                let mut c = Command::new(self.firecracker.as_ref().expect("configured"));
                c.args([
                    "--no-api",
                    "--no-seccomp",
                    "--level",
                    "Error",
                    "--config-file",
                ])
                .arg(self.firecracker_config());
                c
            }
        }
    }

    fn boot(&self, vmm: Vmm, label: &str) -> Result<Boot, String> {
        let mut cmd = self.command(vmm);
        let report = self.console_dir.join(format!("{label}.startup.json"));
        if vmm == Vmm::Mvm {
            let _ = std::fs::remove_file(&report);
            cmd.env("MVM_STARTUP_REPORT", &report);
        }
        let err_path = self.console_dir.join(format!("{label}.stderr"));
        let err = File::create(&err_path).map_err(|e| format!("{}: {e}", err_path.display()))?;
        cmd.stderr(err);
        let mut run = Running::spawn(&mut cmd).map_err(|e| format!("{}: {e}", vmm.name()))?;
        let t0 = run.t_spawn_ns;
        let deadline = deadline_in(self.timeout);
        let mut b = Boot::default();
        while let Some((t, line)) = run.next_line(deadline) {
            if b.init_started_s.is_none() && line.contains("MVM-GUEST: init started") {
                b.init_started_s = Some(secs(t0, t));
                // As root `mvm run` forks its jailed VMM: the guest's
                // memory and the vCPU are the child's.
                let vmm = mvm_benches::procfs::vmm_of(run.pid());
                let pids = [run.pid(), vmm];
                b.sample_threads(if vmm == run.pid() { &pids[..1] } else { &pids });
                if let Ok(r) = mvm_benches::procfs::rss_of(vmm, self.memory_mib << 20) {
                    if r.guest_mappings > 0 {
                        b.guest_rss_at_init_mib = Some(r.guest_kb as f64 / 1024.0);
                        b.guest_thp_at_init_mib = Some(r.guest_thp_kb as f64 / 1024.0);
                        b.guest_aligned_2m = Some(r.guest_aligned_2m);
                    }
                }
            }
            if let Some((_, v)) = line.split_once("MVM-GUEST: uptime=") {
                b.uptime_line_s = Some(secs(t0, t));
                b.guest_uptime_s = v.trim().parse().ok();
            }
            if let Some((_, v)) = line.split_once("MVM-GUEST: cmdline=") {
                b.cmdline = Some(v.trim().to_string());
            }
            if line.contains("MVM-GUEST: action=reboot") {
                b.rebooted = true;
            }
            if b.restart_line_s.is_none() && line.contains("reboot: Restarting system") {
                b.restart_line_s = Some(secs(t0, t));
            }
        }
        b.first_byte_s = run.first_byte_ns.map(|f| secs(t0, f));
        b.timed_out = !run.at_eof();
        if b.timed_out {
            run.kill();
        }
        let console = std::mem::take(&mut run.output);
        let exit = run.wait().map_err(|e| e.to_string())?;
        let log = self.console_dir.join(format!("{label}.log"));
        std::fs::write(&log, &console).map_err(|e| format!("{}: {e}", log.display()))?;
        b.exit_s = secs(t0, exit.t_ns);
        b.status = exit.status;
        b.cpu_s = exit.cpu_ns as f64 / 1e9;
        b.maxrss_mib = exit.maxrss_kb as f64 / 1024.0;
        if vmm == Vmm::Mvm {
            let r = std::fs::read_to_string(&report)
                .map_err(|e| e.to_string())
                .and_then(|t| StartupReport::parse(&t));
            match r {
                Ok(r) => {
                    b.first_kvm_run_s = Some(secs(t0, r.monotonic_ns));
                    b.cpu_to_first_kvm_run_s = Some(r.cpu_ns as f64 / 1e9);
                    b.stages = r
                        .stages
                        .into_iter()
                        .map(|s| (s.name, secs(t0, s.monotonic_ns), s.cpu_ns as f64 / 1e9))
                        .collect();
                }
                Err(e) => eprintln!("nested-boot: {label}: no start-up report: {e}"),
            }
        }
        Ok(b)
    }
}

/// Per start-up stage of mvm's boots: its name and, over the boots, the
/// stage's end (seconds from the spawn), its own wall time and CPU time
/// (from the previous stage's end; the first one's from the spawn).
type StageSamples = (String, Vec<f64>, Vec<f64>, Vec<f64>);

fn mvm_stages<'a>(boots: impl Iterator<Item = &'a Boot>) -> Vec<StageSamples> {
    let mut rows: Vec<StageSamples> = Vec::new();
    for b in boots {
        let mut prev = (0.0, None);
        for (name, end, cpu) in &b.stages {
            let i = match rows.iter().position(|r| &r.0 == name) {
                Some(i) => i,
                None => {
                    rows.push((name.clone(), Vec::new(), Vec::new(), Vec::new()));
                    rows.len() - 1
                }
            };
            rows[i].1.push(*end);
            rows[i].2.push(end - prev.0);
            rows[i].3.push(prev.1.map_or(*cpu, |p| cpu - p));
            prev = (*end, Some(*cpu));
        }
    }
    rows
}

/// exec -> exit of `cmd`, `n` times (seconds).
fn exec_floor(mut make: impl FnMut() -> Command, n: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for _ in 0..n {
        let mut c = make();
        c.stderr(std::process::Stdio::null());
        let Ok(mut run) = Running::spawn(&mut c) else {
            continue;
        };
        while run.next_line(deadline_in(120.0)).is_some() {}
        let t0 = run.t_spawn_ns;
        if let Ok(e) = run.wait() {
            if e.status == 0 {
                out.push(secs(t0, e.t_ns));
            }
        }
    }
    out
}

/// QEMU's kernel command line: the one mvm gave its guest, without mvm's
/// own virtio devices (QEMU microvm adds entries for its own), plus
/// `reboot=t`. microvm has no i8042, so with mvm's `reboot=k` Linux polls
/// the missing controller's status port (`kb_wait`: 10 x 65536 port reads,
/// each a VM exit to QEMU) before it falls back to a triple fault: ~50 s
/// per boot in L2. A triple fault is microvm's reset; QEMU exits on it with
/// `-no-reboot`.
fn qemu_cmdline_from(mvm_cmdline: &str) -> String {
    let mut args: Vec<&str> = mvm_cmdline
        .split_whitespace()
        .filter(|a| !a.starts_with("virtio_mmio.device="))
        .collect();
    args.push("reboot=t");
    args.join(" ")
}

fn main() {
    let args = Cli::parse();
    let boots = args.boots;
    // `mvm run` exits before its forked VMM has finished leaving: the
    // VMM's CPU and memory are counted when it has.
    if let Err(e) = mvm_benches::child::adopt_orphans() {
        eprintln!("cannot become the subreaper of mvm's VMM (its CPU goes uncounted): {e}");
    }
    let extra = args.cmdline.trim().to_string();
    let out = args.out;
    let console_dir = out.join("console");
    std::fs::create_dir_all(&console_dir).expect("creates the results folder");
    let qemu = args::qemu(args.qemu.as_deref());
    let noop = args.noop.unwrap_or_else(args::noop_beside_me);
    let mut bench = Bench {
        mvm: args.nested.mvm,
        qemu,
        firecracker: args.firecracker,
        kernel: args.nested.kernel,
        initrd: args.nested.initrd,
        memory_mib: args.memory,
        cpus: args.cpus,
        timeout: args.timeout,
        console_dir,
        qemu_cmdline: qemu_cmdline_from(&format!("{FALLBACK_CMDLINE} {extra}")),
        extra_cmdline: extra,
        mvm_args: args.mvm_args,
    };
    if !Path::new("/dev/kvm").exists() {
        eprintln!("nested-boot: no /dev/kvm here (run this inside L2: benches/run.sh)");
        std::process::exit(1);
    }
    let progress = |s: String| eprintln!("nested-boot: {s}");

    // Floors: what exec alone costs here, for a static binary, for mvm
    // (clap parses --version and exits) and for QEMU (dynamic loading).
    progress("exec floors".into());
    let floor_noop = exec_floor(|| Command::new(&noop), 5);
    let floor_mvm = exec_floor(
        || {
            let mut c = Command::new(&bench.mvm);
            c.arg("--version");
            c
        },
        5,
    );
    let floor_qemu = match &bench.qemu {
        Some(q) => exec_floor(
            || {
                let mut c = Command::new(q);
                c.arg("--version");
                c
            },
            5,
        ),
        None => Vec::new(),
    };

    // Warm-ups (not counted): caches, and mvm's real command line for the
    // references.
    let mut warmups = serde_json::Map::new();
    let mut mvm_cmdline = format!("{FALLBACK_CMDLINE} {}", bench.extra_cmdline);
    match bench.boot(Vmm::Mvm, "mvm-warmup") {
        Ok(b) => {
            progress(format!(
                "mvm warm-up: ok={} init at {}s, exit at {:.2}s",
                b.ok(),
                cell(b.init_started_s, 2),
                b.exit_s
            ));
            if let Some(c) = &b.cmdline {
                mvm_cmdline = c.clone();
            }
            warmups.insert("mvm".into(), b.to_json());
        }
        Err(e) => progress(format!("mvm warm-up failed: {e}")),
    }
    bench.qemu_cmdline = qemu_cmdline_from(&mvm_cmdline);
    progress(format!(
        "QEMU's kernel command line: {}",
        bench.qemu_cmdline
    ));
    if bench.firecracker.is_some() {
        if let Err(e) = bench.write_firecracker_config(&mvm_cmdline) {
            progress(format!("cannot write Firecracker's config: {e}"));
            bench.firecracker = None;
        }
    }
    let refs = bench.references();
    let vmms: Vec<Vmm> = std::iter::once(Vmm::Mvm)
        .chain(refs.iter().copied())
        .collect();
    for &r in &refs {
        match bench.boot(r, &format!("{}-warmup", r.name())) {
            Ok(b) => {
                progress(format!(
                    "{} warm-up: ok={} init at {}s, exit at {:.2}s",
                    r.name(),
                    b.ok(),
                    cell(b.init_started_s, 2),
                    b.exit_s
                ));
                warmups.insert(r.name().into(), b.to_json());
            }
            Err(e) => progress(format!("{} warm-up failed: {e}", r.name())),
        }
    }

    // Measured boots, alternating so drift hits both alike.
    let mut results: Vec<(Vmm, Vec<Boot>)> = vmms.iter().map(|&v| (v, Vec::new())).collect();
    let mut errors = Vec::new();
    for i in 1..=boots {
        for (vmm, list) in results.iter_mut() {
            let label = format!("{}-{i:02}", vmm.name());
            match bench.boot(*vmm, &label) {
                Ok(b) => {
                    progress(format!(
                        "{label}: ok={} status={} first byte {}s, init {}s, guest uptime {}s, exit {:.3}s",
                        b.ok(),
                        b.status,
                        cell(b.first_byte_s, 3),
                        cell(b.init_started_s, 3),
                        cell(b.guest_uptime_s, 2),
                        b.exit_s
                    ));
                    list.push(b);
                }
                Err(e) => {
                    progress(format!("{label}: {e}"));
                    errors.push(format!("{label}: {e}"));
                }
            }
        }
    }

    // --- summaries (successful boots only) ------------------------------------
    type Metric = (&'static str, &'static str, fn(&Boot) -> Option<f64>);
    let metrics: [Metric; 14] = [
        (
            "first_kvm_run_s",
            "exec -> first KVM_RUN (mvm only), s",
            |b| b.first_kvm_run_s,
        ),
        (
            "cpu_to_first_kvm_run_s",
            "CPU to first KVM_RUN (mvm only), s",
            |b| b.cpu_to_first_kvm_run_s,
        ),
        ("guest_clock_start_s", "exec -> guest clock zero, s", |b| {
            b.guest_clock_start_s()
        }),
        ("first_byte_s", "exec -> first console byte, s", |b| {
            b.first_byte_s
        }),
        (
            "init_started_s",
            "exec -> guest init's first line, s",
            |b| b.init_started_s,
        ),
        ("guest_uptime_s", "guest uptime printed by init, s", |b| {
            b.guest_uptime_s
        }),
        (
            "vcpu_cpu_at_init_s",
            "at init: CPU of the vCPU thread, s",
            |b| b.vcpu_cpu_at_init_s,
        ),
        (
            "other_cpu_at_init_s",
            "at init: CPU of the other threads, s",
            |b| b.other_cpu_at_init_s,
        ),
        (
            "guest_rss_at_init_mib",
            "at init: guest RAM resident, MiB",
            |b| b.guest_rss_at_init_mib,
        ),
        (
            "guest_thp_at_init_mib",
            "at init: guest RAM in huge pages, MiB",
            |b| b.guest_thp_at_init_mib,
        ),
        ("teardown_s", "guest's reset line -> VMM exit, s", |b| {
            b.teardown_s()
        }),
        ("exit_s", "exec -> exit after the guest reboots, s", |b| {
            Some(b.exit_s)
        }),
        ("cpu_s", "VMM CPU time, whole boot, s", |b| Some(b.cpu_s)),
        ("maxrss_mib", "VMM peak RSS, MiB", |b| Some(b.maxrss_mib)),
    ];
    let samples = |vmm: Vmm, f: fn(&Boot) -> Option<f64>| -> Vec<f64> {
        results
            .iter()
            .filter(|(v, _)| *v == vmm)
            .flat_map(|(_, l)| l.iter().filter(|b| b.ok()).filter_map(f))
            .collect()
    };
    let ok_count = |vmm: Vmm| {
        results
            .iter()
            .filter(|(v, _)| *v == vmm)
            .map(|(_, l)| l.iter().filter(|b| b.ok()).count())
            .sum::<usize>()
    };

    println!(
        "\nNested boot (L2 host under QEMU TCG; guest {} vCPU, {} MiB; kernel {}): medians of successful boots",
        bench.cpus,
        bench.memory_mib,
        bench.kernel.display()
    );
    let short = |v: Vmm| match v {
        Vmm::Firecracker => "fc",
        v => v.name(),
    };
    let mut header = format!("{:<44} {:>10}", "medians", "mvm");
    for &r in &refs {
        header += &format!(" {:>10}", short(r));
    }
    for &r in &refs {
        header += &format!(" {:>10}", format!("mvm/{}", short(r)));
    }
    println!("{header}");
    let mut summary = serde_json::Map::new();
    for (key, label, f) in metrics {
        let m = median(&samples(Vmm::Mvm, f));
        let medians: Vec<Option<f64>> = refs.iter().map(|&r| median(&samples(r, f))).collect();
        let mut row = format!("{label:<44} {:>10}", cell(m, 3));
        for r in &medians {
            row += &format!(" {:>10}", cell(*r, 3));
        }
        for r in &medians {
            row += &format!(" {:>10}", cell(ratio(m, *r), 3));
        }
        println!("{row}");
        let unit = if key.ends_with("_mib") { "MiB" } else { "s" };
        let mut entry = serde_json::Map::new();
        entry.insert("mvm".into(), stats::to_json(&samples(Vmm::Mvm, f), unit, 4));
        for (&r, &med) in refs.iter().zip(&medians) {
            entry.insert(r.name().into(), stats::to_json(&samples(r, f), unit, 4));
            entry.insert(format!("mvm_over_{}", r.name()), json!(ratio(m, med)));
        }
        summary.insert(key.to_string(), Value::Object(entry));
    }
    let mut ok_row = format!(
        "{:<44} {:>10}",
        "boots ok",
        format!("{}/{boots}", ok_count(Vmm::Mvm))
    );
    for &r in &refs {
        ok_row += &format!(" {:>10}", format!("{}/{boots}", ok_count(r)));
    }
    println!("{ok_row}");
    let aligned = |vmm: Vmm| {
        let all: Vec<bool> = results
            .iter()
            .filter(|(v, _)| *v == vmm)
            .flat_map(|(_, l)| l.iter().filter_map(|b| b.guest_aligned_2m))
            .collect();
        format!("{}/{}", all.iter().filter(|a| **a).count(), all.len())
    };
    let stage_rows = mvm_stages(
        results
            .iter()
            .filter(|(v, _)| *v == Vmm::Mvm)
            .flat_map(|(_, l)| l.iter().filter(|b| b.ok())),
    );
    if !stage_rows.is_empty() {
        println!(
            "\nmvm start-up stages (medians: exec -> stage end, the stage's own wall and CPU time), s"
        );
        for (name, end, wall, cpu) in &stage_rows {
            println!(
                "  {name:<22} {:>8} {:>8} {:>8}",
                cell(median(end), 4),
                cell(median(wall), 4),
                cell(median(cpu), 4)
            );
        }
    }
    println!(
        "guest RAM mapping 2 MiB-aligned in the host: mvm {} boots, qemu {}, firecracker {}",
        aligned(Vmm::Mvm),
        aligned(Vmm::Qemu),
        aligned(Vmm::Firecracker)
    );
    println!(
        "exec floors here (exec -> exit, median of 5): static noop {}s, mvm --version {}s, qemu --version {}s",
        cell(median(&floor_noop), 4),
        cell(median(&floor_mvm), 4),
        cell(median(&floor_qemu), 4),
    );

    let per_boot = |vmm: Vmm| -> Vec<Value> {
        results
            .iter()
            .filter(|(v, _)| *v == vmm)
            .flat_map(|(_, l)| l.iter().map(Boot::to_json))
            .collect()
    };
    let result = json!({
        "benchmark": "nested-boot",
        "host": mvm_benches::host_description(),
        "boots": boots,
        "guest": {
            "kernel": bench.kernel,
            "initrd": bench.initrd,
            "memory_mib": bench.memory_mib,
            "cpus": bench.cpus,
        },
        "mvm": { "path": bench.mvm },
        "qemu": bench.qemu.as_ref().map(|q| json!({
            "path": q,
            "machine": "-M microvm,acpi=off,rtc=on -accel kvm -cpu host -device virtio-rng-device -no-reboot",
            "cmdline": bench.qemu_cmdline,
        })),
        "firecracker": bench.firecracker.as_ref().map(|f| json!({
            "path": f,
            "config": std::fs::read_to_string(bench.firecracker_config()).ok(),
        })),
        "ok": {
            "mvm": ok_count(Vmm::Mvm),
            "qemu": ok_count(Vmm::Qemu),
            "firecracker": ok_count(Vmm::Firecracker),
        },
        "summary": summary,
        "exec_floor_s": {
            "noop": stats::to_json(&floor_noop, "s", 4),
            "mvm_version": stats::to_json(&floor_mvm, "s", 4),
            "qemu_version": stats::to_json(&floor_qemu, "s", 4),
        },
        "warmups": warmups,
        "per_boot": {
            "mvm": per_boot(Vmm::Mvm),
            "qemu": per_boot(Vmm::Qemu),
            "firecracker": per_boot(Vmm::Firecracker),
        },
        "errors": errors,
    });
    let path = out.join("nested-boot.json");
    if let Err(e) = mvm_benches::write_json(&path, &result) {
        eprintln!("nested-boot: cannot write {}: {e}", path.display());
        std::process::exit(1);
    }
    progress(format!("wrote {}", path.display()));
    if ok_count(Vmm::Mvm) == 0 {
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_gets_mvms_cmdline_without_its_devices() {
        assert_eq!(
            qemu_cmdline_from("console=ttyS0 quiet virtio_mmio.device=4K@0xd0000000:5 a=b"),
            "console=ttyS0 quiet a=b reboot=t"
        );
    }

    #[test]
    fn command_line_of_the_job() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        // jobs/nested-boot.sh passes an empty --cmdline when none is asked.
        let line = "nested-boot --mvm m --kernel k --initrd i --boots 3 --out /o";
        let a = Cli::try_parse_from(line.split(' ').chain(["--cmdline", ""])).unwrap();
        assert_eq!((a.boots, a.cmdline.as_str(), a.memory), (3, "", 256));
        assert_eq!(a.out, PathBuf::from("/o"));
    }
}
