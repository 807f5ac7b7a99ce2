//! Mounting: the API filesystems, the virtio-fs root (with an optional
//! tmpfs overlay) and the switch to it, the shares, and unmounting at
//! shutdown.

use std::ffi::CString;
use std::io;
use std::path::Path;

use crate::cmdline::Share;
use crate::sys::{cstring, cvt, mkdir_p};

pub fn mount(
    src: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let (s, t, f) = (cstring(src)?, cstring(target)?, cstring(fstype)?);
    let d = cstring(data)?;
    let dp = if data.is_empty() {
        std::ptr::null()
    } else {
        d.as_ptr().cast()
    };
    // SAFETY: all strings are valid NUL-terminated C strings for the call.
    cvt(unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, dp) })?;
    Ok(())
}

fn move_mount(from: &str, to: &str) -> io::Result<()> {
    let (f, t) = (cstring(from)?, cstring(to)?);
    // SAFETY: valid C strings; MS_MOVE ignores fstype and data.
    cvt(unsafe {
        libc::mount(
            f.as_ptr(),
            t.as_ptr(),
            std::ptr::null(),
            libc::MS_MOVE,
            std::ptr::null(),
        )
    })?;
    Ok(())
}

/// Mount points from /proc/self/mounts (octal escapes decoded).
pub fn mount_points() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .map(unescape_mount_field)
        .collect()
}

fn unescape_mount_field(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_mounted(path: &str) -> bool {
    mount_points().iter().any(|m| m == path)
}

struct Fs {
    target: &'static str,
    fstype: &'static str,
    flags: libc::c_ulong,
    data: &'static str,
}

const NOSUID_NODEV: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV;

/// In order: /proc first, so later steps can see what is mounted.
const BASE: [Fs; 6] = [
    Fs {
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV | libc::MS_NOEXEC,
        data: "",
    },
    Fs {
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV | libc::MS_NOEXEC,
        data: "",
    },
    Fs {
        target: "/dev",
        fstype: "devtmpfs",
        flags: libc::MS_NOSUID,
        data: "mode=0755",
    },
    Fs {
        target: "/dev/pts",
        fstype: "devpts",
        flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        data: "gid=5,mode=0620,ptmxmode=0666",
    },
    Fs {
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: NOSUID_NODEV,
        data: "mode=1777",
    },
    Fs {
        target: "/run",
        fstype: "tmpfs",
        flags: NOSUID_NODEV,
        data: "mode=0755",
    },
];

/// Mounts /proc, /sys, /dev (devtmpfs), /dev/pts, /dev/shm and /run,
/// skipping any already mounted, and adds the /dev symlinks that devtmpfs
/// lacks.
pub fn mount_base() -> Result<(), String> {
    for fs in &BASE {
        if fs.target != "/proc" && is_mounted(fs.target) {
            continue;
        }
        let _ = mkdir_p(fs.target);
        match mount(fs.fstype, fs.target, fs.fstype, fs.flags, fs.data) {
            Ok(()) => {}
            // /proc already there (e.g. DEVTMPFS_MOUNT-style setups).
            Err(e) if fs.target == "/proc" && e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(format!("mounting {} on {}: {e}", fs.fstype, fs.target)),
        }
    }
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(target, link);
    }
    Ok(())
}

/// /tmp as tmpfs, in the final root.
pub fn mount_tmp() -> Result<(), String> {
    let _ = mkdir_p("/tmp");
    mount("tmpfs", "/tmp", "tmpfs", NOSUID_NODEV, "mode=1777")
        .map_err(|e| format!("mounting tmpfs on /tmp: {e}"))
}

const NEWROOT: &str = "/newroot";
const OVERLAY_DIR: &str = "/run/mvm/root";

/// Mounts the virtio-fs share `tag` (under a tmpfs overlay if asked) and
/// makes it the root: the API filesystems move along, then
/// MS_MOVE + chroot (pivot_root cannot leave the initramfs' rootfs).
pub fn switch_root(tag: &str, overlay: bool) -> Result<(), String> {
    mkdir_p(NEWROOT).map_err(|e| format!("creating {NEWROOT}: {e}"))?;
    if overlay {
        let lower = format!("{OVERLAY_DIR}/lower");
        let rw = format!("{OVERLAY_DIR}/rw");
        for d in [&lower, &rw] {
            mkdir_p(d).map_err(|e| format!("creating {d}: {e}"))?;
        }
        mount(tag, &lower, "virtiofs", libc::MS_RDONLY, "")
            .map_err(|e| format!("mounting virtio-fs '{tag}' (root) on {lower}: {e}"))?;
        mount("tmpfs", &rw, "tmpfs", 0, "mode=0755")
            .map_err(|e| format!("mounting tmpfs on {rw}: {e}"))?;
        let (upper, work) = (format!("{rw}/upper"), format!("{rw}/work"));
        for d in [&upper, &work] {
            mkdir_p(d).map_err(|e| format!("creating {d}: {e}"))?;
        }
        let opts = format!("lowerdir={lower},upperdir={upper},workdir={work}");
        mount("overlay", NEWROOT, "overlay", 0, &opts)
            .map_err(|e| format!("mounting the root overlay ({opts}): {e}"))?;
    } else {
        mount(tag, NEWROOT, "virtiofs", 0, "")
            .map_err(|e| format!("mounting virtio-fs '{tag}' (root) on {NEWROOT}: {e}"))?;
    }
    if !Path::new(NEWROOT).join("etc").is_dir() && !Path::new(NEWROOT).join("bin").exists() {
        crate::log!("warning: the root share '{tag}' has neither /etc nor /bin");
    }
    for api in ["/dev", "/proc", "/sys", "/run"] {
        let target = format!("{NEWROOT}{api}");
        if !Path::new(&target).is_dir() {
            mkdir_p(&target)
                .map_err(|e| format!("the new root has no {api} and it cannot be created: {e}"))?;
        }
        move_mount(api, &target).map_err(|e| format!("moving {api} into the new root: {e}"))?;
    }
    std::env::set_current_dir(NEWROOT).map_err(|e| format!("chdir {NEWROOT}: {e}"))?;
    move_mount(".", "/").map_err(|e| format!("moving {NEWROOT} to /: {e}"))?;
    let dot = CString::from(c".");
    // SAFETY: valid C string.
    cvt(unsafe { libc::chroot(dot.as_ptr()) }).map_err(|e| format!("chroot: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    Ok(())
}

/// On a NixOS root, /run/current-system (the tools on NixOS's PATH) lives
/// in the host's /run, which the guest replaces with its own: point it at
/// the system profile it comes from. Nothing on other roots.
pub fn link_nixos_system() {
    const PROFILE: &str = "/nix/var/nix/profiles/system";
    if Path::new(PROFILE).exists() {
        if let Err(e) = std::os::unix::fs::symlink(PROFILE, "/run/current-system") {
            crate::log!("linking /run/current-system to {PROFILE}: {e}");
        }
    }
}

pub fn mount_share(s: &Share) -> Result<(), String> {
    mkdir_p(&s.mountpoint).map_err(|e| format!("creating mountpoint {}: {e}", s.mountpoint))?;
    let flags = if s.read_only { libc::MS_RDONLY } else { 0 };
    mount(&s.tag, &s.mountpoint, "virtiofs", flags, "")
        .map_err(|e| format!("mounting virtio-fs '{}' on {}: {e}", s.tag, s.mountpoint))
}

/// Unmounts everything but the API filesystems, deepest first, then makes
/// the root read-only. Best effort: shutdown goes on regardless.
pub fn unmount_all() {
    let mut points = mount_points();
    points.reverse();
    for p in points {
        if p == "/"
            || ["/proc", "/sys", "/dev"]
                .iter()
                .any(|a| p == *a || p.starts_with(&format!("{a}/")))
        {
            continue;
        }
        let Ok(c) = cstring(&p) else { continue };
        // SAFETY: valid C string.
        if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
            // Busy: detach it so the flush still happens when it is free.
            // SAFETY: as above.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
    let root = CString::from(c"/");
    // SAFETY: valid C strings; remount ignores source and fstype.
    unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_RDONLY,
            std::ptr::null(),
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_fields_unescape() {
        assert_eq!(unescape_mount_field(r"/a\040b"), "/a b");
        assert_eq!(unescape_mount_field(r"/tab\011x\134"), "/tab\tx\\");
        assert_eq!(unescape_mount_field(r"/plain"), "/plain");
        assert_eq!(unescape_mount_field(r"\04"), r"\04");
    }

    #[test]
    fn sees_this_hosts_mounts() {
        assert!(mount_points().iter().any(|m| m == "/"));
        assert!(is_mounted("/proc"));
    }
}
