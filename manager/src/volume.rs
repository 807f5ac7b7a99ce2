//! Volumes: named, persistent disks. A volume is a sparse raw image
//! `$MVM_HOME/volumes/NAME.img` with its metadata `NAME.toml`; a VM gets
//! it as a virtio-blk disk whose serial is NAME, and mvm-init formats it
//! (ext4, the first time) and mounts it at the guest path.
//!
//! Volumes outlive their VMs (`mvm rm` keeps them, `mvm rm --volumes`
//! removes the VM's own). A volume is attached read-write to at most one
//! running VM: the VMM holds an exclusive `flock` on the image while it
//! runs (shared for read-only attachments), and `start` checks it first
//! to say which VM holds it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{bail, err, Context};
use crate::state::{self, RunState};
use crate::Report;

/// Volume names: they become file names and the disk's serial (at most
/// 20 bytes, VIRTIO_BLK_ID_BYTES).
pub const MAX_NAME_LEN: usize = 20;
/// The smallest volume (ext4 with a journal wants a few MiB).
pub const MIN_SIZE_MIB: u64 = 16;
/// The largest volume: 16 TiB (ext4 with 4 KiB blocks).
pub const MAX_SIZE_MIB: u64 = 16 << 20;
/// Volumes per VM: each is a virtio device with its own interrupt line,
/// of which a VM has 19 for all its devices.
pub const MAX_PER_VM: usize = 8;

/// A volume in a VM's spec: which one, where the guest mounts it, and the
/// size to create it with when it does not exist yet (mvm.toml's
/// `volumes`; none for `--volume`, which needs an existing one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    pub name: String,
    pub guest: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ro: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_mib: Option<u64>,
    /// Who gets the root folder when the guest formats it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// `NAME.toml`: what `volume create` recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeMeta {
    pub size_mib: u64,
    /// Unix time of creation.
    pub created: u64,
    /// The project folder whose mvm.toml had it created (none: `mvm volume
    /// create` or `--volume`). An untrusted mvm.toml may attach only its
    /// own project's volumes (see `project::trust`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<PathBuf>,
}

/// What `mvm volume list` shows of a volume.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeInfo {
    pub name: String,
    pub size_mib: u64,
    /// Bytes the sparse image takes on the host's disk.
    pub used_bytes: u64,
    /// VMs whose spec attaches it.
    pub attached_to: Vec<String>,
    /// Whether a running VM holds it now.
    pub in_use: bool,
}

pub fn validate_name(name: &str) -> crate::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if !ok {
        bail!(
            "invalid volume name '{name}': use 1 to {MAX_NAME_LEN} lowercase letters, digits, '-' and '_', starting with a letter or digit"
        );
    }
    Ok(())
}

/// A volume size ("10G", "512M", or MiB as a number) in MiB.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let mib = vmm::parse_memory_mib(s).map_err(|_| {
        format!("invalid volume size '{s}': use MiB or a size such as 512M, 10G or 1T")
    })?;
    if !(MIN_SIZE_MIB..=MAX_SIZE_MIB).contains(&mib) {
        return Err(format!(
            "invalid volume size '{s}': use at least {MIN_SIZE_MIB}M and at most 16T"
        ));
    }
    Ok(mib)
}

/// `--volume NAME:GUEST_PATH[:ro]`.
pub fn parse_mount_arg(s: &str) -> Result<VolumeMount, String> {
    let bad = |why: String| format!("invalid volume '{s}': {why} (expected NAME:GUEST_PATH[:ro])");
    let (name, rest) = s.split_once(':').ok_or_else(|| bad("missing ':'".into()))?;
    let (guest, ro) = match rest.rsplit_once(':') {
        Some((g, "ro")) => (g, true),
        Some((g, "rw")) => (g, false),
        Some((_, other)) => return Err(bad(format!("unknown mode '{other}'"))),
        None => (rest, false),
    };
    validate_name(name).map_err(|e| e.to_string())?;
    check_guest_path(guest).map_err(bad)?;
    Ok(VolumeMount {
        name: name.to_string(),
        guest: guest.to_string(),
        ro,
        size_mib: None,
        owner: None,
    })
}

/// A guest mount point: what a share's may be, and not `/`.
pub fn check_guest_path(guest: &str) -> Result<(), String> {
    if guest == "/" {
        return Err("guest path '/' is the root; mount a volume on a folder".into());
    }
    state::validate_guest_path(guest)
}

pub fn volumes_dir() -> crate::Result<PathBuf> {
    Ok(state::home()?.join("volumes"))
}

pub fn image_path(name: &str) -> crate::Result<PathBuf> {
    Ok(volumes_dir()?.join(format!("{name}.img")))
}

fn meta_path(name: &str) -> crate::Result<PathBuf> {
    Ok(volumes_dir()?.join(format!("{name}.toml")))
}

pub fn exists(name: &str) -> crate::Result<bool> {
    Ok(image_path(name)?.exists())
}

/// What `NAME.toml` records of an existing volume (none when unreadable).
pub fn meta(name: &str) -> Option<VolumeMeta> {
    let text = std::fs::read_to_string(meta_path(name).ok()?).ok()?;
    toml::from_str(&text).ok()
}

/// One volume command at a time (create, rm, the creation at start).
fn lock() -> crate::Result<std::fs::File> {
    let dir = volumes_dir()?;
    state::create_private_dir(&dir)?;
    let path = dir.join(".lock");
    netstack::lockfile::lock_exclusive(&path, true)
        .with_context(|| format!("cannot lock {}", path.display()))?
        .with_context(|| format!("cannot lock {}", path.display()))
}

/// `mvm volume create NAME --size SIZE`: a new, blank sparse image (the
/// guest formats it when it first mounts it). Nothing is left behind when
/// it fails.
pub fn create(name: &str, size_mib: u64) -> crate::Result<VolumeMeta> {
    validate_name(name)?;
    if !(MIN_SIZE_MIB..=MAX_SIZE_MIB).contains(&size_mib) {
        bail!("invalid volume size {size_mib}M: use at least {MIN_SIZE_MIB}M and at most 16T");
    }
    let _lock = lock()?;
    create_locked(name, size_mib, None)
}

fn create_locked(name: &str, size_mib: u64, project: Option<&Path>) -> crate::Result<VolumeMeta> {
    let img = image_path(name)?;
    if img.exists() {
        bail!("a volume named '{name}' already exists (see `mvm volume list`)");
    }
    let dir = volumes_dir()?;
    let tmp_img = dir.join(format!(".{name}.{}.img.tmp", std::process::id()));
    let tmp_meta = dir.join(format!(".{name}.{}.toml.tmp", std::process::id()));
    let meta = VolumeMeta {
        size_mib,
        created: now(),
        project: project.map(Path::to_path_buf),
    };
    let result = (|| -> crate::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp_img)
            .with_context(|| format!("cannot create {}", tmp_img.display()))?;
        // Sparse: no host blocks until the guest writes.
        f.set_len(size_mib << 20)
            .with_context(|| format!("cannot size {} to {size_mib} MiB", tmp_img.display()))?;
        let text = toml::to_string(&meta)?;
        std::fs::write(&tmp_meta, text)
            .with_context(|| format!("cannot write {}", tmp_meta.display()))?;
        std::fs::rename(&tmp_meta, meta_path(name)?)
            .with_context(|| format!("cannot create volume '{name}'"))?;
        // The image last: it is what makes the volume exist.
        std::fs::rename(&tmp_img, &img).with_context(|| format!("cannot create volume '{name}'"))
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp_img);
        let _ = std::fs::remove_file(&tmp_meta);
        if !img.exists() {
            let _ = std::fs::remove_file(meta_path(name)?);
        }
        return Err(e);
    }
    Ok(meta)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// VMs whose spec attaches volume `name` (but `except`).
fn attached_to(name: &str, except: Option<&str>) -> crate::Result<Vec<(String, RunState)>> {
    let mut out = Vec::new();
    for dir in state::all_vms()? {
        if Some(dir.name.as_str()) == except {
            continue;
        }
        if let Ok(spec) = dir.spec() {
            if spec.volumes.iter().any(|v| v.name == name) {
                out.push((dir.name.clone(), dir.run_state()));
            }
        }
    }
    Ok(out)
}

/// Whether a process holds the image's lock in a way that conflicts with
/// taking it (exclusive when `!shared`).
fn held(img: &Path, shared: bool) -> crate::Result<bool> {
    let f = std::fs::File::open(img).with_context(|| format!("cannot open {}", img.display()))?;
    // Taken and released (when `f` closes) only to see whether it can be.
    let taken = if shared {
        f.try_lock_shared()
    } else {
        f.try_lock()
    };
    Ok(taken.is_err())
}

/// Every volume, by name.
pub fn list() -> crate::Result<Vec<VolumeInfo>> {
    use std::os::unix::fs::MetadataExt;
    let dir = volumes_dir()?;
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(name) = file.strip_suffix(".img") else {
            continue;
        };
        if validate_name(name).is_err() {
            continue;
        }
        let Ok(m) = e.metadata() else { continue };
        out.push(VolumeInfo {
            name: name.to_string(),
            size_mib: m.len() >> 20,
            used_bytes: m.blocks() * 512,
            attached_to: attached_to(name, None)?
                .into_iter()
                .map(|(n, _)| n)
                .collect(),
            in_use: held(&e.path(), false).unwrap_or(false),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// `mvm volume rm NAME`: refused while a VM attaches it.
pub fn remove(name: &str) -> crate::Result<()> {
    validate_name(name)?;
    let _lock = lock()?;
    remove_locked(name, None)
}

fn remove_locked(name: &str, except: Option<&str>) -> crate::Result<()> {
    let img = image_path(name)?;
    if !img.exists() {
        bail!("no volume named '{name}' (see `mvm volume list`)");
    }
    if let Some((vm, st)) = attached_to(name, except)?.into_iter().next() {
        bail!(
            "volume '{name}' is attached to VM '{vm}' ({st}); remove that VM first (`mvm rm {vm}`, or `mvm rm --volumes {vm}` to remove its volumes too)"
        );
    }
    if held(&img, false)? {
        bail!("volume '{name}' is in use by a running VM");
    }
    std::fs::remove_file(&img).with_context(|| format!("cannot remove {}", img.display()))?;
    let _ = std::fs::remove_file(meta_path(name)?);
    Ok(())
}

/// After `mvm rm --volumes VM`: removes the volumes of that VM's spec
/// that no other VM attaches (those are kept, and said).
pub fn remove_of_vm(vm: &str, mounts: &[VolumeMount], report: &dyn Report) -> crate::Result<()> {
    let _lock = lock()?;
    for v in mounts {
        if !exists(&v.name)? {
            continue;
        }
        let others = attached_to(&v.name, Some(vm))?;
        if let Some((other, _)) = others.first() {
            report.warn(&format!(
                "kept volume '{}': VM '{other}' attaches it too",
                v.name
            ));
            continue;
        }
        remove_locked(&v.name, Some(vm))?;
        report.progress(&format!("removed volume '{}'", v.name));
    }
    Ok(())
}

/// Before VM `vm` starts: each of its volumes exists (created now from the
/// size mvm.toml declares, said, and recorded as `project`'s), and none is
/// held by a running VM in a way this attachment conflicts with. The VMM's
/// configs for them.
pub fn prepare(
    vm: &str,
    project: Option<&Path>,
    mounts: &[VolumeMount],
    report: &dyn Report,
) -> crate::Result<Vec<vmm::BlockConfig>> {
    let mut out = Vec::new();
    if mounts.is_empty() {
        return Ok(out);
    }
    let _lock = lock()?;
    for v in mounts {
        let img = image_path(&v.name)?;
        if !img.exists() {
            let Some(size) = v.size_mib else {
                bail!(
                    "volume '{}' does not exist: create it with `mvm volume create {} --size 10G`",
                    v.name,
                    v.name
                );
            };
            create_locked(&v.name, size, project)?;
            report.progress(&format!("created volume '{}' ({size} MiB)", v.name));
        }
        if held(&img, v.ro)? {
            let holders: Vec<String> = attached_to(&v.name, Some(vm))?
                .into_iter()
                .filter(|(_, st)| matches!(st, RunState::Running | RunState::Paused))
                .map(|(n, _)| format!("'{n}'"))
                .collect();
            let by = if holders.is_empty() {
                "another running VM".to_string()
            } else {
                format!("running VM {}", holders.join(", "))
            };
            bail!(
                "volume '{}' is in use by {by}; a volume is attached read-write to one running VM at a time",
                v.name
            );
        }
        out.push(vmm::BlockConfig {
            path: img,
            id: v.name.clone(),
            read_only: v.ro,
        });
    }
    Ok(out)
}

/// The command line's volumes over the project's: one with the same name
/// or guest path replaces the project's. Checked: names, guest paths (not
/// under /project), no volume twice, and each `--volume` exists.
pub fn merge(declared: &[VolumeMount], given: &[VolumeMount]) -> crate::Result<Vec<VolumeMount>> {
    let mut out: Vec<VolumeMount> = declared
        .iter()
        .filter(|d| !given.iter().any(|g| g.name == d.name || g.guest == d.guest))
        .cloned()
        .collect();
    out.extend(given.iter().cloned());
    if out.len() > MAX_PER_VM {
        bail!(
            "{} volumes for one VM: at most {MAX_PER_VM} are allowed",
            out.len()
        );
    }
    let mut names = std::collections::HashSet::new();
    let mut paths = std::collections::HashSet::new();
    for v in &out {
        validate_name(&v.name)?;
        check_guest_path(&v.guest).map_err(|e| err!("volume '{}': {e}", v.name))?;
        if !names.insert(v.name.as_str()) {
            bail!("volume '{}' is attached twice", v.name);
        }
        if !paths.insert(v.guest.as_str()) {
            bail!("two volumes are mounted at '{}'", v.guest);
        }
        if v.size_mib.is_none() && !exists(&v.name)? {
            bail!(
                "volume '{}' does not exist: create it with `mvm volume create {} --size 10G`",
                v.name,
                v.name
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(name: &str, guest: &str) -> VolumeMount {
        VolumeMount {
            name: name.into(),
            guest: guest.into(),
            ro: false,
            // A size: merge does not look for the volume on disk.
            size_mib: Some(64),
            owner: None,
        }
    }

    #[test]
    fn names_sizes_and_mount_args() {
        for ok in ["pgdata", "a", "0cache", "x_y-z", &"v".repeat(20)] {
            validate_name(ok).unwrap();
        }
        for bad in [
            "",
            "-a",
            "_a",
            "Pg",
            "a b",
            "a/b",
            "a.img",
            &"v".repeat(21),
            "é",
        ] {
            let e = validate_name(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("'{bad}'")), "{e}");
        }
        assert_eq!(parse_size("10G"), Ok(10240));
        assert_eq!(parse_size("16M"), Ok(16));
        assert_eq!(parse_size("16T"), Ok(16 << 20));
        for bad in ["", "10X", "1.5G", "-1", "15M", "17T"] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains(&format!("'{bad}'")), "{e}");
        }
        let m = parse_mount_arg("pgdata:/var/lib/postgresql").unwrap();
        assert_eq!(
            (m.name.as_str(), m.guest.as_str(), m.ro),
            ("pgdata", "/var/lib/postgresql", false)
        );
        assert!(parse_mount_arg("assets:/srv/a:ro").unwrap().ro);
        assert!(!parse_mount_arg("assets:/srv/a:rw").unwrap().ro);
        for (bad, needle) in [
            ("pgdata", "missing ':'"),
            ("pgdata:/a:rx", "unknown mode 'rx'"),
            ("pgdata:rel", "must be absolute"),
            ("pgdata:/", "is the root"),
            ("pgdata:/a b", "without spaces"),
            ("pgdata:/project/db", "under /project"),
            ("PG:/a", "invalid volume name 'PG'"),
        ] {
            let e = parse_mount_arg(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn the_command_line_replaces_the_projects_volumes() {
        let declared = [
            mount("pgdata", "/var/lib/postgresql"),
            mount("cache", "/cache"),
        ];
        let mut mine = mount("other", "/var/lib/postgresql");
        mine.ro = true;
        let out = merge(&declared, &[mine.clone()]).unwrap();
        assert_eq!(out, vec![mount("cache", "/cache"), mine]);
        // Same name or same path: the project's goes (here both of them).
        let out = merge(&declared, &[mount("pgdata", "/cache")]).unwrap();
        assert_eq!(out, vec![mount("pgdata", "/cache")]);
        let e = merge(&[], &[mount("a", "/x"), mount("b", "/x")]).unwrap_err();
        assert!(
            e.to_string().contains("two volumes are mounted at '/x'"),
            "{e}"
        );
        let e = merge(&[], &[mount("a", "/a"), mount("a", "/b")]).unwrap_err();
        assert!(
            e.to_string().contains("volume 'a' is attached twice"),
            "{e}"
        );
        let many: Vec<_> = (0..9)
            .map(|i| mount(&format!("v{i}"), &format!("/v{i}")))
            .collect();
        let e = merge(&many, &[]).unwrap_err();
        assert!(e.to_string().contains("at most 8"), "{e}");
    }
}
