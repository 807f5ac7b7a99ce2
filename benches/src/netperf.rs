//! Network measurements of the nested network benchmark: iperf3 runs
//! (throughput), a TCP echo server and its request/response client
//! (latency on one connection, and connect + request + close), and an HTTP
//! probe that says when a port forward answers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::clock::monotonic_ns;

/// Bytes of each request and of its response.
pub const MSG_LEN: usize = 64;

/// Serves echo on `addr` until the process ends: every read is written
/// back. One thread per connection.
pub fn serve_echo(addr: SocketAddr) -> std::io::Result<()> {
    serve(TcpListener::bind(addr)?);
    Ok(())
}

fn serve(listener: TcpListener) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        std::thread::spawn(move || {
            let _ = conn.set_nodelay(true);
            let mut buf = [0u8; 4096];
            loop {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if conn.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// [`serve_echo`] on a thread; listening when this returns.
pub fn spawn_echo(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    std::thread::spawn(move || serve(listener));
    Ok(())
}

fn exchange(conn: &mut TcpStream, msg: &[u8; MSG_LEN]) -> std::io::Result<()> {
    conn.write_all(msg)?;
    let mut got = [0u8; MSG_LEN];
    conn.read_exact(&mut got)
}

/// `n` request/response round trips of [`MSG_LEN`] bytes on one
/// connection (after `warmup` unmeasured ones), in microseconds.
pub fn request_response(addr: SocketAddr, warmup: usize, n: usize) -> std::io::Result<Vec<f64>> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let msg = [b'r'; MSG_LEN];
    for _ in 0..warmup {
        exchange(&mut conn, &msg)?;
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = monotonic_ns();
        exchange(&mut conn, &msg)?;
        out.push((monotonic_ns() - t) as f64 / 1e3);
    }
    Ok(out)
}

/// `n` times: connect, one round trip, close; in microseconds.
pub fn connect_request_response(addr: SocketAddr, n: usize) -> std::io::Result<Vec<f64>> {
    let msg = [b'c'; MSG_LEN];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = monotonic_ns();
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        conn.set_nodelay(true)?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        exchange(&mut conn, &msg)?;
        drop(conn);
        out.push((monotonic_ns() - t) as f64 / 1e3);
    }
    Ok(out)
}

/// Which way the bytes flow in an iperf3 run (the client is always here).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Direction {
    /// From this side to the server (the client sends).
    ToServer,
    /// From the server to this side (`-R`).
    FromServer,
}

/// One iperf3 client run of `secs` seconds against `server` (port 5201);
/// the receiver's goodput in Gbit/s, and iperf3's whole JSON report.
pub fn iperf3(
    iperf3: &Path,
    server: &str,
    secs: u32,
    dir: Direction,
) -> Result<(f64, serde_json::Value), String> {
    let mut cmd = Command::new(iperf3);
    cmd.args([
        "-c",
        server,
        "-t",
        &secs.to_string(),
        "-J",
        "--connect-timeout",
        "10000",
    ]);
    if dir == Direction::FromServer {
        cmd.arg("-R");
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", iperf3.display()))?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "iperf3 -c {server}: no JSON report ({e}); status {}, stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    if let Some(err) = report["error"].as_str() {
        return Err(format!("iperf3 -c {server}: {err}"));
    }
    let bps = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| format!("iperf3 -c {server}: no end.sum_received in the report"))?;
    Ok((bps / 1e9, report))
}

/// Whether an HTTP server answers at `addr` now (any status line).
pub fn http_answers(addr: SocketAddr) -> bool {
    let Ok(mut conn) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    if conn.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 8];
    conn.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_round_trips_over_loopback() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || serve(l));
        let rr = request_response(addr, 5, 50).unwrap();
        assert_eq!(rr.len(), 50);
        assert!(rr.iter().all(|&us| us > 0.0));
        assert_eq!(connect_request_response(addr, 5).unwrap().len(), 5);
        // The echo server is no HTTP server.
        assert!(!http_answers(addr));
    }
}
