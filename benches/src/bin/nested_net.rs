//! Nested network benchmark, run inside the L2 host (benches/jobs/nested-net.sh
//! through tests/nested/run-l2.sh). In one run:
//!
//! 1. TCP throughput both ways (iperf3) and request latency (our echo
//!    server and client: 64-byte round trips on one connection, and
//!    connect + round trip + close) between the L2 host and a guest on
//!    the tap path (`mvm run --net tap`), a guest on the vhost-net path
//!    (`--net vhost`), and over L2's loopback: the ceiling, since L2's one
//!    CPU runs both ends there too. The paths alternate, `--reps` times.
//! 2. How long a port forward takes to answer after `mvm port` returns,
//!    and from its invocation, on the host's loopback (the VMM's proxy);
//!    references: a request straight to the guest, and `mvm --version`.
//!
//! Under TCG absolute figures say nothing about real hardware; the ratios
//! to the loopback reference do. See benches/README.md.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use clap::Parser;
use mvm_benches::child::{deadline_in, Running};
use mvm_benches::clock::monotonic_ns;
use mvm_benches::netperf::{self, Direction};
use mvm_benches::stats::{self, cell, median, ratio};
use serde_json::{json, Value};

/// nested-net: TCP throughput and request latency, L2 host <-> guest on
/// the tap and vhost-net paths vs L2 loopback; time for a port forward to
/// answer (run inside the nested L2 host, as root).
#[derive(Parser)]
#[command(name = "nested-net")]
struct Cli {
    /// The mvm binary (static).
    #[arg(long, value_name = "PATH", required_unless_present = "serve_echo")]
    mvm: Option<PathBuf>,
    /// Guest kernel.
    #[arg(long, value_name = "PATH", required_unless_present = "serve_echo")]
    kernel: Option<PathBuf>,
    /// Bench initramfs: busybox, iperf3 (+ its libraries), this program at
    /// /nested-net, /net-dhcp.sh, /net-bench-guest.sh.
    #[arg(long, value_name = "PATH", required_unless_present = "serve_echo")]
    initrd: Option<PathBuf>,
    /// iperf3 on this host.
    #[arg(long, value_name = "PATH", default_value = "iperf3")]
    iperf3: PathBuf,
    /// Seconds of each iperf3 run.
    #[arg(long, value_name = "N", default_value_t = 5)]
    secs: u32,
    /// Rounds over the three paths.
    #[arg(long, value_name = "N", default_value_t = 3)]
    reps: usize,
    /// Round trips per round and path.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    rr: usize,
    /// Connect + round trip + close per round and path.
    #[arg(long, value_name = "N", default_value_t = 100)]
    crr: usize,
    /// Port forwards timed.
    #[arg(long, value_name = "N", default_value_t = 10)]
    forwards: usize,
    /// Results folder.
    #[arg(long, env = "MVM_OUT", default_value = "nested-net")]
    out: PathBuf,
    /// (Inside the guest) serve TCP echo on PORT, forever.
    #[arg(long = "serve-echo", value_name = "PORT")]
    serve_echo: Option<u16>,
}

const IPERF_PORT: u16 = 5201;
const ECHO_PORT: u16 = 7001;

struct Opts {
    mvm: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    iperf3: PathBuf,
    secs: u32,
    reps: usize,
    rr: usize,
    crr: usize,
    forwards: usize,
    out: PathBuf,
}

/// What one path measured, over all rounds.
#[derive(Default)]
struct PathResult {
    /// Gbit/s, client (the L2 host) sending.
    to_guest: Vec<f64>,
    /// Gbit/s, `-R`: the guest (or loopback server) sending.
    from_guest: Vec<f64>,
    rr_us: Vec<f64>,
    crr_us: Vec<f64>,
    errors: Vec<String>,
}

struct Target {
    name: &'static str,
    ip: String,
    vm: Option<Running>,
    result: PathResult,
}

fn main() {
    let args = Cli::parse();
    if let Some(port) = args.serve_echo {
        if let Err(e) = netperf::serve_echo(SocketAddr::from(([0, 0, 0, 0], port))) {
            eprintln!("nested-net: echo server: {e}");
            std::process::exit(1);
        }
        return;
    }
    let o = Opts {
        // clap requires them without --serve-echo.
        mvm: args.mvm.expect("--mvm"),
        kernel: args.kernel.expect("--kernel"),
        initrd: args.initrd.expect("--initrd"),
        iperf3: args.iperf3,
        secs: args.secs,
        reps: args.reps,
        rr: args.rr,
        crr: args.crr,
        forwards: args.forwards,
        out: args.out,
    };
    std::fs::create_dir_all(&o.out).expect("cannot create the output folder");
    let (throughput, ok) = throughput_and_latency(&o);
    let forwards = port_forwards(&o);
    let report = json!({
        "host": mvm_benches::host_description(),
        "options": {"secs": o.secs, "reps": o.reps, "rr": o.rr, "crr": o.crr,
                    "msg_bytes": netperf::MSG_LEN, "forwards": o.forwards},
        "paths": throughput,
        "port_forward": forwards,
    });
    mvm_benches::write_json(&o.out.join("nested-net.json"), &report)
        .expect("cannot write nested-net.json");
    print_tables(&report);
    if !ok {
        std::process::exit(1);
    }
}

/// Boots a guest with `--net backend`; waits for its servers.
fn boot_guest(o: &Opts, backend: &str) -> Result<(Running, String), String> {
    let err = File::create(o.out.join(format!("vm-{backend}.err"))).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(&o.mvm);
    cmd.args(["run", "--cpus", "1", "--memory", "256M", "--net", backend])
        .arg("--kernel")
        .arg(&o.kernel)
        .arg("--initrd")
        .arg(&o.initrd)
        .args([
            "--cmdline",
            "mvmtest.run=/net-bench-guest.sh mvmtest.action=hang",
        ])
        // Says which data path the device took.
        .env("MVM_LOG", "devices::virtio::net=debug")
        .stderr(err);
    let mut vm = Running::spawn(&mut cmd).map_err(|e| format!("cannot run mvm: {e}"))?;
    let deadline = deadline_in(300.0);
    while let Some((_, line)) = vm.next_line(deadline) {
        if let Some(ip) = line.trim().strip_prefix("MVM-GUEST: netbench_ready ip=") {
            return Ok((vm, ip.to_string()));
        }
        if line.contains("MVM-GUEST: run exit") {
            break;
        }
    }
    let console = String::from_utf8_lossy(&vm.output).into_owned();
    Err(format!("the {backend} guest did not get ready:\n{console}"))
}

/// Ends a guest the way a user would (Ctrl-C), keeping its console.
fn stop_guest(o: &Opts, name: &str, vm: Running) -> Value {
    // SAFETY: kill(2) on our own child, not reaped yet.
    unsafe { libc::kill(vm.pid() as libc::pid_t, libc::SIGINT) };
    let console = vm.output.clone();
    let _ = std::fs::write(o.out.join(format!("vm-{name}.console")), &console);
    let status = vm.wait().map(|e| e.status).unwrap_or(i32::MIN);
    let err = std::fs::read_to_string(o.out.join(format!("vm-{name}.err"))).unwrap_or_default();
    json!({
        "exit_status_after_sigint": status,
        "vhost_in_use": err.contains("using vhost-net"),
        "vhost_unavailable": err.lines().find(|l| l.contains("unavailable")),
    })
}

fn measure(o: &Opts, t: &mut Target) {
    let r = &mut t.result;
    for (dir, out) in [
        (Direction::ToServer, &mut r.to_guest),
        (Direction::FromServer, &mut r.from_guest),
    ] {
        match netperf::iperf3(&o.iperf3, &t.ip, o.secs, dir) {
            Ok((gbps, _)) => out.push(gbps),
            Err(e) => r.errors.push(e),
        }
    }
    let echo: SocketAddr = format!("{}:{ECHO_PORT}", t.ip)
        .parse()
        .expect("an IPv4 address");
    match netperf::request_response(echo, o.rr / 10, o.rr) {
        Ok(v) => r.rr_us.extend(v),
        Err(e) => r.errors.push(format!("request/response to {echo}: {e}")),
    }
    match netperf::connect_request_response(echo, o.crr) {
        Ok(v) => r.crr_us.extend(v),
        Err(e) => r
            .errors
            .push(format!("connect/request/response to {echo}: {e}")),
    }
    eprintln!(
        "nested-net: {}: to {:?} Gbit/s, from {:?} Gbit/s, rr median {:?} us",
        t.name,
        r.to_guest.last(),
        r.from_guest.last(),
        median(&r.rr_us)
    );
}

fn throughput_and_latency(o: &Opts) -> (Value, bool) {
    // The loopback reference: iperf3's server and our echo server on L2.
    let mut server: Child = match Command::new(&o.iperf3)
        .args(["-s", "-B", "127.0.0.1", "-p", &IPERF_PORT.to_string()])
        .stdout(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nested-net: cannot start iperf3: {e}");
            return (json!({"error": e.to_string()}), false);
        }
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut ok = true;
    if let Err(e) = netperf::spawn_echo(SocketAddr::from(([127, 0, 0, 1], ECHO_PORT))) {
        eprintln!("nested-net: cannot start the echo server: {e}");
        ok = false;
    }
    let mut targets = vec![Target {
        name: "loopback",
        ip: "127.0.0.1".into(),
        vm: None,
        result: PathResult::default(),
    }];
    for (name, backend) in [("tap", "tap"), ("vhost", "vhost")] {
        match boot_guest(o, backend) {
            Ok((vm, ip)) => targets.push(Target {
                name,
                ip,
                vm: Some(vm),
                result: PathResult::default(),
            }),
            Err(e) => {
                eprintln!("nested-net: {e}");
                ok = false;
            }
        }
    }
    for rep in 0..o.reps {
        eprintln!("nested-net: round {}/{}", rep + 1, o.reps);
        for t in targets.iter_mut() {
            measure(o, t);
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    let mut out = serde_json::Map::new();
    for mut t in targets {
        let vm = t.vm.take().map(|vm| stop_guest(o, t.name, vm));
        let r = &t.result;
        if !r.errors.is_empty() || r.to_guest.is_empty() {
            ok = false;
        }
        out.insert(
            t.name.into(),
            json!({
                "address": t.ip,
                "to_guest_gbps": stats::to_json(&r.to_guest, "Gbit/s", 3),
                "from_guest_gbps": stats::to_json(&r.from_guest, "Gbit/s", 3),
                "rr_us": summary_only(&r.rr_us),
                "crr_us": summary_only(&r.crr_us),
                "errors": r.errors,
                "vm": vm,
            }),
        );
    }
    (Value::Object(out), ok)
}

/// The summary with a 99th percentile, without thousands of samples.
fn summary_only(samples: &[f64]) -> Value {
    let mut v = stats::to_json(samples, "us", 1);
    if let Some(m) = v.as_object_mut() {
        m.remove("samples");
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        if !s.is_empty() {
            let p99 = s[((s.len() - 1) as f64 * 0.99).round() as usize];
            m.insert("p99".into(), json!((p99 * 10.0).round() / 10.0));
        }
    }
    v
}

fn mvm(o: &Opts, args: &[&str]) -> Result<String, String> {
    let out = Command::new(&o.mvm)
        .args(args)
        // The VMM that `mvm start` spawns inherits it: its log then says
        // which data path the device took.
        .env("MVM_LOG", "devices::virtio::net=debug")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run mvm: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mvm {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ms_since(t_ns: u64) -> f64 {
    (monotonic_ns() - t_ns) as f64 / 1e6
}

/// Polls until an HTTP answer comes from `addr` (at most 30 s).
fn wait_http(addr: SocketAddr) -> bool {
    let deadline = deadline_in(30.0);
    while monotonic_ns() < deadline {
        if netperf::http_answers(addr) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    false
}

fn port_forwards(o: &Opts) -> Value {
    match port_forwards_inner(o) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("nested-net: port forwards: {e}");
            json!({ "error": e })
        }
    }
}

fn port_forwards_inner(o: &Opts) -> Result<Value, String> {
    const VM: &str = "pf";
    let _ = mvm(o, &["rm", "--force", VM]);
    mvm(
        o,
        &[
            "create",
            VM,
            "--no-host-root",
            "--memory",
            "256M",
            "--cpus",
            "1",
            "--net",
            "vhost",
        ],
    )?;
    let result = (|| {
        mvm(o, &["start", VM])?;
        mvm(
            o,
            &[
                "exec", VM, "--", "busybox", "httpd", "-p", "8080", "-h", "/etc",
            ],
        )?;
        let list: Value = serde_json::from_str(&mvm(o, &["list", "--json"])?)
            .map_err(|e| format!("mvm list --json: {e}"))?;
        let ip = list
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["name"] == VM))
            .and_then(|r| r["ip"].as_str())
            .ok_or("mvm list shows no address for the VM")?
            .to_string();
        let direct: SocketAddr = format!("{ip}:8080").parse().map_err(|_| "bad address")?;
        let (mut cli, mut straight, mut returned, mut after_return, mut after_invoke) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..o.forwards {
            let t = monotonic_ns();
            mvm(o, &["--version"])?;
            cli.push(ms_since(t));
            let t = monotonic_ns();
            if !netperf::http_answers(direct) {
                return Err(format!("the guest's httpd does not answer at {direct}"));
            }
            straight.push(ms_since(t));
            let port = 20000 + i as u16;
            let spec = format!("{port}:8080");
            let t0 = monotonic_ns();
            mvm(o, &["port", VM, &spec])?;
            let t1 = monotonic_ns();
            if !wait_http(SocketAddr::from(([127, 0, 0, 1], port))) {
                return Err(format!("forward {spec} did not answer within 30 s"));
            }
            let t2 = monotonic_ns();
            returned.push((t1 - t0) as f64 / 1e6);
            after_return.push((t2 - t1) as f64 / 1e6);
            after_invoke.push((t2 - t0) as f64 / 1e6);
            mvm(o, &["port", VM, "--rm", &spec])?;
        }
        let log = Path::new(&std::env::var("MVM_HOME").unwrap_or_default()).join("vms/pf/vmm.log");
        let log = std::fs::read_to_string(log).unwrap_or_default();
        Ok(json!({
            "data_path": "vhost",
            "vhost_in_use": log.contains("using vhost-net"),
            "mvm_port_returns_ms": stats::to_json(&returned, "ms", 2),
            "usable_after_return_ms": stats::to_json(&after_return, "ms", 2),
            "usable_after_invocation_ms": stats::to_json(&after_invoke, "ms", 2),
            "ref_direct_request_ms": stats::to_json(&straight, "ms", 2),
            "ref_mvm_version_ms": stats::to_json(&cli, "ms", 2),
        }))
    })();
    let _ = std::fs::copy(
        Path::new(&std::env::var("MVM_HOME").unwrap_or_default()).join("vms/pf/vmm.log"),
        o.out.join("pf-vmm.log"),
    );
    let _ = mvm(o, &["rm", "--force", VM]);
    result
}

fn m(v: &Value) -> Option<f64> {
    v["median"].as_f64()
}

fn print_tables(r: &Value) {
    let p = &r["paths"];
    let opts = &r["options"];
    println!(
        "Nested network: L2 host <-> guest, {} rounds, iperf3 {} s per run, {}-byte messages (medians)",
        opts["reps"], opts["secs"], opts["msg_bytes"]
    );
    println!(
        "| | L2 loopback | tap | vhost-net | tap / loopback | vhost / loopback | vhost / tap |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let row = |label: &str, key: &str, d: usize| {
        let (l, t, v) = (
            m(&p["loopback"][key]),
            m(&p["tap"][key]),
            m(&p["vhost"][key]),
        );
        println!(
            "| {label} | {} | {} | {} | {} | {} | {} |",
            cell(l, d),
            cell(t, d),
            cell(v, d),
            cell(ratio(t, l), 2),
            cell(ratio(v, l), 2),
            cell(ratio(v, t), 2)
        );
    };
    row("L2 host -> guest TCP, Gbit/s", "to_guest_gbps", 3);
    row("guest -> L2 host TCP, Gbit/s", "from_guest_gbps", 3);
    row("request/response, one connection, us", "rr_us", 0);
    row("connect + request/response + close, us", "crr_us", 0);
    let p99 = |k: &str, key: &str| p[k][key]["p99"].as_f64();
    println!(
        "p99 request/response us: loopback {}, tap {}, vhost {}",
        cell(p99("loopback", "rr_us"), 0),
        cell(p99("tap", "rr_us"), 0),
        cell(p99("vhost", "rr_us"), 0)
    );
    for k in ["tap", "vhost"] {
        println!("{k} guest: {}", p[k]["vm"]);
    }
    let f = &r["port_forward"];
    println!();
    println!(
        "Port forward on the host's loopback ({} forwards; medians, ms; VM on vhost-net: {})",
        opts["forwards"], f["vhost_in_use"]
    );
    if let Some(e) = f["error"].as_str() {
        println!("error: {e}");
        return;
    }
    for (label, key) in [
        ("`mvm port NAME H:G` returns", "mvm_port_returns_ms"),
        (
            "answers, after `mvm port` returned",
            "usable_after_return_ms",
        ),
        (
            "answers, after `mvm port` was invoked",
            "usable_after_invocation_ms",
        ),
        (
            "reference: one request straight to the guest",
            "ref_direct_request_ms",
        ),
        ("reference: `mvm --version`", "ref_mvm_version_ms"),
    ] {
        println!(
            "| {label} | {} (min {}, max {}) |",
            cell(m(&f[key]), 2),
            cell(f[key]["min"].as_f64(), 2),
            cell(f[key]["max"].as_f64(), 2)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        // Inside the guest (jobs/net-bench-guest.sh) only --serve-echo.
        let a = Cli::try_parse_from(["nested-net", "--serve-echo", "7001"]).unwrap();
        assert_eq!(a.serve_echo, Some(7001));
        assert!(Cli::try_parse_from(["nested-net", "--secs", "1"]).is_err());
    }
}
