//! Nested lifecycle benchmark (runs inside L2, see benches/README.md):
//! what a user waits for with managed and throw-away VMs, next to the bare
//! boot of the same kernel measured in the same run.
//!
//! Per round, in this order:
//! - bare boot: `mvm run --kernel K --initrd I` with the busybox test init,
//!   exec -> exit after the guest reboots (the reference);
//! - `mvm run -- true` in a project folder: exec -> exit (a throw-away VM:
//!   host root and project under copy-on-write layers, agent, network);
//! - `mvm start` of a created VM -> `start` returns, and -> the first
//!   `mvm exec VM -- true` that succeeds; then, after the VM has been idle
//!   for `--idle` seconds, the VMM's RSS beyond the guest memory it touched;
//!   then `mvm stop` (timed too).
//!
//! Nothing is asserted; medians and ratios to the bare boot are printed
//! and written to `<out>/nested-lifecycle.json`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Parser;
use mvm_benches::args;
use mvm_benches::clock::monotonic_ns;
use mvm_benches::procfs::rss_of;
use mvm_benches::stats::{cell, median, ratio, to_json};
use serde_json::json;

/// Inside the nested L2 host: `mvm run -- true` and `mvm start` -> first
/// exec, next to the bare boot of the same kernel; the idle VMM's RSS
/// beyond guest memory. Writes OUT/nested-lifecycle.json (OUT: --out).
#[derive(Parser)]
#[command(name = "nested-lifecycle")]
struct Cli {
    #[command(flatten)]
    nested: args::Nested,
    /// The guest's init and agent, for the managed VM.
    #[arg(long = "mvm-init", value_name = "PATH")]
    mvm_init: PathBuf,
    /// Rounds of each measurement.
    #[arg(long, value_name = "N", default_value_t = 10)]
    rounds: usize,
    /// Guest memory.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    memory: u64,
    /// Seconds the started VM idles before its RSS is read.
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    idle: f64,
    /// The managed VM's network.
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = ["on", "off"])]
    net: String,
    /// Results folder.
    #[arg(long, env = "MVM_OUT", default_value = "nested-lifecycle")]
    out: PathBuf,
}

const VM: &str = "bench";

struct Bench {
    mvm: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    memory_mib: u64,
    net: bool,
    home: PathBuf,
    project: PathBuf,
    mvm_init: PathBuf,
}

/// One timed command: seconds from spawn to exit, and whether it exited 0.
struct Timed {
    secs: f64,
    ok: bool,
}

impl Bench {
    fn mvm(&self) -> Command {
        let mut c = Command::new(&self.mvm);
        c.env("MVM_HOME", &self.home)
            .env("MVM_KERNEL", &self.kernel)
            .env("MVM_INIT", &self.mvm_init)
            .current_dir(&self.project)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        c
    }

    fn timed(&self, what: &str, mut cmd: Command) -> Timed {
        let t0 = monotonic_ns();
        let status = cmd.stderr(Stdio::piped()).output();
        let secs = (monotonic_ns() - t0) as f64 / 1e9;
        let ok = match status {
            Ok(out) if out.status.success() => true,
            Ok(out) => {
                eprintln!(
                    "nested-lifecycle: {what} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                false
            }
            Err(e) => {
                eprintln!("nested-lifecycle: {what}: cannot run: {e}");
                false
            }
        };
        Timed { secs, ok }
    }

    fn memory_arg(&self) -> String {
        format!("{}M", self.memory_mib)
    }

    fn bare_boot(&self) -> Timed {
        let mut c = self.mvm();
        c.args(["run", "--cpus", "1", "--console", "none", "--memory"])
            .arg(self.memory_arg())
            .arg("--kernel")
            .arg(&self.kernel)
            .arg("--initrd")
            .arg(&self.initrd);
        self.timed("bare boot", c)
    }

    fn run_true(&self) -> Timed {
        let mut c = self.mvm();
        c.args(["run", "--memory"]).arg(self.memory_arg());
        if !self.net {
            c.arg("--no-net");
        }
        c.args(["--", "true"]);
        self.timed("mvm run -- true", c)
    }

    fn create(&self) -> bool {
        let mut c = self.mvm();
        c.args(["create", VM, "--project"])
            .arg(&self.project)
            .arg("--memory")
            .arg(self.memory_arg());
        if !self.net {
            c.arg("--no-net");
        }
        self.timed("mvm create", c).ok
    }

    /// `mvm start`, then `mvm exec -- true` until it succeeds (at most
    /// 120 s): (start returned, first exec succeeded), seconds from the
    /// start's spawn.
    fn start_to_exec(&self) -> Option<(f64, f64)> {
        let t0 = monotonic_ns();
        let mut c = self.mvm();
        c.args(["start", VM]);
        if !self.timed("mvm start", c).ok {
            return None;
        }
        let started = (monotonic_ns() - t0) as f64 / 1e9;
        while (monotonic_ns() - t0) < 120_000_000_000 {
            let mut c = self.mvm();
            c.args(["exec", VM, "--", "true"]).stderr(Stdio::null());
            if c.status().is_ok_and(|s| s.success()) {
                return Some((started, (monotonic_ns() - t0) as f64 / 1e9));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("nested-lifecycle: no successful exec within 120 s of start");
        None
    }

    fn vmm_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.home.join("vms").join(VM).join("pid")).ok()?;
        text.trim().parse().ok()
    }

    fn stop(&self) -> Timed {
        let mut c = self.mvm();
        c.args(["stop", VM]);
        self.timed("mvm stop", c)
    }
}

fn main() {
    let args = Cli::parse();
    let out = args.out;
    let rounds = args.rounds;
    let idle = args.idle;
    let net = args.net == "on";
    let scratch = std::env::temp_dir().join("nested-lifecycle");
    let _ = std::fs::remove_dir_all(&scratch);
    let bench = Bench {
        mvm: args.nested.mvm,
        kernel: args.nested.kernel,
        initrd: args.nested.initrd,
        mvm_init: args.mvm_init,
        memory_mib: args.memory,
        net,
        home: scratch.join("home"),
        project: scratch.join("project"),
    };
    if !Path::new("/dev/kvm").exists() {
        eprintln!("nested-lifecycle: no /dev/kvm here (run this inside L2: benches/run.sh)");
        std::process::exit(1);
    }
    std::fs::create_dir_all(&bench.project).expect("creates the project folder");
    std::fs::write(bench.project.join("README"), "a benchmark project\n")
        .expect("writes the project");
    if !bench.create() {
        std::process::exit(1);
    }

    let (mut bare, mut run_true, mut start_ret, mut first_exec, mut stop) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut idle_overhead, mut idle_guest, mut idle_anon) = (vec![], vec![], vec![]);
    let mut failures = 0;
    for round in 0..=rounds {
        // Round 0 warms the page cache and is not counted.
        let keep = round > 0;
        eprintln!("nested-lifecycle: round {round}/{rounds}");
        let b = bench.bare_boot();
        let r = bench.run_true();
        let s = bench.start_to_exec();
        if let (Some(_), Some(pid)) = (s, bench.vmm_pid()) {
            std::thread::sleep(Duration::from_secs_f64(idle));
            match rss_of(pid, bench.memory_mib << 20) {
                Ok(rss) if keep => {
                    idle_overhead.push(rss.overhead_kb() as f64 / 1024.0);
                    idle_guest.push(rss.guest_kb as f64 / 1024.0);
                    idle_anon.push(rss.anon_kb as f64 / 1024.0);
                }
                Ok(_) => {}
                Err(e) => eprintln!("nested-lifecycle: smaps of VMM {pid}: {e}"),
            }
        }
        let st = bench.stop();
        failures += [b.ok, r.ok, s.is_some(), st.ok]
            .iter()
            .filter(|ok| !**ok)
            .count();
        if !keep {
            continue;
        }
        if b.ok {
            bare.push(b.secs);
        }
        if r.ok {
            run_true.push(r.secs);
        }
        if let Some((ret, exec)) = s {
            start_ret.push(ret);
            first_exec.push(exec);
        }
        if st.ok {
            stop.push(st.secs);
        }
    }
    let mut rm = bench.mvm();
    rm.args(["rm", "--force", VM]);
    bench.timed("mvm rm", rm);

    let bare_m = median(&bare);
    let rows = [
        ("bare boot: exec -> exit (reference)", &bare),
        ("mvm run -- true: exec -> exit", &run_true),
        ("mvm start: exec -> return", &start_ret),
        ("mvm start -> first successful exec", &first_exec),
        ("mvm stop: exec -> return", &stop),
    ];
    let mut table = format!(
        "Nested lifecycle ({rounds} rounds, {} MiB, 1 vCPU, network {}; medians)\n\n\
         | | s | / bare boot |\n| --- | --- | --- |\n",
        bench.memory_mib,
        if net { "on" } else { "off" }
    );
    for (name, samples) in rows {
        let m = median(samples);
        table += &format!(
            "| {name} | {} | {} |\n",
            cell(m, 3),
            cell(ratio(m, bare_m), 2)
        );
    }
    table += &format!(
        "\nIdle VMM after {idle} s (MiB): RSS beyond guest memory {}, of it anonymous {}; \
         guest memory touched {}\nfailed steps: {failures}\n",
        cell(median(&idle_overhead), 2),
        cell(median(&idle_anon), 2),
        cell(median(&idle_guest), 1),
    );
    print!("{table}");
    let result = json!({
        "host": mvm_benches::host_description(),
        "rounds": rounds,
        "memory_mib": bench.memory_mib,
        "network": net,
        "bare_boot_s": to_json(&bare, "s", 3),
        "run_true_s": to_json(&run_true, "s", 3),
        "start_return_s": to_json(&start_ret, "s", 3),
        "start_first_exec_s": to_json(&first_exec, "s", 3),
        "stop_s": to_json(&stop, "s", 3),
        "idle_rss_beyond_guest_mib": to_json(&idle_overhead, "MiB", 2),
        "idle_rss_anon_mib": to_json(&idle_anon, "MiB", 2),
        "idle_guest_touched_mib": to_json(&idle_guest, "MiB", 1),
        "failed_steps": failures,
        "table": table,
    });
    mvm_benches::write_json(&out.join("nested-lifecycle.json"), &result)
        .expect("writes the results");
    if bare.is_empty() || run_true.is_empty() || first_exec.is_empty() {
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let line = "nested-lifecycle --mvm m --kernel k --initrd i --mvm-init n --net";
        let args = |net: &str| Cli::try_parse_from(line.split(' ').chain([net]));
        assert_eq!(args("off").unwrap().net, "off");
        assert!(args("maybe").is_err());
    }
}
