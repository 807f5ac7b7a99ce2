//! Volumes: virtio-blk disks named by their serial (`mvm.volume=SERIAL:/mnt`),
//! formatted as ext4 the first time (with the root's own `mkfs.ext4`: on
//! the host root, the host's e2fsprogs) and mounted.
//!
//! A new file system's root folder is given to the volume's owner, when
//! one is named (a database's data folder belongs to its service's user);
//! later mounts leave ownership to the guest.
//!
//! A disk is formatted only when its first 64 KiB are all zero (a new
//! sparse image): a disk holding anything else that is not ext4 is left
//! alone and reported, never overwritten.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cmdline::Share;
use crate::mounts::mount;
use crate::sys::mkdir_p;

/// Where ext4's superblock magic (0xEF53, little endian) sits.
const EXT4_MAGIC_AT: usize = 1024 + 56;
/// Bytes that must be zero for a disk to count as blank.
const BLANK_PROBE: usize = 64 * 1024;
/// Where mkfs.ext4 may be, in order.
const MKFS: [&str; 4] = [
    "/usr/sbin/mkfs.ext4",
    "/sbin/mkfs.ext4",
    "/usr/sbin/mke2fs",
    "/sbin/mke2fs",
];

/// The virtio-blk disk whose serial is `serial`: `/dev/vdX`.
pub fn find_disk(sys_block: &Path, serial: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(sys_block).ok()?;
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("vd"))
        .collect();
    names.sort();
    names.into_iter().find_map(|n| {
        let s = std::fs::read_to_string(sys_block.join(&n).join("serial")).ok()?;
        (s.trim_end_matches(['\0', '\n', ' ']) == serial).then(|| PathBuf::from("/dev").join(&n))
    })
}

/// What the start of a disk says about it.
#[derive(Debug, PartialEq, Eq)]
pub enum Content {
    Ext4,
    Blank,
    Other,
}

pub fn probe(head: &[u8]) -> Content {
    if head.get(EXT4_MAGIC_AT..EXT4_MAGIC_AT + 2) == Some(&[0x53, 0xef][..]) {
        Content::Ext4
    } else if head.len() >= BLANK_PROBE && head[..BLANK_PROBE].iter().all(|&b| b == 0) {
        Content::Blank
    } else {
        Content::Other
    }
}

fn read_head(dev: &Path) -> Result<Vec<u8>, String> {
    let mut head = vec![0u8; BLANK_PROBE];
    File::open(dev)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| format!("reading {}: {e}", dev.display()))?;
    Ok(head)
}

fn mkfs(dev: &Path, label: &str) -> Result<(), String> {
    let Some(tool) = MKFS.iter().find(|p| Path::new(p).exists()) else {
        return Err(
            "no mkfs.ext4 in the guest's root to format it (install e2fsprogs on the host, or use the host root)".into(),
        );
    };
    // ext4 labels are at most 16 bytes.
    let label: String = label.chars().take(16).collect();
    let out = Command::new(tool)
        .args(["-t", "ext4", "-q", "-F", "-m", "0", "-L", &label])
        .args(["-E", "lazy_itable_init=1,lazy_journal_init=1"])
        .arg(dev)
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Ok(out) => out,
        // A reaper took its exit status (PID 1 formats before it starts
        // one, but a host process running these tests has one): the
        // output was read to its end, so mkfs is done; judge by the disk.
        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {
            return match read_head(dev).map(|h| probe(&h)) {
                Ok(Content::Ext4) => Ok(()),
                _ => Err(format!(
                    "{tool}: its exit status was lost and the disk is not ext4"
                )),
            };
        }
        Err(e) => return Err(format!("running {tool}: {e}")),
    };
    if !out.status.success() {
        return Err(format!(
            "{tool} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Gives the folder `dir` to `owner`, resolved in `root`'s passwd and
/// group files (its primary group).
fn give_to(root: &Path, dir: &str, owner: &str) -> Result<(), String> {
    let id = crate::passwd::resolve(root, Some(&agent_proto::User::Name(owner.into())))?;
    std::os::unix::fs::chown(dir, Some(id.uid), Some(id.gid))
        .map_err(|e| format!("giving {dir} to {owner}: {e}"))
}

/// Finds, formats if blank, and mounts one volume; a volume formatted now
/// has its root folder given to `owner`.
pub fn mount_volume(v: &Share, owner: Option<&str>) -> Result<(), String> {
    let serial = &v.tag;
    let err = |e: String| format!("volume '{serial}': {e}");
    let dev = find_disk(Path::new("/sys/block"), serial)
        .ok_or_else(|| err("no virtio disk with this serial".into()))?;
    let mut formatted = false;
    match probe(&read_head(&dev).map_err(err)?) {
        Content::Ext4 => {}
        Content::Blank if v.read_only => {
            return Err(err(
                "it is blank and attached read-only: attach it writable once to format it".into(),
            ))
        }
        Content::Blank => {
            crate::log!("volume '{serial}': formatting {} as ext4", dev.display());
            mkfs(&dev, serial).map_err(err)?;
            formatted = true;
        }
        Content::Other => {
            return Err(err(format!(
                "{} holds data that is not ext4; not formatting it",
                dev.display()
            )))
        }
    }
    mkdir_p(&v.mountpoint).map_err(|e| err(format!("creating {}: {e}", v.mountpoint)))?;
    let d = dev.to_string_lossy();
    let flags = if v.read_only { libc::MS_RDONLY } else { 0 };
    let mounted = mount(&d, &v.mountpoint, "ext4", flags, "").or_else(|e| {
        // A read-only disk cannot replay a journal left by a VM that died:
        // mount without it.
        if v.read_only {
            mount(&d, &v.mountpoint, "ext4", flags, "noload")
        } else {
            Err(e)
        }
    });
    mounted.map_err(|e| err(format!("mounting {d} on {}: {e}", v.mountpoint)))?;
    match owner {
        Some(owner) if formatted => give_to(Path::new("/"), &v.mountpoint, owner).map_err(err),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_blank_ext4_and_other() {
        let mut head = vec![0u8; BLANK_PROBE];
        assert_eq!(probe(&head), Content::Blank);
        head[EXT4_MAGIC_AT] = 0x53;
        head[EXT4_MAGIC_AT + 1] = 0xef;
        assert_eq!(probe(&head), Content::Ext4);
        head[EXT4_MAGIC_AT] = 0;
        assert_eq!(probe(&head), Content::Other);
        assert_eq!(probe(&[]), Content::Other);
    }

    #[test]
    fn formats_a_blank_image_with_the_roots_mkfs() {
        // The same command the guest runs, on a sparse file: the options
        // are ones this e2fsprogs (the host's, which the guest uses) takes.
        if !MKFS.iter().any(|p| Path::new(p).exists()) {
            eprintln!("skipped: no mkfs.ext4 here");
            return;
        }
        let img = std::env::temp_dir().join(format!("mvm-init-mkfs-{}.img", std::process::id()));
        let f = File::create(&img).unwrap();
        f.set_len(32 << 20).unwrap();
        assert_eq!(probe(&read_head(&img).unwrap()), Content::Blank);
        mkfs(&img, "a-volume-name-of-20c").unwrap();
        assert_eq!(probe(&read_head(&img).unwrap()), Content::Ext4);
        // The label was cut to ext4's 16 bytes (s_volume_name at 1024 + 120).
        let head = read_head(&img).unwrap();
        assert_eq!(&head[1144..1160], b"a-volume-name-of");
        std::fs::remove_file(&img).unwrap();
    }

    #[test]
    fn a_new_volumes_root_goes_to_its_owner() {
        let dir = std::env::temp_dir().join(format!("mvm-init-owner-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::create_dir_all(dir.join("mnt")).unwrap();
        std::fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\npostgres:x:104:110::/var/lib/postgresql:/bin/sh\n",
        )
        .unwrap();
        let mnt = dir.join("mnt");
        let mnt = mnt.to_str().unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            use std::os::unix::fs::MetadataExt;
            give_to(&dir, mnt, "postgres").unwrap();
            let m = std::fs::metadata(mnt).unwrap();
            assert_eq!((m.uid(), m.gid()), (104, 110));
            give_to(&dir, mnt, "2000").unwrap();
            let m = std::fs::metadata(mnt).unwrap();
            assert_eq!((m.uid(), m.gid()), (2000, 2000));
        }
        let e = give_to(&dir, mnt, "nobody-here").unwrap_err();
        assert!(e.contains("unknown user 'nobody-here'"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn finds_disks_by_serial() {
        let dir = std::env::temp_dir().join(format!("mvm-init-vols-{}", std::process::id()));
        for (dev, serial) in [("vda", "pgdata\n"), ("vdb", "cache"), ("sda", "pgdata")] {
            std::fs::create_dir_all(dir.join(dev)).unwrap();
            std::fs::write(dir.join(dev).join("serial"), serial).unwrap();
        }
        assert_eq!(find_disk(&dir, "pgdata"), Some("/dev/vda".into()));
        assert_eq!(find_disk(&dir, "cache"), Some("/dev/vdb".into()));
        assert_eq!(find_disk(&dir, "other"), None);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(find_disk(Path::new("/nonexistent"), "x"), None);
    }
}
