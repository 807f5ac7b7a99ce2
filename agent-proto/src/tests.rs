use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};
use std::os::unix::net::UnixStream;

use crate::client::{self, Client, ClientError};
use crate::*;

fn all_host_msgs() -> Vec<HostMsg> {
    let spec = ServiceSpec {
        name: "web".into(),
        argv: vec!["python3".into(), "-m".into(), "http.server".into()],
        env: BTreeMap::from([("PORT".into(), "8000".into())]),
        cwd: Some("/project".into()),
        user: Some(User::Name("dev".into())),
        restart: RestartPolicy::OnFailure,
        readiness: Some(Readiness::Tcp { port: 8000 }),
    };
    vec![
        HostMsg::Hello {
            version: 1,
            client: "test".into(),
        },
        HostMsg::Ping { seq: 7 },
        HostMsg::Exec(ExecRequest {
            argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: BTreeMap::from([("A".into(), "b c".into())]),
            cwd: Some("/tmp".into()),
            user: Some(User::Id(1000)),
            tty: true,
            winsize: Some(WinSize { rows: 24, cols: 80 }),
        }),
        HostMsg::Stdin {
            data: (0..=255).collect(),
        },
        HostMsg::StdinEof,
        HostMsg::Resize(WinSize {
            rows: 50,
            cols: 132,
        }),
        HostMsg::Signal { signal: 2 },
        HostMsg::ServiceDeclare { spec, start: true },
        HostMsg::ServiceDeclare {
            spec: ServiceSpec {
                name: "db".into(),
                argv: vec!["postgres".into()],
                readiness: Some(Readiness::Command {
                    argv: vec!["pg_isready".into()],
                }),
                restart: RestartPolicy::Always,
                ..Default::default()
            },
            start: false,
        },
        HostMsg::ServiceStart { name: "web".into() },
        HostMsg::ServiceStop { name: "web".into() },
        HostMsg::ServiceRestart { name: "web".into() },
        HostMsg::ServiceRemove { name: "web".into() },
        HostMsg::ServiceStatus { name: None },
        HostMsg::ServiceStatus {
            name: Some("web".into()),
        },
        HostMsg::ServiceLogs {
            name: "web".into(),
            max_bytes: Some(4096),
            follow: true,
        },
        HostMsg::Shutdown {
            action: ShutdownAction::Poweroff,
        },
        HostMsg::Shutdown {
            action: ShutdownAction::Reboot,
        },
    ]
}

fn all_guest_msgs() -> Vec<GuestMsg> {
    vec![
        GuestMsg::Hello {
            version: 1,
            agent: "mvm-init 0.1.0".into(),
            hostname: "web".into(),
        },
        GuestMsg::Error {
            code: ErrorCode::NotFound,
            message: "no service 'x'".into(),
        },
        GuestMsg::Ok,
        GuestMsg::Pong { seq: 7 },
        GuestMsg::ExecStarted { pid: 42 },
        GuestMsg::Stdout {
            data: b"hi\n".to_vec(),
        },
        GuestMsg::Stderr { data: vec![] },
        GuestMsg::Exited {
            status: ExitStatus::Code { code: 3 },
        },
        GuestMsg::Exited {
            status: ExitStatus::Signal {
                signal: 9,
                core_dumped: false,
            },
        },
        GuestMsg::ServiceStatus {
            services: vec![ServiceInfo {
                name: "web".into(),
                state: ServiceState::Running,
                pid: Some(99),
                ready: true,
                restarts: 2,
                last_exit: Some(ExitStatus::Code { code: 1 }),
                restart: RestartPolicy::Always,
                argv: vec!["x".into()],
            }],
        },
        GuestMsg::LogData {
            data: b"log line\n".to_vec(),
        },
    ]
}

#[test]
fn every_message_round_trips() {
    let mut buf = Vec::new();
    for m in all_host_msgs() {
        write_frame(&mut buf, &m).unwrap();
    }
    for m in all_guest_msgs() {
        write_frame(&mut buf, &m).unwrap();
    }
    let mut r = Cursor::new(buf);
    for m in all_host_msgs() {
        assert_eq!(read_frame::<_, HostMsg>(&mut r).unwrap(), m);
    }
    for m in all_guest_msgs() {
        assert_eq!(read_frame::<_, GuestMsg>(&mut r).unwrap(), m);
    }
    assert!(matches!(
        read_frame::<_, HostMsg>(&mut r),
        Err(FrameError::Closed)
    ));
}

#[test]
fn wire_format_is_stable() {
    let f = encode_frame(&HostMsg::Stdin {
        data: b"hi".to_vec(),
    })
    .unwrap();
    let json = br#"{"type":"stdin","data":"aGk="}"#;
    assert_eq!(&f[..4], &(json.len() as u32).to_be_bytes());
    assert_eq!(&f[4..], json);
    // Hand-written JSON as another implementation would send it, with an
    // unknown field that must be ignored.
    let exec: HostMsg = serde_json::from_str(
        r#"{"type":"exec","argv":["id"],"user":"dev","tty":false,"future":1}"#,
    )
    .unwrap();
    assert_eq!(
        exec,
        HostMsg::Exec(ExecRequest {
            argv: vec!["id".into()],
            user: Some(User::Name("dev".into())),
            ..Default::default()
        })
    );
    let st: GuestMsg =
        serde_json::from_str(r#"{"type":"exited","status":{"kind":"signal","signal":15}}"#)
            .unwrap();
    assert_eq!(
        st,
        GuestMsg::Exited {
            status: ExitStatus::Signal {
                signal: 15,
                core_dumped: false
            }
        }
    );
    let e: GuestMsg =
        serde_json::from_str(r#"{"type":"error","code":"from_the_future","message":"m"}"#).unwrap();
    assert_eq!(
        e,
        GuestMsg::Error {
            code: ErrorCode::Unknown,
            message: "m".into()
        }
    );
}

#[test]
fn truncated_frames() {
    let full = encode_frame(&HostMsg::Ping { seq: 1 }).unwrap();
    for cut in 1..full.len() {
        let err = read_frame::<_, HostMsg>(&mut Cursor::new(&full[..cut])).unwrap_err();
        match err {
            FrameError::Truncated { got, want } => {
                assert_eq!(got, cut);
                assert!(want > got);
            }
            other => panic!("cut at {cut}: {other}"),
        }
        let mut d = FrameDecoder::new();
        d.push(&full[..cut]);
        assert!(d.next_frame::<HostMsg>().unwrap().is_none());
        assert!(matches!(d.finish(), Err(FrameError::Truncated { .. })));
    }
    assert!(matches!(
        read_frame::<_, HostMsg>(&mut Cursor::new(&[][..])),
        Err(FrameError::Closed)
    ));
}

/// A reader that fails the test if more than `limit` bytes are requested in
/// one go: proves the decoder does not size buffers from a hostile header.
struct Stingy<'a> {
    data: &'a [u8],
}

impl Read for Stingy<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        assert!(buf.len() <= MAX_FRAME_SIZE, "asked for {} bytes", buf.len());
        let n = buf.len().min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[test]
fn oversize_frames_are_refused_before_allocation() {
    for len in [MAX_FRAME_SIZE as u32 + 1, u32::MAX] {
        let hdr = len.to_be_bytes();
        let err = read_frame::<_, HostMsg>(&mut Stingy { data: &hdr }).unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge { len: l, .. } if l == len as usize),
            "{err}"
        );
        assert!(err.is_fatal());
        let mut d = FrameDecoder::new();
        d.push(&hdr);
        assert!(matches!(
            d.next_frame::<HostMsg>(),
            Err(FrameError::TooLarge { .. })
        ));
    }
    // Exactly the limit is fine as far as framing goes.
    let mut exact = (MAX_FRAME_SIZE as u32).to_be_bytes().to_vec();
    exact.resize(4 + MAX_FRAME_SIZE, b' ');
    let err = read_frame::<_, HostMsg>(&mut Stingy { data: &exact }).unwrap_err();
    assert!(matches!(err, FrameError::Json(_)), "{err}");
    // And the sender refuses to produce an oversize frame.
    let big = GuestMsg::Stdout {
        data: vec![0; MAX_FRAME_SIZE],
    };
    assert!(matches!(
        encode_frame(&big),
        Err(FrameError::TooLarge { .. })
    ));
}

#[test]
fn garbage_json_is_an_error_but_framing_survives() {
    let mut stream = Vec::new();
    for payload in [
        &b"not json"[..],
        b"{\"type\":\"no_such_message\"}",
        b"{\"type\":\"stdin\",\"data\":\"!!!\"}",
        b"{\"type\":\"ping\"}",
        b"[1,2,3]",
        b"",
        b"\xff\xfe",
    ] {
        stream.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        stream.extend_from_slice(payload);
    }
    write_frame(&mut stream, &HostMsg::Ping { seq: 5 }).unwrap();

    let mut r = Cursor::new(stream.clone());
    for _ in 0..7 {
        let err = read_frame::<_, HostMsg>(&mut r).unwrap_err();
        assert!(matches!(err, FrameError::Json(_)), "{err}");
        assert!(!err.is_fatal());
    }
    assert_eq!(
        read_frame::<_, HostMsg>(&mut r).unwrap(),
        HostMsg::Ping { seq: 5 }
    );

    // The incremental decoder, fed one byte at a time.
    let mut d = FrameDecoder::new();
    let mut errors = 0;
    let mut frames = Vec::new();
    for b in &stream {
        d.push(std::slice::from_ref(b));
        loop {
            match d.next_frame::<HostMsg>() {
                Ok(Some(m)) => frames.push(m),
                Ok(None) => break,
                Err(FrameError::Json(_)) => errors += 1,
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert_eq!(errors, 7);
    assert_eq!(frames, vec![HostMsg::Ping { seq: 5 }]);
    d.finish().unwrap();
}

#[test]
fn decoder_handles_many_frames_per_push() {
    let mut stream = Vec::new();
    for i in 0..1000u64 {
        write_frame(&mut stream, &HostMsg::Ping { seq: i }).unwrap();
    }
    let mut d = FrameDecoder::new();
    let mut seen = 0u64;
    for chunk in stream.chunks(777) {
        d.push(chunk);
        while let Some(m) = d.next_frame::<HostMsg>().unwrap() {
            assert_eq!(m, HostMsg::Ping { seq: seen });
            seen += 1;
        }
    }
    assert_eq!(seen, 1000);
    assert_eq!(d.buffered(), 0);
}

#[test]
fn hello_negotiation() {
    let hello = |version| HostMsg::Hello {
        version,
        client: "t".into(),
    };
    assert_eq!(
        answer_hello(&hello(PROTOCOL_VERSION), "a", "h"),
        Ok(GuestMsg::Hello {
            version: PROTOCOL_VERSION,
            agent: "a".into(),
            hostname: "h".into()
        })
    );
    for v in [0, PROTOCOL_VERSION + 1, u32::MAX] {
        match answer_hello(&hello(v), "a", "h") {
            Err(GuestMsg::Error { code, message }) => {
                assert_eq!(code, ErrorCode::UnsupportedVersion);
                assert!(message.contains(&v.to_string()), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        answer_hello(&HostMsg::Ping { seq: 1 }, "a", "h"),
        Err(GuestMsg::Error {
            code: ErrorCode::BadRequest,
            ..
        })
    ));
}

#[test]
fn client_sees_version_refusal() {
    let (host, mut guest) = UnixStream::pair().unwrap();
    let t = std::thread::spawn(move || {
        let first: HostMsg = read_frame(&mut guest).unwrap();
        // Pretend to be an agent from the future.
        let reply = match first {
            HostMsg::Hello { .. } => GuestMsg::Error {
                code: ErrorCode::UnsupportedVersion,
                message: "speaks 2..=2".into(),
            },
            _ => unreachable!(),
        };
        write_frame(&mut guest, &reply).unwrap();
    });
    let err = Client::handshake(host, "t").unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Remote {
                code: ErrorCode::UnsupportedVersion,
                ..
            }
        ),
        "{err}"
    );
    t.join().unwrap();
}

/// A scripted fake agent: checks the client's side of exec and requests.
#[test]
fn client_exec_and_requests_against_fake_agent() {
    let (host, mut guest) = UnixStream::pair().unwrap();
    let agent = std::thread::spawn(move || {
        let hello: HostMsg = read_frame(&mut guest).unwrap();
        write_frame(&mut guest, &answer_hello(&hello, "fake", "vm").unwrap()).unwrap();
        match read_frame(&mut guest).unwrap() {
            HostMsg::Ping { seq } => write_frame(&mut guest, &GuestMsg::Pong { seq }).unwrap(),
            m => panic!("{m:?}"),
        }
        match read_frame(&mut guest).unwrap() {
            HostMsg::ServiceStart { name } => write_frame(
                &mut guest,
                &GuestMsg::Error {
                    code: ErrorCode::NotFound,
                    message: format!("no service '{name}'"),
                },
            )
            .unwrap(),
            m => panic!("{m:?}"),
        }
        let HostMsg::Exec(req) = read_frame(&mut guest).unwrap() else {
            panic!()
        };
        assert_eq!(req.argv, ["cat"]);
        write_frame(&mut guest, &GuestMsg::ExecStarted { pid: 9 }).unwrap();
        // Echo stdin back as stdout until EOF, like `cat`.
        let mut total = 0;
        loop {
            match read_frame(&mut guest).unwrap() {
                HostMsg::Stdin { data } => {
                    total += data.len();
                    write_frame(&mut guest, &GuestMsg::Stdout { data }).unwrap();
                }
                HostMsg::StdinEof => break,
                m => panic!("{m:?}"),
            }
        }
        write_frame(
            &mut guest,
            &GuestMsg::Stderr {
                data: b"e".to_vec(),
            },
        )
        .unwrap();
        write_frame(
            &mut guest,
            &GuestMsg::Exited {
                status: ExitStatus::Code { code: 0 },
            },
        )
        .unwrap();
        total
    });

    let mut c = Client::handshake(host, "t").unwrap();
    assert_eq!(c.agent().hostname, "vm");
    c.ping().unwrap();
    let err = c.service_start("nope").unwrap_err();
    assert!(err.to_string().contains("no service 'nope'"), "{err}");
    let input: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut out = Vec::new();
    let mut errout = Vec::new();
    let st = c
        .exec(
            &ExecRequest {
                argv: vec!["cat".into()],
                ..Default::default()
            },
            Some(Cursor::new(input.clone())),
            &mut out,
            &mut errout,
        )
        .unwrap();
    assert!(st.success());
    assert_eq!(out, input);
    assert_eq!(errout, b"e");
    assert_eq!(agent.join().unwrap(), input.len());
}

/// A host stream that holds the client's stdin EOF until the fake agent
/// has closed its end, the order a quick process produces on a busy host.
struct EofAfterAgentLeft {
    inner: UnixStream,
    agent_gone: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Read for EofAfterAgentLeft {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl Write for EofAfterAgentLeft {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf == encode_frame(&HostMsg::StdinEof).unwrap().as_slice() {
            while !self.agent_gone.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl client::Duplex for EofAfterAgentLeft {
    fn try_clone(&self) -> std::io::Result<Self> {
        Ok(EofAfterAgentLeft {
            inner: self.inner.try_clone()?,
            agent_gone: self.agent_gone.clone(),
        })
    }
}

/// A process that exits before the client sends stdin EOF: the agent has
/// already closed the session, the EOF write fails, and exec still returns
/// the process's output and status (the CI failure of session 6).
#[test]
fn exec_of_a_process_that_ends_before_stdin_eof_returns_its_status() {
    let (host, mut guest) = UnixStream::pair().unwrap();
    let agent_gone = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gone = agent_gone.clone();
    let agent = std::thread::spawn(move || {
        let hello: HostMsg = read_frame(&mut guest).unwrap();
        write_frame(&mut guest, &answer_hello(&hello, "fake", "vm").unwrap()).unwrap();
        let HostMsg::Exec(_) = read_frame(&mut guest).unwrap() else {
            panic!()
        };
        write_frame(&mut guest, &GuestMsg::ExecStarted { pid: 3 }).unwrap();
        let data = b"done\n".to_vec();
        write_frame(&mut guest, &GuestMsg::Stdout { data }).unwrap();
        let status = ExitStatus::Code { code: 4 };
        write_frame(&mut guest, &GuestMsg::Exited { status }).unwrap();
        drop(guest);
        gone.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let stream = EofAfterAgentLeft {
        inner: host,
        agent_gone,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let req = ExecRequest {
        argv: vec!["true".into()],
        ..Default::default()
    };
    let st = client::exec(stream, &req, None::<Cursor<Vec<u8>>>, &mut out, &mut err).unwrap();
    assert_eq!(st, ExitStatus::Code { code: 4 });
    assert_eq!(out, b"done\n");
    agent.join().unwrap();
}

#[test]
fn connect_unix_speaks_the_vmm_connect_line() {
    let dir = std::env::temp_dir().join(format!("agent-proto-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vsock.sock");
    let _ = std::fs::remove_file(&path);
    let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let t = std::thread::spawn(move || {
        for reply in ["OK 1073741824\n", "ERR no listener\n"] {
            let (mut s, _) = l.accept().unwrap();
            let mut line = [0u8; 13];
            s.read_exact(&mut line).unwrap();
            assert_eq!(&line, b"CONNECT 1024\n");
            s.write_all(reply.as_bytes()).unwrap();
            // After a refusal the client may already have hung up.
            let _ = s.write_all(b"AGENT");
        }
    });
    let mut s = client::connect_unix(&path, Some(1024)).unwrap();
    let mut rest = [0u8; 5];
    s.read_exact(&mut rest).unwrap();
    assert_eq!(
        &rest, b"AGENT",
        "CONNECT reply must not swallow agent bytes"
    );
    let err = client::connect_unix(&path, Some(1024)).unwrap_err();
    assert!(err.to_string().contains("ERR no listener"), "{err}");
    t.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn exit_status_from_wait_status() {
    assert_eq!(
        ExitStatus::from_wait_status(3 << 8),
        ExitStatus::Code { code: 3 }
    );
    assert_eq!(
        ExitStatus::from_wait_status(9),
        ExitStatus::Signal {
            signal: 9,
            core_dumped: false
        }
    );
    assert_eq!(
        ExitStatus::from_wait_status(0x80 | 11),
        ExitStatus::Signal {
            signal: 11,
            core_dumped: true
        }
    );
    assert_eq!(ExitStatus::from_wait_status(0x80 | 11).shell_code(), 139);
}

#[test]
fn service_names() {
    for ok in ["web", "db-1", "a.b_c", "X"] {
        validate_service_name(ok).unwrap();
    }
    for bad in ["", ".hidden", "a/b", "..", "sp ace", &"x".repeat(65)] {
        assert!(validate_service_name(bad).is_err(), "{bad:?}");
    }
}
