//! `mvm-init`: PID 1 and agent of mvm guests.
//!
//! As PID 1 ([`boot::run_pid1`]) it mounts the API filesystems, reads its
//! configuration from the kernel command line ([`cmdline`] lists the keys),
//! switches to the virtio-fs root, mounts the shares and volumes ([`volumes`]), configures the
//! network (static or DHCP), reaps orphans ([`reaper`]), supervises
//! services ([`services`]) and serves the agent protocol (`agent-proto`) on
//! vsock ([`server`], [`exec`]). Any fatal setup error is printed on the
//! console as `mvm-init: fatal: ...` and the VM is reset.
//!
//! Everything except mounting, vsock and the final reset works outside
//! PID 1 too: the agent serves any socket stream, which the tests and
//! `mvm-init --test-listen-unix PATH` use.

pub mod boot;
/// The kernel command line: one module with the host, in agent-proto.
pub use agent_proto::cmdline;
pub mod dhcp;
pub mod exec;
pub mod mounts;
pub mod net;
pub mod passwd;
pub mod power;
pub mod pty;
pub mod reaper;
pub mod server;
pub mod services;
pub mod sys;
pub mod volumes;
pub mod vsock;

#[cfg(test)]
mod testutil;

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::reaper::Reaper;
use crate::server::Agent;
use crate::services::{Options, Supervisor};

/// `--test-listen-unix PATH`: the agent on a Unix socket, for host-side
/// tests and CLI development. Runs as whoever started it, as a child
/// subreaper (so orphans of its sessions are still reaped), with service
/// logs under `state_dir/services`. `Shutdown` stops the services and
/// exits the process.
pub fn run_test_listen(path: &Path, state_dir: &Path) -> Result<(), String> {
    boot::install_panic_hook();
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if std::fs::symlink_metadata(path)
        .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
    {
        let _ = std::fs::remove_file(path);
    }
    let listener =
        UnixListener::bind(path).map_err(|e| format!("binding {}: {e}", path.display()))?;
    let reaper = Reaper::global();
    let services = Supervisor::new(
        PathBuf::from("/"),
        Arc::clone(&reaper),
        Some(state_dir.join("services")),
        Options::default(),
    );
    let (s2, r2) = (services.clone(), Arc::clone(&reaper));
    let agent = Arc::new(Agent {
        root: PathBuf::from("/"),
        reaper,
        services,
        debug: std::env::var_os("MVM_INIT_DEBUG").is_some(),
        power: Arc::new(move |action| power::shutdown(&s2, &r2, action)),
    });
    log!("test mode: agent on unix socket {}", path.display());
    server::serve_unix(listener, agent);
    Ok(())
}
