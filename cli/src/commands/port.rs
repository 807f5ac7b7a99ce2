//! `mvm port NAME [[ADDRESS:]HOST:GUEST[/tcp|/udp]] [--rm]`: list, add or remove a
//! port forward, also while the VM runs; forwards are kept in vm.toml and
//! come back on restart.

use std::time::Duration;

use anyhow::bail;
use clap::Args;
use netstack::PortForward;

use crate::state::{RunState, VmDir, VmLock};

#[derive(Args)]
pub struct PortArgs {
    /// The VM's name.
    pub name: String,
    /// [ADDRESS:]HOST_PORT:GUEST_PORT[/tcp|/udp]: on the host's loopback
    /// unless ADDRESS is given (0.0.0.0 for every interface); without it,
    /// list the forwards.
    pub spec: Option<PortForward>,
    /// Remove the forward instead of adding it.
    #[arg(long)]
    pub rm: bool,
}

pub fn port(args: PortArgs) -> anyhow::Result<()> {
    let dir = VmDir::existing(&args.name)?;
    let Some(mut fwd) = args.spec else {
        if args.rm {
            bail!(
                "--rm needs a forward to remove, e.g. `mvm port {} --rm 8080:80`",
                args.name
            );
        }
        for p in dir.spec()?.ports {
            println!("{}", p.describe());
        }
        return Ok(());
    };
    let _lock = VmLock::acquire(&dir.path, &dir.name)?;
    let mut spec = dir.spec()?;
    let running = matches!(dir.run_state(), RunState::Running | RunState::Paused);
    if args.rm {
        // `--rm 8080:80` also names a forward on an address.
        let found = spec.ports.iter().copied().find(|p| {
            *p == fwd
                || (fwd.addr.is_none() && p.same_host_port(&fwd) && p.guest_port == fwd.guest_port)
        });
        let Some(found) = found else {
            bail!("VM '{}' has no forward {fwd}", spec.name);
        };
        fwd = found;
        spec.ports.retain(|p| *p != fwd);
    } else {
        if spec.ports.iter().any(|p| p.same_host_port(&fwd)) {
            bail!(
                "host port {} is already forwarded to VM '{}'",
                fwd.host_port,
                spec.name
            );
        }
        for other in crate::state::all_vms()? {
            if other.name != spec.name {
                if let Ok(o) = other.spec() {
                    if o.ports.iter().any(|p| p.same_host_port(&fwd)) {
                        bail!(
                            "host port {} is already forwarded to VM '{}'",
                            fwd.host_port,
                            o.name
                        );
                    }
                }
            }
        }
        if !running {
            super::create::check_port_free(&fwd)?;
        }
        spec.ports.push(fwd);
    }
    if running && spec.network {
        // Host rules first (they check the port), then the VMM's proxy.
        crate::net::sync_forwards(&spec)?;
        let op = if args.rm { "port_remove" } else { "port_add" };
        let req = serde_json::json!({ "op": op, "forward": fwd.to_string() });
        let resp = vmm::api::call_raw(&dir.api_socket(), &req, Duration::from_secs(5))?;
        if !resp.ok {
            bail!(
                "VM '{}' refused the forward: {}",
                spec.name,
                resp.error.unwrap_or_default()
            );
        }
    }
    spec.save(&dir.spec_path())?;
    println!(
        "{} {} for VM '{}'",
        if args.rm { "removed" } else { "added" },
        fwd.describe(),
        spec.name
    );
    Ok(())
}
