//! Host-side client: blocking, std only.
//!
//! ```no_run
//! use agent_proto::{client, ExecRequest};
//! # fn main() -> Result<(), client::ClientError> {
//! // The VMM's vsock socket: send CONNECT, get a stream to the agent.
//! let stream = client::connect_unix("vms/web/vsock.sock".as_ref(), Some(1024))?;
//! let req = ExecRequest { argv: vec!["uname".into(), "-a".into()], ..Default::default() };
//! let status = client::exec(stream, &req, Some(std::io::stdin()),
//!                           &mut std::io::stdout(), &mut std::io::stderr())?;
//! std::process::exit(status.shell_code());
//! # }
//! ```
//!
//! For an interactive shell: build the request with `tty: true` and the
//! terminal size, call [`Client::exec_start`], hand
//! [`ExecSession::control`] to a SIGWINCH handler (`resize`), start
//! [`ExecSession::pump_stdin`] with the raw-mode terminal, then
//! [`ExecSession::wait`] with stdout.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::frame::{read_frame, write_frame, FrameError};
use crate::msg::*;
use crate::{MAX_DATA_CHUNK, PROTOCOL_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("agent connection: {0}")]
    Frame(#[from] FrameError),
    #[error("agent: {message} ({code})")]
    Remote { code: ErrorCode, message: String },
    #[error("agent sent an unexpected message: {0}")]
    Unexpected(String),
    #[error("connecting to {path}: {message}")]
    Connect { path: String, message: String },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A stream that can be split into a reading and a writing half.
pub trait Duplex: Read + Write + Send + Sized + 'static {
    fn try_clone(&self) -> io::Result<Self>;
}

impl Duplex for UnixStream {
    fn try_clone(&self) -> io::Result<Self> {
        UnixStream::try_clone(self)
    }
}

impl Duplex for TcpStream {
    fn try_clone(&self) -> io::Result<Self> {
        TcpStream::try_clone(self)
    }
}

/// Connects to a Unix socket. With `vsock_port`, the socket is the VMM's
/// vsock multiplexer: this sends `CONNECT <port>\n` and consumes the
/// `OK <n>\n` reply (byte by byte, so no agent data is swallowed). Without,
/// it is `mvm-init --test-listen-unix PATH`.
pub fn connect_unix(path: &Path, vsock_port: Option<u32>) -> Result<UnixStream, ClientError> {
    connect_unix_timeout(path, vsock_port, None)
}

/// [`connect_unix`], giving up when the `OK` line does not come within
/// `timeout` (a guest without a running agent never answers). The returned
/// stream has no timeout set.
pub fn connect_unix_timeout(
    path: &Path,
    vsock_port: Option<u32>,
    timeout: Option<std::time::Duration>,
) -> Result<UnixStream, ClientError> {
    let err = |message: String| ClientError::Connect {
        path: path.display().to_string(),
        message,
    };
    let mut s = UnixStream::connect(path).map_err(|e| err(e.to_string()))?;
    s.set_read_timeout(timeout)
        .map_err(|e| err(e.to_string()))?;
    if let Some(port) = vsock_port {
        s.write_all(format!("CONNECT {port}\n").as_bytes())
            .map_err(|e| err(e.to_string()))?;
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        loop {
            match s.read(&mut b) {
                Ok(0) => {
                    return Err(err(format!(
                        "closed before answering CONNECT {port} (is the agent listening?)"
                    )))
                }
                Ok(_) if b[0] == b'\n' => break,
                Ok(_) if line.len() >= 64 => return Err(err("reply line too long".into())),
                Ok(_) => line.push(b[0]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(err(e.to_string())),
            }
        }
        let line = String::from_utf8_lossy(&line);
        if !line.starts_with("OK ") {
            return Err(err(format!("CONNECT {port} refused: {line:?}")));
        }
    }
    s.set_read_timeout(None).map_err(|e| err(e.to_string()))?;
    Ok(s)
}

/// What the agent said in its hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    pub version: u32,
    pub agent: String,
    pub hostname: String,
}

/// One connection to the agent, after the handshake.
#[derive(Debug)]
pub struct Client<S> {
    stream: S,
    info: AgentInfo,
    seq: u64,
}

fn unexpected(m: &GuestMsg) -> ClientError {
    let mut s = format!("{m:?}");
    s.truncate(200);
    ClientError::Unexpected(s)
}

fn remote_or_unexpected(m: GuestMsg) -> ClientError {
    match m {
        GuestMsg::Error { code, message } => ClientError::Remote { code, message },
        other => unexpected(&other),
    }
}

impl<S: Read + Write> Client<S> {
    /// Sends Hello and waits for the agent's.
    pub fn handshake(mut stream: S, client_name: &str) -> Result<Self, ClientError> {
        write_frame(
            &mut stream,
            &HostMsg::Hello {
                version: PROTOCOL_VERSION,
                client: client_name.to_string(),
            },
        )?;
        match read_frame(&mut stream)? {
            GuestMsg::Hello {
                version,
                agent,
                hostname,
            } => Ok(Client {
                stream,
                info: AgentInfo {
                    version,
                    agent,
                    hostname,
                },
                seq: 0,
            }),
            other => Err(remote_or_unexpected(other)),
        }
    }

    pub fn agent(&self) -> &AgentInfo {
        &self.info
    }

    pub fn into_stream(self) -> S {
        self.stream
    }

    /// One request, one reply; an `Error` reply becomes `Err`.
    pub fn request(&mut self, msg: &HostMsg) -> Result<GuestMsg, ClientError> {
        write_frame(&mut self.stream, msg)?;
        match read_frame(&mut self.stream)? {
            GuestMsg::Error { code, message } => Err(ClientError::Remote { code, message }),
            other => Ok(other),
        }
    }

    fn expect_ok(&mut self, msg: &HostMsg) -> Result<(), ClientError> {
        match self.request(msg)? {
            GuestMsg::Ok => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    pub fn ping(&mut self) -> Result<(), ClientError> {
        self.seq += 1;
        let seq = self.seq;
        match self.request(&HostMsg::Ping { seq })? {
            GuestMsg::Pong { seq: s } if s == seq => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    pub fn service_declare(&mut self, spec: &ServiceSpec, start: bool) -> Result<(), ClientError> {
        self.expect_ok(&HostMsg::ServiceDeclare {
            spec: spec.clone(),
            start,
        })
    }

    pub fn service_start(&mut self, name: &str) -> Result<(), ClientError> {
        self.expect_ok(&HostMsg::ServiceStart { name: name.into() })
    }

    /// Returns once the service's process has exited.
    pub fn service_stop(&mut self, name: &str) -> Result<(), ClientError> {
        self.expect_ok(&HostMsg::ServiceStop { name: name.into() })
    }

    pub fn service_restart(&mut self, name: &str) -> Result<(), ClientError> {
        self.expect_ok(&HostMsg::ServiceRestart { name: name.into() })
    }

    pub fn service_remove(&mut self, name: &str) -> Result<(), ClientError> {
        self.expect_ok(&HostMsg::ServiceRemove { name: name.into() })
    }

    /// `None`: all services, sorted by name.
    pub fn service_status(&mut self, name: Option<&str>) -> Result<Vec<ServiceInfo>, ClientError> {
        match self.request(&HostMsg::ServiceStatus {
            name: name.map(Into::into),
        })? {
            GuestMsg::ServiceStatus { services } => Ok(services),
            other => Err(unexpected(&other)),
        }
    }

    /// Copies the service's log to `out`. With `follow` this returns only
    /// when the connection ends or `out` fails.
    pub fn service_logs(
        &mut self,
        name: &str,
        max_bytes: Option<u64>,
        follow: bool,
        out: &mut dyn Write,
    ) -> Result<(), ClientError> {
        write_frame(
            &mut self.stream,
            &HostMsg::ServiceLogs {
                name: name.into(),
                max_bytes,
                follow,
            },
        )?;
        loop {
            match read_frame(&mut self.stream)? {
                GuestMsg::LogData { data } => {
                    out.write_all(&data)?;
                    out.flush()?;
                }
                GuestMsg::Ok => return Ok(()),
                other => return Err(remote_or_unexpected(other)),
            }
        }
    }

    /// Asks the guest to go down; returns when the agent acknowledged. The
    /// VMM process exits when the guest resets.
    pub fn shutdown(&mut self, action: ShutdownAction) -> Result<(), ClientError> {
        self.expect_ok(&HostMsg::Shutdown { action })
    }
}

impl<S: Duplex> Client<S> {
    /// Starts an exec session; this connection is then dedicated to it.
    pub fn exec_start(mut self, req: &ExecRequest) -> Result<ExecSession<S>, ClientError> {
        write_frame(&mut self.stream, &HostMsg::Exec(req.clone()))?;
        match read_frame(&mut self.stream)? {
            GuestMsg::ExecStarted { pid } => {
                let writer = self.stream.try_clone()?;
                Ok(ExecSession {
                    pid,
                    reader: self.stream,
                    control: ExecControl {
                        writer: Arc::new(Mutex::new(writer)),
                    },
                })
            }
            other => Err(remote_or_unexpected(other)),
        }
    }

    /// Runs one command to completion: pumps `stdin` (if any; otherwise the
    /// process gets EOF at once) and copies stdout/stderr.
    pub fn exec<R: Read + Send + 'static>(
        self,
        req: &ExecRequest,
        stdin: Option<R>,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> Result<ExitStatus, ClientError> {
        let session = self.exec_start(req)?;
        match stdin {
            Some(r) => {
                session.pump_stdin(r);
            }
            // A quick process may have exited and the agent closed the
            // session before this EOF is written (EPIPE, ECONNRESET). The
            // reader below still holds its output and status, and reports
            // a session that really broke.
            None => {
                let _ = session.control().stdin_eof();
            }
        }
        session.wait(stdout, stderr)
    }
}

/// Handshake plus [`Client::exec`] on a fresh connection.
pub fn exec<S: Duplex, R: Read + Send + 'static>(
    stream: S,
    req: &ExecRequest,
    stdin: Option<R>,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<ExitStatus, ClientError> {
    Client::handshake(stream, "agent-proto")?.exec(req, stdin, stdout, stderr)
}

/// A running exec session.
#[derive(Debug)]
pub struct ExecSession<S> {
    pid: u32,
    reader: S,
    control: ExecControl<S>,
}

/// Sends input and control messages to a session; cheap to clone and usable
/// from any thread (a signal handler thread, the stdin pump).
#[derive(Debug)]
pub struct ExecControl<S> {
    writer: Arc<Mutex<S>>,
}

impl<S> Clone for ExecControl<S> {
    fn clone(&self) -> Self {
        ExecControl {
            writer: Arc::clone(&self.writer),
        }
    }
}

impl<S: Write> ExecControl<S> {
    fn send(&self, msg: &HostMsg) -> Result<(), ClientError> {
        // A poisoned lock only means another sender panicked mid-frame;
        // the stream is then broken anyway and the write will say so.
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        write_frame(&mut *w, msg)?;
        Ok(())
    }

    pub fn stdin(&self, data: &[u8]) -> Result<(), ClientError> {
        for chunk in data.chunks(MAX_DATA_CHUNK) {
            self.send(&HostMsg::Stdin {
                data: chunk.to_vec(),
            })?;
        }
        Ok(())
    }

    pub fn stdin_eof(&self) -> Result<(), ClientError> {
        self.send(&HostMsg::StdinEof)
    }

    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), ClientError> {
        self.send(&HostMsg::Resize(WinSize { rows, cols }))
    }

    /// Linux signal number, e.g. 2 for SIGINT.
    pub fn signal(&self, signal: i32) -> Result<(), ClientError> {
        self.send(&HostMsg::Signal { signal })
    }
}

impl<S: Duplex> ExecSession<S> {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn control(&self) -> ExecControl<S> {
        self.control.clone()
    }

    /// Copies `input` to the process's stdin on a thread, then sends EOF.
    /// The thread is not joined by [`wait`](Self::wait): a reader blocked on
    /// a terminal would keep it alive after the process exits; it ends on
    /// its next read once the session is closed.
    pub fn pump_stdin<R: Read + Send + 'static>(&self, mut input: R) -> JoinHandle<()> {
        let control = self.control();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; MAX_DATA_CHUNK];
            loop {
                match input.read(&mut buf) {
                    Ok(0) => {
                        let _ = control.stdin_eof();
                        return;
                    }
                    Ok(n) => {
                        if control.stdin(&buf[..n]).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        let _ = control.stdin_eof();
                        return;
                    }
                }
            }
        })
    }

    /// Copies output until the process exits; returns its status.
    pub fn wait(
        mut self,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> Result<ExitStatus, ClientError> {
        loop {
            match read_frame(&mut self.reader)? {
                GuestMsg::Stdout { data } => {
                    stdout.write_all(&data)?;
                    stdout.flush()?;
                }
                GuestMsg::Stderr { data } => {
                    stderr.write_all(&data)?;
                    stderr.flush()?;
                }
                GuestMsg::Exited { status } => return Ok(status),
                other => return Err(remote_or_unexpected(other)),
            }
        }
    }
}
