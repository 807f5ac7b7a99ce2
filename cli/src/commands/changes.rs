//! `mvm diff` and `mvm commit`: what the guest changed in the project
//! (its copy-on-write upper layer), and applying it to the host folder.

use std::io::Write as _;

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
    /// Apply changed files that run on the host (executables, .git/hooks,
    /// .git/config, .envrc) without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// Test hook: `N` makes a commit stop at its point N (see
/// `cowfs::CommitOptions::at_point`), say so on stderr and wait there for
/// good, so a test can kill it at a known point (it reads the line, no
/// sleeping).
const PAUSE_ENV: &str = "MVM_TEST_COMMIT_PAUSE";

fn pause_at(wanted: &str, point: u32) {
    if wanted.parse() != Ok(point) {
        return;
    }
    eprintln!("mvm: paused at commit point {point}");
    let _ = std::io::stderr().flush();
    loop {
        std::thread::park();
    }
}

/// Finishes a commit of this VM's project that was interrupted (killed),
/// so the host folder is whole again. Every command that uses the VM's
/// upper layer (diff, commit, start, stop) calls this first, with the VM
/// locked.
pub fn finish_interrupted_commit(dir: &VmDir) -> anyhow::Result<()> {
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
        report_recovery(how, project);
    }
    Ok(())
}

fn report_recovery(how: cowfs::Recovery, project: &std::path::Path) {
    let what = match how {
        cowfs::Recovery::RolledBack => "undone (none of it had been applied)",
        cowfs::Recovery::RolledForward => "completed",
    };
    eprintln!(
        "mvm: an interrupted commit to {} was {what}",
        project.display()
    );
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
    {
        let _lock = VmLock::acquire(&dir.path, &dir.name)?;
        finish_interrupted_commit(&dir)?;
    }
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
    // Said even if this commit is then refused.
    finish_interrupted_commit(&dir)?;
    let (project, upper) = layers(&dir)?;
    let pause = std::env::var(PAUSE_ENV).ok();
    let hook = |point| {
        if let Some(p) = &pause {
            pause_at(p, point)
        }
    };
    let mut opts = cowfs::CommitOptions {
        dry_run: args.dry_run,
        approval: if args.yes {
            cowfs::Approval::All
        } else {
            cowfs::Approval::None
        },
        at_point: Some(&hook),
    };
    let mut result = cowfs::commit(&project, &upper, &opts);
    if let Err(cowfs::CommitError::NeedsApproval(paths)) = &result {
        if ask_approval(paths)? {
            opts.approval = cowfs::Approval::These(paths.iter().cloned().collect());
            result = cowfs::commit(&project, &upper, &opts);
        }
    }
    match result {
        Ok(report) => {
            if let Some(how) = report.recovered {
                report_recovery(how, &project);
            }
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
            if !report.applied && !report.runs_on_host.is_empty() && !args.yes {
                eprintln!(
                    "mvm: these run on the host and need --yes: {}",
                    path_list(&report.runs_on_host)
                );
            }
            Ok(())
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

fn path_list(paths: &[std::path::PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// On a terminal, lists the files that run on the host and asks y/N;
/// elsewhere (scripts, CI) the answer is no: only `--yes` approves.
fn ask_approval(paths: &[std::path::PathBuf]) -> anyhow::Result<bool> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Ok(false);
    }
    eprintln!(
        "mvm: these changed files run on the host (executables, git hooks or config, .envrc):"
    );
    for p in paths {
        eprintln!("  {}", p.display());
    }
    eprint!("Apply them? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
