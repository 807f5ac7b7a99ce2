//! Running commands: building the process (user, environment, cwd) and
//! pumping an exec session between the connection and the process.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_proto::{
    write_frame, ErrorCode, ExecRequest, ExitStatus, FrameDecoder, FrameError, GuestMsg, HostMsg,
    User, WinSize, MAX_DATA_CHUNK,
};

use crate::passwd::{self, Identity};
use crate::reaper::{ExitWatch, Reaper};
use crate::server::Conn;
use crate::sys::{self, kill_group};
use crate::{log, pty};

/// PATH when the request does not set one.
pub const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/run/current-system/sw/bin";

/// Stop reading the connection while this much stdin waits for the
/// process: backpressure instead of unbounded buffering.
const STDIN_HIGH_WATER: usize = 256 * 1024;

/// After the process exits, output still arriving (from background
/// processes holding the pipes) is forwarded until it pauses this long...
const DRAIN_IDLE: Duration = Duration::from_millis(100);
/// ...or this much time has passed since the exit.
const DRAIN_MAX: Duration = Duration::from_secs(2);

/// A request-level failure, sent to the host as an `Error` frame.
#[derive(Debug)]
pub struct Refusal(pub ErrorCode, pub String);

impl Refusal {
    pub fn to_msg(&self) -> GuestMsg {
        GuestMsg::Error {
            code: self.0,
            message: self.1.clone(),
        }
    }
}

/// What every spawned process gets.
pub struct Spec<'a> {
    pub argv: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub cwd: Option<&'a str>,
    pub user: Option<&'a User>,
    /// Make stdin (a PTY slave) the controlling terminal.
    pub tty: bool,
}

/// Builds the command: clean environment (base + requested), cwd, and in
/// the child a new session, the controlling terminal, and the user's
/// groups, gid and uid. Stdio is left to the caller.
pub fn command(root: &Path, spec: &Spec<'_>) -> Result<Command, Refusal> {
    let Some(prog) = spec.argv.first() else {
        return Err(Refusal(ErrorCode::BadRequest, "argv is empty".into()));
    };
    let ident = passwd::resolve(root, spec.user).map_err(|m| Refusal(ErrorCode::NotFound, m))?;
    let cwd = match spec.cwd {
        Some(c) => {
            if !Path::new(c).is_dir() {
                return Err(Refusal(
                    ErrorCode::ExecFailed,
                    format!("working directory '{c}' does not exist"),
                ));
            }
            c.to_string()
        }
        None if Path::new(&ident.home).is_dir() => ident.home.clone(),
        None => "/".into(),
    };
    let mut cmd = Command::new(prog);
    cmd.args(&spec.argv[1..])
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .env("HOME", &ident.home)
        .env("USER", &ident.name)
        .env("LOGNAME", &ident.name)
        .env("SHELL", &ident.shell);
    if spec.tty {
        cmd.env("TERM", "xterm-256color");
    }
    cmd.envs(spec.env).current_dir(cwd);
    let switch = switch_needed(&ident).map_err(|m| Refusal(ErrorCode::ExecFailed, m))?;
    let tty = spec.tty;
    let Identity {
        uid, gid, groups, ..
    } = ident;
    let groups: Vec<libc::gid_t> = groups;
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe system calls (no allocation, no locks).
    unsafe {
        cmd.pre_exec(move || {
            sys::default_signal_dispositions();
            // Own session and process group: signals go to the whole job,
            // and the PTY can become its controlling terminal.
            sys::cvt(libc::setsid())?;
            if tty {
                sys::cvt(libc::ioctl(0, libc::TIOCSCTTY, 0))?;
            }
            if switch {
                sys::cvt(libc::setgroups(groups.len(), groups.as_ptr()))?;
                sys::cvt(libc::setgid(gid))?;
                sys::cvt(libc::setuid(uid))?;
            }
            Ok(())
        })
    };
    Ok(cmd)
}

fn switch_needed(ident: &Identity) -> Result<bool, String> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid == ident.uid {
        Ok(false)
    } else if euid == 0 {
        Ok(true)
    } else {
        Err(format!(
            "cannot run as user '{}': the agent is not running as root",
            ident.name
        ))
    }
}

/// Spawn error text: "command not found" beats "No such file or directory".
pub fn spawn_error(prog: &str, e: &io::Error) -> Refusal {
    let msg = match e.kind() {
        io::ErrorKind::NotFound => format!("{prog}: command not found"),
        io::ErrorKind::PermissionDenied => format!("{prog}: permission denied"),
        _ => format!("{prog}: {e}"),
    };
    Refusal(ErrorCode::ExecFailed, msg)
}

enum Io {
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: Option<OwnedFd>,
        stderr: Option<OwnedFd>,
    },
    Pty {
        master: OwnedFd,
        /// False once the slave side is gone (EIO).
        open: bool,
    },
}

/// Serves one exec session on `conn`; returns when the process exited and
/// `Exited` was sent, or when the host went away (the process group then
/// gets SIGHUP).
pub fn run_session<C: Conn>(
    conn: &mut C,
    req: ExecRequest,
    root: &Path,
    reaper: &Reaper,
) -> Result<(), FrameError> {
    let (watch, io) = match start(&req, root, reaper) {
        Ok(v) => v,
        Err(r) => return write_frame(conn, &r.to_msg()),
    };
    write_frame(conn, &GuestMsg::ExecStarted { pid: watch.pid() })?;
    let mut s = Session {
        pid: watch.pid(),
        watch,
        io,
        pending: Vec::new(),
        pending_off: 0,
        close_stdin_when_flushed: false,
        decoder: FrameDecoder::new(),
    };
    let r = s.pump(conn);
    if r.is_err() {
        // The host is gone or broke the stream: hang up like a terminal.
        s.hangup();
    }
    r
}

fn start(req: &ExecRequest, root: &Path, reaper: &Reaper) -> Result<(ExitWatch, Io), Refusal> {
    let mut cmd = command(
        root,
        &Spec {
            argv: &req.argv,
            env: &req.env,
            cwd: req.cwd.as_deref(),
            user: req.user.as_ref(),
            tty: req.tty,
        },
    )?;
    let internal = |e: io::Error| Refusal(ErrorCode::Failed, format!("setting up stdio: {e}"));
    let io = if req.tty {
        let size = req.winsize.unwrap_or(WinSize { rows: 24, cols: 80 });
        let p = pty::open(Some(size)).map_err(internal)?;
        sys::set_nonblocking(p.master.as_fd(), true).map_err(internal)?;
        let dup = |fd: &OwnedFd| fd.try_clone().map(Stdio::from);
        cmd.stdin(dup(&p.slave).map_err(internal)?)
            .stdout(dup(&p.slave).map_err(internal)?)
            .stderr(Stdio::from(p.slave));
        Io::Pty {
            master: p.master,
            open: true,
        }
    } else {
        let (in_r, in_w) = sys::pipe().map_err(internal)?;
        let (out_r, out_w) = sys::pipe().map_err(internal)?;
        let (err_r, err_w) = sys::pipe().map_err(internal)?;
        // Our end of stdin must never block the pump.
        sys::set_nonblocking(in_w.as_fd(), true).map_err(internal)?;
        cmd.stdin(Stdio::from(in_r))
            .stdout(Stdio::from(out_w))
            .stderr(Stdio::from(err_w));
        Io::Pipes {
            stdin: Some(in_w),
            stdout: Some(out_r),
            stderr: Some(err_r),
        }
    };
    let watch = reaper
        .spawn(&mut cmd)
        .map_err(|e| spawn_error(&req.argv[0], &e))?;
    // `cmd` (dropped here) holds the child's ends: closing them is what
    // lets EOF arrive when the child exits.
    drop(cmd);
    Ok((watch, io))
}

struct Session {
    pid: u32,
    watch: ExitWatch,
    io: Io,
    /// Stdin received but not yet accepted by the process.
    pending: Vec<u8>,
    pending_off: usize,
    close_stdin_when_flushed: bool,
    decoder: FrameDecoder,
}

#[derive(Clone, Copy, PartialEq)]
enum Slot {
    Conn,
    Out,
    Err,
    Sink,
    Exit,
}

impl Session {
    fn pending_len(&self) -> usize {
        self.pending.len() - self.pending_off
    }

    fn fd_of(&self, slot: Slot) -> Option<BorrowedFd<'_>> {
        match (&self.io, slot) {
            (Io::Pipes { stdout, .. }, Slot::Out) => stdout.as_ref().map(|f| f.as_fd()),
            (Io::Pipes { stderr, .. }, Slot::Err) => stderr.as_ref().map(|f| f.as_fd()),
            (Io::Pipes { stdin, .. }, Slot::Sink) => stdin.as_ref().map(|f| f.as_fd()),
            (Io::Pty { master, open }, Slot::Out | Slot::Sink) if *open => Some(master.as_fd()),
            _ => None,
        }
    }

    fn outputs_open(&self) -> bool {
        self.fd_of(Slot::Out).is_some() || self.fd_of(Slot::Err).is_some()
    }

    fn pump<C: Conn>(&mut self, conn: &mut C) -> Result<(), FrameError> {
        let mut exited: Option<(ExitStatus, Instant)> = None;
        let mut buf = vec![0u8; MAX_DATA_CHUNK];
        loop {
            if let Some((status, at)) = exited {
                if !self.outputs_open() || at.elapsed() >= DRAIN_MAX {
                    return write_frame(conn, &GuestMsg::Exited { status });
                }
            }
            let mut fds: Vec<libc::pollfd> = Vec::with_capacity(5);
            let mut slots: Vec<Slot> = Vec::with_capacity(5);
            let mut add = |fd: BorrowedFd<'_>, events: libc::c_short, slot: Slot| {
                fds.push(libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events,
                    revents: 0,
                });
                slots.push(slot);
            };
            if self.pending_len() < STDIN_HIGH_WATER {
                add(conn.as_fd(), libc::POLLIN, Slot::Conn);
            }
            for slot in [Slot::Out, Slot::Err] {
                if let Some(fd) = self.fd_of(slot) {
                    add(fd, libc::POLLIN, slot);
                }
            }
            if self.pending_len() > 0 || self.close_stdin_when_flushed {
                if let Some(fd) = self.fd_of(Slot::Sink) {
                    add(fd, libc::POLLOUT, Slot::Sink);
                }
            }
            if exited.is_none() {
                add(self.watch.fd(), libc::POLLIN, Slot::Exit);
            }
            let timeout = if exited.is_some() {
                DRAIN_IDLE.as_millis() as libc::c_int
            } else {
                -1
            };
            // SAFETY: fds is a valid array of fds.len() pollfd structs.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            if n == 0 {
                if let Some((status, _)) = exited {
                    // Output paused after the exit: what the process wrote
                    // itself has been forwarded.
                    return write_frame(conn, &GuestMsg::Exited { status });
                }
                continue;
            }
            for (pfd, slot) in fds.iter().zip(slots) {
                if pfd.revents == 0 {
                    continue;
                }
                match slot {
                    Slot::Conn => {
                        if !self.read_conn(conn, &mut buf)? {
                            // Host closed its side: nobody will read the
                            // output, so end the session like a hangup.
                            self.hangup();
                            return Ok(());
                        }
                    }
                    Slot::Out | Slot::Err => self.forward_output(conn, slot, &mut buf)?,
                    Slot::Sink => self.flush_stdin(),
                    Slot::Exit => {
                        let status = self.watch.wait().unwrap_or(ExitStatus::Code { code: 255 });
                        exited = Some((status, Instant::now()));
                    }
                }
            }
        }
    }

    /// Reads what the host sent; false when the host closed the connection.
    fn read_conn<C: Conn>(&mut self, conn: &mut C, buf: &mut [u8]) -> Result<bool, FrameError> {
        let n = match sys::recv_nonblocking(conn.as_fd(), buf) {
            Ok(0) => return Ok(false),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return Ok(true)
            }
            Err(e) => return Err(e.into()),
        };
        self.decoder.push(&buf[..n]);
        loop {
            match self.decoder.next_frame::<HostMsg>() {
                Ok(None) => return Ok(true),
                Ok(Some(msg)) => self.handle(conn, msg)?,
                Err(FrameError::Json(e)) => write_frame(
                    conn,
                    &GuestMsg::Error {
                        code: ErrorCode::BadRequest,
                        message: format!("malformed message: {e}"),
                    },
                )?,
                Err(e) => {
                    let _ = write_frame(
                        conn,
                        &GuestMsg::Error {
                            code: ErrorCode::BadRequest,
                            message: e.to_string(),
                        },
                    );
                    return Err(e);
                }
            }
        }
    }

    fn handle<C: Conn>(&mut self, conn: &mut C, msg: HostMsg) -> Result<(), FrameError> {
        match msg {
            HostMsg::Stdin { data } => {
                if self.fd_of(Slot::Sink).is_some() && !self.close_stdin_when_flushed {
                    if self.pending_off == self.pending.len() {
                        self.pending.clear();
                        self.pending_off = 0;
                    }
                    self.pending.extend_from_slice(&data);
                }
            }
            HostMsg::StdinEof => {
                if let Io::Pty { master, .. } = &self.io {
                    // A terminal has no EOF of its own: type the EOF
                    // character, which a canonical-mode reader takes as EOF.
                    if let Some(c) = pty::eof_char(master.as_fd()) {
                        self.pending.push(c);
                    }
                } else {
                    self.close_stdin_when_flushed = true;
                }
            }
            HostMsg::Resize(ws) => {
                if let Io::Pty { master, .. } = &self.io {
                    let _ = pty::set_size(master.as_fd(), ws);
                }
            }
            HostMsg::Signal { signal } => {
                if !(1..=64).contains(&signal) {
                    return write_frame(
                        conn,
                        &GuestMsg::Error {
                            code: ErrorCode::BadRequest,
                            message: format!("invalid signal number {signal}"),
                        },
                    );
                }
                kill_group(self.signal_target(), signal);
            }
            HostMsg::Ping { seq } => write_frame(conn, &GuestMsg::Pong { seq })?,
            other => {
                write_frame(
                    conn,
                    &GuestMsg::Error {
                        code: ErrorCode::BadRequest,
                        message: format!(
                            "{} is not allowed during an exec session",
                            msg_name(&other)
                        ),
                    },
                )?;
            }
        }
        Ok(())
    }

    /// The process group signals go to: for a terminal its foreground job
    /// (what Ctrl-C would hit), else the session's own group.
    fn signal_target(&self) -> u32 {
        if let Io::Pty { master, .. } = &self.io {
            if let Some(pg) = pty::foreground_pgrp(master.as_fd()) {
                return pg;
            }
        }
        self.pid
    }

    fn hangup(&self) {
        let target = self.signal_target();
        kill_group(target, libc::SIGHUP);
        kill_group(target, libc::SIGCONT);
        if target != self.pid {
            kill_group(self.pid, libc::SIGHUP);
        }
    }

    fn forward_output<C: Conn>(
        &mut self,
        conn: &mut C,
        slot: Slot,
        buf: &mut [u8],
    ) -> Result<(), FrameError> {
        let Some(fd) = self.fd_of(slot) else {
            return Ok(());
        };
        match sys::read_fd(fd, buf) {
            Ok(0) => self.close(slot),
            Ok(n) => {
                let data = buf[..n].to_vec();
                let msg = if slot == Slot::Err {
                    GuestMsg::Stderr { data }
                } else {
                    GuestMsg::Stdout { data }
                };
                write_frame(conn, &msg)?;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            // EIO: the PTY slave was closed by everyone.
            Err(_) => self.close(slot),
        }
        Ok(())
    }

    fn close(&mut self, slot: Slot) {
        match (&mut self.io, slot) {
            (Io::Pipes { stdout, .. }, Slot::Out) => *stdout = None,
            (Io::Pipes { stderr, .. }, Slot::Err) => *stderr = None,
            (Io::Pipes { stdin, .. }, Slot::Sink) => *stdin = None,
            (Io::Pty { open, .. }, Slot::Out) => *open = false,
            _ => {}
        }
    }

    fn flush_stdin(&mut self) {
        while self.pending_len() > 0 {
            let Some(fd) = self.fd_of(Slot::Sink) else {
                break;
            };
            match sys::write_fd(fd, &self.pending[self.pending_off..]) {
                Ok(n) => self.pending_off += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    // EPIPE: the process closed its stdin; drop the rest.
                    self.pending.clear();
                    self.pending_off = 0;
                    self.close(Slot::Sink);
                    return;
                }
            }
        }
        if self.pending_len() == 0 && self.close_stdin_when_flushed {
            self.close(Slot::Sink);
            self.close_stdin_when_flushed = false;
        }
    }
}

fn msg_name(m: &HostMsg) -> String {
    let s = format!("{m:?}");
    s.split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("message")
        .to_string()
}

/// For the log: a short description of a command.
pub fn describe(argv: &[String]) -> String {
    let mut s = argv.join(" ");
    if s.len() > 80 {
        let mut cut = 77;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// Used by services and probes: spawn with stdio to the given fds.
pub fn spawn_with(
    reaper: &Reaper,
    root: &Path,
    spec: &Spec<'_>,
    stdout: Stdio,
    stderr: Stdio,
) -> Result<ExitWatch, Refusal> {
    let mut cmd = command(root, spec)?;
    cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
    let r = reaper.spawn(&mut cmd);
    drop(cmd);
    r.map_err(|e| {
        let r = spawn_error(&spec.argv[0], &e);
        log!("{}", r.1);
        r
    })
}
