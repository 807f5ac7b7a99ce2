//! The agent: one thread per connection, any stream (vsock in the guest, a
//! Unix socket in tests and `--test-listen-unix`).

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agent_proto::{
    answer_hello, read_frame, write_frame, ErrorCode, FrameError, GuestMsg, HostMsg,
    ShutdownAction, MAX_DATA_CHUNK,
};

use crate::exec::{self, Refusal};
use crate::reaper::Reaper;
use crate::services::Supervisor;
use crate::sys;

/// A connection the agent can serve: a byte stream that poll(2) and
/// recv(2) work on (a socket).
pub trait Conn: Read + Write + AsFd + Send {}
impl<T: Read + Write + AsFd + Send> Conn for T {}

/// What `Shutdown` does: PID 1 reboots the VM; elsewhere the process exits.
pub type PowerFn = dyn Fn(ShutdownAction) + Send + Sync;

pub struct Agent {
    /// Where `/etc/passwd` and `/etc/group` are read (normally `/`).
    pub root: PathBuf,
    pub reaper: Arc<Reaper>,
    pub services: Supervisor,
    /// Log each connection and request on the console.
    pub debug: bool,
    pub power: Arc<PowerFn>,
}

pub const AGENT_VERSION: &str = concat!("mvm-init ", env!("CARGO_PKG_VERSION"));

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for buf.len() bytes; gethostname NUL-terminates
    // when it fits (the kernel limit is 64).
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn error(code: ErrorCode, message: impl Into<String>) -> GuestMsg {
    GuestMsg::Error {
        code,
        message: message.into(),
    }
}

impl Agent {
    /// Serves one connection to its end. Never panics on peer input.
    pub fn serve<C: Conn>(&self, mut conn: C) {
        let first: HostMsg = match read_frame(&mut conn) {
            Ok(m) => m,
            Err(FrameError::Closed) => return,
            Err(e) => {
                let _ = write_frame(&mut conn, &error(ErrorCode::BadRequest, e.to_string()));
                return;
            }
        };
        match answer_hello(&first, AGENT_VERSION, &hostname()) {
            Ok(reply) => {
                if self.debug {
                    if let HostMsg::Hello { client, version } = &first {
                        crate::log!("agent: hello from {client:?} (protocol {version})");
                    }
                }
                if write_frame(&mut conn, &reply).is_err() {
                    return;
                }
            }
            Err(refusal) => {
                if let GuestMsg::Error { message, .. } = &refusal {
                    crate::log!("agent: refused a connection: {message}");
                }
                let _ = write_frame(&mut conn, &refusal);
                return;
            }
        }
        loop {
            let msg: HostMsg = match read_frame(&mut conn) {
                Ok(m) => m,
                Err(FrameError::Closed) => return,
                Err(e @ FrameError::Json(_)) => {
                    // The framing is intact: report and go on.
                    let msg = error(ErrorCode::BadRequest, format!("{e}"));
                    if write_frame(&mut conn, &msg).is_err() {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    let _ = write_frame(&mut conn, &error(ErrorCode::BadRequest, e.to_string()));
                    return;
                }
            };
            if self.debug {
                crate::log!("agent: {}", summarize(&msg));
            }
            let r = match msg {
                HostMsg::Exec(req) => {
                    // The connection now belongs to this session.
                    if let Err(e) = exec::run_session(&mut conn, req, &self.root, &self.reaper) {
                        if self.debug {
                            crate::log!("agent: exec session ended: {e}");
                        }
                    }
                    return;
                }
                HostMsg::ServiceLogs {
                    name,
                    max_bytes,
                    follow,
                } => self.logs(&mut conn, &name, max_bytes, follow),
                HostMsg::Shutdown { action } => {
                    let _ = write_frame(&mut conn, &GuestMsg::Ok);
                    drop(conn);
                    let power = Arc::clone(&self.power);
                    // Off this thread: the shutdown stops services, which
                    // must not wait on the connection that asked.
                    let _ = std::thread::Builder::new()
                        .name("shutdown".into())
                        .spawn(move || power(action));
                    return;
                }
                other => {
                    let reply = self.request(other);
                    write_frame(&mut conn, &reply)
                }
            };
            if r.is_err() {
                return;
            }
        }
    }

    /// Requests with a single reply.
    fn request(&self, msg: HostMsg) -> GuestMsg {
        let sup = &self.services;
        let ok = |r: Result<(), Refusal>| match r {
            Ok(()) => GuestMsg::Ok,
            Err(r) => r.to_msg(),
        };
        match msg {
            HostMsg::Ping { seq } => GuestMsg::Pong { seq },
            HostMsg::ServiceDeclare { spec, start } => ok(sup.declare(spec, start)),
            HostMsg::ServiceStart { name } => ok(sup.start(&name)),
            HostMsg::ServiceStop { name } => ok(sup.stop(&name)),
            HostMsg::ServiceRestart { name } => ok(sup.restart(&name)),
            HostMsg::ServiceRemove { name } => ok(sup.remove(&name)),
            HostMsg::ServiceStatus { name } => match sup.status(name.as_deref()) {
                Ok(services) => GuestMsg::ServiceStatus { services },
                Err(r) => r.to_msg(),
            },
            HostMsg::Hello { .. } => error(ErrorCode::BadRequest, "hello was already exchanged"),
            HostMsg::Stdin { .. }
            | HostMsg::StdinEof
            | HostMsg::Resize(_)
            | HostMsg::Signal { .. } => error(
                ErrorCode::BadRequest,
                "stdin, resize and signal belong to an exec session",
            ),
            // Handled by the caller.
            HostMsg::Exec(_) | HostMsg::ServiceLogs { .. } | HostMsg::Shutdown { .. } => {
                error(ErrorCode::BadRequest, "unexpected request")
            }
        }
    }

    fn logs<C: Conn>(
        &self,
        conn: &mut C,
        name: &str,
        max_bytes: Option<u64>,
        follow: bool,
    ) -> Result<(), FrameError> {
        let ring = match self.services.log_ring(name) {
            Ok(r) => r,
            Err(r) => return write_frame(conn, &r.to_msg()),
        };
        let mut off = ring.tail_offset(max_bytes);
        loop {
            loop {
                let (data, next) = ring.read_from(off, MAX_DATA_CHUNK);
                if data.is_empty() {
                    break;
                }
                write_frame(conn, &GuestMsg::LogData { data })?;
                off = next;
            }
            if !follow {
                break;
            }
            // Wake up now and then to notice a host that went away while
            // the service is quiet.
            let open = ring.wait_past(off, Duration::from_secs(1));
            if sys::socket_closed(conn.as_fd()) {
                return Ok(());
            }
            if !open {
                // The service was removed: flush what is left and end.
                let (data, _) = ring.read_from(off, usize::MAX);
                for chunk in data.chunks(MAX_DATA_CHUNK) {
                    write_frame(
                        conn,
                        &GuestMsg::LogData {
                            data: chunk.to_vec(),
                        },
                    )?;
                }
                break;
            }
        }
        write_frame(conn, &GuestMsg::Ok)
    }
}

fn summarize(m: &HostMsg) -> String {
    match m {
        HostMsg::Exec(r) => format!(
            "exec {} (tty={}, user={})",
            exec::describe(&r.argv),
            r.tty,
            r.user
                .as_ref()
                .map_or("root".to_string(), |u| u.to_string())
        ),
        other => {
            let mut s = format!("{other:?}");
            s.truncate(120);
            s
        }
    }
}

/// Serves every connection of a Unix listener, one thread each.
pub fn serve_unix(listener: UnixListener, agent: Arc<Agent>) {
    for conn in listener.incoming() {
        match conn {
            Ok(c) => spawn_conn(&agent, c),
            Err(e) => {
                crate::log!("agent: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Serves `conn` on its own thread.
pub fn spawn_conn<C: Conn + 'static>(agent: &Arc<Agent>, conn: C) {
    let agent = Arc::clone(agent);
    if let Err(e) = std::thread::Builder::new()
        .name("agent-conn".into())
        .spawn(move || agent.serve(conn))
    {
        crate::log!("agent: cannot start a connection thread: {e}");
    }
}

#[cfg(test)]
mod tests;
