//! Out of file descriptors, the port proxy sheds connections instead of
//! spinning: a VMM at its RLIMIT_NOFILE keeps its CPU for the guest, the
//! refused clients see their connection closed, and once descriptors are
//! free again connections are relayed as before.
//!
//! The limit is lowered in a child (this binary again, running only
//! `child_proxy`), so the other tests keep their descriptors.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netstack::{PortForward, PortProxy};

/// CPU time (user + system, clock ticks) this process has used, read
/// through `stat` (/proc/self/stat, opened before descriptors ran out).
fn cpu_ticks(stat: &std::fs::File) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 4096];
    let n = stat.read_at(&mut buf, 0).unwrap();
    let stat = String::from_utf8_lossy(&buf[..n]);
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn child_proxy() {
    if std::env::var_os("MVM_EMFILE_CHILD").is_none() {
        return;
    }
    // An echo "guest".
    let echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let gport = echo.local_addr().unwrap().port();
    std::thread::spawn(move || {
        // Out of descriptors too at times: wait, never die (and never
        // spin: this test measures the process's CPU).
        for s in echo.incoming() {
            let Ok((mut r, s)) = s.and_then(|s| Ok((s.try_clone()?, s))) else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let mut w = s;
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut r, &mut w);
            });
        }
    });
    let hp = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = PortProxy::new();
    let f: PortForward = format!("127.0.0.1:{hp}:{gport}").parse().unwrap();
    proxy.add(&f, Ipv4Addr::LOCALHOST).unwrap();
    let stat = std::fs::File::open("/proc/self/stat").unwrap();
    // Few descriptors from here on: clients and relays soon use them all.
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    let lim = libc::rlimit {
        rlim_cur: open + 24,
        rlim_max: open + 24,
    };
    // SAFETY: setrlimit reads the struct we pass; no other memory.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    let mut clients = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        match TcpStream::connect(("127.0.0.1", hp)) {
            Ok(c) => clients.push(c),
            Err(_) => refused += 1,
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    // At the limit now: the accept loop must sit idle, not spin.
    let before = cpu_ticks(&stat);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(&stat) - before;
    println!("cpu ticks in 1 s at the limit: {used}, refused at connect: {refused}");
    assert!(
        used < 30,
        "the proxy spins out of descriptors: {used} ticks in 1 s"
    );
    // Some clients were shed: their connections end without an echo.
    let mut shed = 0;
    for c in &mut clients {
        c.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let _ = c.write_all(b"x");
        let mut b = [0u8; 1];
        if matches!(c.read(&mut b), Ok(0) | Err(_)) {
            shed += 1;
        }
    }
    assert!(shed > 0, "no connection was shed");
    // Descriptors free again: a new connection is relayed.
    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let echoed = TcpStream::connect(("127.0.0.1", hp))
            .ok()
            .and_then(|mut c| {
                c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                c.write_all(b"back").ok()?;
                let mut b = [0u8; 4];
                c.read_exact(&mut b).ok()?;
                Some(b)
            });
        if echoed == Some(*b"back") {
            break;
        }
        assert!(Instant::now() < deadline, "the proxy never recovered");
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("CHILD OK");
}

#[test]
fn out_of_descriptors_the_proxy_sheds_and_recovers() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_proxy",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("MVM_EMFILE_CHILD", "1")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD OK"),
        "{stdout}"
    );
}
