//! `mvm debug NAME [--json]` (hidden): a running VM's state dump, for
//! telling why it stalls: every vCPU (what its thread does, RIP, pending
//! interrupts, LAPIC and timer), the IO-APIC pins, and each virtio device's
//! rings and interrupt status, vsock connections with their credit. When
//! the VMM does not answer on its API socket (a wedged event loop), the
//! dump is asked for with SIGUSR1 and lands in the VMM's log.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use vmm::api::{call, ApiRequest};
use vmm::dump::VmDump;

use manager::state::{RunState, VmDir};

/// Enough for vCPUs that take their time to answer, and for the device
/// locks the dump tries without waiting forever.
const DUMP_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Args)]
pub struct DebugArgs {
    /// The VM's name.
    pub name: String,
    /// Print the dump as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn debug(args: DebugArgs) -> anyhow::Result<()> {
    let dir = VmDir::existing(&args.name)?;
    if !matches!(dir.run_state(), RunState::Running | RunState::Paused) {
        bail!("VM '{}' is not running: there is nothing to dump", dir.name);
    }
    let asked = call(&dir.api_socket(), &ApiRequest::Debug, DUMP_TIMEOUT)
        .map_err(anyhow::Error::from)
        .and_then(|r| match (r.ok, r.data) {
            (true, Some(data)) => {
                serde_json::from_value::<VmDump>(data).context("the VMM's dump is malformed")
            }
            _ => bail!(
                "{}",
                r.error.unwrap_or_else(|| "no dump in the answer".into())
            ),
        });
    match asked {
        Ok(dump) if args.json => println!("{}", serde_json::to_string_pretty(&dump)?),
        Ok(dump) => print!("{dump}"),
        Err(e) => {
            // The API is served on the event loop; SIGUSR1 is served by a
            // thread of its own.
            let pid = dir.pid().context("the VM has no VMM process")?;
            // SAFETY: kill(2) with a pid read from the VM's pid file (checked
            // by run_state to be this VM's VMM) and a plain signal number.
            if unsafe { libc::kill(pid, libc::SIGUSR1) } != 0 {
                bail!(
                    "the VMM did not answer its API ({e:#}) and cannot be signalled: {}",
                    std::io::Error::last_os_error()
                );
            }
            bail!(
                "the VMM did not answer its API ({e:#}); sent it SIGUSR1: the dump is in {}",
                dir.vmm_log().display()
            );
        }
    }
    Ok(())
}
