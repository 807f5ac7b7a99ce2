//! `mvm port NAME [[ADDRESS:]HOST:GUEST[/tcp|/udp]] [--rm]`: list, add or remove a
//! port forward, also while the VM runs (see `manager::ports`).

use anyhow::bail;
use clap::Args;
use manager::ports;
use netstack::PortForward;

use crate::report::Stderr;

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
    let Some(fwd) = args.spec else {
        // The VM must exist before --rm's usage is explained.
        let forwards = ports::list(&args.name)?;
        if args.rm {
            bail!(
                "--rm needs a forward to remove, e.g. `mvm port {} --rm 8080:80`",
                args.name
            );
        }
        for p in forwards {
            println!("{}", p.describe());
        }
        return Ok(());
    };
    let fwd = if args.rm {
        ports::remove(&args.name, fwd, &Stderr)?
    } else {
        ports::add(&args.name, fwd, &Stderr)?
    };
    println!(
        "{} {} for VM '{}'",
        if args.rm { "removed" } else { "added" },
        fwd.describe(),
        args.name
    );
    Ok(())
}
