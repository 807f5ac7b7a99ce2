//! `mvm _vmm DIR` (hidden): the detached VMM process of a managed VM. It
//! boots the VM described by DIR/vmm.json and cleans its runtime files up
//! when the guest ends.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::state::VmDir;

#[derive(Args)]
pub struct VmmArgs {
    /// The VM's folder.
    pub dir: PathBuf,
}

pub fn run(args: VmmArgs) -> anyhow::Result<ExitCode> {
    let name = args
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = VmDir {
        name,
        path: args.dir.clone(),
    };
    let json = std::fs::read(dir.vmm_config())
        .with_context(|| format!("cannot read {}", dir.vmm_config().display()))?;
    let config: vmm::VmConfig = serde_json::from_slice(&json)
        .with_context(|| format!("{} is not a VM config", dir.vmm_config().display()))?;
    let vm = vmm::Vm::new(&config)?;
    let reason = vm.run().context("the VM failed")?;
    eprintln!("mvm: VM '{}' ended: {reason}", dir.name);
    // Only clean up what is ours: a newer VMM may have been started.
    if dir.pid() == Some(std::process::id() as i32) {
        let _ = dir.clear_runtime();
    }
    Ok(super::run::exit_code(&reason))
}
