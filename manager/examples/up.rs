//! Embedding the manager: bring a project's VM up, as `mvm up` does, and
//! run a command in it through the guest agent, as `mvm exec` does.
//!
//! cargo run -p mvm-manager --example up -- PROJECT_DIR [COMMAND...]
//!
//! It needs what `mvm up` needs: a guest kernel (`$MVM_KERNEL`, or the one
//! guest-kernel/build.sh caches) and the guest agent (`$MVM_INIT`, a static
//! mvm-init). The VM stays up afterwards; `mvm down PROJECT_DIR` stops it.
//!
//! A managed VM's VMM is a detached process that outlives its starter:
//! the manager runs the current executable as `EXE _vmm VM_DIR` (and the
//! network's DHCP/DNS daemon as `EXE _netd`), so an embedding program
//! serves those two entry points itself, first thing in `main`, as here.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use agent_proto::{ExecRequest, ExitStatus};
use manager::up::{Up, UpOptions};
use manager::Report;

/// Progress on stderr, the way the `mvm` CLI prints it.
struct Stderr;

impl Report for Stderr {
    fn progress(&self, msg: &str) {
        eprintln!("up: {msg}");
    }
    fn warn(&self, msg: &str) {
        eprintln!("up: warning: {msg}");
    }
}

fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let first = args.next().ok_or("usage: up PROJECT_DIR [COMMAND...]")?;
    match first.as_str() {
        // The VMM process of a VM this program started: runs until the
        // guest ends.
        "_vmm" => {
            let dir = args.next().ok_or("usage: up _vmm VM_DIR")?;
            let reason = manager::vmm_process::run(dir.as_ref(), &Stderr)?;
            return Ok(if reason.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        // The host's DHCP and DNS servers for VMs, until killed.
        "_netd" => {
            let _daemon = manager::net::start_daemon()?;
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        _ => {}
    }

    // Load the project, create or update its VM, start it, wait for its
    // services to be ready.
    let opts = UpOptions {
        dir: Some(first.into()),
        ..Default::default()
    };
    let Up::Up(status) = manager::up::up(&opts, &Stderr)? else {
        unreachable!("not a dry run");
    };
    print!("{status}");

    // Run a command in the VM, in /project, with the VM's environment.
    let mut argv: Vec<String> = args.collect();
    if argv.is_empty() {
        argv = vec!["uname".into(), "-a".into()];
    }
    let dir = manager::state::VmDir::existing(&status.spec.name)?;
    let request = ExecRequest {
        argv,
        env: manager::project::env::resolve(&status.spec, &[], &[])?,
        cwd: Some("/project".into()),
        user: None,
        tty: false,
        winsize: None,
    };
    let client = manager::agent::session_client(&dir, Duration::from_secs(60))?;
    let exit = client.exec(
        &request,
        None::<std::io::Stdin>,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    )?;
    std::io::stdout().flush()?;
    Ok(match exit {
        ExitStatus::Code { code } => ExitCode::from(code.clamp(0, 255) as u8),
        ExitStatus::Signal { signal, .. } => ExitCode::from((128 + signal).clamp(0, 255) as u8),
    })
}
