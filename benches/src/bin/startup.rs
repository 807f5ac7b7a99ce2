//! Native start-up benchmark: how long and how much CPU `mvm run` takes
//! from exec to the boot vCPU's first KVM_RUN, and how much memory the VMM
//! holds beyond the guest's own, with a tiny hand-made guest that runs on
//! this host's KVM (PVM-backed or not). References measured in the same
//! run, interleaved with ours: a trivial static binary (the process-creation
//! floor) and QEMU microvm booting the very same guest ELF.
//!
//! See benches/README.md; `benches/run.sh` runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::Parser;
use mvm_benches::args;
use mvm_benches::child::{deadline_in, Running};
use mvm_benches::clock::StartupReport;
use mvm_benches::procfs::{cpu_ns_of, rss_of, threads_of, vmm_of, Rss};
use mvm_benches::stats::{self, cell, median, ratio};
use mvm_test_guests::{pvh_elf, Then, GREETING};
use serde_json::{json, Value};

/// startup: exec of `mvm run` to its first KVM_RUN (time, CPU), and its RSS
/// beyond guest memory, against a trivial static binary and QEMU microvm.
#[derive(Parser)]
#[command(name = "startup")]
struct Cli {
    /// The mvm binary (a static release build).
    #[arg(long, value_name = "PATH")]
    mvm: PathBuf,
    /// The trivial static binary (default: `noop` beside this one).
    #[arg(long, value_name = "PATH")]
    noop: Option<PathBuf>,
    /// QEMU for the reference (default: qemu-system-x86_64 from PATH;
    /// `none` skips it).
    #[arg(long, value_name = "PATH")]
    qemu: Option<String>,
    /// Measured runs of each, after one warm-up.
    #[arg(long, value_name = "N", default_value_t = 20)]
    runs: usize,
    /// Guest memory.
    #[arg(long, value_name = "MIB", default_value_t = 128)]
    memory: u64,
    /// Write the results as JSON.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Scratch folder (default: a new one under $TMPDIR).
    #[arg(long, value_name = "DIR")]
    work: Option<PathBuf>,
    /// Limit for one run.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    timeout: f64,
    /// Also time `mvm run` to its first KVM_RUN with this real guest
    /// kernel and --initrd (loading included); the guest is killed right
    /// after (it cannot run on a PVM host).
    #[arg(long, value_name = "PATH", requires = "initrd")]
    kernel: Option<PathBuf>,
    /// The initramfs that goes with --kernel.
    #[arg(long, value_name = "PATH", requires = "kernel")]
    initrd: Option<PathBuf>,
    /// An extra argument for every `mvm run` (repeatable), e.g.
    /// `--mvm-arg=--seccomp=off` to measure what the filters cost.
    #[arg(long = "mvm-arg", value_name = "ARG", allow_hyphen_values = true)]
    mvm_args: Vec<String>,
}

/// Targets from the issue (Firecracker publishes 8 CPU ms and 5 MiB).
const TARGET_CPU_MS: f64 = 3.0;
const TARGET_OVERHEAD_MIB: f64 = 3.0;

#[derive(Default)]
struct Series {
    values: std::collections::BTreeMap<&'static str, Vec<f64>>,
    failures: Vec<String>,
}

impl Series {
    fn push(&mut self, key: &'static str, v: f64) {
        self.values.entry(key).or_default().push(v);
    }
    fn med(&self, key: &str) -> Option<f64> {
        self.values.get(key).and_then(|v| median(v))
    }
    fn min(&self, key: &str) -> Option<f64> {
        self.values
            .get(key)
            .and_then(|v| stats::summarize(v))
            .map(|s| s.min)
    }
    fn to_json(&self, units: &[(&str, &str, i32)]) -> Value {
        let mut m = serde_json::Map::new();
        for (key, unit, decimals) in units {
            if let Some(v) = self.values.get(key) {
                m.insert(key.to_string(), stats::to_json(v, unit, *decimals));
            }
        }
        m.insert("failures".into(), json!(self.failures));
        Value::Object(m)
    }
    fn push_rss(&mut self, rss: &Rss) {
        let mib = |kb: u64| kb as f64 / 1024.0;
        self.push("rss_total_mib", mib(rss.total_kb));
        self.push("rss_guest_mib", mib(rss.guest_kb));
        self.push("rss_overhead_mib", mib(rss.overhead_kb()));
        self.push("rss_file_mib", mib(rss.file_kb));
        self.push("rss_anon_mib", mib(rss.anon_kb));
        self.push("rss_other_mib", mib(rss.other_kb));
        self.push("guest_mappings", f64::from(rss.guest_mappings));
        self.push("rss_guest_thp_mib", mib(rss.guest_thp_kb));
        self.push(
            "guest_aligned_2m",
            f64::from(u8::from(rss.guest_aligned_2m)),
        );
    }
}

const MS: f64 = 1e6;

fn ms(from: u64, to: u64) -> f64 {
    to.saturating_sub(from) as f64 / MS
}

struct Setup {
    mvm: PathBuf,
    noop: PathBuf,
    qemu: Option<PathBuf>,
    memory_mib: u64,
    timeout: f64,
    reset_elf: PathBuf,
    spin_elf: PathBuf,
    report: PathBuf,
    /// The real guest kernel and initramfs, for `mvm_real`.
    real: Option<(PathBuf, PathBuf)>,
    mvm_args: Vec<String>,
}

impl Setup {
    fn mvm_cmd(&self, kernel: &Path) -> Command {
        let mut c = Command::new(&self.mvm);
        c.args(["run", "--allow-pvm-host", "--cpus", "1", "--memory"])
            .arg(self.memory_mib.to_string())
            .arg("--kernel")
            .arg(kernel)
            .args(&self.mvm_args)
            .env_remove("MVM_LOG")
            .env_remove("MVM_STARTUP_REPORT")
            .stderr(Stdio::null());
        c
    }

    fn qemu_cmd(&self, qemu: &Path) -> Command {
        let mut c = Command::new(qemu);
        c.args([
            "-M",
            "microvm,acpi=off,rtc=on",
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-smp",
            "1",
            "-m",
        ])
        .arg(self.memory_mib.to_string())
        .args([
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-serial",
            "stdio",
            "-no-reboot",
            "-kernel",
        ])
        .arg(&self.spin_elf)
        .stderr(Stdio::null());
        c
    }

    fn read_report(&self) -> Result<StartupReport, String> {
        let text = std::fs::read_to_string(&self.report)
            .map_err(|e| format!("no start-up report at {}: {e}", self.report.display()))?;
        StartupReport::parse(&text)
    }

    /// The floor: exec to main() and to exit of a static binary.
    fn noop(&self, s: &mut Series) -> Result<(), String> {
        let _ = std::fs::remove_file(&self.report);
        let mut c = Command::new(&self.noop);
        c.env("MVM_STARTUP_REPORT", &self.report);
        let run = Running::spawn(&mut c).map_err(|e| format!("{}: {e}", self.noop.display()))?;
        let t0 = run.t_spawn_ns;
        let exit = run.wait().map_err(|e| e.to_string())?;
        if exit.status != 0 {
            return Err(format!("noop exited {}", exit.status));
        }
        let r = self.read_report()?;
        s.push("to_main_ms", ms(t0, r.monotonic_ns));
        s.push("cpu_to_main_ms", r.cpu_ns as f64 / MS);
        s.push("to_exit_ms", ms(t0, exit.t_ns));
        s.push("cpu_total_ms", exit.cpu_ns as f64 / MS);
        s.push("maxrss_mib", exit.maxrss_kb as f64 / 1024.0);
        Ok(())
    }

    /// mvm with the guest that prints and resets: exec to the first
    /// KVM_RUN (the report), to the first serial byte, to exit.
    fn mvm_reset(&self, s: &mut Series) -> Result<(), String> {
        let _ = std::fs::remove_file(&self.report);
        let mut c = self.mvm_cmd(&self.reset_elf);
        // A kernel+initramfs run (the tiny guest ignores its initramfs).
        c.args(["--initrd", "/dev/null"]);
        c.env("MVM_STARTUP_REPORT", &self.report);
        let mut run = Running::spawn(&mut c).map_err(|e| format!("mvm: {e}"))?;
        let t0 = run.t_spawn_ns;
        let deadline = deadline_in(self.timeout);
        while run.next_line(deadline).is_some() {}
        if !run.at_eof() {
            run.kill();
        }
        let first = run.first_byte_ns;
        let out = String::from_utf8_lossy(&run.output).into_owned();
        let exit = run.wait().map_err(|e| e.to_string())?;
        if exit.status != 0 || out != GREETING {
            return Err(format!(
                "mvm run (reset guest) exited {} with console {out:?}",
                exit.status
            ));
        }
        let r = self.read_report()?;
        s.push("to_first_kvm_run_ms", ms(t0, r.monotonic_ns));
        s.push("cpu_to_first_kvm_run_ms", r.cpu_ns as f64 / MS);
        if let Some(f) = first {
            s.push("to_first_serial_byte_ms", ms(t0, f));
        }
        s.push("to_exit_ms", ms(t0, exit.t_ns));
        s.push("cpu_total_ms", exit.cpu_ns as f64 / MS);
        s.push("maxrss_mib", exit.maxrss_kb as f64 / 1024.0);
        Ok(())
    }

    /// mvm with the real guest kernel and initramfs, up to the first
    /// KVM_RUN: the report appears, RSS is read, the VMM is killed.
    fn mvm_real(&self, kernel: &Path, initrd: &Path, s: &mut Series) -> Result<(), String> {
        let _ = std::fs::remove_file(&self.report);
        let mut c = self.mvm_cmd(kernel);
        c.arg("--initrd")
            .arg(initrd)
            .args(["--console", "none"])
            .env("MVM_STARTUP_REPORT", &self.report);
        let run = Running::spawn(&mut c).map_err(|e| format!("mvm: {e}"))?;
        let t0 = run.t_spawn_ns;
        let deadline = deadline_in(self.timeout);
        let mut report = None;
        while mvm_benches::clock::monotonic_ns() < deadline {
            if let Ok(text) = std::fs::read_to_string(&self.report) {
                if text.ends_with('\n') {
                    report = Some(StartupReport::parse(&text)?);
                    break;
                }
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        let rss = rss_of(run.pid(), self.memory_mib << 20);
        run.kill();
        let exit = run.wait().map_err(|e| e.to_string())?;
        let Some(r) = report else {
            return Err(format!(
                "mvm run (real kernel): no start-up report within {}s (exit {})",
                self.timeout, exit.status
            ));
        };
        s.push("to_first_kvm_run_ms", ms(t0, r.monotonic_ns));
        s.push("cpu_to_first_kvm_run_ms", r.cpu_ns as f64 / MS);
        if let Ok(rss) = rss {
            s.push_rss(&rss);
        }
        Ok(())
    }

    /// A VMM whose guest prints then spins: at the first serial byte, the
    /// time since exec, CPU so far (schedstat of its live threads) and RSS
    /// by kind; then SIGKILL.
    fn at_first_byte(&self, mut c: Command, what: &str, s: &mut Series) -> Result<(), String> {
        let mut run = Running::spawn(&mut c).map_err(|e| format!("{what}: {e}"))?;
        let t0 = run.t_spawn_ns;
        let first = run.wait_first_byte(deadline_in(self.timeout));
        // As root `mvm run` forks its jailed VMM: its CPU counts with the
        // parent's, its memory and threads are the VMM's.
        let vmm = vmm_of(run.pid());
        let cpu = match (cpu_ns_of(run.pid()), vmm != run.pid()) {
            (Some(p), true) => cpu_ns_of(vmm).map(|c| c + p),
            (cpu, _) => cpu,
        };
        let rss = rss_of(vmm, self.memory_mib << 20);
        let threads = threads_of(vmm);
        run.kill();
        let out = String::from_utf8_lossy(&run.output).into_owned();
        let exit = run.wait().map_err(|e| e.to_string())?;
        let Some(first) = first else {
            return Err(format!(
                "{what}: no console output within {}s (exit {}, output {out:?})",
                self.timeout, exit.status
            ));
        };
        let rss = rss.map_err(|e| format!("{what}: smaps: {e}"))?;
        s.push("to_first_serial_byte_ms", ms(t0, first));
        if let Some(cpu) = cpu {
            s.push("cpu_to_first_serial_byte_ms", cpu as f64 / MS);
        }
        if let Some(n) = threads {
            s.push("threads", n as f64);
        }
        s.push_rss(&rss);
        Ok(())
    }
}

fn record(s: &mut Series, what: &str, r: Result<(), String>) {
    if let Err(e) = r {
        eprintln!("startup: {what}: {e}");
        s.failures.push(e);
    }
}

fn host_kvm() -> &'static str {
    if Path::new("/sys/module/kvm_pvm").exists() {
        "kvm_pvm (PVM-backed)"
    } else if Path::new("/sys/module/kvm_intel").exists() {
        "kvm_intel"
    } else if Path::new("/sys/module/kvm_amd").exists() {
        "kvm_amd"
    } else {
        "unknown"
    }
}

fn main() {
    let args = Cli::parse();
    let runs = args.runs;
    // `mvm run` exits before its forked VMM has finished leaving: the
    // VMM's CPU and memory are counted when it has.
    if let Err(e) = mvm_benches::child::adopt_orphans() {
        eprintln!("cannot become the subreaper of mvm's VMM (its CPU goes uncounted): {e}");
    }
    let work = args.work.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("mvm-bench-startup-{}", std::process::id()))
    });
    std::fs::create_dir_all(&work).expect("creates the scratch folder");
    let reset_elf = work.join("tiny-reset.elf");
    let spin_elf = work.join("tiny-spin.elf");
    std::fs::write(&reset_elf, pvh_elf(Then::Reset)).expect("writes the tiny guest");
    std::fs::write(&spin_elf, pvh_elf(Then::Spin)).expect("writes the tiny guest");
    let noop = args.noop.clone().unwrap_or_else(args::noop_beside_me);
    let qemu = args::qemu(args.qemu.as_deref());
    let setup = Setup {
        mvm: args.mvm.clone(),
        noop,
        qemu,
        memory_mib: args.memory,
        timeout: args.timeout,
        reset_elf,
        spin_elf,
        report: work.join("startup-report.json"),
        // clap makes them go together.
        real: args.kernel.clone().zip(args.initrd.clone()),
        mvm_args: args.mvm_args.clone(),
    };

    let mut noop = Series::default();
    let mut reset = Series::default();
    let mut spin = Series::default();
    let mut qemu = Series::default();
    let mut real = Series::default();
    eprintln!(
        "startup: {runs} runs of each (after one warm-up), guest {} MiB, 1 vCPU, host KVM: {}",
        setup.memory_mib,
        host_kvm()
    );
    // Run 0 warms caches and is dropped; the others interleave the four
    // measurements so that drift on a shared machine hits all alike.
    for i in 0..=runs {
        let mut n = Series::default();
        let mut r = Series::default();
        let mut sp = Series::default();
        let mut q = Series::default();
        let mut re = Series::default();
        let res = setup.noop(&mut n);
        record(&mut n, "noop", res);
        let res = setup.mvm_reset(&mut r);
        record(&mut r, "mvm (reset guest)", res);
        let mut spin_cmd = setup.mvm_cmd(&setup.spin_elf);
        spin_cmd.args(["--initrd", "/dev/null"]);
        let res = setup.at_first_byte(spin_cmd, "mvm", &mut sp);
        record(&mut sp, "mvm (spin guest)", res);
        if let Some(qp) = &setup.qemu {
            let res = setup.at_first_byte(setup.qemu_cmd(qp), "qemu", &mut q);
            record(&mut q, "qemu (spin guest)", res);
        }
        if let Some((k, i)) = &setup.real {
            let res = setup.mvm_real(k, i, &mut re);
            record(&mut re, "mvm (real kernel)", res);
        }
        if i == 0 {
            continue;
        }
        for (all, one) in [
            (&mut noop, n),
            (&mut reset, r),
            (&mut spin, sp),
            (&mut qemu, q),
            (&mut real, re),
        ] {
            for (k, v) in one.values {
                all.values.entry(k).or_default().extend(v);
            }
            all.failures.extend(one.failures);
        }
    }

    // --- the table ---------------------------------------------------------
    let c2 = |v: Option<f64>| cell(v, 2);
    println!(
        "\nVMM start-up, native ({}; tiny PVH guest, 1 vCPU, {} MiB): medians of {runs} runs",
        host_kvm(),
        setup.memory_mib
    );
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>9} {:>13}",
        "", "wall ms", "(min)", "CPU ms", "RSS MiB", "RSS-guest MiB"
    );
    let row = |name: &str, s: &Series, keys: [Option<&str>; 4]| {
        let med = |k: Option<&str>| k.and_then(|k| s.med(k));
        let min = keys[0].and_then(|k| s.min(k));
        println!(
            "{name:<44} {:>9} {:>9} {:>9} {:>9} {:>13}",
            c2(med(keys[0])),
            c2(min),
            c2(med(keys[1])),
            c2(med(keys[2])),
            c2(med(keys[3]))
        )
    };
    row(
        "noop (static), exec -> main()",
        &noop,
        [Some("to_main_ms"), Some("cpu_to_main_ms"), None, None],
    );
    row(
        "noop (static), exec -> exit",
        &noop,
        [
            Some("to_exit_ms"),
            Some("cpu_total_ms"),
            Some("maxrss_mib"),
            None,
        ],
    );
    row(
        "mvm, exec -> first KVM_RUN",
        &reset,
        [
            Some("to_first_kvm_run_ms"),
            Some("cpu_to_first_kvm_run_ms"),
            None,
            None,
        ],
    );
    let rss_keys = |wall: &'static str, cpu: &'static str| {
        [
            Some(wall),
            Some(cpu),
            Some("rss_total_mib"),
            Some("rss_overhead_mib"),
        ]
    };
    if setup.real.is_some() {
        row(
            "mvm + real kernel & initrd, -> first KVM_RUN",
            &real,
            rss_keys("to_first_kvm_run_ms", "cpu_to_first_kvm_run_ms"),
        );
    }
    row(
        "mvm, exec -> first serial byte",
        &spin,
        rss_keys("to_first_serial_byte_ms", "cpu_to_first_serial_byte_ms"),
    );
    row(
        "mvm, exec -> exit (guest resets)",
        &reset,
        [
            Some("to_exit_ms"),
            Some("cpu_total_ms"),
            Some("maxrss_mib"),
            None,
        ],
    );
    if setup.qemu.is_some() {
        row(
            "qemu microvm, exec -> first serial byte",
            &qemu,
            rss_keys("to_first_serial_byte_ms", "cpu_to_first_serial_byte_ms"),
        );
    }
    println!(
        "\nmvm RSS beyond guest memory: {} MiB = file-backed {} + anonymous {} + other {}; guest RAM resident {} MiB; {} threads",
        c2(spin.med("rss_overhead_mib")),
        c2(spin.med("rss_file_mib")),
        c2(spin.med("rss_anon_mib")),
        c2(spin.med("rss_other_mib")),
        c2(spin.med("rss_guest_mib")),
        cell(spin.med("threads"), 0),
    );
    if setup.qemu.is_some() {
        println!(
            "QEMU RSS beyond guest memory: {} MiB = file-backed {} + anonymous {} + other {}; guest RAM resident {} MiB; {} threads",
            c2(qemu.med("rss_overhead_mib")),
            c2(qemu.med("rss_file_mib")),
            c2(qemu.med("rss_anon_mib")),
            c2(qemu.med("rss_other_mib")),
            c2(qemu.med("rss_guest_mib")),
            cell(qemu.med("threads"), 0),
        );
    }
    let beyond_floor_wall = reset
        .med("to_first_kvm_run_ms")
        .zip(noop.med("to_main_ms"))
        .map(|(a, b)| a - b);
    let beyond_floor_cpu = reset
        .med("cpu_to_first_kvm_run_ms")
        .zip(noop.med("cpu_to_main_ms"))
        .map(|(a, b)| a - b);
    println!(
        "mvm beyond the process floor (first KVM_RUN - noop main): {} ms wall, {} ms CPU",
        c2(beyond_floor_wall),
        c2(beyond_floor_cpu)
    );
    let ratios = json!({
        "mvm_first_kvm_run_over_noop_main_wall": ratio(reset.med("to_first_kvm_run_ms"), noop.med("to_main_ms")),
        "mvm_first_kvm_run_over_noop_main_cpu": ratio(reset.med("cpu_to_first_kvm_run_ms"), noop.med("cpu_to_main_ms")),
        "qemu_over_mvm_first_serial_byte_wall": ratio(qemu.med("to_first_serial_byte_ms"), spin.med("to_first_serial_byte_ms")),
        "qemu_over_mvm_first_serial_byte_cpu": ratio(qemu.med("cpu_to_first_serial_byte_ms"), spin.med("cpu_to_first_serial_byte_ms")),
        "qemu_over_mvm_rss_total": ratio(qemu.med("rss_total_mib"), spin.med("rss_total_mib")),
        "qemu_over_mvm_rss_overhead": ratio(qemu.med("rss_overhead_mib"), spin.med("rss_overhead_mib")),
    });
    if setup.qemu.is_some() {
        println!(
            "QEMU / mvm at the first serial byte: wall x{}, CPU x{}, RSS beyond guest x{}",
            cell(ratios["qemu_over_mvm_first_serial_byte_wall"].as_f64(), 1),
            cell(ratios["qemu_over_mvm_first_serial_byte_cpu"].as_f64(), 1),
            cell(ratios["qemu_over_mvm_rss_overhead"].as_f64(), 1),
        );
    }
    let verdict = |v: Option<f64>, target: f64| match v {
        Some(v) if v < target => "met",
        Some(_) => "MISSED",
        None => "not measured",
    };
    let cpu_med = reset.med("cpu_to_first_kvm_run_ms");
    let over_med = spin.med("rss_overhead_mib");
    println!(
        "targets: CPU to first KVM_RUN < {TARGET_CPU_MS} ms: {} ({} ms); RSS beyond guest < {TARGET_OVERHEAD_MIB} MiB: {} ({} MiB)  [Firecracker: 8 ms, 5 MiB]",
        verdict(cpu_med, TARGET_CPU_MS),
        c2(cpu_med),
        verdict(over_med, TARGET_OVERHEAD_MIB),
        c2(over_med),
    );
    let failures: usize = [&noop, &reset, &spin, &qemu, &real]
        .iter()
        .map(|s| s.failures.len())
        .sum();
    if failures > 0 {
        println!("{failures} run(s) failed (see stderr and the JSON)");
    }

    // --- JSON ----------------------------------------------------------------
    let time_units: &[(&str, &str, i32)] = &[
        ("to_main_ms", "ms", 3),
        ("cpu_to_main_ms", "ms", 3),
        ("to_first_kvm_run_ms", "ms", 3),
        ("cpu_to_first_kvm_run_ms", "ms", 3),
        ("to_first_serial_byte_ms", "ms", 3),
        ("cpu_to_first_serial_byte_ms", "ms", 3),
        ("to_exit_ms", "ms", 3),
        ("cpu_total_ms", "ms", 3),
        ("maxrss_mib", "MiB", 3),
        ("rss_total_mib", "MiB", 3),
        ("rss_guest_mib", "MiB", 3),
        ("rss_overhead_mib", "MiB", 3),
        ("rss_file_mib", "MiB", 3),
        ("rss_anon_mib", "MiB", 3),
        ("rss_other_mib", "MiB", 3),
        ("guest_mappings", "count", 0),
        ("rss_guest_thp_mib", "MiB", 3),
        ("guest_aligned_2m", "bool", 0),
        ("threads", "count", 0),
    ];
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    let result = json!({
        "benchmark": "startup",
        "host": mvm_benches::host_description(),
        "host_kvm": host_kvm(),
        "runs": runs,
        "guest": {
            "kind": "tiny PVH ELF (mvm_test_guests::pvh_elf): prints a line on COM1, then resets or spins",
            "memory_mib": setup.memory_mib,
            "cpus": 1,
        },
        "binaries": {
            "mvm": { "path": setup.mvm, "bytes": size(&setup.mvm) },
            "noop": { "path": setup.noop, "bytes": size(&setup.noop) },
            "qemu": setup.qemu.as_ref().map(|q| json!({ "path": q, "bytes": size(q) })),
        },
        "noop": noop.to_json(time_units),
        "mvm_reset_guest": reset.to_json(time_units),
        "mvm_spin_guest": spin.to_json(time_units),
        "qemu_spin_guest": if setup.qemu.is_some() { qemu.to_json(time_units) } else { Value::Null },
        "mvm_real_kernel": match &setup.real {
            Some((k, i)) => json!({
                "kernel": k,
                "kernel_bytes": size(k),
                "initrd": i,
                "initrd_bytes": size(i),
                "results": real.to_json(time_units),
            }),
            None => Value::Null,
        },
        "mvm_beyond_noop_ms": { "wall": beyond_floor_wall, "cpu": beyond_floor_cpu },
        "ratios": ratios,
        "targets": {
            "cpu_to_first_kvm_run_ms": { "target": TARGET_CPU_MS, "median": cpu_med, "firecracker": 8.0 },
            "rss_overhead_mib": { "target": TARGET_OVERHEAD_MIB, "median": over_med, "firecracker": 5.0 },
        },
        "failures": failures,
    });
    if let Some(path) = &args.json {
        if let Err(e) = mvm_benches::write_json(path, &result) {
            eprintln!("startup: cannot write {}: {e}", path.display());
            std::process::exit(1);
        }
        eprintln!("startup: wrote {}", path.display());
    }
    if args.work.is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }
    // Only a benchmark that measured nothing of ours fails.
    if reset.med("to_first_kvm_run_ms").is_none() || spin.med("rss_overhead_mib").is_none() {
        eprintln!("startup: no successful mvm run");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(a: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(["startup"].iter().chain(a))
    }

    #[test]
    fn command_line() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        // `--name value` and `--name=value`, as run.sh and users write them.
        let a = parse(&["--mvm", "m", "--runs", "5", "--json=/x"]).unwrap();
        assert_eq!(a.runs, 5);
        assert_eq!(a.json, Some(PathBuf::from("/x")));
        assert_eq!(a.memory, 128);
        assert!(parse(&["--mvm", "m", "--bogus", "1"]).is_err());
        assert!(parse(&["--mvm", "m", "--runs"]).is_err());
        assert!(parse(&["--mvm", "m", "stray"]).is_err());
        assert!(parse(&["--runs", "5"]).is_err(), "--mvm is required");
        assert!(
            parse(&["--mvm", "m", "--kernel", "k"]).is_err(),
            "--kernel needs --initrd"
        );
    }
}
