//! Persistent tap devices (TUNSETIFF / TUNSETPERSIST / TUNSETOWNER), so that
//! the unprivileged VMM process can open its tap later by name.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;

use crate::error::{Error, Result};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const TUNSETOWNER: libc::c_ulong = 0x4004_54cc;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// The part of `struct ifreq` that TUNSETIFF reads and writes.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn ifreq(name: &str) -> Result<IfReq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(Error::io(
            format!("tap name {name:?}"),
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        ));
    }
    let mut r = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        _pad: [0; 22],
    };
    r.name[..bytes.len()].copy_from_slice(bytes);
    Ok(r)
}

fn open_tun() -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| Error::io("opening /dev/net/tun", e))
}

fn attach(f: &File, name: &str) -> Result<()> {
    let mut req = ifreq(name)?;
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`; `req` is a
    // properly sized and aligned prefix-compatible struct (40 bytes) that
    // lives across the call.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(Error::io(
            format!("TUNSETIFF {name}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Create (or take over) the persistent tap `name`: IFF_TAP | IFF_NO_PI |
/// IFF_VNET_HDR, single queue, owned by `owner_uid` so that process can open
/// it without privilege.
pub fn create_persistent_tap(name: &str, owner_uid: u32) -> Result<()> {
    let f = open_tun()?;
    attach(&f, name)?;
    // SAFETY: TUNSETOWNER takes the uid by value; no memory is passed.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), TUNSETOWNER as _, owner_uid as libc::c_ulong) };
    if rc < 0 {
        return Err(Error::io(
            format!("TUNSETOWNER {name} {owner_uid}"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: TUNSETPERSIST takes a flag by value; no memory is passed.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), TUNSETPERSIST as _, 1 as libc::c_ulong) };
    if rc < 0 {
        return Err(Error::io(
            format!("TUNSETPERSIST {name}"),
            std::io::Error::last_os_error(),
        ));
    }
    tracing::debug!(tap = name, owner_uid, "persistent tap created");
    Ok(())
}

/// Open an existing persistent tap by name (what the VMM does): the returned
/// file reads and writes frames with a `virtio_net_hdr` in front.
pub fn open_tap(name: &str) -> Result<File> {
    let f = open_tun()?;
    attach(&f, name)?;
    Ok(f)
}
