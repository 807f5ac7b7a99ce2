//! Host paths given to the guest: home paths shared on request, and the
//! file systems no share may come from.

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Paths in the host user's home shared with the guest (`--share-home`,
/// mvm.toml `home`), each at the same place under the guest's home.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeShares {
    /// The host home they are relative to.
    pub dir: PathBuf,
    /// Relative to `dir`, normal components only.
    pub paths: Vec<PathBuf>,
}

/// Where the home share is mounted: the home of the guest user commands
/// and services run as by default (root).
pub const GUEST_HOME: &str = "/root";

const ACCEPTED: &str = "~/PATH, a path relative to your home, or an absolute path inside it";

/// The syntax of a home entry: `~/PATH`, `PATH` (relative to the home) or
/// an absolute path, with no `.` or `..` and not the home itself.
pub fn home_relative(entry: &str) -> Result<PathBuf, String> {
    let rest = entry.strip_prefix("~/").unwrap_or(entry);
    let rel = Path::new(rest);
    let comps: Vec<Component> = rel.components().collect();
    let normal = comps
        .iter()
        .all(|c| matches!(c, Component::Normal(_) | Component::RootDir));
    let has_name = comps.iter().any(|c| matches!(c, Component::Normal(_)));
    if entry == "~" || !normal || !has_name || entry.contains('\0') {
        return Err(format!("invalid home path '{entry}': give {ACCEPTED}"));
    }
    Ok(rel.to_path_buf())
}

/// The host user's home ($HOME, resolved).
pub fn host_home() -> Result<PathBuf, String> {
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .ok_or("cannot share home paths: HOME is not set")?;
    std::fs::canonicalize(&home).map_err(|e| {
        format!(
            "cannot share home paths: HOME {}: {e}",
            Path::new(&home).display()
        )
    })
}

/// Resolves home entries against `home`: each must exist inside it, on a
/// real file system. `what` names the source in errors ("--share-home").
pub fn resolve_home(
    entries: &[String],
    home: &Path,
    what: &str,
) -> Result<Option<HomeShares>, String> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for e in entries {
        let rel = home_relative(e).map_err(|m| format!("{what}: {m}"))?;
        let rel = if rel.is_absolute() {
            rel.strip_prefix(home)
                .map(Path::to_path_buf)
                .ok()
                .filter(|r| !r.as_os_str().is_empty())
                .ok_or_else(|| {
                    format!(
                        "{what} '{e}': not inside your home folder {}; give {ACCEPTED}",
                        home.display()
                    )
                })?
        } else {
            rel
        };
        let host = home.join(&rel);
        if std::fs::symlink_metadata(&host).is_err() {
            return Err(format!("{what} '{e}': {} does not exist", host.display()));
        }
        refuse_pseudo_fs(&host).map_err(|m| format!("{what}: {m}"))?;
        if !paths.contains(&rel) {
            paths.push(rel);
        }
    }
    Ok((!paths.is_empty()).then(|| HomeShares {
        dir: home.to_path_buf(),
        paths,
    }))
}

/// Kernel interfaces, not files: sharing one would hand the guest the
/// host's processes, devices or kernel knobs. By `statfs` f_type.
const PSEUDO_FS: &[(i64, &str)] = &[
    (0x9fa0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x1cd1, "devpts"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x7363_6673, "securityfs"),
    (0x0027_e0eb, "cgroup"),
    (0x6367_7270, "cgroup2"),
    (0xcafe_4a11, "bpf"),
    (0x6165_676c, "pstore"),
    (0xde5e_81e4, "efivarfs"),
    (0x6265_6570, "configfs"),
    (0x6573_5543, "fusectl"),
    (0x4249_4e4d, "binfmt_misc"),
    (0xf97c_ff8c, "selinuxfs"),
    (0x1980_0202, "mqueue"),
    (0x6e73_6673, "nsfs"),
    (0x4250_4553, "bdev"),
    (0x5049_5045, "pipefs"),
    (0x5346_4f43, "sockfs"),
];

/// Refuses a share source on a pseudo file system (by `fstatfs`).
pub fn refuse_pseudo_fs(path: &Path) -> Result<(), String> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // SAFETY: an all-zero statfs is a valid value for fstatfs to overwrite.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `f` is an open fd for the call's duration and `st` is a
    // writable statfs.
    if unsafe { libc::fstatfs(f.as_raw_fd(), &mut st) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("cannot statfs {}: {e}", path.display()));
    }
    #[allow(clippy::unnecessary_cast)]
    let ftype = st.f_type as i64;
    match PSEUDO_FS.iter().find(|(t, _)| *t == ftype) {
        Some((_, name)) => Err(format!(
            "{} is on {name}, a kernel pseudo file system, which cannot be shared; share a folder of real files",
            path.display()
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_entries_accept_paths_inside_the_home_only() {
        let d = tempfile::tempdir().unwrap();
        let home = std::fs::canonicalize(d.path()).unwrap();
        std::fs::write(home.join(".gitconfig"), "[user]").unwrap();
        std::fs::create_dir_all(home.join(".config/tool")).unwrap();
        let abs = home.join(".config/tool").display().to_string();
        let got = resolve_home(
            &[
                "~/.gitconfig".into(),
                ".config/tool".into(),
                abs,
                ".gitconfig".into(),
            ],
            &home,
            "--share-home",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            got.paths,
            [PathBuf::from(".gitconfig"), PathBuf::from(".config/tool")]
        );
        for bad in ["", "~", "~/", "../x", "~/a/../../b", "/etc/passwd", "./x"] {
            let e = resolve_home(&[bad.into()], &home, "--share-home").unwrap_err();
            assert!(e.starts_with("--share-home"), "{bad}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let e = resolve_home(&["~/.npmrc".into()], &home, "--share-home").unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
        assert_eq!(resolve_home(&[], &home, "x").unwrap(), None);
    }

    #[test]
    fn pseudo_file_systems_are_refused() {
        for p in ["/proc", "/proc/self", "/sys"] {
            let e = refuse_pseudo_fs(Path::new(p)).unwrap_err();
            assert!(e.contains("pseudo file system"), "{p}: {e}");
        }
        let d = tempfile::tempdir().unwrap();
        refuse_pseudo_fs(d.path()).unwrap();
    }
}
