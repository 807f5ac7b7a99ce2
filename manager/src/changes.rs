//! The guest's changes to a VM's project (its copy-on-write upper layer):
//! listed ([`diff`]), applied to the host folder ([`commit`]), and a
//! commit that was interrupted finished first.

use std::path::PathBuf;

use crate::error::{bail, Context};
use crate::image::PROJECT_TAG;
use crate::state::{VmDir, VmLock};
use crate::Report;

/// What the guest changed in VM `name`'s project: the project folder and
/// the changes.
pub fn diff(name: &str, report: &dyn Report) -> crate::Result<(PathBuf, Vec<cowfs::Change>)> {
    let dir = VmDir::existing(name)?;
    {
        let _lock = VmLock::acquire(&dir.path, &dir.name, report)?;
        finish_interrupted_commit(&dir, report)?;
    }
    let (project, upper) = layers(&dir)?;
    let changes = cowfs::diff(&project, &upper).context("cannot compare the layers")?;
    Ok((project, changes))
}

/// How [`commit`] goes.
pub struct CommitOptions<'a> {
    /// Check and report only.
    pub dry_run: bool,
    /// Apply the changed files that run on the host without asking.
    pub yes: bool,
    /// Asked, without `yes`, whether the changed files that run on the
    /// host (executables, git hooks or config, .envrc) may be applied.
    pub approve: &'a mut dyn FnMut(&[PathBuf]) -> crate::Result<bool>,
    /// See `cowfs::CommitOptions::at_point` (a test hook).
    pub at_point: Option<&'a dyn Fn(u32)>,
}

/// Applies the guest's changes to VM `name`'s project folder (all or
/// nothing); the folder and what was (or would be) applied.
pub fn commit(
    name: &str,
    opts: CommitOptions,
    report: &dyn Report,
) -> crate::Result<(PathBuf, cowfs::Report)> {
    let dir = VmDir::existing(name)?;
    let _lock = VmLock::acquire(&dir.path, &dir.name, report)?;
    // Said even if this commit is then refused.
    finish_interrupted_commit(&dir, report)?;
    let (project, upper) = layers(&dir)?;
    let mut cow = cowfs::CommitOptions {
        dry_run: opts.dry_run,
        approval: if opts.yes {
            cowfs::Approval::All
        } else {
            cowfs::Approval::None
        },
        at_point: opts.at_point,
    };
    let mut result = cowfs::commit(&project, &upper, &cow);
    if let Err(cowfs::CommitError::NeedsApproval(paths)) = &result {
        if (opts.approve)(paths)? {
            cow.approval = cowfs::Approval::These(paths.iter().cloned().collect());
            result = cowfs::commit(&project, &upper, &cow);
        }
    }
    match result {
        Ok(done) => {
            if let Some(how) = done.recovered {
                report_recovery(how, &project, report);
            }
            Ok((project, done))
        }
        Err(cowfs::CommitError::Conflicts(conflicts)) => {
            let first = conflicts.first().map(|c| c.to_string()).unwrap_or_default();
            bail!(
                "refusing to commit: {} path(s) changed on the host since the VM copied them (first: {first}); nothing was applied",
                conflicts.len()
            )
        }
        Err(cowfs::CommitError::NeedsApproval(paths)) => bail!(
            "refusing to commit {} file(s) that run on the host without --yes: {}; nothing was applied",
            paths.len(),
            path_list(&paths)
        ),
        Err(e) => Err(e).context("commit failed"),
    }
}

/// Paths as one comma-separated list.
pub fn path_list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Finishes a commit of this VM's project that was interrupted (killed),
/// so the host folder is whole again. Every command that uses the VM's
/// upper layer (diff, commit, start, stop) calls this first, with the VM
/// locked.
pub fn finish_interrupted_commit(dir: &VmDir, report: &dyn Report) -> crate::Result<()> {
    let spec = dir.spec()?;
    let Some(project) = spec.project.as_ref() else {
        return Ok(());
    };
    let upper = dir.upper_dir(&spec, PROJECT_TAG);
    if !upper.is_dir() || !project.is_dir() {
        return Ok(());
    }
    let done = cowfs::recover(project, &upper).with_context(|| {
        format!(
            "cannot finish an interrupted commit to {}",
            project.display()
        )
    })?;
    if let Some(how) = done {
        report_recovery(how, project, report);
    }
    Ok(())
}

/// Says how an interrupted commit was finished.
fn report_recovery(how: cowfs::Recovery, project: &std::path::Path, report: &dyn Report) {
    let what = match how {
        cowfs::Recovery::RolledBack => "undone (none of it had been applied)",
        cowfs::Recovery::RolledForward => "completed",
    };
    report.progress(&format!(
        "an interrupted commit to {} was {what}",
        project.display()
    ));
}

/// The project folder and the guest's upper layer over it: what `diff`
/// and `commit` compare.
fn layers(dir: &VmDir) -> crate::Result<(std::path::PathBuf, std::path::PathBuf)> {
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
