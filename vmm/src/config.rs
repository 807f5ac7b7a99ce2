//! `VmConfig`: everything needed to build a VM, serialisable so it can be
//! written to disk (TOML) or sent over a socket (JSON).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The kernel command line every VM starts with; [`VmConfig::cmdline`] is
/// appended, so a user's value for the same key wins.
///
/// `reboot=k` makes a guest reboot an i8042 reset, which ends the VMM;
/// `,panic_warm` makes only a panic reboot "warm", so Linux writes 0x1234 to
/// the BIOS reset flag (0x472) first and the VMM can tell a panic from a
/// clean reboot. `panic=-1` reboots at once on panic. `quiet` because every
/// console byte is a VM exit.
pub const DEFAULT_CMDLINE: &str =
    "console=ttyS0 reboot=k,panic_warm panic=-1 pci=off nomodule quiet";

/// The smallest guest we accept: below this a Linux guest cannot boot.
pub const MIN_MEMORY_MIB: u64 = 16;

/// Where the serial console's output goes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Console {
    /// The VMM's standard output.
    #[default]
    Stdout,
    /// A file, created or truncated at start; past 16 MiB it moves to
    /// `NAME.1` and a new one starts ([`crate::console_file`]).
    File(PathBuf),
    /// Discarded.
    Null,
}

/// A VM description. Build and run it with [`crate::Vm`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// An uncompressed ELF `vmlinux` (PVH entry used when present) or a
    /// `bzImage`.
    pub kernel: PathBuf,
    /// An initramfs (cpio, optionally compressed as the kernel supports).
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Appended to [`DEFAULT_CMDLINE`].
    #[serde(default)]
    pub cmdline: String,
    /// Number of vCPUs.
    #[serde(default = "default_cpus")]
    pub cpus: u8,
    /// Guest RAM in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    #[serde(default)]
    pub console: Console,
    /// A virtio-rng device feeding the guest's /dev/hwrng.
    #[serde(default = "yes")]
    pub rng: bool,
    /// Host directories the guest mounts with `mount -t virtiofs TAG DIR`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<ShareConfig>,
    /// Bytes the guest may store in the upper layers of all its
    /// copy-on-write shares together (ENOSPC beyond); none: unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_bytes: Option<u64>,
    /// virtio-fs devices served by external vhost-user backends (e.g.
    /// virtiofsd); guest RAM is then a memfd the backends map.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vhost_user_fs: Vec<VhostUserFsConfig>,
    /// virtio-blk devices on raw image files, in this order (the guest's
    /// vda, vdb, ... as it probes them; tell them apart by `id`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block: Vec<BlockConfig>,
    /// A virtio-vsock device whose host side is this Unix socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<VsockConfig>,
    /// A virtio-net device on this tap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<NetConfig>,
    /// Serve the control API ([`crate::api`]) on this Unix socket.
    #[serde(default)]
    pub api_socket: Option<PathBuf>,
    /// Boot even when the host's KVM is PVM-backed (standard kernels cannot
    /// boot there; a PVM-enabled or hand-made guest can).
    #[serde(default)]
    pub allow_pvm_host: bool,
    /// seccomp filters on the VMM's threads once the VM runs
    /// ([`crate::seccomp`]). They filter the whole process: an embedder
    /// running other code in it keeps them off.
    #[serde(default)]
    pub seccomp: crate::seccomp::Seccomp,
    /// Which threads the process filter covers.
    #[serde(default)]
    pub seccomp_scope: crate::seccomp::Scope,
    /// The jail the process enters once the VM is built
    /// ([`crate::jail`]): the embedder calls
    /// [`crate::jail::unshare_namespaces`] first thing and
    /// [`crate::jail::JailConfig::enter`] after [`crate::Vm::new`]; `Vm`
    /// itself never does (it may share its process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jail: Option<crate::jail::JailConfig>,
}

/// How a share treats the host directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareMode {
    /// Copy-on-write: the host directory is never written; the guest's
    /// changes go to the upper directory.
    #[default]
    Cow,
    /// Read-only: writes fail with EROFS.
    Ro,
    /// Read-write passthrough.
    Rw,
}

impl std::str::FromStr for ShareMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cow" => Ok(ShareMode::Cow),
            "ro" => Ok(ShareMode::Ro),
            "rw" => Ok(ShareMode::Rw),
            _ => Err(format!("invalid share mode '{s}': expected cow, ro or rw")),
        }
    }
}

/// A virtio-fs share served by the VMM's own FUSE server (cowfs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareConfig {
    /// The mount tag the guest uses (at most 36 bytes).
    pub tag: String,
    /// The host directory.
    pub path: PathBuf,
    #[serde(default)]
    pub mode: ShareMode,
    /// Where a `cow` share keeps the guest's changes (required for `cow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<PathBuf>,
    /// Host directories inside `path` the guest sees as empty (e.g. the
    /// host's /proc when `path` is `/`); the upper may live in one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masked: Vec<PathBuf>,
    /// When set, the only host paths inside `path` the guest sees (see
    /// `cowfs::ShareConfig::visible`); everything else is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visible: Option<Vec<PathBuf>>,
    /// Host paths inside `path` that are absent for the guest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hidden: Vec<PathBuf>,
    /// Serve the guest's requests on the VMM's event loop thread instead of
    /// the notifying vCPU's (the default; see `Fs::set_serve_on_vcpu`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub serve_on_event_loop: bool,
    /// Serve extended attributes. Off (the default, as in virtiofsd), the
    /// guest's xattr requests get ENOSYS and its kernel stops asking, which
    /// saves a `security.capability` round trip before the first write to
    /// every file. Copy-up keeps host xattrs either way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub xattr: bool,
}

/// A virtio-fs share served by a vhost-user backend listening on `socket`
/// (started before the VM, e.g. `virtiofsd --socket-path SOCKET
/// --shared-dir DIR`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VhostUserFsConfig {
    pub socket: PathBuf,
    /// The mount tag (at most 36 bytes).
    pub tag: String,
    /// Entries per queue: a power of two, 2 to 32768 (virtiofsd takes at
    /// most 1024).
    #[serde(default = "default_queue_size")]
    pub queue_size: u16,
}

/// The default [`VhostUserFsConfig::queue_size`].
pub const DEFAULT_VHOST_USER_FS_QUEUE_SIZE: u16 =
    devices::virtio::vhost_user_fs::DEFAULT_QUEUE_SIZE;

fn default_queue_size() -> u16 {
    DEFAULT_VHOST_USER_FS_QUEUE_SIZE
}

/// A virtio-blk device on a raw image file (its size is the volume's; it is
/// locked while the VM runs: exclusive, or shared when read-only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockConfig {
    pub path: PathBuf,
    /// What the guest reads as the disk's serial (GET_ID,
    /// `/sys/block/vdX/serial`); at most 20 bytes.
    pub id: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// virtio-vsock: the guest's context id and the host-side Unix socket
/// (host-initiated: connect and send `CONNECT <port>\n`; guest-initiated
/// connections to host port P go to `<socket>_<P>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    pub cid: u64,
    pub socket: PathBuf,
}

/// virtio-net on an existing (or creatable) tap device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    pub tap: String,
    /// The guest's MAC address.
    pub mac: [u8; 6],
    /// Who moves the frames between the tap and the guest's rings.
    #[serde(default)]
    pub backend: NetBackend,
}

/// The data path of a virtio-net device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetBackend {
    /// The VMM's own event loop reads and writes the tap.
    #[default]
    Tap,
    /// The kernel's vhost-net worker does; the VMM only sets it up. When
    /// /dev/vhost-net cannot be used the device falls back to [`Tap`]
    /// (see [`vhost_net_usable`]).
    ///
    /// [`Tap`]: NetBackend::Tap
    Vhost,
}

impl std::str::FromStr for NetBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tap" => Ok(NetBackend::Tap),
            "vhost" => Ok(NetBackend::Vhost),
            _ => Err(format!(
                "unknown network backend '{s}': expected tap or vhost"
            )),
        }
    }
}

/// Whether this process can use vhost-net (/dev/vhost-net opens and has
/// what the device needs); the reason when it cannot.
pub fn vhost_net_usable() -> Result<(), String> {
    devices::virtio::net::vhost_usable()
}

fn default_cpus() -> u8 {
    1
}
fn default_memory_mib() -> u64 {
    512
}
fn yes() -> bool {
    true
}

impl VmConfig {
    /// A VM with defaults for everything but the kernel.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self {
            kernel: kernel.into(),
            initrd: None,
            cmdline: String::new(),
            cpus: default_cpus(),
            memory_mib: default_memory_mib(),
            console: Console::default(),
            rng: true,
            shares: Vec::new(),
            upper_bytes: None,
            vhost_user_fs: Vec::new(),
            block: Vec::new(),
            vsock: None,
            net: None,
            api_socket: None,
            allow_pvm_host: false,
            seccomp: crate::seccomp::Seccomp::Off,
            seccomp_scope: crate::seccomp::Scope::Process,
            jail: None,
        }
    }

    /// The full kernel command line.
    pub fn full_cmdline(&self) -> String {
        let extra = self.cmdline.trim();
        if extra.is_empty() {
            DEFAULT_CMDLINE.to_string()
        } else {
            format!("{DEFAULT_CMDLINE} {extra}")
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SizeError {
    #[error("invalid size '{0}': expected a whole number of MiB or a number with a unit (K, M, G, T; e.g. 512, 512M, 2G)")]
    Invalid(String),
    #[error("size '{0}' is too large")]
    TooLarge(String),
    #[error("size '{0}' is not a whole number of MiB")]
    NotWholeMib(String),
}

/// Parses a memory size into MiB: a bare number is MiB; `K`/`M`/`G`/`T`
/// (optionally followed by `iB` or `B`, any case) are binary units.
pub fn parse_memory_mib(input: &str) -> Result<u64, SizeError> {
    let s = input.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(digits_end);
    if num.is_empty() {
        return Err(SizeError::Invalid(input.to_string()));
    }
    let value: u64 = num
        .parse()
        .map_err(|_| SizeError::TooLarge(input.to_string()))?;
    let shift_from_kib = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mib" => 10,
        "k" | "kb" | "kib" => 0,
        "g" | "gb" | "gib" => 20,
        "t" | "tb" | "tib" => 30,
        _ => return Err(SizeError::Invalid(input.to_string())),
    };
    let kib = value
        .checked_mul(1u64 << shift_from_kib)
        .ok_or_else(|| SizeError::TooLarge(input.to_string()))?;
    if kib % 1024 != 0 {
        return Err(SizeError::NotWholeMib(input.to_string()));
    }
    Ok(kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_backend_defaults_to_tap_and_parses() {
        // A config written before the backend existed still reads.
        let n: NetConfig = serde_json::from_str(r#"{"tap":"mvm-1","mac":[2,0,0,0,0,1]}"#).unwrap();
        assert_eq!(n.backend, NetBackend::Tap);
        let n: NetConfig =
            serde_json::from_str(r#"{"tap":"mvm-1","mac":[2,0,0,0,0,1],"backend":"vhost"}"#)
                .unwrap();
        assert_eq!(n.backend, NetBackend::Vhost);
        assert_eq!("vhost".parse::<NetBackend>(), Ok(NetBackend::Vhost));
        let e = "fast".parse::<NetBackend>().unwrap_err();
        assert!(e.contains("'fast'") && e.contains("tap or vhost"), "{e}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_memory_mib("256"), Ok(256));
        assert_eq!(parse_memory_mib("256M"), Ok(256));
        assert_eq!(parse_memory_mib("2G"), Ok(2048));
        assert_eq!(parse_memory_mib("2GiB"), Ok(2048));
        assert_eq!(parse_memory_mib(" 1t "), Ok(1 << 20));
        assert_eq!(parse_memory_mib("4096k"), Ok(4));
        assert!(matches!(
            parse_memory_mib("1000k"),
            Err(SizeError::NotWholeMib(_))
        ));
        for bad in ["", "M", "-1", "1.5G", "12Q", "0x10"] {
            assert!(
                matches!(parse_memory_mib(bad), Err(SizeError::Invalid(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_memory_mib("99999999999999999999"),
            Err(SizeError::TooLarge(_))
        ));
        assert!(matches!(
            parse_memory_mib("9999999999999T"),
            Err(SizeError::TooLarge(_))
        ));
    }

    #[test]
    fn config_round_trips_and_rejects_unknown_fields() {
        let mut c = VmConfig::new("/boot/vmlinux");
        c.console = Console::File("/tmp/c.log".into());
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<VmConfig>(&json).unwrap(), c);
        let minimal: VmConfig = serde_json::from_str(r#"{"kernel":"/k"}"#).unwrap();
        assert_eq!(
            (minimal.cpus, minimal.memory_mib, minimal.rng),
            (1, 512, true)
        );
        assert!(serde_json::from_str::<VmConfig>(r#"{"kernel":"/k","cpu":2}"#).is_err());
    }

    #[test]
    fn cmdline_appends_user_args() {
        let mut c = VmConfig::new("/k");
        assert_eq!(c.full_cmdline(), DEFAULT_CMDLINE);
        c.cmdline = " foo=bar ".into();
        assert!(c.full_cmdline().ends_with(" foo=bar"));
    }
}
