//! The VMM's jail, after Firecracker's jailer: a process that builds a VM
//! as root (KVM, guest memory, taps, share and socket fds, all opened by
//! [`crate::Vm::new`]) then, before it runs the guest, gives up what it
//! does not need to serve it:
//!
//! - its own **mount, IPC and UTS namespaces** ([`unshare_namespaces`], at
//!   process start, while the process has one thread, so every thread
//!   shares them);
//! - a **new root** ([`JailConfig::enter`]): an empty read-only tmpfs
//!   holding only the folders named in [`JailConfig::keep`] (bind-mounted
//!   at their own paths, `nosuid,nodev,noexec`) and a `/proc` that lists
//!   only the processes this one may see (the file server reopens its own
//!   fds through `/proc/self/fd`). No `/dev`, no `/etc`, no home: a
//!   device or file-server bug cannot open a host path by name; it has
//!   the fds it was given;
//! - its **credentials**: with [`JailConfig::user`] set, every uid and gid
//!   becomes that user's and every capability goes; as root otherwise,
//!   the capabilities (bounding, permitted, effective, inheritable,
//!   ambient) shrink to [`ROOT_CAPS`], what serving shares with the
//!   guest's file owners takes; a VMM started by a user takes its
//!   namespaces inside a user namespace mapping only itself, and keeps no
//!   capability in it;
//! - `no_new_privs`, so nothing it could still exec gains any.
//!
//! seccomp ([`crate::seccomp`]) then filters what is left, and the cgroup
//! (the manager's) bounds its CPU, memory and tasks.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

/// Why the jail could not be entered.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("jail: {0} failed: {1}")]
    Sys(String, std::io::Error),
    #[error("jail: {0}")]
    Setup(String),
}

/// The capabilities a jailed VMM that stays root keeps: set the owners
/// the guest gives its files (CHOWN, FOWNER, FSETID), read and write
/// share files whatever their mode (DAC_*), and let a port forward bind
/// a port below 1024 on the host (NET_BIND_SERVICE). No SYS_ADMIN,
/// NET_ADMIN, SYS_MODULE, SYS_PTRACE, KILL, SETUID, MKNOD...
pub const ROOT_CAPS: &[u32] = &[
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    2,  // CAP_DAC_READ_SEARCH
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    10, // CAP_NET_BIND_SERVICE
];

/// What the VMM keeps inside its jail.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JailConfig {
    /// An empty folder the jail's root is mounted on (in the VMM's own
    /// mount namespace; the host sees it stay empty).
    pub root: PathBuf,
    /// Host folders that stay reachable, at the same paths: where the VMM
    /// writes after it starts (its console log's rotation, host-side vsock
    /// sockets). Shares need none: their fds are open already.
    pub keep: Vec<PathBuf>,
    /// Run as this (uid, gid), with no capabilities; None stays root
    /// with [`ROOT_CAPS`].
    pub user: Option<(u32, u32)>,
    /// Device nodes the VMM opens by name while the guest runs, bound in
    /// at their own paths (vhost-net: a new instance at each activation
    /// of the network device).
    #[serde(default)]
    pub devices: Vec<PathBuf>,
}

impl JailConfig {
    /// Whether the jailed process stops being root.
    pub fn drops_root(&self) -> bool {
        self.user.is_some_and(|(uid, _)| uid != 0)
    }
}

static UNSHARED: AtomicBool = AtomicBool::new(false);
/// Whether the namespaces were taken by root (else inside a user
/// namespace of the user's own).
static AS_ROOT: AtomicBool = AtomicBool::new(false);

/// Gives the calling process its own mount, IPC and UTS namespaces, with
/// every mount private (nothing it mounts shows on the host, nothing the
/// host mounts later shows in it). A user (not root) gets them inside a
/// user namespace that maps only itself, which is what lets it mount.
/// Call first thing in the process: the namespaces are per thread, so it
/// must be the only thread.
pub fn unshare_namespaces() -> Result<(), JailError> {
    require_one_thread("unsharing namespaces")?;
    // SAFETY: these calls have no preconditions.
    let (uid, gid, root) = unsafe { (libc::getuid(), libc::getgid(), libc::geteuid() == 0) };
    let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    if !root {
        flags |= libc::CLONE_NEWUSER;
    }
    // SAFETY: unshare takes flags only; the process is single-threaded.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(last(if root {
            "unshare(mount, ipc, uts)"
        } else {
            "unshare(user, mount, ipc, uts)"
        }));
    }
    if !root {
        // Itself and nothing else: files keep their owners, no one else's
        // id can be taken.
        let write = |file: &str, text: String| {
            std::fs::write(file, text).map_err(|e| JailError::Sys(format!("writing {file}"), e))
        };
        write("/proc/self/setgroups", "deny".into())?;
        write("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
        write("/proc/self/gid_map", format!("{gid} {gid} 1"))?;
    }
    mount(
        None::<&Path>,
        "/",
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    AS_ROOT.store(root, Ordering::SeqCst);
    UNSHARED.store(true, Ordering::SeqCst);
    Ok(())
}

/// [`unshare_namespaces`] as every VMM start uses it: root must get its
/// namespaces (an error otherwise), but a user may be refused a user
/// namespace in ways no knob shows (a sysctl, a chroot, a seccomp policy
/// of a systemd unit). Then `Ok(Some(why))`: the VMM runs without its
/// jail, and the caller says so.
pub fn unshare_namespaces_or_refusal() -> Result<Option<JailError>, JailError> {
    match unshare_namespaces() {
        Ok(()) => Ok(None),
        // SAFETY: geteuid has no preconditions.
        Err(e) if unsafe { libc::geteuid() } != 0 => Ok(Some(e)),
        Err(e) => Err(e),
    }
}

impl JailConfig {
    /// Moves the calling process into the jail: new root, credentials,
    /// `no_new_privs`. After [`unshare_namespaces`] and everything the VM
    /// opens by path, while the process still has one thread (capability
    /// changes are per thread; threads made later inherit them).
    pub fn enter(&self) -> Result<(), JailError> {
        if !UNSHARED.load(Ordering::SeqCst) {
            return Err(JailError::Setup(
                "unshare_namespaces() was not called at process start".into(),
            ));
        }
        require_one_thread("entering the jail")?;
        // Read before the host's /proc is gone.
        let last_cap = last_cap();
        self.pivot()?;
        match self.user {
            Some((uid, gid)) if uid != 0 => drop_to_user(uid, gid)?,
            _ if AS_ROOT.load(Ordering::SeqCst) => keep_only(ROOT_CAPS, last_cap)?,
            // A user's own namespace gave it capabilities there: none stay.
            _ => keep_only(&[], last_cap)?,
        }
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(last("prctl(PR_SET_NO_NEW_PRIVS)"));
        }
        Ok(())
    }

    fn pivot(&self) -> Result<(), JailError> {
        let root = &self.root;
        let secure = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        mount(
            Some("tmpfs"),
            root,
            Some("tmpfs"),
            secure,
            Some("mode=0755,size=1m,nr_inodes=256"),
        )?;
        for path in &self.keep {
            let target = root.join(path.strip_prefix("/").unwrap_or(path));
            std::fs::create_dir_all(&target)
                .map_err(|e| JailError::Sys(format!("mkdir {}", target.display()), e))?;
            mount(Some(path), &target, None, libc::MS_BIND, None)?;
            mount(
                None::<&Path>,
                &target,
                None,
                libc::MS_REMOUNT | libc::MS_BIND | secure,
                None,
            )?;
        }
        for dev in &self.devices {
            let target = root.join(dev.strip_prefix("/").unwrap_or(dev));
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| JailError::Sys(format!("mkdir {}", parent.display()), e))?;
            }
            std::fs::File::create(&target)
                .map_err(|e| JailError::Sys(format!("creating {}", target.display()), e))?;
            mount(Some(dev), &target, None, libc::MS_BIND, None)?;
            let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NOEXEC;
            mount(None::<&Path>, &target, None, flags, None)?;
        }
        let proc_dir = root.join("proc");
        std::fs::create_dir(&proc_dir)
            .map_err(|e| JailError::Sys(format!("mkdir {}", proc_dir.display()), e))?;
        // Only this process's own entries (subset=pid: no /proc/sys, no
        // /proc/kcore...; hidepid: no one else's processes).
        let proc_opts = "hidepid=invisible,subset=pid";
        if mount(Some("proc"), &proc_dir, Some("proc"), secure, Some(proc_opts)).is_err()
            // Kernels before 5.8 know neither option.
            && mount(Some("proc"), &proc_dir, Some("proc"), secure, None).is_err()
        {
            // In a user namespace without a PID namespace of its own a new
            // proc cannot be mounted: the host's, as the user sees it.
            mount(
                Some("/proc"),
                &proc_dir,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            )?;
        }
        chdir(root)?;
        // pivot_root(".", "."): the old root ends up under the new one,
        // where the lazy unmount below removes it from this namespace.
        let dot = c".";
        // SAFETY: both arguments are valid NUL-terminated strings.
        if unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) } != 0 {
            return Err(last("pivot_root"));
        }
        // SAFETY: a valid NUL-terminated path and integer flags.
        if unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(last("unmounting the old root"));
        }
        chdir(Path::new("/"))?;
        mount(
            None::<&Path>,
            "/",
            None,
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | secure,
            None,
        )
    }
}

/// Every uid and gid to `uid`/`gid`, no supplementary groups; leaving
/// uid 0 clears every capability set (no SECBIT_KEEP_CAPS).
fn drop_to_user(uid: u32, gid: u32) -> Result<(), JailError> {
    // SAFETY: setgroups with a zero-length list reads nothing.
    if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 {
        return Err(last("setgroups"));
    }
    // SAFETY: integer arguments only.
    if unsafe { libc::setresgid(gid, gid, gid) } != 0 {
        return Err(last("setresgid"));
    }
    // SAFETY: integer arguments only.
    if unsafe { libc::setresuid(uid, uid, uid) } != 0 {
        return Err(last("setresuid"));
    }
    // Leaving root clears the capabilities; the ambient set too, but
    // clear it explicitly in case a kernel keeps it.
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    Ok(())
}

/// Shrinks every capability set of the calling thread to `keep` (all
/// of the process's if it has one thread).
pub fn keep_capabilities(keep: &[u32]) -> Result<(), JailError> {
    keep_only(keep, last_cap())
}

/// Shrinks every capability set to `keep`.
fn keep_only(keep: &[u32], last_cap: u32) -> Result<(), JailError> {
    for cap in 0..=last_cap {
        if !keep.contains(&cap) {
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
                return Err(last(&format!(
                    "dropping capability {cap} from the bounding set"
                )));
            }
        }
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    } != 0
    {
        return Err(last("clearing the ambient capabilities"));
    }
    let mask = keep.iter().fold(0u64, |m, &c| m | 1 << c);
    let header = CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let half = |shift: u32| CapData {
        effective: (mask >> shift) as u32,
        permitted: (mask >> shift) as u32,
        inheritable: 0,
    };
    let data = [half(0), half(32)];
    // SAFETY: capset reads one header and, for version 3, two data
    // structs, which is what we pass.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(last("capset"));
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The highest capability number this kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Whether a user (not root) may take the jail's user namespace here:
/// the kernel knobs that forbid one, named when set.
pub fn user_namespaces_allowed() -> Result<(), String> {
    let knob = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
    };
    if knob("/proc/sys/user/max_user_namespaces") == Some(0) {
        return Err("user.max_user_namespaces is 0".into());
    }
    if knob("/proc/sys/kernel/unprivileged_userns_clone") == Some(0) {
        return Err("kernel.unprivileged_userns_clone is 0".into());
    }
    if knob("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == Some(1) {
        return Err("kernel.apparmor_restrict_unprivileged_userns is 1".into());
    }
    Ok(())
}

/// Namespaces and capabilities are per thread: both steps must run while
/// the process has exactly one. A thread joined just before (the VM
/// builder's loader) may still be leaving: the join returns once it has
/// stopped running, a moment before the kernel drops it from the process,
/// so a count above one is read again for up to a second.
fn require_one_thread(what: &str) -> Result<(), JailError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let threads = thread_count()?;
        if threads == Some(1) {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(JailError::Setup(format!(
                "{what} needs a single-threaded process, this one has {} threads",
                threads.map_or("?".into(), |n| n.to_string())
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn thread_count() -> Result<Option<u32>, JailError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| JailError::Sys("reading /proc/self/status".into(), e))?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse::<u32>().ok()))
}

fn cstr(p: impl AsRef<Path>) -> Result<CString, JailError> {
    CString::new(p.as_ref().as_os_str().as_bytes())
        .map_err(|_| JailError::Setup(format!("{} holds a NUL byte", p.as_ref().display())))
}

fn mount(
    source: Option<impl AsRef<Path>>,
    target: impl AsRef<Path>,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), JailError> {
    let target = target.as_ref();
    let src = source.map(cstr).transpose()?;
    let tgt = cstr(target)?;
    let fst = fstype.map(cstr).transpose()?;
    let dat = data.map(cstr).transpose()?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is null or a valid NUL-terminated string that
    // outlives the call.
    let rc = unsafe { libc::mount(ptr(&src), tgt.as_ptr(), ptr(&fst), flags, ptr(&dat).cast()) };
    if rc != 0 {
        return Err(last(&format!("mount {}", target.display())));
    }
    Ok(())
}

fn chdir(p: &Path) -> Result<(), JailError> {
    std::env::set_current_dir(p).map_err(|e| JailError::Sys(format!("chdir {}", p.display()), e))
}

fn last(what: &str) -> JailError {
    JailError::Sys(what.to_string(), std::io::Error::last_os_error())
}
