//! The messages. Every frame holds one JSON object whose `"type"` field
//! names the variant (snake_case); byte fields are base64 strings.
//!
//! Unknown fields are ignored so that a later minor addition (a new optional
//! field) does not break an older peer; anything incompatible bumps
//! [`crate::PROTOCOL_VERSION`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Host -> guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostMsg {
    /// First frame on every connection.
    Hello {
        version: u32,
        /// Free text naming the client, for the guest's log.
        #[serde(default)]
        client: String,
    },
    /// Answered with [`GuestMsg::Pong`] carrying the same `seq`.
    Ping {
        seq: u64,
    },
    /// Turns this connection into one exec session (see the crate docs).
    Exec(ExecRequest),
    /// Bytes for the process's stdin (or the PTY's input).
    Stdin {
        #[serde(with = "crate::b64")]
        data: Vec<u8>,
    },
    /// No more stdin: the pipe is closed (in tty mode, the terminal's EOF
    /// character is written instead).
    StdinEof,
    /// The terminal was resized (tty sessions only).
    Resize(WinSize),
    /// Deliver a signal (Linux number) to the session's process group (for a
    /// tty session: the terminal's foreground process group).
    Signal {
        signal: i32,
    },
    /// Declare (or replace the definition of) a service; `start` also starts
    /// it if it is not running. A running service keeps its process; the new
    /// definition applies from its next start.
    ServiceDeclare {
        spec: ServiceSpec,
        #[serde(default)]
        start: bool,
    },
    ServiceStart {
        name: String,
    },
    /// SIGTERM to the service's process group, SIGKILL after a grace period.
    ServiceStop {
        name: String,
    },
    ServiceRestart {
        name: String,
    },
    /// Stop and forget a service.
    ServiceRemove {
        name: String,
    },
    /// `name: None` lists every service.
    ServiceStatus {
        #[serde(default)]
        name: Option<String>,
    },
    /// The last `max_bytes` of the service's log (default: the whole ring),
    /// then with `follow` everything new until the connection closes.
    ServiceLogs {
        name: String,
        #[serde(default)]
        max_bytes: Option<u64>,
        #[serde(default)]
        follow: bool,
    },
    /// Stop services, sync, unmount, then reset the VM. Answered with
    /// [`GuestMsg::Ok`] before the shutdown starts.
    Shutdown {
        action: ShutdownAction,
    },
}

/// Guest -> host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GuestMsg {
    /// Reply to [`HostMsg::Hello`] with the version the agent will speak.
    Hello {
        version: u32,
        /// The agent's own version string.
        agent: String,
        #[serde(default)]
        hostname: String,
    },
    /// A request failed (or the handshake was refused, after which the
    /// guest closes the connection).
    Error {
        code: ErrorCode,
        message: String,
    },
    /// Generic success for requests that return nothing else.
    Ok,
    Pong {
        seq: u64,
    },
    /// The exec'd process is running.
    ExecStarted {
        pid: u32,
    },
    Stdout {
        #[serde(with = "crate::b64")]
        data: Vec<u8>,
    },
    Stderr {
        #[serde(with = "crate::b64")]
        data: Vec<u8>,
    },
    /// Last frame of an exec session: the process ended and its output was
    /// drained.
    Exited {
        status: ExitStatus,
    },
    ServiceStatus {
        services: Vec<ServiceInfo>,
    },
    /// A chunk of a service's log; a non-follow request ends with `Ok`.
    LogData {
        #[serde(with = "crate::b64")]
        data: Vec<u8>,
    },
}

/// Machine-readable error class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The client's protocol version is not spoken by this agent.
    UnsupportedVersion,
    /// Malformed frame, unexpected message, or invalid field.
    BadRequest,
    /// Unknown service or user.
    NotFound,
    /// The process could not be started (command not found, bad cwd, ...).
    ExecFailed,
    /// The request is valid but the agent could not carry it out.
    Failed,
    /// An error code from a newer peer.
    #[serde(other)]
    Unknown,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorCode::UnsupportedVersion => "unsupported version",
            ErrorCode::BadRequest => "bad request",
            ErrorCode::NotFound => "not found",
            ErrorCode::ExecFailed => "exec failed",
            ErrorCode::Failed => "failed",
            ErrorCode::Unknown => "error",
        })
    }
}

/// Terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WinSize {
    pub rows: u16,
    pub cols: u16,
}

/// A user by name (looked up in the guest's `/etc/passwd`) or by number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum User {
    Id(u32),
    Name(String),
}

impl fmt::Display for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            User::Id(n) => write!(f, "{n}"),
            User::Name(s) => f.write_str(s),
        }
    }
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Program and arguments; `argv[0]` is looked up in `PATH` (the
    /// request's if it sets one).
    pub argv: Vec<String>,
    /// Added to (and overriding) the base environment: `PATH`, `HOME`,
    /// `USER`, `LOGNAME`, `SHELL`, plus `TERM` for a tty.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory; default: the user's home directory.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Default: root.
    #[serde(default)]
    pub user: Option<User>,
    /// Run on a new pseudo-terminal (stdout and stderr merged) instead of
    /// pipes.
    #[serde(default)]
    pub tty: bool,
    /// Initial terminal size (tty only).
    #[serde(default)]
    pub winsize: Option<WinSize>,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExitStatus {
    Code {
        code: i32,
    },
    Signal {
        signal: i32,
        #[serde(default)]
        core_dumped: bool,
    },
}

impl ExitStatus {
    /// From a raw `waitpid` status.
    pub fn from_wait_status(status: i32) -> Self {
        // The W* macros of <sys/wait.h>, written out to keep this crate
        // free of libc.
        let sig = status & 0x7f;
        if sig == 0 {
            ExitStatus::Code {
                code: (status >> 8) & 0xff,
            }
        } else {
            ExitStatus::Signal {
                signal: sig,
                core_dumped: status & 0x80 != 0,
            }
        }
    }

    /// The shell convention: the code, or 128 + the signal number.
    pub fn shell_code(&self) -> i32 {
        match *self {
            ExitStatus::Code { code } => code,
            ExitStatus::Signal { signal, .. } => 128 + signal,
        }
    }

    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Code { code: 0 })
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code { code } => write!(f, "exit code {code}"),
            ExitStatus::Signal {
                signal,
                core_dumped,
            } => {
                write!(f, "signal {signal}")?;
                if *core_dumped {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownAction {
    Poweroff,
    Reboot,
}

/// When a service that exited is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    #[default]
    Never,
    /// After a non-zero exit or a death by signal.
    OnFailure,
    /// After any exit.
    Always,
}

/// How the agent decides that a running service is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Readiness {
    /// A TCP connect to 127.0.0.1 (or ::1) on this port succeeds.
    Tcp { port: u16 },
    /// This command exits 0 (run repeatedly until it does).
    Command { argv: Vec<String> },
}

/// A declared service.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// `[A-Za-z0-9_.-]`, 1 to 64 characters, not starting with a dot: it
    /// names the log file.
    pub name: String,
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub user: Option<User>,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub readiness: Option<Readiness>,
}

impl ServiceSpec {
    /// Checks the fields the agent relies on; the message names the bad
    /// value.
    pub fn validate(&self) -> Result<(), String> {
        validate_service_name(&self.name)?;
        if self.argv.is_empty() {
            return Err(format!("service '{}': argv is empty", self.name));
        }
        if let Some(Readiness::Command { argv }) = &self.readiness {
            if argv.is_empty() {
                return Err(format!(
                    "service '{}': readiness command is empty",
                    self.name
                ));
            }
        }
        Ok(())
    }
}

/// See [`ServiceSpec::name`].
pub fn validate_service_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid service name '{name}': use 1-64 of [A-Za-z0-9_.-], not starting with '.'"
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Declared, not running (never started, or stopped on request).
    Stopped,
    /// Running, readiness probe not passed yet.
    Starting,
    /// Running (and ready, if it has a probe).
    Running,
    /// Exited; waiting before the next restart.
    Backoff,
    /// Exited and not restarted under its policy.
    Exited,
    /// Being stopped.
    Stopping,
    /// A state from a newer peer.
    #[serde(other)]
    Unknown,
}

/// One service's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub name: String,
    pub state: ServiceState,
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub ready: bool,
    /// Restarts done by the policy (not by requests).
    #[serde(default)]
    pub restarts: u32,
    #[serde(default)]
    pub last_exit: Option<ExitStatus>,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub argv: Vec<String>,
}
