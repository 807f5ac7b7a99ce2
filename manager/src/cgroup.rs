//! cgroup v2 per VM: a VM's VMM process runs in its own cgroup, so what it
//! may take from the host is bounded whatever its guest does:
//! - `cpu.max`: the VM's vCPUs at full speed plus half a CPU for its
//!   device thread;
//! - `memory.max`: guest RAM plus [`VMM_OVERHEAD_MIB`] for the VMM itself
//!   (device buffers, the file servers' tables); past it the kernel
//!   reclaims the VM's page cache and then kills the VM, not a host
//!   process; swap is off for it (`memory.swap.max` 0);
//! - `pids.max`: [`MAX_TASKS`] threads.
//!
//! Layout: `<cgroup2 mount>/mvm/<vm>.<id>`; the `mvm` parent delegates the
//! three controllers. The VMM moves itself in before it allocates guest
//! memory and moves back out (to the root) to remove the cgroup when the
//! VM ends; a cgroup left by a killed VMM is removed at the next start.
//! Only root may do this: an unprivileged VMM, or a host without a
//! cgroup v2 offering the controllers (a hybrid v1 layout), runs without
//! one and the start says so in one line (`mvm doctor` says how to get
//! one).

use std::path::{Path, PathBuf};

/// Memory the VMM may use beyond guest RAM.
pub const VMM_OVERHEAD_MIB: u64 = 256;
/// Threads (vCPUs, devices, port relays) one VM may run.
pub const MAX_TASKS: u64 = 4096;
const PERIOD_US: u64 = 100_000;
const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup v2 with the cpu, memory and pids controllers is mounted{0}")]
    Unavailable(&'static str),
    #[error("cannot set up cgroup {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a VM's cgroup allows.
#[derive(Debug, Clone, Copy)]
pub struct CgroupLimits {
    pub cpus: u8,
    pub memory_mib: u64,
}

/// The cgroup of one VM.
#[derive(Debug)]
pub struct VmCgroup {
    path: PathBuf,
    /// The root cgroup's `cgroup.procs`, to move back to.
    root_procs: std::fs::File,
    /// The `mvm` cgroup folder and this VM's name in it, to remove it.
    parent: std::fs::File,
    name: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(io(path))
}

/// The cgroup v2 mount point whose root offers the controllers, if any.
pub fn mount_point() -> Result<PathBuf, CgroupError> {
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(CgroupError::Unavailable(
            " for this user (mvm needs root to make one)",
        ));
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in info.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS... - FSTYPE SOURCE OPTS
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split(' ').next() != Some("cgroup2") {
            continue;
        }
        let Some(mnt) = left.split(' ').nth(4) else {
            continue;
        };
        let mnt = PathBuf::from(mnt.replace("\\040", " "));
        let offered = std::fs::read_to_string(mnt.join("cgroup.controllers")).unwrap_or_default();
        if CONTROLLERS
            .iter()
            .all(|c| offered.split_whitespace().any(|o| o == *c))
        {
            return Ok(mnt);
        }
    }
    Err(CgroupError::Unavailable(""))
}

impl VmCgroup {
    /// Creates (or resets) the cgroup of VM `name` with `limits`.
    pub fn create(name: &str, limits: CgroupLimits) -> Result<Self, CgroupError> {
        let mount = mount_point()?;
        let parent = mount.join("mvm");
        let enable = CONTROLLERS.map(|c| format!("+{c}")).join(" ");
        write(&mount.join("cgroup.subtree_control"), &enable)?;
        match std::fs::create_dir(&parent) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(&parent)(e)),
        }
        write(&parent.join("cgroup.subtree_control"), &enable)?;
        let path = parent.join(name);
        remove_dir(&path)?;
        std::fs::create_dir(&path).map_err(io(&path))?;
        // Opened now: a jailed VMM leaves and removes its cgroup through
        // these, without /sys.
        let root_procs = mount.join("cgroup.procs");
        let cg = VmCgroup {
            root_procs: std::fs::OpenOptions::new()
                .write(true)
                .open(&root_procs)
                .map_err(io(&root_procs))?,
            parent: std::fs::File::open(&parent).map_err(io(&parent))?,
            name: name.to_string(),
            path,
        };
        let quota = u64::from(limits.cpus) * PERIOD_US + PERIOD_US / 2;
        write(&cg.path.join("cpu.max"), &format!("{quota} {PERIOD_US}"))?;
        let bytes = (limits.memory_mib + VMM_OVERHEAD_MIB) << 20;
        write(&cg.path.join("memory.max"), &bytes.to_string())?;
        // Not every kernel has swap accounting.
        let _ = std::fs::write(cg.path.join("memory.swap.max"), "0");
        write(&cg.path.join("pids.max"), &MAX_TASKS.to_string())?;
        Ok(cg)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the calling process (all its threads) into the cgroup.
    pub fn enter(&self) -> Result<(), CgroupError> {
        write(
            &self.path.join("cgroup.procs"),
            &std::process::id().to_string(),
        )
    }

    /// Moves the calling process back to the root cgroup and removes the
    /// VM's (the VM ended).
    pub fn leave_and_remove(self) -> Result<(), CgroupError> {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        (&self.root_procs)
            .write_all(std::process::id().to_string().as_bytes())
            .map_err(io(&self.path))?;
        let name = std::ffi::CString::new(self.name.as_bytes())
            .map_err(|_| io(&self.path)(std::io::ErrorKind::InvalidInput.into()))?;
        // SAFETY: a valid directory fd and NUL-terminated name.
        if unsafe { libc::unlinkat(self.parent.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) }
            != 0
        {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(io(&self.path)(e));
            }
        }
        Ok(())
    }
}

/// The cgroup's name for a VM: its name and id (two VM folders, e.g. two
/// MVM_HOMEs, may hold VMs of one name).
pub fn key(dir: &crate::state::VmDir) -> String {
    match dir.spec() {
        Ok(spec) => format!("{}.{}", dir.name, spec.id),
        Err(_) => dir.name.clone(),
    }
}

/// Removes the cgroup a killed VMM of VM `name` left (best effort: no
/// cgroup v2, nothing to do).
pub fn remove_stale(name: &str) {
    if let Ok(mount) = mount_point() {
        let _ = remove_dir(&mount.join("mvm").join(name));
    }
}

/// Removes an empty cgroup directory (its control files go with it).
fn remove_dir(path: &Path) -> Result<(), CgroupError> {
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}
