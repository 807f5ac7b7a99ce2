use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use agent_proto::{ErrorCode, ExitStatus, Readiness, RestartPolicy, ServiceSpec, ServiceState};

use super::*;
use crate::testutil::{wait_for, TempDir};

fn fast() -> Options {
    Options {
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        stable_after: Duration::from_secs(30),
        stop_timeout: Duration::from_millis(500),
        probe_interval: Duration::from_millis(50),
        ring_bytes: 64 * 1024,
        file_bytes: 1 << 20,
    }
}

fn sup(dir: &TempDir) -> Supervisor {
    Supervisor::new(
        PathBuf::from("/"),
        Reaper::global(),
        Some(dir.path().join("services")),
        fast(),
    )
}

fn sh(name: &str, script: &str, restart: RestartPolicy) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        argv: vec!["sh".into(), "-c".into(), script.into()],
        env: BTreeMap::new(),
        cwd: None,
        user: None,
        restart,
        readiness: None,
    }
}

fn info(s: &Supervisor, name: &str) -> agent_proto::ServiceInfo {
    s.status(Some(name)).unwrap().remove(0)
}

fn logs(s: &Supervisor, name: &str) -> String {
    let ring = s.log_ring(name).unwrap();
    let (data, _) = ring.read_from(ring.tail_offset(None), usize::MAX);
    String::from_utf8_lossy(&data).into_owned()
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

#[test]
fn killed_service_is_restarted_under_always() {
    let d = TempDir::new("svc-always");
    let s = sup(&d);
    s.declare(
        sh("web", "echo up; exec sleep 100", RestartPolicy::Always),
        true,
    )
    .unwrap();
    let p1 = wait_for(10, "first start", || info(&s, "web").pid);
    assert_eq!(info(&s, "web").state, ServiceState::Running);
    // Killed only once it has printed, so the log shows both runs.
    wait_for(10, "first 'up' in the log", || {
        logs(&s, "web").contains("up\n").then_some(())
    });
    // SAFETY: plain kill of a child we started.
    unsafe { libc::kill(p1 as i32, libc::SIGKILL) };
    let p2 = wait_for(10, "restart", || {
        let i = info(&s, "web");
        i.pid.filter(|&p| p != p1)
    });
    let i = info(&s, "web");
    assert_eq!(i.restarts, 1);
    assert_eq!(
        i.last_exit,
        Some(ExitStatus::Signal {
            signal: 9,
            core_dumped: false
        })
    );
    wait_for(10, "second 'up' in the log", || {
        (logs(&s, "web").matches("up\n").count() == 2).then_some(())
    });
    s.stop("web").unwrap();
    let i = info(&s, "web");
    assert_eq!((i.state, i.pid), (ServiceState::Stopped, None));
    wait_for(10, "process gone", || (!alive(p2)).then_some(()));
    // The log file has it too.
    let file = std::fs::read_to_string(d.path().join("services/web.log")).unwrap();
    assert!(file.contains("[mvm-init] started pid"), "{file}");
    assert_eq!(file.matches("up\n").count(), 2, "{file}");
    s.remove("web").unwrap();
}

#[test]
fn on_failure_restarts_only_failures() {
    let d = TempDir::new("svc-onfail");
    let s = sup(&d);
    s.declare(sh("ok", "exit 0", RestartPolicy::OnFailure), true)
        .unwrap();
    s.declare(
        sh("bad", "echo try; exit 1", RestartPolicy::OnFailure),
        true,
    )
    .unwrap();
    s.declare(sh("once", "exit 4", RestartPolicy::Never), true)
        .unwrap();
    wait_for(10, "ok to exit", || {
        (info(&s, "ok").state == ServiceState::Exited).then_some(())
    });
    assert_eq!(info(&s, "ok").restarts, 0);
    assert_eq!(info(&s, "ok").last_exit, Some(ExitStatus::Code { code: 0 }));
    wait_for(10, "bad to be restarted twice", || {
        (info(&s, "bad").restarts >= 2).then_some(())
    });
    wait_for(10, "once to exit", || {
        (info(&s, "once").state == ServiceState::Exited).then_some(())
    });
    assert_eq!(
        info(&s, "once").last_exit,
        Some(ExitStatus::Code { code: 4 })
    );
    assert_eq!(info(&s, "once").restarts, 0);
    s.stop("bad").unwrap();
    assert_eq!(info(&s, "bad").state, ServiceState::Stopped);
    // Status of all, sorted by name.
    let names: Vec<String> = s
        .status(None)
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["bad", "ok", "once"]);
    // Start again after an exit.
    s.start("once").unwrap();
    wait_for(10, "second run of once", || {
        (logs(&s, "once").matches("started pid").count() == 2).then_some(())
    });
    for n in ["ok", "bad", "once"] {
        s.remove(n).unwrap();
    }
}

#[test]
fn stop_escalates_to_sigkill() {
    let d = TempDir::new("svc-kill");
    let s = sup(&d);
    s.declare(
        sh(
            "stubborn",
            "trap '' TERM; echo ready; while :; do sleep 0.05; done",
            RestartPolicy::Always,
        ),
        true,
    )
    .unwrap();
    wait_for(10, "ready", || {
        logs(&s, "stubborn").contains("\nready\n").then_some(())
    });
    let pid = info(&s, "stubborn").pid.unwrap();
    s.stop("stubborn").unwrap();
    let i = info(&s, "stubborn");
    assert_eq!((i.state, i.pid), (ServiceState::Stopped, None));
    assert!(logs(&s, "stubborn").contains("SIGKILL"));
    assert_eq!(
        i.last_exit,
        Some(ExitStatus::Signal {
            signal: 9,
            core_dumped: false
        })
    );
    assert_eq!(i.restarts, 0, "a requested stop is not restarted");
    wait_for(10, "process gone", || (!alive(pid)).then_some(()));
    s.remove("stubborn").unwrap();
}

#[test]
fn restart_request_replaces_the_process() {
    let d = TempDir::new("svc-restart");
    let s = sup(&d);
    s.declare(sh("r", "exec sleep 100", RestartPolicy::Never), true)
        .unwrap();
    let p1 = wait_for(10, "start", || info(&s, "r").pid);
    s.restart("r").unwrap();
    let p2 = wait_for(10, "new pid", || info(&s, "r").pid.filter(|&p| p != p1));
    assert_ne!(p1, p2);
    assert_eq!(info(&s, "r").restarts, 0);
    s.remove("r").unwrap();
    let err = s.status(Some("r")).unwrap_err();
    assert_eq!(err.0, ErrorCode::NotFound);
}

#[test]
fn readiness_by_command_and_by_tcp() {
    let d = TempDir::new("svc-ready");
    let s = sup(&d);
    let (gate, flag) = (d.path().join("gate"), d.path().join("flag"));
    // The service becomes ready when the test opens the gate, not after a
    // delay: until then it cannot be ready.
    let mut spec = sh(
        "cmd",
        &format!(
            "while [ ! -e {} ]; do sleep 0.05; done; touch {}; exec sleep 100",
            gate.display(),
            flag.display()
        ),
        RestartPolicy::Never,
    );
    spec.readiness = Some(Readiness::Command {
        argv: vec!["test".into(), "-e".into(), flag.display().to_string()],
    });
    s.declare(spec, true).unwrap();
    wait_for(10, "start", || info(&s, "cmd").pid);
    assert!(!info(&s, "cmd").ready);
    std::fs::write(&gate, "").unwrap();
    wait_for(10, "ready by command", || {
        info(&s, "cmd").ready.then_some(())
    });
    assert_eq!(info(&s, "cmd").state, ServiceState::Running);

    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut spec = sh("tcp", "exec sleep 100", RestartPolicy::Never);
    spec.readiness = Some(Readiness::Tcp { port });
    s.declare(spec, true).unwrap();
    wait_for(10, "ready by tcp", || info(&s, "tcp").ready.then_some(()));
    assert!(logs(&s, "tcp").contains("[mvm-init] ready"));

    // A port nobody listens on: running, never ready.
    drop(l);
    let mut spec = sh("never", "exec sleep 100", RestartPolicy::Never);
    spec.readiness = Some(Readiness::Tcp { port });
    s.declare(spec, true).unwrap();
    wait_for(10, "start", || info(&s, "never").pid);
    std::thread::sleep(Duration::from_millis(300));
    let i = info(&s, "never");
    assert_eq!((i.state, i.ready), (ServiceState::Starting, false));
    for n in ["cmd", "tcp", "never"] {
        s.remove(n).unwrap();
    }
}

#[test]
fn bad_declarations_and_unknown_names() {
    let d = TempDir::new("svc-bad");
    let s = sup(&d);
    let err = s
        .declare(sh("../etc", "true", RestartPolicy::Never), false)
        .unwrap_err();
    assert_eq!(err.0, ErrorCode::BadRequest);
    let mut empty = sh("e", "", RestartPolicy::Never);
    empty.argv.clear();
    assert_eq!(
        s.declare(empty, false).unwrap_err().0,
        ErrorCode::BadRequest
    );
    for r in [s.start("x"), s.stop("x"), s.restart("x"), s.remove("x")] {
        assert_eq!(r.unwrap_err().0, ErrorCode::NotFound);
    }
    // A command that does not exist: reported in the log, policy applies.
    s.declare(
        ServiceSpec {
            name: "ghost".into(),
            argv: vec!["/nonexistent/daemon".into()],
            ..Default::default()
        },
        true,
    )
    .unwrap();
    wait_for(10, "ghost to fail", || {
        (info(&s, "ghost").state == ServiceState::Exited).then_some(())
    });
    assert!(logs(&s, "ghost").contains("cannot start: /nonexistent/daemon: command not found"));
    s.remove("ghost").unwrap();
}

#[test]
fn log_ring_is_bounded_and_offsets_track_everything() {
    let r = LogRing::new(10, None, 0);
    r.append(b"0123456789abcdef");
    assert_eq!(r.tail_offset(None), 6);
    assert_eq!(r.read_from(0, 100), (b"6789abcdef".to_vec(), 16));
    assert_eq!(r.tail_offset(Some(3)), 13);
    assert_eq!(r.read_from(13, 100), (b"def".to_vec(), 16));
    r.append(b"XY");
    assert_eq!(r.read_from(16, 1), (b"X".to_vec(), 17));
    assert_eq!(r.read_from(0, 100), (b"89abcdefXY".to_vec(), 18));
    assert!(r.wait_past(17, Duration::from_millis(1)));
    r.close();
    assert!(!r.wait_past(18, Duration::from_secs(5)));
}

#[test]
fn log_file_rotates() {
    let d = TempDir::new("svc-rotate");
    let path = d.path().join("x.log");
    let r = LogRing::new(100, Some(path.clone()), 10);
    r.append(b"12345678");
    r.append(b"abcdefgh");
    assert_eq!(std::fs::read(&path).unwrap(), b"abcdefgh");
    assert_eq!(
        std::fs::read(d.path().join("x.log.1")).unwrap(),
        b"12345678"
    );
}
