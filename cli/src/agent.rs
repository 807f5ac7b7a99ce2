//! Talking to the guest agent (mvm-init) through the VM's vsock socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::guest_image::AGENT_PORT;
use crate::state::VmDir;

/// Opens a byte stream to the agent: connect to the VMM's vsock socket and
/// ask for the agent's port (`CONNECT <port>` / `OK <n>`).
pub fn connect(dir: &VmDir, timeout: Duration) -> anyhow::Result<UnixStream> {
    let path = dir.vsock_socket();
    if !path.exists() {
        bail!("VM '{}' has no vsock socket: is it running?", dir.name);
    }
    let stream = UnixStream::connect(&path)
        .with_context(|| format!("cannot connect to {}", path.display()))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    (&stream).write_all(format!("CONNECT {AGENT_PORT}\n").as_bytes())?;
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .context("the guest agent did not answer")?;
    if !line.starts_with("OK ") {
        bail!(
            "the guest agent is not reachable (vsock said {:?})",
            line.trim()
        );
    }
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    Ok(stream)
}

/// Asks the guest to shut down cleanly (services stopped, file systems
/// synced); the VMM ends when the guest resets.
pub fn shutdown(dir: &VmDir, _timeout: Duration) -> anyhow::Result<()> {
    // A live agent answers at once; a guest without one must not hold
    // `stop` up for long.
    let _stream = connect(dir, Duration::from_secs(2))?;
    bail!("the agent protocol is not wired yet")
}
