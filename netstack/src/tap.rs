//! Persistent tap devices (TUNSETPERSIST / TUNSETOWNER), so that the
//! unprivileged VMM process can open its tap later by name.
//!
//! Opening /dev/net/tun and attaching it to a tap (TUNSETIFF) is
//! `devices::tap::attach`, the one implementation the VMM's data path uses
//! too: `devices` owns it because the VMM depends on `devices` and must not
//! pull in the host network plane's crates (see that module).

use std::fs::File;
use std::os::fd::AsRawFd;

use crate::error::{Error, Result};

const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const TUNSETOWNER: libc::c_ulong = 0x4004_54cc;

/// Attach to the tap `name` (blocking: this side only configures it).
fn attach(name: &str) -> Result<File> {
    let (file, _) = devices::tap::attach(name, false).map_err(|e| {
        let kind = match &e {
            devices::tap::TapError::InvalidName(_) => std::io::ErrorKind::InvalidInput,
            _ => std::io::ErrorKind::Other,
        };
        Error::io(format!("TUNSETIFF {name}"), std::io::Error::new(kind, e))
    })?;
    Ok(file)
}

/// Create (or take over) the persistent tap `name`: IFF_TAP | IFF_NO_PI |
/// IFF_VNET_HDR, single queue, owned by `owner_uid` so that process can open
/// it without privilege.
pub fn create_persistent_tap(name: &str, owner_uid: u32) -> Result<()> {
    let f = attach(name)?;
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
    attach(name)
}
