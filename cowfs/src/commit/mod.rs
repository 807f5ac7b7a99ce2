//! `mvm commit`: applying an upper layer to its lower (host) directory,
//! staged and journalled so that no interruption loses a host file.
//!
//! 1. Plan ([`plan`]): the changes ([`crate::diff`]), refused before
//!    anything is written when the host copy of any path changed since the
//!    guest first shadowed it (deeply, under every host directory the
//!    commit would remove or replace), or when files that run on the host
//!    (executables, git hooks and config, `.envrc`) are not approved.
//! 2. A `staging` journal lists every name about to be created beside the
//!    targets; the new content is copied under those names and fsynced
//!    ([`stage`]).
//! 3. The journal is replaced by an `apply` one (fsynced): from here the
//!    commit is decided.
//! 4. Each step is one rename (an object a rename cannot replace is first
//!    renamed aside); the parents are fsynced; fresh snapshots go to the
//!    copy-up log; the set-aside objects are removed; the journal goes.
//!
//! A commit killed at any point is finished by [`recover`] (which every
//! commit runs first): a `staging` journal is rolled back (the staged
//! names removed: the host folder is as before), an `apply` one forward
//! (every step redone, each idempotent: the host folder is as committed).
//! No temporary name is left either way.

mod journal;
mod plan;
mod stage;

use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::io::Errno;

pub use crate::diff::Change;
use crate::diff::{diff_fds, open_root, CommitError};
use journal::{Journal, Phase};

/// Which of the files that run on the host (see [`CommitError::NeedsApproval`])
/// the user approved.
#[derive(Debug, Clone, Default)]
pub enum Approval {
    /// None: the commit refuses if there are any.
    #[default]
    None,
    /// Exactly these (as listed by a refused or dry-run commit).
    These(BTreeSet<PathBuf>),
    /// All (`--yes`).
    All,
}

impl Approval {
    fn covers(&self, p: &Path) -> bool {
        match self {
            Self::None => false,
            Self::These(set) => set.contains(p),
            Self::All => true,
        }
    }
}

/// How to commit.
#[derive(Default)]
pub struct CommitOptions<'a> {
    /// Check and report only.
    pub dry_run: bool,
    pub approval: Approval,
    /// Called with the number of each point a commit passes (1: staging
    /// journal written, 2: staged, 3: apply journal written, 4..: after
    /// each step, then after the last step and after cleanup), so a test
    /// can stop the process at a known point.
    pub at_point: Option<&'a dyn Fn(u32)>,
}

/// What [`commit`] did (or, with `dry_run`, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub changes: Vec<Change>,
    /// The changed files that run on the host (approved, or with
    /// `dry_run` to be approved).
    pub runs_on_host: Vec<PathBuf>,
    pub applied: bool,
    /// What an interrupted earlier commit needed, done first.
    pub recovered: Option<Recovery>,
}

/// How an interrupted commit was finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Killed while staging: the staged copies were removed.
    RolledBack,
    /// Killed while applying: the remaining steps were done.
    RolledForward,
}

fn read_err(path: &Path) -> impl Fn(Errno) -> CommitError + '_ {
    move |source| CommitError::Read {
        path: path.to_path_buf(),
        source,
    }
}

fn write_err(path: &Path) -> impl Fn(Errno) -> CommitError + '_ {
    move |source| CommitError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Finishes a commit of `upper` onto `lower` that was interrupted (killed,
/// power lost), if there is one.
pub fn recover(lower: &Path, upper: &Path) -> Result<Option<Recovery>, CommitError> {
    let (l, u) = (open_root(lower)?, open_root(upper)?);
    let Some(j) = Journal::read(u.as_fd()).map_err(read_err(upper))? else {
        // Killed while writing the first journal: only that is left.
        Journal::remove_unfinished(u.as_fd()).map_err(write_err(upper))?;
        return Ok(None);
    };
    let done = match j.phase {
        Phase::Staging => {
            j.roll_back(l.as_fd()).map_err(write_err(lower))?;
            Recovery::RolledBack
        }
        Phase::Apply => {
            j.roll_forward(l.as_fd(), u.as_fd(), &|_| {})
                .map_err(write_err(lower))?;
            Recovery::RolledForward
        }
    };
    Journal::remove(u.as_fd()).map_err(write_err(upper))?;
    Ok(Some(done))
}

/// Applies the upper layer onto the lower directory (see the module
/// documentation). With `dry_run`, only checks and reports.
pub fn commit(lower: &Path, upper: &Path, opts: &CommitOptions) -> Result<Report, CommitError> {
    // Even for a dry run: the plan must start from a whole host folder.
    let recovered = recover(lower, upper)?;
    let (l, u) = (open_root(lower)?, open_root(upper)?);
    let changes = diff_fds(l.as_fd(), u.as_fd()).map_err(read_err(upper))?;
    let plan = plan::Plan::new(l.as_fd(), u.as_fd(), &changes).map_err(read_err(lower))?;
    if !plan.conflicts.is_empty() {
        return Err(CommitError::Conflicts(plan.conflicts));
    }
    if let Some(c) = plan.unsupported {
        return Err(c);
    }
    let unapproved: Vec<PathBuf> = plan
        .runs_on_host
        .iter()
        .filter(|p| !opts.approval.covers(p))
        .cloned()
        .collect();
    let mut report = Report {
        changes,
        runs_on_host: plan.runs_on_host.clone(),
        applied: false,
        recovered,
    };
    if opts.dry_run {
        return Ok(report);
    }
    if !unapproved.is_empty() {
        return Err(CommitError::NeedsApproval(unapproved));
    }
    if plan.steps.is_empty() {
        report.applied = true;
        return Ok(report);
    }
    let at = |n| {
        if let Some(f) = opts.at_point {
            f(n)
        }
    };
    let mut j = Journal::new(plan.steps, plan.snapshots);
    j.write(u.as_fd()).map_err(write_err(upper))?;
    at(1);
    if let Err(e) = stage::stage_all(l.as_fd(), u.as_fd(), &j.steps) {
        // Nothing of the host folder changed: undo the staging now (or,
        // if that fails too, leave the journal for the next recover).
        if j.roll_back(l.as_fd()).is_ok() {
            let _ = Journal::remove(u.as_fd());
        }
        return Err(write_err(lower)(e));
    }
    at(2);
    j.phase = Phase::Apply;
    j.write(u.as_fd()).map_err(write_err(upper))?;
    at(3);
    j.roll_forward(l.as_fd(), u.as_fd(), &|k| at(3 + k))
        .map_err(write_err(lower))?;
    Journal::remove(u.as_fd()).map_err(write_err(upper))?;
    report.applied = true;
    Ok(report)
}
