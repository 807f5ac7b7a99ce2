//! Talking to the guest agent (mvm-init) through the VM's vsock socket.

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use agent_proto::client::{connect_unix_timeout, Client};
use agent_proto::ShutdownAction;
use anyhow::{bail, Context};

use crate::guest_image::AGENT_PORT;
use crate::state::VmDir;

/// Connects and shakes hands with the agent, retrying while the guest is
/// still booting, for at most `wait`.
pub fn client(dir: &VmDir, wait: Duration) -> anyhow::Result<Client<UnixStream>> {
    match dir.run_state() {
        crate::state::RunState::Running => {}
        crate::state::RunState::Paused => bail!("VM '{}' is paused", dir.name),
        state => bail!(
            "VM '{}' is {state}; start it with `mvm start {}`",
            dir.name,
            dir.name
        ),
    }
    let deadline = Instant::now() + wait;
    loop {
        let attempt = (|| -> anyhow::Result<Client<UnixStream>> {
            if !dir.vsock_socket().exists() {
                bail!("VM '{}' is not running", dir.name);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let stream = connect_unix_timeout(
                &dir.vsock_socket(),
                Some(AGENT_PORT),
                Some(left.max(Duration::from_millis(200))),
            )?;
            // The timeout is a property of the socket, shared by clones:
            // bound the handshake, then lift it for long-running sessions.
            let same_socket = stream.try_clone()?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            let client = Client::handshake(stream, "mvm")?;
            same_socket.set_read_timeout(None)?;
            Ok(client)
        })();
        match attempt {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() >= deadline => {
                return Err(e).with_context(|| {
                    format!("the guest agent of VM '{}' is not reachable", dir.name)
                })
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Asks the guest to shut down cleanly (services stopped, file systems
/// synced); the VMM ends when the guest resets.
pub fn shutdown(dir: &VmDir, _timeout: Duration) -> anyhow::Result<()> {
    // A live agent answers at once; a guest without one must not hold
    // `stop` up for long.
    let mut c = client(dir, Duration::from_secs(2))?;
    c.shutdown(ShutdownAction::Poweroff)?;
    Ok(())
}
