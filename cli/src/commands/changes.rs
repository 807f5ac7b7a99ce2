//! `mvm diff` and `mvm commit`: what the guest changed in the project
//! (its copy-on-write upper layer), and applying it to the host folder.

use anyhow::{bail, Context};
use clap::Args;

use crate::guest_image::PROJECT_TAG;
use crate::state::{VmDir, VmLock};

#[derive(Args)]
pub struct DiffArgs {
    /// The VM's name.
    pub name: String,
}

#[derive(Args)]
pub struct CommitArgs {
    /// The VM's name.
    pub name: String,
    /// Show what would be applied, change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
}

fn layers(dir: &VmDir) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let spec = dir.spec()?;
    let Some(project) = spec.project.clone() else {
        bail!("VM '{}' has no project folder", dir.name);
    };
    let upper = dir.upper_dir(&spec, PROJECT_TAG);
    if !upper.is_dir() {
        bail!(
            "VM '{}' has no changes to show: it is not running{}",
            dir.name,
            if spec.persistent {
                " and has not run yet"
            } else {
                " (its changes are dropped at stop unless created --persistent)"
            }
        );
    }
    Ok((project, upper))
}

fn letter(kind: cowfs::ChangeKind) -> char {
    match kind {
        cowfs::ChangeKind::Added => 'A',
        cowfs::ChangeKind::Modified => 'M',
        cowfs::ChangeKind::Deleted => 'D',
    }
}

pub fn diff(args: DiffArgs) -> anyhow::Result<()> {
    let dir = VmDir::existing(&args.name)?;
    let (project, upper) = layers(&dir)?;
    let changes = cowfs::diff(&project, &upper).context("cannot compare the layers")?;
    for c in &changes {
        println!("{} {}", letter(c.kind), c.path.display());
    }
    if changes.is_empty() {
        eprintln!("mvm: no changes in {}", project.display());
    }
    Ok(())
}

pub fn commit(args: CommitArgs) -> anyhow::Result<()> {
    let dir = VmDir::existing(&args.name)?;
    let _lock = VmLock::acquire(&dir.path, &dir.name)?;
    let (project, upper) = layers(&dir)?;
    match cowfs::commit(&project, &upper, args.dry_run) {
        Ok(report) => {
            for c in &report.changes {
                println!("{} {}", letter(c.kind), c.path.display());
            }
            let verb = if report.applied {
                "applied"
            } else {
                "would apply"
            };
            eprintln!(
                "mvm: {verb} {} change(s) to {}",
                report.changes.len(),
                project.display()
            );
            Ok(())
        }
        Err(cowfs::CommitError::Conflicts(conflicts)) => {
            let first = conflicts.first().map(|c| c.to_string()).unwrap_or_default();
            bail!(
                "refusing to commit: {} path(s) changed on the host since the VM copied them (first: {first}); nothing was applied",
                conflicts.len()
            )
        }
        Err(e) => Err(e).context("commit failed"),
    }
}
