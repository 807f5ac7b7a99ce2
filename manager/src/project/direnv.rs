//! direnv integration, the host side: entering a project folder (`mvm
//! direnv --enter`) brings its VM up, the entering shell takes a lease,
//! and the shell gets the VM's variables ([`exports`]).
//!
//! Leaving: direnv has no unload hook, so a watcher ([`linger`], run as
//! `mvm _linger NAME`, one per VM, detached) polls the leases every
//! second. A lease holds while its shell lives (same pid and start time)
//! with its working directory inside the project folder. When none holds
//! for the grace period, the VM is stopped, but only if entering started
//! it (a VM brought up by hand stays) and the project does not say
//! `direnv.keep_running`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::lease;
use crate::error::Context;
use crate::state::{RunState, VmDir, VmLock, VmSpec};
use crate::Report;

/// A file marking a VM that `--enter` started (and may stop).
fn marker(dir: &VmDir) -> PathBuf {
    dir.path.join("direnv-started")
}

/// After `up` on entering `folder`: marks the VM if this call `started`
/// it, gives the entering shell (`shell_pid`, else the shell running our
/// parent) a lease, and starts the watcher (`EXE _linger NAME --grace
/// SECS`, the current executable) unless the project keeps the VM running.
pub fn hold(
    folder: &Path,
    spec: &VmSpec,
    started: bool,
    shell_pid: Option<i32>,
    report: &dyn Report,
) -> crate::Result<()> {
    let dir = VmDir::of(&spec.name)?;
    if started {
        std::fs::write(marker(&dir), b"")
            .with_context(|| format!("cannot write {}", marker(&dir).display()))?;
    }
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    let shell = shell_pid.unwrap_or_else(|| lease::shell_of(parent));
    let l = lease::Lease::of(shell).with_context(|| format!("no process {shell}"))?;
    lease::register(&dir.path, l)?;
    let config = super::load(folder, report)?
        .config
        .direnv
        .unwrap_or_default();
    if !config.keep_running && marker(&dir).exists() {
        let grace = config.grace_secs.unwrap_or(60).to_string();
        crate::lifecycle::spawn_detached(
            &[
                "_linger".as_ref(),
                spec.name.as_ref(),
                "--grace".as_ref(),
                grace.as_ref(),
            ],
            &dir.path.join("linger.log"),
        )
        .context("cannot start the watcher that stops the VM on leaving")?;
    }
    Ok(())
}

/// The variables a shell in the folder gets.
pub fn exports(spec: &VmSpec) -> Vec<(String, String)> {
    let mut v = vec![("MVM_VM".to_string(), spec.name.clone())];
    if spec.network {
        v.push(("MVM_VM_HOST".into(), format!("{}.mvm", spec.name)));
        if let Some(ip) = crate::net::ip(spec) {
            v.push(("MVM_VM_IP".into(), ip));
        }
    }
    for p in &spec.ports {
        v.push((
            format!("MVM_PORT_{}", p.guest_port),
            p.host_port.to_string(),
        ));
    }
    v
}

/// The watcher: one per VM (an flock), until the VM stops.
pub fn linger(name: &str, grace: Duration, report: &dyn Report) -> crate::Result<()> {
    let dir = VmDir::existing(name)?;
    let Ok(_only) = VmLock::acquire_named(&dir.path, "linger.lock") else {
        return Ok(()); // another watcher has it
    };
    let project = dir.spec()?.project.context("the VM has no project")?;
    let mut empty_since: Option<Instant> = None;
    loop {
        if !matches!(dir.run_state(), RunState::Running | RunState::Paused) {
            let _ = std::fs::remove_file(marker(&dir));
            return Ok(());
        }
        if lease::prune(&dir.path, &project) > 0 {
            empty_since = None;
        } else if empty_since.get_or_insert_with(Instant::now).elapsed() >= grace {
            if !marker(&dir).exists() {
                return Ok(()); // brought up by hand since: not ours to stop
            }
            report.progress(&format!(
                "no shell in {} for {}s: stopping VM '{}'",
                project.display(),
                grace.as_secs(),
                dir.name
            ));
            let _lock = VmLock::acquire(&dir.path, &dir.name, report)?;
            crate::lifecycle::stop_locked(&dir, Duration::from_secs(10), report)?;
            let _ = std::fs::remove_file(marker(&dir));
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
