//! The wire protocol between the mvm host (CLI, VMM) and `mvm-init`, the
//! agent running as PID 1 inside every guest.
//!
//! # Transport
//! A byte stream: virtio-vsock port 1024 in the guest, reached from the host
//! through the VMM's Unix socket (`CONNECT 1024\n` / `OK <n>\n`, see
//! [`client::connect_unix`]), or a plain Unix socket when `mvm-init` runs
//! with `--test-listen-unix PATH`.
//!
//! # Frames
//! Each message is a `u32` big-endian length followed by that many bytes of
//! JSON ([`frame`]). Payloads over [`MAX_FRAME_SIZE`] (1 MiB) are refused on
//! decode before any allocation. Byte fields (stdin/stdout/stderr/log data)
//! are base64 strings, at most [`MAX_DATA_CHUNK`] raw bytes per frame.
//!
//! # Conversation
//! 1. The host sends [`HostMsg::Hello`] with [`PROTOCOL_VERSION`]; the guest
//!    answers [`GuestMsg::Hello`], or [`GuestMsg::Error`] with
//!    [`ErrorCode::UnsupportedVersion`] and closes the connection.
//! 2. Then any number of requests, each answered in order: `Ping` ->
//!    `Pong`; `Service*` -> `Ok` / `ServiceStatus` / `LogData`... `Ok`;
//!    `Shutdown` -> `Ok` (then the guest goes down). A failed request gets
//!    `Error` and the connection stays usable (unless the framing itself
//!    broke).
//! 3. `Exec` turns the connection into one exec session for the rest of its
//!    life: **one connection per exec session** (vsock connections are
//!    cheap, and this keeps flow control per session and needs no session
//!    ids). The guest answers `ExecStarted { pid }` (or `Error`), then both
//!    directions stream: host -> `Stdin`, `StdinEof`, `Resize`, `Signal`;
//!    guest -> `Stdout`, `Stderr`, and last `Exited { status }`, after which
//!    the guest closes the connection. If the host closes the connection
//!    first, the session's process group gets SIGHUP.
//!
//! The host side is in [`client`].

pub mod b64;
pub mod client;
pub mod cmdline;
pub mod frame;
pub mod msg;

pub use frame::{
    encode_frame, read_frame, read_frame_bytes, write_frame, FrameDecoder, FrameError, HEADER_SIZE,
    MAX_FRAME_SIZE,
};
pub use msg::*;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest number of raw bytes in one data frame (base64 makes it 4/3
/// larger, well under [`MAX_FRAME_SIZE`]).
pub const MAX_DATA_CHUNK: usize = 64 * 1024;

/// The vsock port the agent listens on unless `mvm.agent_port=` says
/// otherwise.
pub const DEFAULT_AGENT_PORT: u32 = 1024;

/// Versions of the protocol this crate can speak (the agent accepts any).
pub const SUPPORTED_VERSIONS: std::ops::RangeInclusive<u32> = 1..=PROTOCOL_VERSION;

/// The guest's side of the handshake: given the connection's first frame,
/// the reply to send. `Err` carries the error frame to send before closing
/// the connection (unknown version, or a first frame that is not Hello).
pub fn answer_hello(first: &HostMsg, agent: &str, hostname: &str) -> Result<GuestMsg, GuestMsg> {
    match first {
        HostMsg::Hello { version, .. } if SUPPORTED_VERSIONS.contains(version) => {
            Ok(GuestMsg::Hello {
                version: *version,
                agent: agent.to_string(),
                hostname: hostname.to_string(),
            })
        }
        HostMsg::Hello { version, .. } => Err(GuestMsg::Error {
            code: ErrorCode::UnsupportedVersion,
            message: format!(
                "protocol version {version} is not supported; this agent ({agent}) speaks {}..={}",
                SUPPORTED_VERSIONS.start(),
                SUPPORTED_VERSIONS.end()
            ),
        }),
        _ => Err(GuestMsg::Error {
            code: ErrorCode::BadRequest,
            message: "the first message must be hello".into(),
        }),
    }
}

#[cfg(test)]
mod tests;
