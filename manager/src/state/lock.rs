//! One `mvm` at a time per VM: an exclusive flock on the VM folder's
//! `lock` file, held for the duration of a command that changes the VM.
//!
//! A second command waits its turn (bounded, with a line saying whom it
//! waits for) instead of failing: a direnv watcher stopping the VM, or two
//! shells entering a project at once, are ordinary, not errors.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{bail, Context};

/// How long a command waits for another one working on the same VM
/// (a start in the nested host can take a minute).
const WAIT: Duration = Duration::from_secs(120);
/// Silence before the waiting line: most holders finish well before.
const QUIET: Duration = Duration::from_secs(1);

pub struct VmLock {
    _file: File,
}

impl VmLock {
    /// Takes the lock, waiting up to two minutes for another `mvm`
    /// working on the VM; fails naming the VM after that.
    pub fn acquire(
        vm_path: &Path,
        name: &str,
        report: &dyn crate::Report,
    ) -> crate::Result<VmLock> {
        let deadline = Instant::now() + WAIT;
        let quiet_until = Instant::now() + QUIET;
        let mut told = false;
        loop {
            match Self::try_take(vm_path, "lock")? {
                Some(l) => return Ok(l),
                None if Instant::now() > deadline => {
                    return Err(crate::Error::Busy {
                        name: name.to_string(),
                        secs: WAIT.as_secs(),
                    })
                }
                None => {
                    if !told && Instant::now() > quiet_until {
                        let holder = holder(&vm_path.join("lock"))
                            .map(|p| format!(" (pid {p})"))
                            .unwrap_or_default();
                        report.progress(&format!(
                            "waiting for another mvm command{holder} working on VM '{name}'..."
                        ));
                        told = true;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Another lock in the VM folder (`file`), e.g. one watcher per VM;
    /// fails at once if it is held.
    pub fn acquire_named(vm_path: &Path, file: &str) -> crate::Result<VmLock> {
        match Self::try_take(vm_path, file)? {
            Some(l) => Ok(l),
            None => bail!("{file} in {} is held by another mvm", vm_path.display()),
        }
    }

    /// The host-port lock (`$MVM_HOME/ports.lock`, one for all VMs): held by a
    /// command while it picks host ports and writes them to a spec, so two
    /// copies of a project created at once never pick the same free port.
    /// Its holders take it last (after their VM's lock) and never start a
    /// VM under it, so waiting for it is short.
    pub fn acquire_ports() -> crate::Result<VmLock> {
        let home = super::home()?;
        std::fs::create_dir_all(&home)
            .with_context(|| format!("cannot create {}", home.display()))?;
        let path = home.join("ports.lock");
        let file = netstack::lockfile::lock_exclusive(&path, true)
            .with_context(|| format!("cannot lock {}", path.display()))?
            .with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(VmLock { _file: file })
    }

    /// The lock, or None when another process holds it.
    fn try_take(vm_path: &Path, file: &str) -> crate::Result<Option<VmLock>> {
        let path = vm_path.join(file);
        let Some(mut file) = netstack::lockfile::lock_exclusive(&path, false)
            .with_context(|| format!("cannot lock {}", path.display()))?
        else {
            return Ok(None);
        };
        // The holder's pid, for the waiting line of the next command.
        let _ = file
            .set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| write!(file, "{}", std::process::id()));
        Ok(Some(VmLock { _file: file }))
    }
}

/// The pid the lock's holder wrote, if any.
fn holder(path: &Path) -> Option<u32> {
    let mut s = String::new();
    File::open(path).ok()?.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}
