//! A Linux tap interface opened with a virtio-net header on every frame:
//! the one place that opens /dev/net/tun and attaches it to a tap
//! (TUNSETIFF and its `struct ifreq`).
//!
//! It lives here, not in `netstack`, because of the dependency direction:
//! the VMM depends on `devices` only, and `devices` depending on `netstack`
//! would pull netlink, nftables and DNS crates into the VMM. `netstack`
//! (the host network plane, which creates persistent taps) depends on
//! `devices` for [`attach`] instead; its users (the CLI) have `devices`
//! through the VMM anyway, so no binary grows.
//!
//! Our own few ioctls rather than a crate: the `tun-tap` crate (and most of
//! its kin) has no IFF_VNET_HDR, TUNSETVNETHDRSZ or TUNSETOFFLOAD, which are
//! the whole point here, builds a C shim, and defaults to blocking I/O. What
//! we need is five ioctls on one fd.

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::virtio::net::VNET_HDR_LEN;

const TUN_PATH: &str = "/dev/net/tun";

/// Why a tap could not be opened or configured.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error(
        "invalid tap name {0:?}: 1 to 15 bytes, no '/', ':', whitespace or NUL, not '.' or '..'"
    )]
    InvalidName(String),
    #[error("cannot open {TUN_PATH}: {0}")]
    OpenTun(#[source] io::Error),
    #[error("cannot attach to tap {name:?}: {source}{hint}")]
    Attach {
        name: String,
        hint: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the kernel's tun driver lacks IFF_VNET_HDR")]
    NoVnetHdrSupport,
    #[error("fd is not a tap opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR (flags {0:#x})")]
    NotVnetTap(i32),
    #[error("tap ioctl {what} failed: {source}")]
    Ioctl {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// An open tap queue. Non-blocking: reads return `WouldBlock` when no frame
/// is waiting. Every frame read or written starts with a 12-byte
/// `virtio_net_hdr_v1` (little endian, as on every host we run on).
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

/// `struct ifreq` as TUNSETIFF/TUNGETIFF use it: the name and the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    // The kernel's union is 24 bytes; it copies the whole struct.
    _pad: [u8; 22],
}

impl IfReq {
    fn new(name: &str, flags: libc::c_int) -> Self {
        let mut req = Self {
            name: [0; libc::IFNAMSIZ],
            // The TUN flags all fit in the low 16 bits.
            flags: flags as libc::c_short,
            _pad: [0; 22],
        };
        // validate_name guarantees len < IFNAMSIZ, so the NUL stays.
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        req
    }

    fn name(&self) -> String {
        CStr::from_bytes_until_nul(&self.name)
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Mirrors the kernel's dev_valid_name, so a bad name is reported by us with
/// the name in the message rather than as a bare EINVAL.
fn validate_name(name: &str) -> Result<(), TapError> {
    let ok = !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if ok {
        Ok(())
    } else {
        Err(TapError::InvalidName(name.to_owned()))
    }
}

const TAP_FLAGS: libc::c_int = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;

impl Tap {
    /// Attaches to the tap `name`: a persistent tap owned by our user (as
    /// the host network plane creates them), or a new non-persistent one if
    /// we have CAP_NET_ADMIN. A `%d` in the name lets the kernel pick the
    /// number; [`name`](Self::name) tells the result.
    pub fn open(name: &str) -> Result<Self, TapError> {
        let (file, name) = attach(name, true)?;
        let tap = Self { file, name };
        tap.setup()?;
        Ok(tap)
    }

    /// Takes a tap fd opened elsewhere (e.g. passed by a privileged helper
    /// over a Unix socket). It must have been attached with IFF_TAP |
    /// IFF_NO_PI | IFF_VNET_HDR; it is switched to non-blocking mode.
    pub fn from_fd(fd: OwnedFd) -> Result<Self, TapError> {
        let file = File::from(fd);
        let mut req = IfReq::new("", 0);
        // SAFETY: TUNGETIFF writes a `struct ifreq` into `req`, a #[repr(C)]
        // struct of the kernel's full ifreq size, exclusively borrowed.
        let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNGETIFF, &mut req) };
        if ret < 0 {
            return Err(ioctl_error("TUNGETIFF"));
        }
        let flags = libc::c_int::from(req.flags) & 0xffff;
        let needed = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
        if flags & needed != needed {
            return Err(TapError::NotVnetTap(flags));
        }
        // SAFETY: F_GETFL takes no argument and only reads the fd's flags.
        let fl = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        // SAFETY: F_SETFL takes an int of flags by value; the fd is ours.
        if fl < 0
            || unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0
        {
            return Err(ioctl_error("fcntl(O_NONBLOCK)"));
        }
        let tap = Self {
            file,
            name: req.name(),
        };
        tap.setup()?;
        Ok(tap)
    }

    /// The interface name the kernel reports.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The open tap, for reading and writing frames.
    pub fn file(&self) -> &File {
        &self.file
    }

    fn setup(&self) -> Result<(), TapError> {
        let size = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which
        // points to `size`, live for the call.
        let ret = unsafe { libc::ioctl(self.file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &size) };
        if ret < 0 {
            return Err(ioctl_error("TUNSETVNETHDRSZ"));
        }
        // No offloads until the guest says which it can take.
        self.set_offload_flags(0).map_err(|source| TapError::Ioctl {
            what: "TUNSETOFFLOAD",
            source,
        })
    }

    /// TUNSETOFFLOAD: which offloads (`TUN_F_*`) the reader of this tap, i.e.
    /// the guest, accepts in frames it receives.
    pub fn set_offload_flags(&self, flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value and touches no
        // memory of ours.
        let ret = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// Opens /dev/net/tun and attaches it to the tap `name` with IFF_TAP |
/// IFF_NO_PI | IFF_VNET_HDR (creating a non-persistent tap if we may):
/// the file and the name the kernel reports (a `%d` in `name` is filled
/// in). `nonblocking` opens it O_NONBLOCK, as the VMM's data path wants;
/// the host network plane only configures it.
pub fn attach(name: &str, nonblocking: bool) -> Result<(File, String), TapError> {
    validate_name(name)?;
    let nonblock = if nonblocking { libc::O_NONBLOCK } else { 0 };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nonblock | libc::O_CLOEXEC)
        .open(TUN_PATH)
        .map_err(TapError::OpenTun)?;

    let mut features: libc::c_uint = 0;
    // SAFETY: TUNGETFEATURES writes one unsigned int through the pointer,
    // which points to `features`, live for the call; the fd is ours.
    let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNGETFEATURES, &mut features) };
    if ret < 0 {
        return Err(ioctl_error("TUNGETFEATURES"));
    }
    if features & (libc::IFF_VNET_HDR as libc::c_uint) == 0 {
        return Err(TapError::NoVnetHdrSupport);
    }

    let mut req = IfReq::new(name, TAP_FLAGS);
    // SAFETY: TUNSETIFF reads and writes back a `struct ifreq`; `req` is
    // a #[repr(C)] struct of the kernel's full ifreq size (40 bytes),
    // exclusively borrowed for the call.
    let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if ret < 0 {
        let source = io::Error::last_os_error();
        let hint = match source.raw_os_error() {
            Some(libc::EPERM) => {
                " (create it for this user first: ip tuntap add NAME mode tap vnet_hdr user USER)"
            }
            Some(libc::EBUSY) => " (another process has it open)",
            Some(libc::EINVAL) => " (is it a tun rather than a tap, or multi-queue?)",
            _ => "",
        };
        return Err(TapError::Attach {
            name: name.to_owned(),
            hint,
            source,
        });
    }
    Ok((file, req.name()))
}

fn ioctl_error(what: &'static str) -> TapError {
    TapError::Ioctl {
        what,
        source: io::Error::last_os_error(),
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_has_the_kernel_size() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
        assert_eq!(
            std::mem::size_of::<IfReq>(),
            std::mem::size_of::<libc::ifreq>()
        );
    }

    #[test]
    fn names_are_validated_before_any_syscall() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "tab\t",
            "0123456789abcdef",
            "nul\0",
        ] {
            match Tap::open(bad) {
                Err(TapError::InvalidName(n)) => assert_eq!(n, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let msg = Tap::open("bad/name").unwrap_err().to_string();
        assert!(msg.contains("\"bad/name\""), "{msg}");
        validate_name("0123456789abcde").unwrap();
        validate_name("mvm-tap%d").unwrap();
    }

    #[test]
    fn ifreq_name_round_trips() {
        let req = IfReq::new("tap0", TAP_FLAGS);
        assert_eq!(req.name(), "tap0");
        assert_eq!(libc::c_int::from(req.flags), TAP_FLAGS);
    }
}
