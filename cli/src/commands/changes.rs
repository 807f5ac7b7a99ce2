//! `mvm diff` and `mvm commit`: what the guest changed in the project
//! (its copy-on-write upper layer), and applying it to the host folder.

use std::io::Write as _;

use clap::Args;
use manager::changes;

use crate::report::Stderr;

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

fn letter(kind: cowfs::ChangeKind) -> char {
    match kind {
        cowfs::ChangeKind::Added => 'A',
        cowfs::ChangeKind::Modified => 'M',
        cowfs::ChangeKind::Deleted => 'D',
    }
}

pub fn diff(args: DiffArgs) -> anyhow::Result<()> {
    let (project, changes) = changes::diff(&args.name, &Stderr)?;
    for c in &changes {
        println!("{} {}", letter(c.kind), c.path.display());
    }
    if changes.is_empty() {
        eprintln!("mvm: no changes in {}", project.display());
    }
    Ok(())
}

pub fn commit(args: CommitArgs) -> anyhow::Result<()> {
    let pause = std::env::var(PAUSE_ENV).ok();
    let hook = |point| {
        if let Some(p) = &pause {
            pause_at(p, point)
        }
    };
    let opts = changes::CommitOptions {
        dry_run: args.dry_run,
        yes: args.yes,
        approve: &mut |paths| ask_approval(paths).map_err(manager::Error::from),
        at_point: Some(&hook),
    };
    let (project, report) = changes::commit(&args.name, opts, &Stderr)?;
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
            changes::path_list(&report.runs_on_host)
        );
    }
    Ok(())
}

/// On a terminal, lists the files that run on the host and asks y/N;
/// elsewhere (scripts, CI) the answer is no: only `--yes` approves.
fn ask_approval(paths: &[std::path::PathBuf]) -> std::io::Result<bool> {
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
