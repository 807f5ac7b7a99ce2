//! The control API: newline-delimited JSON over a Unix socket
//! (`api.sock` in the VM's state folder). One request per line, one
//! response per line:
//!
//! ```text
//! {"op":"status"}  -> {"ok":true,"state":"running","pid":1234,"uptime_ms":5120,"cpus":2,"memory_mib":512}
//! {"op":"pause"}   -> {"ok":true,"state":"paused",...}
//! {"op":"resume"}  -> {"ok":true,"state":"running",...}
//! {"op":"stop"}    -> {"ok":true,"state":"stopping",...}
//! {"op":"debug"}   -> {"ok":true,...,"data":{vcpus, ioapic, devices}}   (a crate::dump::VmDump)
//! {"op":"port_add","forward":"8080:80"}     -> {"ok":true,"data":null}   (a PortOp, served
//! {"op":"port_remove","forward":"8080:80"}  -> {"ok":true,"data":null}    by the embedding
//! {"op":"port_list"} -> {"ok":true,"data":["127.0.0.1:8080:80/tcp"]}      program's Extension)
//! anything else    -> {"ok":false,"error":"..."}
//! ```
//!
//! The socket is served on the VMM's event loop; clients are bounded in
//! number and in line length, and never block the loop.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_manager::{EventOps, Events, MutEventSubscriber};
use serde::{Deserialize, Serialize};
use vmm_sys_util::epoll::EventSet;

use crate::vcpu::RunControl;
use crate::StopHandle;

const MAX_CLIENTS: usize = 16;
const MAX_LINE: usize = 4096;
/// Responses can carry a state dump, which grows with vsock connections.
const MAX_RESPONSE: usize = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ApiRequest {
    Status,
    Pause,
    Resume,
    Stop,
    /// A state dump ([`crate::dump::VmDump`]) in `data`.
    Debug,
}

/// Port-forward operations: the VMM keeps no forwards itself, it hands
/// these to the [`Extension`] of the program that embeds it (mvm's VMM
/// process serves the host-loopback side of a VM's forwards).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum PortOp {
    /// Start forwarding `forward` (`[ADDRESS:]HOST:GUEST[/tcp|/udp]`).
    PortAdd { forward: String },
    /// Stop forwarding `forward`.
    PortRemove { forward: String },
    /// The forwards, as a JSON array of strings in `data`.
    PortList,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    Running,
    Paused,
    Stopping,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiResponse {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<VmState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// What an extension operation returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl ApiResponse {
    fn error(msg: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(msg.into()),
            state: None,
            pid: None,
            uptime_ms: None,
            cpus: None,
            memory_mib: None,
            data: None,
        }
    }
}

/// Serves the [`PortOp`]s, which the embedding program keeps: returns
/// data for the response or an error message.
pub type Extension = Box<dyn FnMut(&PortOp) -> Result<serde_json::Value, String> + Send>;

/// Sends one port operation to a VM's API socket and reads the response.
pub fn call_port(socket: &Path, op: &PortOp, timeout: Duration) -> Result<ApiResponse, ApiError> {
    send(socket, op, timeout)
}

/// Sends one request line and reads the response line.
fn send(
    socket: &Path,
    request: &impl Serialize,
    timeout: Duration,
) -> Result<ApiResponse, ApiError> {
    let connect = |e| ApiError::Connect(socket.to_path_buf(), e);
    let bad = |e: String| ApiError::Protocol(socket.to_path_buf(), e);
    let mut stream = UnixStream::connect(socket).map_err(connect)?;
    stream.set_read_timeout(Some(timeout)).map_err(connect)?;
    stream.set_write_timeout(Some(timeout)).map_err(connect)?;
    let mut line = serde_json::to_vec(request).map_err(|e| bad(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(connect)?;
    read_response(&mut stream).map_err(|e| match e {
        ReadError::Io(e) => connect(e),
        ReadError::Bad(m) => bad(m),
    })
}

enum ReadError {
    Io(std::io::Error),
    Bad(String),
}

fn read_response(stream: &mut UnixStream) -> Result<ApiResponse, ReadError> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    while !buf.contains(&b'\n') {
        let n = stream.read(&mut chunk).map_err(ReadError::Io)?;
        if n == 0 || buf.len() > MAX_RESPONSE {
            return Err(ReadError::Bad("no complete response".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    serde_json::from_slice(&buf[..end]).map_err(|e| ReadError::Bad(e.to_string()))
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot create the API socket {0}: {1}")]
    Bind(PathBuf, std::io::Error),
    #[error("cannot reach the VM's API socket {0}: {1}")]
    Connect(PathBuf, std::io::Error),
    #[error("the VM's API socket {0} answered badly: {1}")]
    Protocol(PathBuf, String),
}

/// Sends one request to a VM's API socket and reads the response.
pub fn call(
    socket: &Path,
    request: &ApiRequest,
    timeout: Duration,
) -> Result<ApiResponse, ApiError> {
    send(socket, request, timeout)
}

/// Serves the API socket on the event loop.
pub struct ApiServer {
    listener: UnixListener,
    /// For accepting when out of descriptors.
    spare: devices::spare_fd::SpareFd,
    clients: HashMap<i32, (UnixStream, Vec<u8>)>,
    control: Arc<RunControl>,
    stop: StopHandle,
    started: Instant,
    cpus: u8,
    memory_mib: u64,
    stopping: bool,
    extension: Option<Extension>,
    dumper: Option<Arc<crate::dump::Dumper>>,
}

impl ApiServer {
    pub fn bind(
        path: &Path,
        control: Arc<RunControl>,
        stop: StopHandle,
        cpus: u8,
        memory_mib: u64,
    ) -> Result<Self, ApiError> {
        let bind = |e| ApiError::Bind(path.to_path_buf(), e);
        // A socket left by a VMM that died is stale: replace it. Anything
        // else at that path is not ours to remove.
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(bind(std::io::Error::new(
                    ErrorKind::AlreadyExists,
                    "exists and is not a socket",
                )));
            }
            std::fs::remove_file(path).map_err(bind)?;
        }
        let listener = UnixListener::bind(path).map_err(bind)?;
        listener.set_nonblocking(true).map_err(bind)?;
        Ok(Self {
            listener,
            spare: devices::spare_fd::SpareFd::new(),
            clients: HashMap::new(),
            control,
            stop,
            started: Instant::now(),
            cpus,
            memory_mib,
            stopping: false,
            extension: None,
            dumper: None,
        })
    }

    /// Serves the `debug` operation with `dumper`.
    pub fn set_dumper(&mut self, dumper: Arc<crate::dump::Dumper>) {
        self.dumper = Some(dumper);
    }

    /// Routes unknown operations to `extension`.
    pub fn set_extension(&mut self, extension: Extension) {
        self.extension = Some(extension);
    }

    fn state(&self) -> VmState {
        if self.stopping {
            VmState::Stopping
        } else if self.control.is_paused() {
            VmState::Paused
        } else {
            VmState::Running
        }
    }

    fn handle(&mut self, line: &[u8]) -> ApiResponse {
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(line) {
            return ApiResponse::error(format!("bad request: {e}"));
        }
        let request: ApiRequest = match serde_json::from_slice(line) {
            Ok(r) => r,
            Err(e) => {
                let op = serde_json::from_slice::<PortOp>(line);
                return match (&mut self.extension, op) {
                    (Some(ext), Ok(op)) => match ext(&op) {
                        Ok(data) => ApiResponse {
                            data: Some(data),
                            ..self.ok_response()
                        },
                        Err(msg) => ApiResponse::error(msg),
                    },
                    _ => ApiResponse::error(format!("bad request: {e}")),
                };
            }
        };
        match request {
            ApiRequest::Status => {}
            ApiRequest::Pause => {
                if !self.control.pause(Duration::from_secs(2)) {
                    return ApiResponse::error("vCPUs did not pause within 2 s");
                }
            }
            ApiRequest::Resume => self.control.resume(),
            ApiRequest::Stop => {
                self.stopping = true;
                self.stop.stop();
            }
            ApiRequest::Debug => {
                let Some(dumper) = &self.dumper else {
                    return ApiResponse::error("this VMM takes no state dumps");
                };
                let dump = dumper.dump();
                tracing::info!("state dump (API):\n{dump}");
                return match serde_json::to_value(&dump) {
                    Ok(data) => ApiResponse {
                        data: Some(data),
                        ..self.ok_response()
                    },
                    Err(e) => ApiResponse::error(format!("cannot encode the dump: {e}")),
                };
            }
        }
        self.ok_response()
    }

    fn ok_response(&self) -> ApiResponse {
        ApiResponse {
            ok: true,
            error: None,
            state: Some(self.state()),
            pid: Some(std::process::id()),
            uptime_ms: Some(self.started.elapsed().as_millis() as u64),
            cpus: Some(self.cpus),
            memory_mib: Some(self.memory_mib),
            data: None,
        }
    }

    fn accept(&mut self, ops: &mut EventOps) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if devices::spare_fd::SpareFd::out_of_fds(&e) => {
                    // Else the listener stays readable and the loop spins.
                    self.spare.shed(|| self.listener.accept());
                    return;
                }
                Err(_) => return,
            };
            if self.clients.len() >= MAX_CLIENTS || stream.set_nonblocking(true).is_err() {
                continue; // dropped: closes the connection
            }
            let fd = stream.as_raw_fd();
            if ops.add(Events::new(&stream, EventSet::IN)).is_ok() {
                self.clients.insert(fd, (stream, Vec::new()));
            }
        }
    }

    /// Reads what a client sent; answers complete lines. Returns false when
    /// the client is done or misbehaved (it stays in `clients` so the
    /// caller can unregister it before its fd is closed and reused).
    fn serve(&mut self, fd: i32) -> bool {
        let Some((stream, buf)) = self.clients.get_mut(&fd) else {
            return false;
        };
        let mut chunk = [0u8; 1024];
        let mut open = loop {
            match stream.read(&mut chunk) {
                Ok(0) => break false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break true,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break false,
            }
            if buf.len() > MAX_LINE {
                let _ = stream.write_all(b"{\"ok\":false,\"error\":\"request too long\"}\n");
                return false;
            }
        };
        let mut lines = Vec::new();
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = buf.drain(..=end).collect();
            line.pop();
            lines.push(line);
        }
        for line in lines {
            let mut out = serde_json::to_vec(&self.handle(&line)).unwrap_or_default();
            out.push(b'\n');
            // Responses are small; a client that does not read them loses
            // its connection rather than stalling the loop.
            let Some((stream, _)) = self.clients.get_mut(&fd) else {
                return false;
            };
            if stream.write_all(&out).is_err() {
                open = false;
                break;
            }
        }
        open
    }
}

impl MutEventSubscriber for ApiServer {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.listener, EventSet::IN)) {
            tracing::error!("cannot watch the API socket: {e:?}");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.listener.as_raw_fd() {
            self.accept(ops);
        } else if !self.serve(fd) {
            // Unregister before the fd closes, or a new client reusing the
            // number could not be registered.
            if let Some((stream, _)) = self.clients.remove(&fd) {
                let _ = ops.remove(Events::new(&stream, EventSet::IN));
            }
        }
    }
}

#[cfg(test)]
mod port_op_tests {
    use super::*;

    /// The JSON on the socket is the shape older clients and servers use.
    #[test]
    fn port_ops_keep_their_wire_shape() {
        let add = PortOp::PortAdd {
            forward: "8080:80".into(),
        };
        let json = serde_json::to_string(&add).unwrap();
        assert_eq!(json, r#"{"op":"port_add","forward":"8080:80"}"#);
        assert_eq!(serde_json::from_str::<PortOp>(&json).unwrap(), add);
        assert_eq!(
            serde_json::to_string(&PortOp::PortList).unwrap(),
            r#"{"op":"port_list"}"#
        );
        // Not a VMM request: it goes to the extension.
        assert!(serde_json::from_str::<ApiRequest>(&json).is_err());
    }
}
