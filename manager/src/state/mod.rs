//! The state directory: one folder per VM under `$MVM_HOME/vms/`, holding
//! its spec (`vm.toml`) and, while it runs, its VMM's pid, sockets and logs.

mod host_paths;
mod lock;
mod share_names;
mod spec;

pub use host_paths::{
    home_relative, host_home, refuse_pseudo_fs, resolve_home, HomeShares, GUEST_HOME,
};
pub use lock::VmLock;
pub use share_names::{validate_guest_path, validate_share_tag};
pub use spec::{new_id as spec_new_id, validate_name, ExtraShare, VmSpec};

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{bail, Context};

/// `$MVM_HOME`, else `$XDG_DATA_HOME/mvm`, else `~/.local/share/mvm`.
pub fn home() -> crate::Result<PathBuf> {
    if let Some(h) = std::env::var_os("MVM_HOME").filter(|v| !v.is_empty()) {
        return Ok(h.into());
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(d).join("mvm"));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".local/share/mvm")),
        None => bail!("cannot find the state directory: set MVM_HOME or HOME"),
    }
}

/// Creates `path` (and missing parents) readable by its owner only, and
/// makes it 0700 if it was already there: upper layers and VM state hold
/// what the guest wrote, which no other host user should reach.
pub fn create_private_dir(path: &Path) -> crate::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)))
        .with_context(|| format!("cannot create {}", path.display()))
}

/// Creates a share's upper layer. Its parents are private (0700, made by
/// [`create_private_dir`]), but the guest sees the share's root with the
/// upper's own mode: it takes the host folder's, or a 0700 root would lock
/// every guest user but root out (services with `user = ...`).
pub fn create_upper_dir(upper: &Path, lower: &Path) -> crate::Result<()> {
    create_private_dir(upper)?;
    let mode = std::fs::metadata(lower)
        .with_context(|| format!("cannot read {}", lower.display()))?
        .permissions();
    std::fs::set_permissions(upper, mode)
        .with_context(|| format!("cannot set the mode of {}", upper.display()))
}

pub fn vms_dir() -> crate::Result<PathBuf> {
    Ok(home()?.join("vms"))
}

/// What a VM is doing, as far as the host can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Stopped,
    Running,
    Paused,
    /// The VMM process died without cleaning up (killed, crashed).
    Crashed,
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunState::Stopped => "stopped",
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Crashed => "crashed",
        })
    }
}

/// A VM's folder.
#[derive(Debug, Clone)]
pub struct VmDir {
    pub name: String,
    pub path: PathBuf,
}

impl VmDir {
    pub fn of(name: &str) -> crate::Result<VmDir> {
        validate_name(name)?;
        Ok(VmDir {
            name: name.to_string(),
            path: vms_dir()?.join(name),
        })
    }

    /// The VM folder, which must exist.
    pub fn existing(name: &str) -> crate::Result<VmDir> {
        let dir = VmDir::of(name)?;
        if !dir.spec_path().exists() {
            return Err(crate::Error::NoSuchVm(name.to_string()));
        }
        Ok(dir)
    }

    pub fn spec_path(&self) -> PathBuf {
        self.path.join("vm.toml")
    }
    pub fn pid_path(&self) -> PathBuf {
        self.path.join("pid")
    }
    pub fn api_socket(&self) -> PathBuf {
        self.path.join("api.sock")
    }
    pub fn vsock_socket(&self) -> PathBuf {
        self.path.join("vsock.sock")
    }
    pub fn console_log(&self) -> PathBuf {
        self.path.join("console.log")
    }
    pub fn vmm_log(&self) -> PathBuf {
        self.path.join("vmm.log")
    }
    pub fn vmm_config(&self) -> PathBuf {
        self.path.join("vmm.json")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.path.join("run")
    }
    /// Persistent upper layers and other state kept across restarts.
    pub fn state_dir(&self) -> PathBuf {
        self.path.join("state")
    }

    /// The upper layer of share `tag`: kept under state/ for persistent
    /// VMs, under run/ (dropped at stop) otherwise.
    pub fn upper_dir(&self, spec: &VmSpec, tag: &str) -> PathBuf {
        let base = if spec.persistent {
            self.state_dir()
        } else {
            self.run_dir()
        };
        base.join("upper").join(tag)
    }

    pub fn spec(&self) -> crate::Result<VmSpec> {
        VmSpec::load(&self.spec_path())
    }

    /// The VMM's pid, if a pid file is there.
    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.pid_path())
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .filter(|&p| p > 0)
    }

    /// Running, paused, stopped or crashed: a pid file whose process is
    /// gone (or is not our VMM) means crashed.
    pub fn run_state(&self) -> RunState {
        let Some(pid) = self.pid() else {
            return RunState::Stopped;
        };
        if !process_is_vmm(pid, &self.path) {
            return RunState::Crashed;
        }
        match vmm::api::call(
            &self.api_socket(),
            &vmm::api::ApiRequest::Status,
            Duration::from_secs(2),
        ) {
            Ok(r) if r.state == Some(vmm::api::VmState::Paused) => RunState::Paused,
            _ => RunState::Running,
        }
    }

    /// Removes what a VMM leaves while it runs (pid, sockets, run dir).
    pub fn clear_runtime(&self) -> crate::Result<()> {
        for f in [
            self.pid_path(),
            self.api_socket(),
            self.vsock_socket(),
            self.path.join("net.json"),
        ] {
            remove_if_exists(&f)?;
        }
        if let Ok(entries) = std::fs::read_dir(&self.path) {
            for e in entries.flatten() {
                // Host-side vsock listeners: vsock.sock_<port>.
                if e.file_name().to_string_lossy().starts_with("vsock.sock_") {
                    remove_if_exists(&e.path())?;
                }
            }
        }
        let run = self.run_dir();
        if run.exists() {
            std::fs::remove_dir_all(&run)
                .with_context(|| format!("cannot remove {}", run.display()))?;
        }
        Ok(())
    }
}

pub fn remove_if_exists(p: &Path) -> crate::Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", p.display())),
    }
}

/// True when `pid` is alive and is an `mvm _vmm` for this VM folder (a
/// recycled pid belongs to someone else).
pub fn process_is_vmm(pid: i32, vm_dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    // A zombie has an empty cmdline: it is gone as far as we care.
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    args.iter().any(|a| *a == b"_vmm")
        && args
            .iter()
            .any(|a| Path::new(std::str::from_utf8(a).unwrap_or("")) == vm_dir)
}

/// All VM folders, sorted by name.
pub fn all_vms() -> crate::Result<Vec<VmDir>> {
    let dir = vms_dir()?;
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if validate_name(&name).is_ok() && e.path().join("vm.toml").exists() {
            out.push(VmDir {
                name,
                path: e.path(),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// What `mvm list` shows of a VM (its JSON is `mvm list --json`'s).
#[derive(Debug, Clone, serde::Serialize)]
pub struct VmInfo {
    pub name: String,
    pub state: RunState,
    pub ip: Option<String>,
    pub ports: Vec<String>,
    pub cpus: u8,
    pub memory_mib: u64,
    pub uptime_s: Option<u64>,
    pub project: Option<String>,
    pub pid: Option<i32>,
}

fn uptime_s(dir: &VmDir) -> Option<u64> {
    let r = vmm::api::call(
        &dir.api_socket(),
        &vmm::api::ApiRequest::Status,
        std::time::Duration::from_secs(1),
    )
    .ok()?;
    r.uptime_ms.map(|ms| ms / 1000)
}

/// Every VM, by name, with its state; an unreadable one is skipped (and
/// said).
pub fn list(report: &dyn crate::Report) -> crate::Result<Vec<VmInfo>> {
    let mut rows = Vec::new();
    for dir in all_vms()? {
        let Ok(spec) = dir.spec() else {
            report.progress(&format!(
                "skipping {}: unreadable vm.toml",
                dir.path.display()
            ));
            continue;
        };
        let state = dir.run_state();
        let running = matches!(state, RunState::Running | RunState::Paused);
        rows.push(VmInfo {
            name: spec.name.clone(),
            state,
            ip: if running && spec.network {
                crate::net::ip(&spec)
            } else {
                None
            },
            ports: spec.ports.iter().map(|p| p.describe()).collect(),
            cpus: spec.cpus,
            memory_mib: spec.memory_mib,
            uptime_s: if running { uptime_s(&dir) } else { None },
            project: spec.project.as_ref().map(|p| p.display().to_string()),
            pid: if running { dir.pid() } else { None },
        });
    }
    Ok(rows)
}
