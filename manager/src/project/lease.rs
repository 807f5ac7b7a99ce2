//! Leases: which shells use a project's VM. direnv has no unload hook, so
//! leaving is observed from outside: each shell that enters the folder
//! leaves a lease (its pid and start time); a lease holds while that
//! process lives (same start time: pids get reused) and its working
//! directory is inside the project folder.

use std::path::{Path, PathBuf};

use crate::error::Context;

/// Fields of /proc/PID/stat after the command name: (ppid, start time).
fn stat(pid: i32) -> Option<(i32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and ')': split after the last one.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); ppid is field 4, starttime field 22.
    if f.first() == Some(&"Z") {
        return None;
    }
    Some((f.get(1)?.parse().ok()?, f.get(19)?.parse().ok()?))
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The interactive shell behind `pid`: when direnv is among its ancestors
/// (the .envrc runs in bash under `direnv export`, under the shell), the
/// shell is direnv's parent; otherwise `pid` itself.
pub fn shell_of(pid: i32) -> i32 {
    let mut p = pid;
    for _ in 0..8 {
        if comm(p) == "direnv" {
            return stat(p).map(|(ppid, _)| ppid).unwrap_or(pid);
        }
        match stat(p) {
            Some((ppid, _)) if ppid > 1 => p = ppid,
            _ => break,
        }
    }
    pid
}

/// A shell using the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub pid: i32,
    pub start: u64,
}

impl Lease {
    /// A lease for live process `pid`.
    pub fn of(pid: i32) -> Option<Lease> {
        stat(pid).map(|(_, start)| Lease { pid, start })
    }

    /// Still held: the same process lives and works inside `project`.
    pub fn holds(&self, project: &Path) -> bool {
        if stat(self.pid).map(|(_, s)| s) != Some(self.start) {
            return false;
        }
        std::fs::read_link(format!("/proc/{}/cwd", self.pid))
            .map(|cwd| cwd.starts_with(project))
            .unwrap_or(false)
    }
}

/// The leases folder of a VM folder.
pub fn dir(vm: &Path) -> PathBuf {
    vm.join("leases")
}

/// Records a lease (one file per shell: PID holding "PID START").
pub fn register(vm: &Path, lease: Lease) -> crate::Result<()> {
    let d = dir(vm);
    std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    let p = d.join(lease.pid.to_string());
    std::fs::write(&p, format!("{} {}\n", lease.pid, lease.start))
        .with_context(|| format!("cannot write {}", p.display()))
}

/// Removes leases that no longer hold; returns how many still do.
pub fn prune(vm: &Path, project: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir(vm)) else {
        return 0;
    };
    let mut live = 0;
    for e in entries.flatten() {
        let lease = std::fs::read_to_string(e.path()).ok().and_then(|t| {
            let mut it = t.split_whitespace();
            Some(Lease {
                pid: it.next()?.parse().ok()?,
                start: it.next()?.parse().ok()?,
            })
        });
        match lease {
            Some(l) if l.holds(project) => live += 1,
            _ => {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    live
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// A real process sleeping in `cwd`.
    fn sleeper(cwd: &Path) -> std::process::Child {
        Command::new("sleep")
            .arg("60")
            .current_dir(cwd)
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    }

    #[test]
    fn leases_follow_real_processes_and_their_folder() {
        let base = std::env::temp_dir().join(format!("mvm-lease-{}", std::process::id()));
        let project = base.join("proj");
        let sub = project.join("src");
        let outside = base.join("elsewhere");
        let vm = base.join("vm");
        for d in [&sub, &outside, &vm] {
            std::fs::create_dir_all(d).unwrap();
        }
        let mut inside = sleeper(&sub);
        let mut away = sleeper(&outside);
        let mut gone = sleeper(&project);
        for c in [&inside, &away, &gone] {
            register(&vm, Lease::of(c.id() as i32).unwrap()).unwrap();
        }
        // A recycled pid (other start time) does not hold.
        register(
            &vm,
            Lease {
                pid: inside.id() as i32,
                start: 1,
            },
        )
        .ok();
        register(&vm, Lease::of(inside.id() as i32).unwrap()).unwrap();
        assert_eq!(prune(&vm, &project), 2, "inside and gone hold");
        gone.kill().unwrap();
        gone.wait().unwrap();
        assert_eq!(prune(&vm, &project), 1);
        let left: Vec<_> = std::fs::read_dir(dir(&vm)).unwrap().flatten().collect();
        assert_eq!(left.len(), 1);
        assert_eq!(
            left[0].file_name().to_string_lossy(),
            inside.id().to_string()
        );
        inside.kill().unwrap();
        inside.wait().unwrap();
        assert_eq!(prune(&vm, &project), 0);
        away.kill().unwrap();
        away.wait().unwrap();
        // No direnv above us: the shell is the process itself.
        assert_eq!(
            shell_of(std::process::id() as i32),
            std::process::id() as i32
        );
        std::fs::remove_dir_all(base).unwrap();
    }
}
