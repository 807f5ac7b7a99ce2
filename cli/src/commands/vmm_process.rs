//! `mvm _vmm DIR` (hidden): the detached VMM process of a managed VM (its
//! body is `manager::vmm_process::run`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::report::Stderr;

#[derive(Args)]
pub struct VmmArgs {
    /// The VM's folder.
    pub dir: PathBuf,
}

pub fn run(args: VmmArgs) -> anyhow::Result<ExitCode> {
    let reason = manager::vmm_process::run(&args.dir, &Stderr).map_err(|e| match e {
        manager::Error::Vmm(e) => super::in_flags(e),
        e => e.into(),
    })?;
    Ok(super::exit_code(&reason))
}
