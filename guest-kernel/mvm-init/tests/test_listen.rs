//! The binary in `--test-listen-unix` mode, driven by the host client: the
//! path the CLI developer uses without a VM.

use std::io::Cursor;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent_proto::client::{self, Client};
use agent_proto::{ExecRequest, ExitStatus, ServiceSpec, ShutdownAction};

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mvm-init-listen-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Starts the agent on `dir/agent.sock` and waits until it accepts.
fn start_agent(dir: &Path, cmd: &mut Command) -> (Child, UnixStream) {
    let sock = dir.join("agent.sock");
    let child = cmd
        .arg("--test-listen-unix")
        .arg(&sock)
        .arg("--state-dir")
        .arg(dir)
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
    (child, stream)
}

#[test]
fn serves_exec_services_and_shutdown_on_a_unix_socket() {
    let dir = tempdir("serve");
    let sock = dir.join("agent.sock");
    let (mut child, stream) = start_agent(&dir, &mut Command::new(env!("CARGO_BIN_EXE_mvm-init")));
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

/// An agent started with SIGINT ignored, as `cmd &` in a script starts
/// it (and so every test binary under `tests/run.sh &`): the ignored
/// disposition survives exec, so without a reset no session could be
/// interrupted, which made the pty signal test hang on `sleep 100`.
#[test]
fn sessions_start_with_default_signal_actions() {
    let dir = tempdir("sigign");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mvm-init"));
    // SAFETY: signal() is async-signal-safe; nothing else runs in the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            libc::signal(libc::SIGQUIT, libc::SIG_IGN);
            Ok(())
        })
    };
    let (mut child, stream) = start_agent(&dir, &mut cmd);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let req = ExecRequest {
        argv: vec!["grep".into(), "SigIgn".into(), "/proc/self/status".into()],
        ..Default::default()
    };
    let st = client::exec(stream, &req, None::<Cursor<Vec<u8>>>, &mut out, &mut err).unwrap();
    assert!(st.success(), "{}", String::from_utf8_lossy(&err));
    assert_eq!(String::from_utf8_lossy(&out), "SigIgn:\t0000000000000000\n");

    let sock = dir.join("agent.sock");
    let connect = || Client::handshake(client::connect_unix(&sock, None).unwrap(), "t").unwrap();
    let session = connect()
        .exec_start(&ExecRequest {
            argv: vec!["sleep".into(), "100".into()],
            ..Default::default()
        })
        .unwrap();
    session.control().signal(libc::SIGINT).unwrap();
    let st = session.wait(&mut Vec::new(), &mut Vec::new()).unwrap();
    assert_eq!(
        st,
        ExitStatus::Signal {
            signal: libc::SIGINT,
            core_dumped: false
        }
    );

    connect().shutdown(ShutdownAction::Poweroff).unwrap();
    assert!(child.wait().unwrap().success());
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
