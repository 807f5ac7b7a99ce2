//! What a managed VM boots: our kernel, an initramfs whose /init is
//! `mvm-init` (the guest agent), and the command line that tells mvm-init
//! what to set up.

use std::path::{Path, PathBuf};

use crate::error::{bail, Context};

pub mod cpio;

use crate::state::{VmDir, VmSpec};
use cpio::{CpioWriter, Entry};

/// The guest kernel: the spec's, then $MVM_KERNEL, then the cached build.
pub fn kernel(spec: &VmSpec) -> crate::Result<PathBuf> {
    kernel_path(spec.kernel.clone())
}

/// `given`, else $MVM_KERNEL, else the kernel guest-kernel/build.sh built.
pub fn kernel_path(given: Option<PathBuf>) -> crate::Result<PathBuf> {
    if let Some(k) = given {
        return Ok(k);
    }
    if let Some(k) = std::env::var_os("MVM_KERNEL").filter(|v| !v.is_empty()) {
        return Ok(k.into());
    }
    match crate::paths::cached_kernel() {
        Some(k) if k.exists() => Ok(k),
        Some(k) => bail!(
            "no guest kernel: pass --kernel PATH, set MVM_KERNEL, or build ours with guest-kernel/build.sh (looked for {})",
            k.display()
        ),
        None => bail!("no guest kernel: pass --kernel PATH or set MVM_KERNEL"),
    }
}

/// `mvm-init`: $MVM_INIT, else beside the running `mvm`.
pub fn mvm_init() -> crate::Result<PathBuf> {
    if let Some(p) = std::env::var_os("MVM_INIT").filter(|v| !v.is_empty()) {
        return Ok(p.into());
    }
    let exe = std::env::current_exe().context("cannot find the mvm executable")?;
    let beside = exe.with_file_name("mvm-init");
    if beside.exists() {
        return Ok(beside);
    }
    bail!(
        "the guest agent mvm-init was not found beside {} nor in $MVM_INIT; build it with `RUSTFLAGS='-C target-feature=+crt-static' cargo build --release -p mvm-init --target x86_64-unknown-linux-gnu`",
        exe.display()
    )
}

/// Static busybox, when the host has one: a rescue shell and tools in
/// guests that have no root share.
fn busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// The applets the host's busybox has (`busybox --list`); a short list of
/// essentials if it cannot say.
fn busybox_applets(bb: &Path) -> Vec<String> {
    let listed = std::process::Command::new(bb)
        .arg("--list")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut applets: Vec<String> = listed
        .lines()
        .map(str::trim)
        .filter(|a| {
            !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.[".contains(&b))
        })
        .filter(|a| *a != "busybox")
        .map(String::from)
        .collect();
    if applets.is_empty() {
        applets = ["sh", "ls", "cat", "echo", "mount", "ps", "kill", "sleep"]
            .map(String::from)
            .to_vec();
    }
    applets
}

/// Writes the initramfs to `out`.
pub fn write_initramfs(out: &Path) -> crate::Result<()> {
    let init = mvm_init()?;
    let init_bytes =
        std::fs::read(&init).with_context(|| format!("cannot read {}", init.display()))?;
    let file =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut w = CpioWriter::new(std::io::BufWriter::new(file));
    let io = |e: std::io::Error| crate::error::err!("cannot write {}: {e}", out.display());
    for dir in [
        "dev", "proc", "sys", "run", "tmp", "mnt", "root", "etc", "bin", "sbin", "usr", "usr/bin",
        "project",
    ] {
        w.add(dir, Entry::Dir).map_err(io)?;
    }
    // The kernel opens /dev/console for init's stdio before devtmpfs is up.
    w.add("dev/console", Entry::CharDevice { major: 5, minor: 1 })
        .map_err(io)?;
    w.add(
        "init",
        Entry::File {
            data: &init_bytes,
            executable: true,
        },
    )
    .map_err(io)?;
    if let Some(bb) = busybox() {
        let data = std::fs::read(&bb).with_context(|| format!("cannot read {}", bb.display()))?;
        w.add(
            "bin/busybox",
            Entry::File {
                data: &data,
                executable: true,
            },
        )
        .map_err(io)?;
        for applet in busybox_applets(&bb) {
            w.add(
                &format!("bin/{applet}"),
                Entry::Symlink { target: "busybox" },
            )
            .map_err(io)?;
        }
    }
    let mut buf = w.finish().map_err(io)?;
    std::io::Write::flush(&mut buf).map_err(io)?;
    Ok(())
}

/// Share tags of managed VMs.
pub const ROOT_TAG: &str = "root";
pub const PROJECT_TAG: &str = "project";
pub const HOME_TAG: &str = "home";

/// What the guest sees of the host's `/`, with [`EMPTY_IN_VIEW`]: the
/// system trees host tools need, each read-only under the VM's
/// copy-on-write layer; everything else is absent. Not what is in /home
/// and /root, nor /srv, /mnt, /media, /boot, nor whatever else a host
/// keeps at its top level. docs/guest-view.md says why each is here.
pub const SYSTEM_VIEW: &[&str] = &[
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/usr",
    "/etc",
    "/opt",
    // Nix and Guix: the store, profiles (NixOS's /run/current-system points
    // into /nix/var/nix/profiles), and the database for nix in the guest.
    "/nix",
    "/gnu",
    // Package databases only (dpkg -l, rpm -q); the rest of /var is data.
    "/var/lib/dpkg",
    "/var/lib/apt",
    "/var/lib/rpm",
    "/var/lib/pacman",
];

/// Folders of the view that show empty (masked): the guest mounts its own
/// there, or fills them itself. /root and /home exist, as homes do.
pub const EMPTY_IN_VIEW: &[&str] = &[
    "/root",
    "/home",
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/tmp",
    "/var/run",
    "/var/tmp",
    "/var/log",
    "/var/cache",
];

/// Every path of the view: the system trees and the empty folders.
fn view_paths() -> impl Iterator<Item = &'static str> {
    SYSTEM_VIEW.iter().chain(EMPTY_IN_VIEW).copied()
}

/// Secrets inside the view, absent for the guest. A trailing `*` matches
/// the names in that folder starting with what precedes it (expanded when
/// the VM starts).
pub const HIDDEN_SECRETS: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/ssh/ssh_host_*",
    "/etc/NetworkManager/system-connections",
    "/etc/wireguard",
    "/etc/openvpn",
    "/etc/ipsec.secrets",
    "/etc/ipsec.d/private",
    "/etc/ppp/chap-secrets",
    "/etc/ppp/pap-secrets",
    "/etc/ssl/private",
    "/etc/pki/tls/private",
    "/etc/letsencrypt",
    "/etc/krb5.keytab",
    "/etc/security/opasswd",
    "/etc/sssd",
    "/etc/samba/smbpasswd",
    "/etc/libvirt/secrets",
    "/etc/kubernetes",
    "/etc/rancher",
    "/etc/docker/key.json",
    "/etc/nix/netrc",
    "/etc/netrc",
    // An identifier machine-id(5) asks to keep confidential.
    "/etc/machine-id",
    "/nix/var/nix/daemon-socket",
];

/// The secrets as host paths, `*` patterns expanded now.
fn hidden_paths() -> Vec<PathBuf> {
    expand(HIDDEN_SECRETS)
}

/// `patterns` as paths: a trailing `*` matches the names in that folder
/// that start with what precedes it.
fn expand(patterns: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for s in patterns {
        match s.strip_suffix('*') {
            None => out.push(PathBuf::from(s)),
            Some(prefix) => {
                let p = Path::new(prefix);
                let (Some(dir), Some(start)) = (p.parent(), p.file_name()) else {
                    continue;
                };
                let Ok(entries) = std::fs::read_dir(dir) else {
                    continue;
                };
                out.extend(
                    entries
                        .flatten()
                        .filter(|e| {
                            e.file_name()
                                .as_encoded_bytes()
                                .starts_with(start.as_encoded_bytes())
                        })
                        .map(|e| e.path()),
                );
            }
        }
    }
    out
}

/// The kernel command line mvm-init reads.
pub fn cmdline(spec: &VmSpec) -> agent_proto::cmdline::Writer {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut c = agent_proto::cmdline::Writer::new();
    c.hostname(&spec.name)
        .time(now)
        .agent_port(agent_proto::DEFAULT_AGENT_PORT);
    if spec.host_root {
        c.root(ROOT_TAG);
    }
    if spec.project.is_some() {
        c.share(PROJECT_TAG, "/project", false);
    }
    if spec.host_root && spec.home.is_some() {
        c.share(HOME_TAG, crate::state::GUEST_HOME, false);
    }
    for (i, s) in spec.shares.iter().enumerate() {
        c.share(&extra_tag(i), &s.guest, s.ro);
    }
    // The disk's serial is the volume's name.
    for v in &spec.volumes {
        c.volume(&v.name, &v.guest, v.ro);
        if let Some(owner) = &v.owner {
            c.volume_owner(&v.name, owner);
        }
    }
    c
}

/// The tag of the project's extra share number `i`.
fn extra_tag(i: usize) -> String {
    format!("share{i}")
}

/// What a copy-on-write share shows of its host folder.
#[derive(Default)]
struct View {
    masked: Vec<PathBuf>,
    visible: Option<Vec<PathBuf>>,
    hidden: Vec<PathBuf>,
}

/// The guest root's view of the host's `/` (see [`SYSTEM_VIEW`]). Also
/// masked: mvm's state (other VMs' sockets, this VM's own upper layers)
/// and the project's host copy (the guest works on its copy-on-write view
/// at /project), wherever they are.
fn system_view(project: Option<&Path>) -> crate::Result<View> {
    let mut masked: Vec<PathBuf> = EMPTY_IN_VIEW.iter().map(PathBuf::from).collect();
    masked.push(crate::state::home()?);
    masked.extend(project.map(Path::to_path_buf));
    Ok(View {
        masked,
        visible: Some(view_paths().map(PathBuf::from).collect()),
        hidden: hidden_paths(),
    })
}

/// The host's system view, the chosen home paths and the project, each
/// under its own upper layer; then the project's extra shares.
pub fn shares(dir: &VmDir, spec: &VmSpec) -> crate::Result<Vec<vmm::ShareConfig>> {
    let mut shares = Vec::new();
    let mut add = |tag: &str, path: &Path, view: View, xattr: bool| -> crate::Result<()> {
        let upper = dir.upper_dir(spec, tag);
        crate::state::create_upper_dir(&upper, path)?;
        shares.push(vmm::ShareConfig {
            tag: tag.into(),
            path: path.to_path_buf(),
            mode: vmm::ShareMode::Cow,
            upper: Some(upper),
            masked: view.masked,
            visible: view.visible,
            hidden: view.hidden,
            serve_on_event_loop: false,
            xattr,
        });
        Ok(())
    };
    if spec.host_root {
        let view = system_view(spec.project.as_deref())?;
        // The system's files keep their capabilities and labels.
        add(ROOT_TAG, Path::new("/"), view, true)?;
        if let Some(home) = &spec.home {
            for p in &home.paths {
                crate::state::refuse_pseudo_fs(&home.dir.join(p))
                    .map_err(|e| crate::error::err!("home path of VM '{}': {e}", spec.name))?;
            }
            // The chosen paths only; the rest of the home (keys, tokens,
            // shell history) stays absent, mvm's state in it too.
            let view = View {
                visible: Some(home.paths.iter().map(|p| home.dir.join(p)).collect()),
                ..View::default()
            };
            add(HOME_TAG, &home.dir, view, false)?;
        }
    }
    if let Some(p) = &spec.project {
        if !p.is_dir() {
            bail!(
                "the project folder {} of VM '{}' is gone",
                p.display(),
                spec.name
            );
        }
        add(PROJECT_TAG, p, View::default(), false)?;
    }
    let mut read_only = Vec::new();
    for (i, s) in spec.shares.iter().enumerate() {
        if !s.host.is_dir() {
            bail!(
                "the shared folder {} of VM '{}' is gone",
                s.host.display(),
                spec.name
            );
        }
        if s.ro {
            read_only.push(vmm::ShareConfig {
                tag: extra_tag(i),
                path: s.host.clone(),
                mode: vmm::ShareMode::Ro,
                upper: None,
                masked: Vec::new(),
                visible: None,
                hidden: Vec::new(),
                serve_on_event_loop: false,
                xattr: s.xattr,
            });
        } else {
            add(&extra_tag(i), &s.host, View::default(), s.xattr)?;
        }
    }
    shares.extend(read_only);
    Ok(shares)
}

/// Everything the VMM process needs for this VM.
pub fn vm_config(
    dir: &VmDir,
    spec: &VmSpec,
    net: Option<&netstack::VmNet>,
    report: &dyn crate::Report,
) -> crate::Result<vmm::VmConfig> {
    let run = dir.run_dir();
    crate::state::create_private_dir(&run)?;
    let initrd = run.join("initramfs.cpio");
    write_initramfs(&initrd)?;
    let mut config = vmm::VmConfig::new(kernel(spec)?);
    config.initrd = Some(initrd);
    let mut line = cmdline(spec);
    if let Some(n) = net {
        config.net = Some(crate::net::vmm_net(n, spec.net_backend, report));
        line.dhcp();
    }
    config.cmdline = line.to_string();
    config.cpus = spec.cpus;
    config.memory_mib = spec.memory_mib;
    config.console = vmm::Console::File(dir.console_log());
    config.api_socket = Some(dir.api_socket());
    config.shares = shares(dir, spec)?;
    config.block =
        crate::volume::prepare(&spec.name, spec.project.as_deref(), &spec.volumes, report)?;
    config.upper_bytes = Some(spec.disk_mib << 20);
    config.seccomp = spec.seccomp;
    config.jail = jail(dir, spec, &config.shares, config.net.as_ref())?;
    config.vsock = Some(vmm::VsockConfig {
        cid: u64::from(spec.cid()),
        socket: dir.vsock_socket(),
    });
    // Test-only: lets the lifecycle tests run hand-made guests on a
    // PVM-backed host, where standard kernels cannot boot.
    config.allow_pvm_host = std::env::var_os("MVM_ALLOW_PVM_HOST").is_some_and(|v| v == "1");
    Ok(config)
}

/// The device nodes a jailed VMM opens while the guest runs: vhost-net,
/// opened afresh at each activation of the network device.
pub fn vhost_devices(net: Option<&vmm::NetConfig>) -> Vec<PathBuf> {
    match net {
        Some(n) if n.backend == vmm::NetBackend::Vhost => vec![PathBuf::from("/dev/vhost-net")],
        _ => Vec::new(),
    }
}

/// The VMM's jail (started by a user: inside a user namespace of its
/// own, where the host allows one), rooted on the VM folder's empty `jail/`, keeping the VM
/// folder itself (console log rotation, host-side vsock sockets, the
/// runtime files it removes when the guest ends).
///
/// Whose powers it keeps: a project that belongs to a user is served as
/// that user (no capabilities; the copy-on-write layers become the
/// user's, the guest's owners move to their copy-up logs), so what the
/// VMM can reach on the host is what the project's owner can. A
/// root-owned project, or none, keeps root with [`vmm::jail::ROOT_CAPS`].
fn jail(
    dir: &VmDir,
    spec: &VmSpec,
    shares: &[vmm::ShareConfig],
    net: Option<&vmm::NetConfig>,
) -> crate::Result<Option<vmm::jail::JailConfig>> {
    if !spec.jail {
        return Ok(None);
    }
    // SAFETY: geteuid has no preconditions.
    let as_root = unsafe { libc::geteuid() } == 0;
    let root = dir.path.join("jail");
    crate::state::create_private_dir(&root)?;
    let keep = std::fs::canonicalize(&dir.path)
        .with_context(|| format!("cannot resolve {}", dir.path.display()))?;
    let user = match &spec.project {
        Some(project) if as_root => {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(project)
                .with_context(|| format!("cannot read {}", project.display()))?;
            (m.uid() != 0).then_some((m.uid(), m.gid()))
        }
        _ => None,
    };
    if let Some((uid, gid)) = user {
        for upper in shares.iter().filter_map(|s| s.upper.as_ref()) {
            cowfs::adopt_upper(upper, uid, gid).map_err(|e| {
                crate::error::err!("cannot hand {} to uid {uid}: {e}", upper.display())
            })?;
        }
    }
    Ok(Some(vmm::jail::JailConfig {
        root,
        keep: vec![keep],
        user,
        devices: vhost_devices(net),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cowfs::client::Client;

    const ENOENT: i32 = 2;

    /// This host's real `/` through the guest root's view.
    fn guest_root(upper: &Path) -> Client {
        let view = system_view(None).unwrap();
        let fs = cowfs::Filesystem::new(&cowfs::ShareConfig {
            lower: "/".into(),
            upper: Some(upper.to_path_buf()),
            mode: cowfs::ShareMode::Cow,
            masked: view.masked,
            visible: view.visible,
            hidden: view.hidden,
        })
        .unwrap();
        let mut c = Client::new(cowfs::Server::new(fs));
        c.init().unwrap();
        c
    }

    fn names(c: &mut Client, path: &str) -> Vec<String> {
        let node = c.resolve(path).unwrap().nodeid;
        c.list(node)
            .unwrap()
            .into_iter()
            .map(|e| String::from_utf8_lossy(&e.name).into_owned())
            .collect()
    }

    #[test]
    fn secret_patterns_expand_to_the_files_there_now() {
        let d = tempfile::tempdir().unwrap();
        for f in ["ssh_host_rsa_key", "ssh_host_rsa_key.pub", "ssh_config"] {
            std::fs::write(d.path().join(f), "x").unwrap();
        }
        let pattern = format!("{}/ssh_host_*", d.path().display());
        let plain = format!("{}/shadow", d.path().display());
        let mut got = expand(&[&pattern, &plain, "/nonexistent/x_*"]);
        got.sort();
        assert_eq!(
            got,
            [
                d.path().join("shadow"),
                d.path().join("ssh_host_rsa_key"),
                d.path().join("ssh_host_rsa_key.pub"),
            ]
        );
    }

    #[test]
    fn the_host_root_shows_its_system_trees_and_no_secrets() {
        let upper = tempfile::tempdir().unwrap();
        let mut c = guest_root(upper.path());
        // Only the view's top-level names, and the tools are there.
        let top_level = |n: &str| view_paths().any(|v| v[1..].split('/').next() == Some(n));
        for n in names(&mut c, "/") {
            assert!(top_level(&n), "{n}");
        }
        assert_eq!(
            names(&mut c, "var/lib").contains(&"dpkg".to_string()),
            Path::new("/var/lib/dpkg").exists()
        );
        assert!(names(&mut c, "var/log").is_empty());
        assert!(c.read_file("etc/passwd").unwrap().starts_with(b"root:"));
        let env = if Path::new("/usr/bin/env").exists() {
            "usr/bin/env"
        } else {
            "bin/sh"
        };
        assert!(c.resolve(env).is_ok(), "{env}");
        // The homes are there, empty; the host's secrets are absent.
        assert!(names(&mut c, "root").is_empty());
        assert!(names(&mut c, "home").is_empty());
        for secret in [
            "etc/shadow",
            "etc/gshadow",
            "etc/sudoers",
            "etc/machine-id",
            "root/.bash_history",
            "var/lib/NetworkManager",
            "var/backups",
        ] {
            assert_eq!(c.resolve(secret).err(), Some(ENOENT), "{secret}");
        }
        if let Ok(keys) = std::fs::read_dir("/etc/ssh") {
            for k in keys.flatten() {
                let name = k.file_name().to_string_lossy().into_owned();
                if name.starts_with("ssh_host_") {
                    let p = format!("etc/ssh/{name}");
                    assert_eq!(c.resolve(&p).err(), Some(ENOENT), "{p}");
                }
            }
        }
        // Nothing of this worktree's top-level folder (not a system tree).
        let cwd = std::env::current_dir().unwrap();
        let top = cwd
            .components()
            .nth(1)
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        if !top_level(&top) {
            assert_eq!(c.resolve(&top).err(), Some(ENOENT), "{top}");
        }
    }
}
