//! `mvm start|stop|restart|rm` (see `manager::lifecycle`).

use std::time::Duration;

use clap::Args;
use manager::lifecycle;
use manager::state::RunState;

use crate::report::Stderr;

#[derive(Args)]
pub struct NameArg {
    /// The VM's name.
    pub name: String,
}

#[derive(Args)]
pub struct StopArgs {
    /// The VM's name.
    pub name: String,
    /// Seconds to wait for a clean shutdown before killing the VMM.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub timeout: u64,
}

#[derive(Args)]
pub struct RmArgs {
    /// The VM's name.
    pub name: String,
    /// Stop the VM first if it is running.
    #[arg(long, short)]
    pub force: bool,
    /// Remove its volumes too (those no other VM attaches); by default
    /// volumes outlive the VM.
    #[arg(long)]
    pub volumes: bool,
}

pub fn start(args: NameArg) -> anyhow::Result<()> {
    if lifecycle::start(&args.name, &Stderr)? {
        println!("started VM '{}'", args.name);
    } else {
        println!("VM '{}' is already running", args.name);
    }
    Ok(())
}

pub fn stop(args: StopArgs) -> anyhow::Result<()> {
    let name = &args.name;
    match lifecycle::stop(name, Duration::from_secs(args.timeout), &Stderr)? {
        RunState::Stopped => println!("VM '{name}' is not running"),
        RunState::Crashed => println!("VM '{name}' had crashed; cleaned up"),
        _ => println!("stopped VM '{name}'"),
    }
    Ok(())
}

pub fn restart(args: StopArgs) -> anyhow::Result<()> {
    lifecycle::restart(&args.name, Duration::from_secs(args.timeout), &Stderr)?;
    println!("restarted VM '{}'", args.name);
    Ok(())
}

pub fn rm(args: RmArgs) -> anyhow::Result<()> {
    lifecycle::rm_with(&args.name, args.force, args.volumes, &Stderr)?;
    println!("removed VM '{}'", args.name);
    Ok(())
}
