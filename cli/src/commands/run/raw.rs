//! `mvm run --initrd`: a kernel and initramfs in a VM of their own (shares
//! from the command line with scratch upper layers, the console on stdout),
//! run by a jailed child; exits when the guest does.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use manager::net::NetMode;
use vmm::{Console, Vm, VmConfig};

use manager::image::kernel_path;

use super::RunArgs;
use crate::report::Stderr;

#[derive(Clone, Debug)]
pub struct ShareArg {
    pub path: PathBuf,
    pub tag: String,
    pub mode: vmm::ShareMode,
    pub xattr: bool,
}

/// A share's mode with an optional `,xattr`: `cow`, `ro,xattr`...
fn parse_mode(m: &str) -> Option<(vmm::ShareMode, bool)> {
    match m.split_once(',') {
        Some((mode, "xattr")) => Some((mode.parse().ok()?, true)),
        Some(_) => None,
        None => Some((m.parse().ok()?, false)),
    }
}

pub fn parse_share(s: &str) -> Result<ShareArg, String> {
    let bad = || format!("invalid share '{s}': expected HOST_DIR:TAG[:cow|:ro|:rw][,xattr]");
    let mut parts = s.rsplitn(3, ':').collect::<Vec<_>>();
    parts.reverse();
    let (path, tag, (mode, xattr)) = match parts.as_slice() {
        [p, t] => (*p, *t, (vmm::ShareMode::Cow, false)),
        [p, t, m] => match parse_mode(m) {
            Some(mode) => (*p, *t, mode),
            // A ':' in the path: the last part is the tag.
            None => {
                let share = parse_share_two(s).ok_or_else(bad)?;
                manager::state::validate_share_tag(&share.tag)?;
                return Ok(share);
            }
        },
        _ => return Err(bad()),
    };
    if path.is_empty() || tag.is_empty() {
        return Err(bad());
    }
    // The tag names the share's upper folder on the host.
    manager::state::validate_share_tag(tag)?;
    Ok(ShareArg {
        path: path.into(),
        tag: tag.into(),
        mode,
        xattr,
    })
}

pub fn parse_vhost_user_fs(s: &str) -> Result<vmm::VhostUserFsConfig, String> {
    let bad = || {
        format!("invalid vhost-user-fs '{s}': expected SOCKET:TAG[:QUEUE_SIZE] (queue size a power of two, 2 to 32768)")
    };
    let mut parts: Vec<&str> = s.rsplitn(3, ':').collect();
    parts.reverse();
    // A trailing number is the queue size; otherwise the last part is the tag.
    let (socket, tag, queue_size) = match parts.as_slice() {
        [p, t, q] if q.chars().all(|c| c.is_ascii_digit()) => {
            let q: u16 = q.parse().map_err(|_| bad())?;
            (p.to_string(), *t, q)
        }
        _ => {
            let (p, t) = s.rsplit_once(':').ok_or_else(bad)?;
            (
                p.to_string(),
                t,
                vmm::config::DEFAULT_VHOST_USER_FS_QUEUE_SIZE,
            )
        }
    };
    if socket.is_empty() || tag.is_empty() || !queue_size.is_power_of_two() || queue_size < 2 {
        return Err(bad());
    }
    manager::state::validate_share_tag(tag)?;
    Ok(vmm::VhostUserFsConfig {
        socket: socket.into(),
        tag: tag.into(),
        queue_size,
    })
}

fn parse_share_two(s: &str) -> Option<ShareArg> {
    let (p, t) = s.rsplit_once(':')?;
    // A ',' belongs to a mode's options (`cow,xattr`), never to a tag.
    (!p.is_empty() && !t.is_empty() && !t.contains(',')).then(|| ShareArg {
        path: p.into(),
        tag: t.into(),
        mode: vmm::ShareMode::Cow,
        xattr: false,
    })
}

/// Upper layers of a one-off VM's copy-on-write shares: removed when the
/// VM ends (or the run fails).
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new() -> anyhow::Result<ScratchDir> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        remove_stale(&base);
        let dir = make_temp_dir(&base.join(format!("mvm-run-{}-", std::process::id())))?;
        Ok(ScratchDir(dir))
    }
}

/// mkdtemp(3) of `prefix` + six random characters: a fresh folder of mode
/// 0700 that no other user (nor a name planted in a shared /tmp) owns.
fn make_temp_dir(prefix: &std::path::Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut template = prefix.as_os_str().as_bytes().to_vec();
    template.extend_from_slice(b"XXXXXX\0");
    // SAFETY: `template` is a writable NUL-terminated buffer ending in
    // "XXXXXX", which mkdtemp rewrites in place and does not keep.
    let made = unsafe { libc::mkdtemp(template.as_mut_ptr().cast()) };
    if made.is_null() {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot create {}XXXXXX", prefix.display()));
    }
    template.pop();
    Ok(PathBuf::from(std::ffi::OsString::from_vec(template)))
}

/// Removes scratch folders of `mvm run`s that were killed (their pid is
/// gone), so a SIGKILL leaves nothing behind for long.
fn remove_stale(base: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("mvm-run-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Turns share arguments into share configs with uppers in `scratch`.
pub fn share_configs(
    shares: &[ShareArg],
    project: Option<&PathBuf>,
    scratch: &ScratchDir,
) -> anyhow::Result<(Vec<vmm::ShareConfig>, String)> {
    let mut all: Vec<ShareArg> = shares.to_vec();
    let mut cmdline = String::new();
    if let Some(p) = project {
        all.push(ShareArg {
            path: p.clone(),
            tag: "project".into(),
            mode: vmm::ShareMode::Cow,
            xattr: false,
        });
        let mut w = agent_proto::cmdline::Writer::new();
        w.share("project", "/project", false);
        cmdline.push_str(&w.appended());
    }
    let mut out = Vec::new();
    for s in all {
        let path = std::fs::canonicalize(&s.path).map_err(|_| {
            anyhow::anyhow!("share '{}': {} does not exist", s.tag, s.path.display())
        })?;
        manager::state::refuse_pseudo_fs(&path)
            .map_err(|e| anyhow::anyhow!("share '{}': {e}", s.tag))?;
        let upper = if s.mode == vmm::ShareMode::Cow {
            let u = scratch.0.join("upper").join(&s.tag);
            manager::state::create_upper_dir(&u, &path)?;
            Some(u)
        } else {
            None
        };
        out.push(vmm::ShareConfig {
            tag: s.tag,
            path,
            mode: s.mode,
            upper,
            masked: Vec::new(),
            visible: None,
            hidden: Vec::new(),
            serve_on_event_loop: false,
            xattr: s.xattr,
        });
    }
    Ok((out, cmdline))
}

fn console(arg: &str) -> Console {
    match arg {
        "stdout" | "-" => Console::Stdout,
        "none" => Console::Null,
        path => Console::File(path.into()),
    }
}

/// `mvm run --initrd`: boots the kernel and initramfs in a jailed child.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    if !args.share_home.is_empty() {
        anyhow::bail!(
            "--share-home applies to project VMs (without --initrd); with --initrd use --share"
        );
    }
    if !args.volumes.is_empty() {
        anyhow::bail!("--volume applies to project VMs (without --initrd)");
    }
    if !args.command.is_empty() {
        anyhow::bail!("a COMMAND runs in a project VM (without --initrd); with --initrd the guest's init decides what runs");
    }
    let mut config = VmConfig::new(kernel_path(args.kernel)?);
    config.initrd = args.initrd;
    config.cmdline = args.cmdline.unwrap_or_default();
    config.cpus = args.cpus;
    config.memory_mib = args.memory;
    config.console = console(&args.console);
    config.rng = !args.no_rng;
    config.allow_pvm_host = args.allow_pvm_host;
    config.seccomp = args.seccomp.unwrap_or(vmm::seccomp::Seccomp::Kill);
    // This process tears the network down once the VM ends (netlink,
    // nft): the filter covers the VM's own thread and those it starts.
    config.seccomp_scope = vmm::seccomp::Scope::Thread;
    config.upper_bytes = Some(args.disk.unwrap_or(manager::create::DEFAULT_DISK_MIB) << 20);
    let scratch = ScratchDir::new()?;
    let (shares, share_cmdline) = share_configs(&args.shares, args.project.as_ref(), &scratch)?;
    config.shares = shares;
    for tag in &args.fs_event_loop {
        let share = config.shares.iter_mut().find(|s| &s.tag == tag);
        let Some(share) = share else {
            bail!("--fs-event-loop {tag}: no share has that tag (give it with --share)");
        };
        share.serve_on_event_loop = true;
    }
    config.vhost_user_fs = args.vhost_user_fs;
    config.cmdline.push_str(&share_cmdline);
    // Ctrl-C, SIGTERM, SIGHUP: held until the VM exists, then they stop
    // it, so what it holds is released (tap, lease, upper layers) before
    // mvm exits.
    let held = crate::terminal::HeldSignals::hold();
    let mode = args.net.map(|n| n.mode(false)).unwrap_or(NetMode::None);
    if !args.allow_net.is_empty() && (args.no_net || mode.backend().is_none()) {
        bail!("--allow-net needs a network interface: add --net");
    }
    let net =
        match mode.backend() {
            Some(backend) if !args.no_net => {
                let n = manager::net::RawRunNet::attach(&args.allow_net, &Stderr)?;
                config.net = Some(manager::net::vmm_net(&n.net, backend, &Stderr));
                config
                    .cmdline
                    .push_str(&agent_proto::cmdline::Writer::new().dhcp().appended());
                eprintln!(
                "mvm: network: tap {}, MAC {}, DHCP address {} (gateway and DNS {}), name {}.mvm",
                n.net.tap, n.net.mac, n.net.ip, n.net.gateway(), n.net.name
            );
                Some(n)
            }
            _ => None,
        };

    // The VMM runs jailed in a child (a user's: in a user namespace of
    // its own, where the host allows one); this process waits, then
    // tears the network and the scratch folder down.
    // SAFETY: geteuid has no preconditions.
    let as_root = unsafe { libc::geteuid() } == 0;
    let jail = match vmm::jail::user_namespaces_allowed() {
        _ if args.no_jail => false,
        _ if as_root => true,
        Ok(()) => true,
        Err(e) => {
            eprintln!("mvm: the VMM runs without its jail ({e})");
            false
        }
    };
    if jail {
        config.jail = Some(raw_run_jail(&config, &scratch)?);
        config.seccomp_scope = vmm::seccomp::Scope::Process;
        match manager::supervisor::fork(None, manager::supervisor::EndReport::Early)? {
            manager::supervisor::Side::Parent(end) => {
                drop(net);
                drop(scratch);
                if let manager::supervisor::ChildEnd::Killed(sig) = end {
                    eprintln!("mvm: stopped by signal {sig}");
                }
                return Ok(ExitCode::from(end.exit_status() as u8));
            }
            manager::supervisor::Side::Child => {
                // The parent cleans up; the VMM only runs the VM.
                std::mem::forget(net);
                std::mem::forget(scratch);
                let refused =
                    vmm::jail::unshare_namespaces_or_refusal().map_err(vmm::Error::from)?;
                vmm::stages::stamp("namespaces");
                if let Some(e) = refused {
                    eprintln!("mvm: the VMM runs without its jail ({e})");
                    config.jail = None;
                }
                let code = run_vm(&config, held)?;
                // The VM and its devices are closed: the parent may clean
                // up and return while this process finishes leaving.
                manager::supervisor::report_end(code);
                return Ok(ExitCode::from(code));
            }
        }
    }
    let code = run_vm(&config, held)?;
    drop(net);
    drop(scratch);
    Ok(ExitCode::from(code))
}

/// The jail of `mvm run --initrd`: rooted in the scratch folder, keeping
/// the folders of the files the VMM writes by name (a console file, the
/// start-up report of the benches). Started with sudo, it runs as the
/// sudoing user with its scratch layers handed over; as plain root it
/// keeps [`vmm::jail::ROOT_CAPS`]; started by a user, it is that user in
/// a user namespace of its own, without capabilities.
fn raw_run_jail(config: &VmConfig, scratch: &ScratchDir) -> anyhow::Result<vmm::jail::JailConfig> {
    let root = scratch.0.join("jail");
    std::fs::create_dir(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let mut keep = Vec::new();
    let mut keep_dir_of = |p: &std::path::Path| {
        if let Some(dir) = p.parent().and_then(|d| std::fs::canonicalize(d).ok()) {
            if !keep.contains(&dir) {
                keep.push(dir);
            }
        }
    };
    if let Console::File(p) = &config.console {
        keep_dir_of(p);
    }
    if let Some(p) = std::env::var_os("MVM_STARTUP_REPORT") {
        keep_dir_of(std::path::Path::new(&p));
    }
    let id = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|&v| v != 0)
    };
    // SAFETY: geteuid has no preconditions.
    let as_root = unsafe { libc::geteuid() } == 0;
    let user = id("SUDO_UID").zip(id("SUDO_GID")).filter(|_| as_root);
    if let Some((uid, gid)) = user {
        for upper in config.shares.iter().filter_map(|s| s.upper.as_ref()) {
            cowfs::adopt_upper(upper, uid, gid).map_err(|e| {
                anyhow::anyhow!("cannot hand {} to uid {uid}: {e}", upper.display())
            })?;
        }
    }
    Ok(vmm::jail::JailConfig {
        root,
        keep,
        user,
        devices: manager::image::vhost_devices(config.net.as_ref()),
    })
}

/// Builds and runs the VM of `config` (jailed when it says so), stopping
/// it on the signals `held` kept; returns the exit status once the VM and
/// its devices are closed (KVM's own freeing of the VM waits for the
/// process's exit).
fn run_vm(config: &VmConfig, held: crate::terminal::HeldSignals) -> anyhow::Result<u8> {
    let stop = Arc::new(EarlyStop::default());
    vmm::stages::stamp("configured");
    let mut vm = Vm::new(config).map_err(crate::commands::in_flags)?;
    if let Some(jail) = &config.jail {
        jail.enter().map_err(vmm::Error::from)?;
        manager::supervisor::die_with_parent();
        vmm::stages::stamp("jail");
    }
    let on_signal = stop.clone();
    held.forward(move |sig| on_signal.signal(sig));
    let dumps = vmm::dump::dump_on_sigusr1(vm.dumper())
        .map_err(|e| tracing::warn!("no state dump on SIGUSR1: {e}"))
        .ok();
    if let Err(e) = vm.keep_kvm_open_until_exit() {
        tracing::debug!("KVM frees the VM before the exit status is known: {e}");
    }
    if let Some(path) = std::env::var_os("MVM_STARTUP_REPORT") {
        vm.on_first_run(move || manager::startup::write_report(path.as_ref()));
    }
    stop.arm(vm.stop_handle());
    let reason = if config.seccomp_scope == vmm::seccomp::Scope::Process {
        // The jailed child: the whole process is the VMM, filters and all.
        vm.run()
    } else {
        // Filters for the VM's thread only: this one tears down after.
        std::thread::Builder::new()
            .name("vmm".into())
            .spawn(move || vm.run())
            .context("cannot start the VM's thread")?
            .join()
            .map_err(|_| anyhow::anyhow!("the VM's thread panicked"))?
    }
    .context("the VM failed")?;
    // The dump thread holds the devices: their taps, files and locks.
    if let Some(d) = dumps {
        d.stop();
    }
    if let Some(sig) = stop.received() {
        eprintln!("mvm: stopped by signal {sig}");
        return Ok(128 + sig as u8);
    }
    Ok(crate::commands::exit_status(&reason))
}

/// A stop request that may arrive before the VM exists: kept until it does.
#[derive(Default)]
struct EarlyStop {
    handle: std::sync::Mutex<Option<vmm::StopHandle>>,
    signal: std::sync::atomic::AtomicI32,
}

impl EarlyStop {
    /// Records `sig` and stops the VM (now, or as soon as it is armed).
    /// A second signal while the first is handled exits at once: the next
    /// `mvm` reconciles what is left.
    fn signal(&self, sig: i32) -> bool {
        use std::sync::atomic::Ordering;
        if self.signal.swap(sig, Ordering::SeqCst) != 0 {
            std::process::exit(128 + sig);
        }
        if let Some(h) = self
            .handle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            h.stop();
        }
        true
    }

    fn arm(&self, handle: vmm::StopHandle) {
        let mut slot = self.handle.lock().unwrap_or_else(|e| e.into_inner());
        if self.received().is_some() {
            handle.stop();
        }
        *slot = Some(handle);
    }

    fn received(&self) -> Option<i32> {
        match self.signal.load(std::sync::atomic::Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_specs() {
        let s = parse_share("/src/web:web").unwrap();
        assert_eq!(
            (s.tag.as_str(), s.mode, s.xattr),
            ("web", vmm::ShareMode::Cow, false)
        );
        let s = parse_share("/data:d:rw,xattr").unwrap();
        assert_eq!(
            (s.path, s.mode, s.xattr),
            ("/data".into(), vmm::ShareMode::Rw, true)
        );
        // A ':' in the path: the last part is the tag.
        let s = parse_share("/a:b:tag").unwrap();
        assert_eq!((s.path, s.tag.as_str()), ("/a:b".into(), "tag"));
        for bad in ["/x", ":t", "/x:", "/x:t:cow,acl", "/x:t:cow,"] {
            let e = parse_share(bad).map(|_| ()).unwrap_err();
            assert!(e.contains(bad) && e.contains("[,xattr]"), "{bad}: {e}");
        }
        // A tag names a host folder (the upper layer): no way out of it.
        for bad in [
            "/x:..",
            "/x:../../etc:cow",
            "/x:a b",
            "/x:a\tb:ro",
            "/x:.hidden",
        ] {
            let e = parse_share(bad).map(|_| ()).unwrap_err();
            assert!(e.starts_with("invalid share tag"), "{bad}: {e}");
        }
        let e = parse_vhost_user_fs("/run/s.sock:../x")
            .map(|_| ())
            .unwrap_err();
        assert!(e.starts_with("invalid share tag"), "{e}");
    }

    #[test]
    fn scratch_and_upper_folders_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let base = std::env::temp_dir().join(format!("mvm-scratch-test-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let prefix = base.join(format!("mvm-run-{}-", std::process::id()));
        let (a, b) = (
            make_temp_dir(&prefix).unwrap(),
            make_temp_dir(&prefix).unwrap(),
        );
        assert_ne!(a, b);
        assert_eq!((mode(&a), mode(&b)), (0o700, 0o700));
        // A stale one (no such pid) goes, ours stays.
        let stale = base.join("mvm-run-999999999-abcdef");
        std::fs::create_dir(&stale).unwrap();
        remove_stale(&base);
        assert!(!stale.exists() && a.exists());
        // Upper layers: new and existing folders end up 0700.
        let upper = a.join("upper/project");
        manager::state::create_private_dir(&upper).unwrap();
        assert_eq!((mode(&a.join("upper")), mode(&upper)), (0o700, 0o700));
        std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(0o755)).unwrap();
        manager::state::create_private_dir(&upper).unwrap();
        assert_eq!(mode(&upper), 0o700);
        // A share's upper root shows the guest its host folder's mode (a
        // 0700 root locks non-root guest users out); its parents stay 0700.
        let lower = base.join("lower");
        std::fs::create_dir(&lower).unwrap();
        std::fs::set_permissions(&lower, std::fs::Permissions::from_mode(0o755)).unwrap();
        let share_upper = a.join("upper/root");
        manager::state::create_upper_dir(&share_upper, &lower).unwrap();
        assert_eq!((mode(&a.join("upper")), mode(&share_upper)), (0o700, 0o755));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
