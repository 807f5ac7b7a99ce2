//! The binary in `--test-listen-unix` mode, driven by the host client: the
//! path the CLI developer uses without a VM.

use std::io::Cursor;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_proto::client::{self, Client};
use agent_proto::{ExecRequest, ExitStatus, ServiceSpec, ShutdownAction};

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("mvm-init-listen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn serves_exec_services_and_shutdown_on_a_unix_socket() {
    let dir = tempdir();
    let sock = dir.join("agent.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mvm-init"))
        .arg("--test-listen-unix")
        .arg(&sock)
        .arg("--state-dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    let stream = loop {
        match client::connect_unix(&sock, None) {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "agent never listened: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let req = ExecRequest {
        argv: vec!["sh".into(), "-c".into(), "tr a-z A-Z; exit 7".into()],
        ..Default::default()
    };
    let st = client::exec(
        stream,
        &req,
        Some(Cursor::new(b"hello".to_vec())),
        &mut out,
        &mut err,
    )
    .unwrap();
    assert_eq!(st, ExitStatus::Code { code: 7 });
    assert_eq!(out, b"HELLO");

    let mut c = Client::handshake(client::connect_unix(&sock, None).unwrap(), "t").unwrap();
    assert!(c.agent().agent.starts_with("mvm-init "));
    c.service_declare(
        &ServiceSpec {
            name: "echo".into(),
            argv: vec![
                "sh".into(),
                "-c".into(),
                "echo from-service; exec sleep 100".into(),
            ],
            ..Default::default()
        },
        true,
    )
    .unwrap();
    let log = dir.join("services/echo.log");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("from-service\n")
    {
        assert!(
            Instant::now() < deadline,
            "no service log at {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = c.service_status(Some("echo")).unwrap()[0].pid.unwrap();

    // Shutdown outside PID 1: services stopped, the process exits 0.
    c.shutdown(ShutdownAction::Poweroff).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    // SAFETY: signal 0 only checks for existence.
    assert_ne!(
        unsafe { libc::kill(pid as i32, 0) },
        0,
        "service left running"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn refuses_to_run_as_a_plain_process_without_a_mode() {
    let out = Command::new(env!("CARGO_BIN_EXE_mvm-init"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not PID 1"));
}
