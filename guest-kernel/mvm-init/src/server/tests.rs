//! The agent end to end over a socket pair, with the real exec machinery
//! and the host client from agent-proto.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_proto::client::{self, Client, ClientError};
use agent_proto::{
    read_frame, write_frame, ErrorCode, ExecRequest, ExitStatus, GuestMsg, HostMsg, RestartPolicy,
    ServiceSpec, ServiceState, ShutdownAction, User, WinSize, MAX_FRAME_SIZE, PROTOCOL_VERSION,
};

use super::*;
use crate::services::{Options, Supervisor};
use crate::testutil::{wait_for, TempDir};

struct Harness {
    agent: Arc<Agent>,
    shutdowns: Arc<AtomicUsize>,
    _dir: TempDir,
}

fn harness() -> Harness {
    harness_in(PathBuf::from("/"))
}

/// A harness whose agent reads users from `root/etc/passwd`.
fn harness_in(root: PathBuf) -> Harness {
    let dir = TempDir::new("agent");
    let reaper = Reaper::global();
    let shutdowns = Arc::new(AtomicUsize::new(0));
    let s2 = Arc::clone(&shutdowns);
    let agent = Arc::new(Agent {
        root,
        reaper: Arc::clone(&reaper),
        services: Supervisor::new(
            PathBuf::from("/"),
            reaper,
            Some(dir.path().join("services")),
            Options {
                initial_backoff: Duration::from_millis(50),
                ..Options::default()
            },
        ),
        debug: false,
        power: Arc::new(move |_| {
            s2.fetch_add(1, Ordering::SeqCst);
        }),
    });
    Harness {
        agent,
        shutdowns,
        _dir: dir,
    }
}

impl Harness {
    fn connect(&self) -> UnixStream {
        let (host, guest) = UnixStream::pair().unwrap();
        spawn_conn(&self.agent, guest);
        host
    }

    fn client(&self) -> Client<UnixStream> {
        Client::handshake(self.connect(), "test").unwrap()
    }

    fn run(&self, req: ExecRequest, stdin: Vec<u8>) -> (ExitStatus, Vec<u8>, Vec<u8>) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let st = client::exec(
            self.connect(),
            &req,
            Some(Cursor::new(stdin)),
            &mut out,
            &mut err,
        )
        .unwrap();
        (st, out, err)
    }
}

fn sh(script: &str) -> ExecRequest {
    ExecRequest {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

/// An output sink that runs `then` once the output so far contains
/// `needle`: the test acts when the process says it is ready, not after a
/// guessed delay.
struct OnOutput<F: FnOnce()> {
    buf: Vec<u8>,
    needle: &'static str,
    then: Option<F>,
}

impl<F: FnOnce()> OnOutput<F> {
    fn new(needle: &'static str, then: F) -> Self {
        OnOutput {
            buf: Vec::new(),
            needle,
            then: Some(then),
        }
    }
}

impl<F: FnOnce()> Write for OnOutput<F> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.then.is_some() && String::from_utf8_lossy(&self.buf).contains(self.needle) {
            if let Some(then) = self.then.take() {
                then();
            }
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Waits until a child of `pid` has exec'd `comm`: a process the test
/// signals must be running, not just about to be.
fn wait_for_child(pid: u32, comm: &str) {
    wait_for(30, &format!("{comm} running under pid {pid}"), || {
        let kids = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        kids.split_whitespace()
            .any(|k| {
                std::fs::read_to_string(format!("/proc/{k}/comm"))
                    .is_ok_and(|c| c.trim_end() == comm)
            })
            .then_some(())
    });
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn exec_with_pipes_output_and_status() {
    let h = harness();
    let (st, out, err) = h.run(sh("echo hi; echo oops >&2; exit 3"), vec![]);
    assert_eq!(st, ExitStatus::Code { code: 3 });
    assert_eq!(out, b"hi\n");
    assert_eq!(err, b"oops\n");

    let (st, out, _) = h.run(sh("kill -TERM $$"), vec![]);
    assert_eq!(
        st,
        ExitStatus::Signal {
            signal: 15,
            core_dumped: false
        }
    );
    assert!(out.is_empty());
}

#[test]
fn exec_environment_cwd_and_no_tty() {
    let h = harness();
    let mut req = sh(r#"echo "$FOO|$PATH|$HOME|$USER|$(pwd)"; test -t 0 || echo notty"#);
    req.env = BTreeMap::from([("FOO".into(), "bar baz".into())]);
    req.cwd = Some("/tmp".into());
    let (st, out, _) = h.run(req, vec![]);
    assert!(st.success());
    let out = String::from_utf8(out).unwrap();
    // SAFETY: geteuid has no preconditions.
    let me =
        crate::passwd::resolve("/".as_ref(), Some(&User::Id(unsafe { libc::geteuid() }))).unwrap();
    assert_eq!(
        out,
        format!(
            "bar baz|{}|{}|{}|/tmp\nnotty\n",
            crate::exec::DEFAULT_PATH,
            me.home,
            me.name
        )
    );
}

#[test]
fn exec_as_another_user() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let h = harness();
    let Ok(nobody) = crate::passwd::resolve("/".as_ref(), Some(&User::Name("nobody".into())))
    else {
        eprintln!("skipped: no user 'nobody' here");
        return;
    };
    let mut req = sh("id -u; id -g; echo $USER; pwd");
    req.user = Some(User::Name("nobody".into()));
    let (st, out, err) = h.run(req, vec![]);
    assert!(st.success(), "{}", String::from_utf8_lossy(&err));
    let cwd = if std::path::Path::new(&nobody.home).is_dir() {
        nobody.home.clone()
    } else {
        "/".into()
    };
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("{}\n{}\nnobody\n{cwd}\n", nobody.uid, nobody.gid)
    );
    // By number, without a passwd entry.
    let mut req = sh("id -u; id -G");
    req.user = Some(User::Id(54321));
    let (_, out, _) = h.run(req, vec![]);
    assert_eq!(String::from_utf8(out).unwrap(), "54321\n54321\n");
}

#[test]
fn exec_ten_mib_through_cat() {
    let h = harness();
    let data: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let req = ExecRequest {
        argv: vec!["cat".into()],
        ..Default::default()
    };
    let (st, out, err) = h.run(req, data.clone());
    assert!(st.success());
    assert!(err.is_empty());
    assert_eq!(out.len(), data.len());
    assert!(out == data, "10 MiB came back altered");
}

#[test]
fn exec_without_stdin_gets_eof() {
    let h = harness();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let st = client::exec::<_, std::io::Empty>(
        h.connect(),
        &ExecRequest {
            argv: vec!["cat".into()],
            ..Default::default()
        },
        None,
        &mut out,
        &mut err,
    )
    .unwrap();
    assert!(st.success() && out.is_empty());
}

#[test]
fn pty_session_sees_resize() {
    let h = harness();
    let req = ExecRequest {
        argv: vec![
            "sh".into(),
            "-c".into(),
            "test -t 0 && echo tty=$TERM; stty size; read x; stty size; exit 5".into(),
        ],
        tty: true,
        winsize: Some(WinSize { rows: 24, cols: 80 }),
        ..Default::default()
    };
    let session = h.client().exec_start(&req).unwrap();
    // Resize once the first size is printed; the line that lets the script
    // go on follows the resize, and frames are handled in order.
    let ctl = session.control();
    let mut w = OnOutput::new("24 80", move || {
        ctl.resize(40, 100).unwrap();
        ctl.stdin(b"go\n").unwrap();
    });
    let mut err = Vec::new();
    let st = session.wait(&mut w, &mut err).unwrap();
    let out = w.buf;
    let text = String::from_utf8_lossy(&out);
    assert_eq!(st, ExitStatus::Code { code: 5 }, "{text}");
    assert!(err.is_empty(), "a tty merges stderr into stdout");
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert!(lines.contains(&"tty=xterm-256color"), "{text:?}");
    let sizes: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains(' ') && l.bytes().all(|b| b.is_ascii_digit() || b == b' '))
        .collect();
    assert_eq!(sizes, [&"24 80", &"40 100"], "{text:?}");
}

#[test]
fn pty_eof_and_signals_to_foreground_group() {
    let h = harness();
    // EOF on a tty: the EOF character ends `cat`.
    let req = ExecRequest {
        argv: vec!["cat".into()],
        tty: true,
        ..Default::default()
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let st = client::exec(
        h.connect(),
        &req,
        Some(Cursor::new(b"abc\n".to_vec())),
        &mut out,
        &mut err,
    )
    .unwrap();
    assert!(st.success());
    assert!(String::from_utf8_lossy(&out).contains("abc"));

    // SIGINT reaches the foreground job (the shell waits on `sleep`).
    let req = ExecRequest {
        argv: vec![
            "sh".into(),
            "-c".into(),
            "echo go; sleep 100; echo after".into(),
        ],
        tty: true,
        ..Default::default()
    };
    let session = h.client().exec_start(&req).unwrap();
    // Signal once `sleep` runs. "go" is not enough: dash catches SIGINT and
    // holds it while it forks the job, so a SIGINT between `echo go` and
    // the fork would never reach `sleep` (the shell acts on it only after
    // the 100 s).
    wait_for_child(session.pid(), "sleep");
    session.control().signal(libc::SIGINT).unwrap();
    let mut out = Vec::new();
    let st = session.wait(&mut out, &mut Vec::new()).unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("go") && !out.contains("after"), "{out}");
    assert_eq!(
        st,
        ExitStatus::Signal {
            signal: libc::SIGINT,
            core_dumped: false
        }
    );
}

#[test]
fn signal_with_pipes_hits_the_process_group() {
    let h = harness();
    let session = h.client().exec_start(&sh("sleep 100; echo after")).unwrap();
    session.control().signal(libc::SIGTERM).unwrap();
    let mut out = Vec::new();
    let st = session.wait(&mut out, &mut Vec::new()).unwrap();
    assert_eq!(
        st,
        ExitStatus::Signal {
            signal: 15,
            core_dumped: false
        }
    );
    assert!(out.is_empty());
}

/// An agent whose next session start is held until [`HeldStart::release`]:
/// its root's `/etc/passwd` is a FIFO, which the agent reads (to resolve
/// the user) before it spawns the process, and opening a FIFO blocks until
/// a writer comes. A slow start without a guessed delay.
struct HeldStart {
    h: Harness,
    passwd: PathBuf,
    _root: TempDir,
}

impl HeldStart {
    fn new() -> Self {
        let root = TempDir::new("held-root");
        std::fs::create_dir(root.path().join("etc")).unwrap();
        let passwd = root.path().join("etc/passwd");
        let c = std::ffi::CString::new(passwd.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        HeldStart {
            h: harness_in(root.path().to_path_buf()),
            passwd,
            _root: root,
        }
    }

    /// A connection past the handshake that sends `req` and then `early`
    /// at once, without waiting for `ExecStarted`.
    fn send(&self, mut req: ExecRequest, early: &[HostMsg]) -> UnixStream {
        // SAFETY: geteuid has no preconditions.
        req.user = Some(User::Id(unsafe { libc::geteuid() }));
        let mut s = self.h.client().into_stream();
        write_frame(&mut s, &HostMsg::Exec(req)).unwrap();
        for m in early {
            write_frame(&mut s, m).unwrap();
        }
        s
    }

    /// Lets the held start go on. Opening the FIFO returns only once the
    /// agent opened it, so everything sent before was there before the
    /// process existed.
    fn release(&self) {
        // SAFETY: geteuid and getegid have no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.passwd)
            .unwrap();
        writeln!(f, "me:x:{uid}:{gid}:me:/:/bin/sh").unwrap();
    }
}

/// Reads a session to its end: (status, stdout and stderr).
fn finish(s: &mut UnixStream) -> (ExitStatus, String) {
    let mut out = Vec::new();
    loop {
        match read_frame(s).unwrap() {
            GuestMsg::ExecStarted { .. } => {}
            GuestMsg::Stdout { data } | GuestMsg::Stderr { data } => out.extend(data),
            GuestMsg::Exited { status } => {
                return (status, String::from_utf8_lossy(&out).into_owned())
            }
            m => panic!("{m:?}"),
        }
    }
}

#[test]
fn signal_sent_before_the_process_starts_is_delivered() {
    let held = HeldStart::new();
    for tty in [true, false] {
        // No shell: dash would hold a SIGINT that comes before it forks
        // its job (see pty_eof_and_signals_to_foreground_group).
        let req = ExecRequest {
            argv: vec!["sleep".into(), "100".into()],
            tty,
            ..Default::default()
        };
        let mut s = held.send(
            req,
            &[HostMsg::Signal {
                signal: libc::SIGINT,
            }],
        );
        held.release();
        let (st, out) = finish(&mut s);
        assert_eq!(
            st,
            ExitStatus::Signal {
                signal: libc::SIGINT,
                core_dumped: false
            },
            "tty={tty}: {out}"
        );
    }
}

#[test]
fn resize_stdin_and_eof_sent_before_the_process_starts_are_applied() {
    let held = HeldStart::new();
    // In order: the resize is applied before the line that `read` waits
    // for, and the EOF (^D on a terminal) ends `cat`.
    let req = ExecRequest {
        tty: true,
        winsize: Some(WinSize { rows: 24, cols: 80 }),
        ..sh("read x; stty size; echo \"got $x\"; cat; exit 3")
    };
    let mut s = held.send(
        req,
        &[
            HostMsg::Resize(WinSize {
                rows: 40,
                cols: 100,
            }),
            HostMsg::Stdin {
                data: b"hi\n".to_vec(),
            },
            HostMsg::StdinEof,
        ],
    );
    held.release();
    let (st, out) = finish(&mut s);
    assert_eq!(st, ExitStatus::Code { code: 3 }, "{out}");
    assert!(out.contains("40 100"), "{out}");
    assert!(out.contains("got hi"), "{out}");

    // With pipes: the EOF closes stdin once the data is through.
    let mut s = held.send(
        sh("read x; echo \"got $x\"; cat; exit 4"),
        &[
            HostMsg::Stdin {
                data: b"hi\nrest".to_vec(),
            },
            HostMsg::StdinEof,
        ],
    );
    held.release();
    assert_eq!(
        finish(&mut s),
        (ExitStatus::Code { code: 4 }, "got hi\nrest".into())
    );
}

#[test]
fn background_child_holding_the_pipe_does_not_hang_the_session() {
    let h = harness();
    let (st, out, _) = h.run(sh("sleep 30 & echo done"), vec![]);
    assert!(st.success());
    assert_eq!(out, b"done\n");
}

#[test]
fn host_hangup_ends_the_process() {
    let h = harness();
    let session = h.client().exec_start(&sh("exec sleep 100")).unwrap();
    let pid = session.pid();
    drop(session);
    wait_for(10, "the process to be gone after the hangup", || {
        // SAFETY: signal 0 only checks for existence.
        (unsafe { libc::kill(pid as i32, 0) } != 0).then_some(())
    });
}

#[test]
fn exec_failures_are_error_frames() {
    let h = harness();
    let remote = |req: ExecRequest| match h.client().exec_start(&req) {
        Err(ClientError::Remote { code, message }) => (code, message),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("{req:?} started"),
    };
    let (c, m) = remote(ExecRequest {
        argv: vec!["no-such-command-mvm".into()],
        ..Default::default()
    });
    assert_eq!(c, ErrorCode::ExecFailed);
    assert_eq!(m, "no-such-command-mvm: command not found");
    let (c, m) = remote(ExecRequest {
        argv: vec!["true".into()],
        cwd: Some("/no/such/dir".into()),
        ..Default::default()
    });
    assert_eq!(c, ErrorCode::ExecFailed);
    assert!(m.contains("/no/such/dir"), "{m}");
    let (c, m) = remote(ExecRequest {
        argv: vec!["true".into()],
        user: Some(User::Name("no-such-user-mvm".into())),
        ..Default::default()
    });
    assert_eq!(c, ErrorCode::NotFound);
    assert!(m.contains("no-such-user-mvm"), "{m}");
    let (c, _) = remote(ExecRequest::default());
    assert_eq!(c, ErrorCode::BadRequest);
}

#[test]
fn handshake_rejects_unknown_versions_and_non_hello() {
    let h = harness();
    let mut s = h.connect();
    write_frame(
        &mut s,
        &HostMsg::Hello {
            version: PROTOCOL_VERSION + 1,
            client: "future".into(),
        },
    )
    .unwrap();
    match read_frame::<_, GuestMsg>(&mut s).unwrap() {
        GuestMsg::Error { code, message } => {
            assert_eq!(code, ErrorCode::UnsupportedVersion);
            assert!(
                message.contains(&format!("{}", PROTOCOL_VERSION + 1)),
                "{message}"
            );
        }
        m => panic!("{m:?}"),
    }
    assert!(matches!(
        read_frame::<_, GuestMsg>(&mut s),
        Err(agent_proto::FrameError::Closed)
    ));

    let mut s = h.connect();
    write_frame(&mut s, &HostMsg::Ping { seq: 1 }).unwrap();
    assert!(matches!(
        read_frame::<_, GuestMsg>(&mut s).unwrap(),
        GuestMsg::Error {
            code: ErrorCode::BadRequest,
            ..
        }
    ));
}

#[test]
fn garbage_and_oversize_frames() {
    let h = harness();
    let mut c = h.client();
    // A well-framed payload that is not a message: error, connection lives.
    let mut s = c.into_stream();
    s.write_all(&5u32.to_be_bytes()).unwrap();
    s.write_all(b"{nope").unwrap();
    assert!(matches!(
        read_frame::<_, GuestMsg>(&mut s).unwrap(),
        GuestMsg::Error {
            code: ErrorCode::BadRequest,
            ..
        }
    ));
    write_frame(&mut s, &HostMsg::Ping { seq: 9 }).unwrap();
    assert_eq!(
        read_frame::<_, GuestMsg>(&mut s).unwrap(),
        GuestMsg::Pong { seq: 9 }
    );
    // Messages that belong to a session are refused outside one.
    write_frame(&mut s, &HostMsg::StdinEof).unwrap();
    assert!(matches!(
        read_frame::<_, GuestMsg>(&mut s).unwrap(),
        GuestMsg::Error {
            code: ErrorCode::BadRequest,
            ..
        }
    ));
    // An oversize header: error, then the agent hangs up.
    s.write_all(&(MAX_FRAME_SIZE as u32 + 1).to_be_bytes())
        .unwrap();
    match read_frame::<_, GuestMsg>(&mut s).unwrap() {
        GuestMsg::Error { code, message } => {
            assert_eq!(code, ErrorCode::BadRequest);
            assert!(message.contains("exceeds"), "{message}");
        }
        m => panic!("{m:?}"),
    }
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    c = h.client();
    c.ping().unwrap();
}

#[test]
fn oversize_frame_inside_an_exec_session() {
    let h = harness();
    let mut s = h.connect();
    write_frame(
        &mut s,
        &HostMsg::Hello {
            version: PROTOCOL_VERSION,
            client: "raw".into(),
        },
    )
    .unwrap();
    assert!(matches!(
        read_frame::<_, GuestMsg>(&mut s).unwrap(),
        GuestMsg::Hello { .. }
    ));
    write_frame(&mut s, &HostMsg::Exec(sh("exec sleep 100"))).unwrap();
    let GuestMsg::ExecStarted { pid } = read_frame(&mut s).unwrap() else {
        panic!("no ExecStarted");
    };
    // Garbage JSON inside a session: reported, session goes on.
    s.write_all(&2u32.to_be_bytes()).unwrap();
    s.write_all(b"{]").unwrap();
    assert!(matches!(
        read_frame::<_, GuestMsg>(&mut s).unwrap(),
        GuestMsg::Error {
            code: ErrorCode::BadRequest,
            ..
        }
    ));
    write_frame(&mut s, &HostMsg::Ping { seq: 3 }).unwrap();
    assert_eq!(
        read_frame::<_, GuestMsg>(&mut s).unwrap(),
        GuestMsg::Pong { seq: 3 }
    );
    // Broken framing: error, hangup, and the process is ended.
    s.write_all(&u32::MAX.to_be_bytes()).unwrap();
    assert!(matches!(
        read_frame::<_, GuestMsg>(&mut s).unwrap(),
        GuestMsg::Error {
            code: ErrorCode::BadRequest,
            ..
        }
    ));
    assert!(matches!(
        read_frame::<_, GuestMsg>(&mut s),
        Err(agent_proto::FrameError::Closed)
    ));
    wait_for(10, "process gone", || {
        // SAFETY: signal 0 only checks for existence.
        (unsafe { libc::kill(pid as i32, 0) } != 0).then_some(())
    });
}

#[test]
fn services_over_the_protocol() {
    let h = harness();
    let mut c = h.client();
    let spec = ServiceSpec {
        name: "ticker".into(),
        argv: vec![
            "sh".into(),
            "-c".into(),
            "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.05; done".into(),
        ],
        restart: RestartPolicy::Always,
        ..Default::default()
    };
    c.service_declare(&spec, true).unwrap();
    wait_for(10, "ticker running", || {
        let s = c.service_status(Some("ticker")).unwrap();
        (s[0].state == ServiceState::Running && s[0].pid.is_some()).then_some(())
    });
    wait_for(10, "some ticks", || {
        let mut buf = Vec::new();
        c.service_logs("ticker", None, false, &mut buf).unwrap();
        String::from_utf8_lossy(&buf)
            .contains("tick 3")
            .then_some(())
    });
    let mut tail = Vec::new();
    c.service_logs("ticker", Some(8), false, &mut tail).unwrap();
    assert_eq!(tail.len(), 8);

    // Follow on another connection, ended by removing the service.
    let mut follower = h.client();
    let (following, followed) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let mut out = OnOutput::new("tick", move || following.send(()).unwrap());
        follower
            .service_logs("ticker", Some(0), true, &mut out)
            .unwrap();
        out.buf
    });
    // Stop once the follower has seen a tick, so it was following first.
    followed.recv_timeout(Duration::from_secs(30)).unwrap();
    c.service_stop("ticker").unwrap();
    assert_eq!(
        c.service_status(Some("ticker")).unwrap()[0].state,
        ServiceState::Stopped
    );
    c.service_remove("ticker").unwrap();
    let followed = String::from_utf8(t.join().unwrap()).unwrap();
    assert!(followed.contains("tick"), "{followed}");
    assert!(followed.contains("stopping"), "{followed}");

    let err = c.service_start("ticker").unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Remote {
                code: ErrorCode::NotFound,
                ..
            }
        ),
        "{err}"
    );
    let bad = ServiceSpec {
        name: "a/b".into(),
        argv: vec!["true".into()],
        ..Default::default()
    };
    let err = c.service_declare(&bad, false).unwrap_err();
    assert!(
        err.to_string().contains("invalid service name 'a/b'"),
        "{err}"
    );
    assert!(c.service_status(None).unwrap().is_empty());
}

#[test]
fn shutdown_is_acknowledged_then_carried_out() {
    let h = harness();
    let mut c = h.client();
    c.shutdown(ShutdownAction::Poweroff).unwrap();
    wait_for(10, "power function called", || {
        (h.shutdowns.load(Ordering::SeqCst) == 1).then_some(())
    });
}

#[test]
fn many_sessions_at_once() {
    let h = Arc::new(harness());
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let h = Arc::clone(&h);
            std::thread::spawn(move || {
                let (st, out, _) = h.run(sh(&format!("cat; echo {i}")), vec![b'x'; 100_000]);
                assert!(st.success());
                assert_eq!(out.len(), 100_000 + format!("{i}\n").len());
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
