//! What a commit will do: the conflict check, the files that need
//! approval, and the steps.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::io::Errno;

use super::journal::{Step, StepKind};
use crate::diff::{child, dir_fd, entries, join, path_buf, resolve, ChangeKind, CommitError};
use crate::diff::{Change, Conflict};
use crate::layer::{St, S_IFBLK, S_IFCHR};
use crate::origin::{self, Records, Snapshot};

pub(super) struct Plan {
    pub conflicts: Vec<Conflict>,
    /// A change that cannot be committed at all (a device node).
    pub unsupported: Option<CommitError>,
    pub runs_on_host: Vec<PathBuf>,
    pub steps: Vec<Step>,
    /// Paths whose host object gets a fresh snapshot once applied.
    pub snapshots: Vec<Vec<u8>>,
}

fn matches(s: Option<&Snapshot>, st: &St) -> bool {
    s.is_some_and(|s| *s == Snapshot::of(st))
}

/// Checks every host object under the directory `fd` (at `path`), which
/// the commit would remove or replace, against the snapshots: one the VM
/// never saw, or that changed since, is a host edit the commit must not
/// lose.
fn check_tree(
    fd: &OwnedFd,
    path: &[u8],
    recs: &Records,
    out: &mut Vec<Conflict>,
) -> Result<(), Errno> {
    for n in entries(dir_fd(fd)?.as_fd())? {
        let p = join(path, &n);
        let Some((cfd, st)) = child(fd.as_fd(), &n)? else {
            continue;
        };
        if !matches(recs.snapshots.get(&p), &st) {
            out.push(Conflict {
                path: path_buf(&p),
                reason: "changed on the host (inside a directory the commit removes or replaces)",
            });
        }
        // On into a changed directory too, to name what changed in it.
        if st.is_dir() {
            check_tree(&cfd, &p, recs, out)?;
        }
    }
    Ok(())
}

/// Whether a changed file runs on the host when the user works in the
/// project: an executable, anything under `.git/hooks`, `.git/config`
/// (`core.hooksPath`, `core.fsmonitor`) or an `.envrc` (direnv).
fn runs_on_host(path: &Path, st: &St) -> bool {
    let names: Vec<&[u8]> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.as_bytes()),
            _ => None,
        })
        .collect();
    let n = names.len();
    let hook = (0..n.saturating_sub(2)).any(|i| names[i] == b".git" && names[i + 1] == b"hooks");
    let git_config = n >= 2 && names[n - 2] == b".git" && names[n - 1] == b"config";
    (st.is_reg() && st.mode & 0o111 != 0)
        || hook
        || git_config
        || names.last() == Some(&&b".envrc"[..])
}

impl Plan {
    pub fn new(
        lower: BorrowedFd<'_>,
        upper: BorrowedFd<'_>,
        changes: &[Change],
    ) -> Result<Self, Errno> {
        let recs = origin::read_records(upper)?;
        let mut plan = Plan {
            conflicts: Vec::new(),
            unsupported: None,
            runs_on_host: Vec::new(),
            steps: Vec::new(),
            snapshots: Vec::new(),
        };
        let mut chmods = Vec::new();
        // Directories put whole (their content comes with them).
        let mut trees: Vec<PathBuf> = Vec::new();
        for c in changes {
            let p = c.path.as_os_str().as_bytes();
            let host = resolve(lower, p)?;
            let guest = resolve(upper, p)?;
            plan.check(c, p, host.as_ref(), guest.as_ref(), &recs)?;
            if c.kind == ChangeKind::Deleted {
                plan.steps.push(Step::new(StepKind::Remove, p));
                continue;
            }
            plan.snapshots.push(p.to_vec());
            let Some((_, gst)) = &guest else { continue };
            if matches!(gst.kind(), S_IFCHR | S_IFBLK) && plan.unsupported.is_none() {
                plan.unsupported = Some(CommitError::Unsupported {
                    path: c.path.clone(),
                    reason: "a device node (the host never gets one from a guest)",
                });
            }
            if runs_on_host(&c.path, gst) {
                plan.runs_on_host.push(c.path.clone());
            }
            if trees.iter().any(|t| c.path.starts_with(t)) {
                continue;
            }
            match &host {
                Some((_, hst)) if hst.is_dir() && gst.is_dir() => {
                    chmods.push(Step::new(StepKind::Chmod(gst.mode & 0o1777), p));
                }
                _ => {
                    if gst.is_dir() {
                        trees.push(c.path.clone());
                    }
                    plan.steps.push(Step::new(StepKind::Put, p));
                }
            }
        }
        // Modes last: a directory made read-only must not stop the
        // renames into it.
        plan.steps.extend(chmods);
        for (i, s) in plan.steps.iter_mut().enumerate() {
            s.name_temporaries(i);
        }
        Ok(plan)
    }

    /// The conflict check of one change.
    fn check(
        &mut self,
        c: &Change,
        p: &[u8],
        host: Option<&(OwnedFd, St)>,
        guest: Option<&(OwnedFd, St)>,
        recs: &Records,
    ) -> Result<(), Errno> {
        let conflict = |reason| Conflict {
            path: c.path.clone(),
            reason,
        };
        match (c.kind, host) {
            (ChangeKind::Added, Some(_)) => self
                .conflicts
                .push(conflict("created on the host meanwhile")),
            (ChangeKind::Added, None) => {}
            (_, None) => self
                .conflicts
                .push(conflict("deleted on the host meanwhile")),
            (_, Some((fd, st))) => {
                if !matches(recs.snapshots.get(p), st) {
                    self.conflicts
                        .push(conflict(if recs.snapshots.contains_key(p) {
                            "changed on the host since the VM copied it"
                        } else {
                            "created or replaced on the host meanwhile (no record of the host copy)"
                        }));
                } else if st.is_dir() && !guest.is_some_and(|(_, g)| g.is_dir()) {
                    // The host directory goes (deleted, or replaced by a
                    // file): every host object in it must be one the
                    // guest saw as it is now.
                    check_tree(fd, p, recs, &mut self.conflicts)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(mode: u32) -> St {
        St {
            mode,
            ..Default::default()
        }
    }

    #[test]
    fn files_that_run_on_the_host() {
        let file = st(0o100644);
        let exe = st(0o100755);
        for (p, s, want) in [
            ("src/main.rs", &file, false),
            ("build.sh", &exe, true),
            (".envrc", &file, true),
            ("sub/.envrc", &file, true),
            (".git/hooks/pre-commit", &file, true),
            ("vendor/x/.git/hooks/post-checkout", &file, true),
            (".git/hooks", &st(0o40755), false),
            (".git/config", &file, true),
            (".git/HEAD", &file, false),
            ("config", &file, false),
            ("hooks/x", &file, false),
            ("bin", &st(0o40755), false),
        ] {
            assert_eq!(runs_on_host(Path::new(p), s), want, "{p}");
        }
    }
}
