//! The guest's changes to a VM's project (its copy-on-write upper layer):
//! where they are, and finishing a commit of them that was interrupted.
//! Showing and applying them is `mvm diff` / `mvm commit`.

use crate::error::{bail, Context};
use crate::image::PROJECT_TAG;
use crate::state::VmDir;
use crate::Report;

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
pub fn report_recovery(how: cowfs::Recovery, project: &std::path::Path, report: &dyn Report) {
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
pub fn layers(dir: &VmDir) -> crate::Result<(std::path::PathBuf, std::path::PathBuf)> {
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
