//! What the bench programs' command lines (clap, derived in each program)
//! share: the binaries of a nested run, finding QEMU and the programs
//! beside this one.

use std::path::PathBuf;

/// What a nested benchmark boots: `--mvm`, `--kernel`, `--initrd`.
#[derive(clap::Args, Debug)]
pub struct Nested {
    /// The mvm binary (static).
    #[arg(long, value_name = "PATH")]
    pub mvm: PathBuf,
    /// Guest kernel (guest-kernel/build.sh --print-path).
    #[arg(long, value_name = "PATH")]
    pub kernel: PathBuf,
    /// Initramfs (tests/nested/make-guest-initramfs.sh).
    #[arg(long, value_name = "PATH")]
    pub initrd: PathBuf,
}

/// `name` in a folder of `$PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

/// The QEMU of `--qemu`: its path, none for `none` (the reference is
/// skipped), qemu-system-x86_64 from `$PATH` when not given.
pub fn qemu(arg: Option<&str>) -> Option<PathBuf> {
    match arg {
        Some("none") => None,
        Some(q) => Some(PathBuf::from(q)),
        None => find_in_path("qemu-system-x86_64"),
    }
}

/// The default of `--noop`: the `noop` program beside this one.
pub fn noop_beside_me() -> PathBuf {
    std::env::current_exe()
        .expect("knows its own path")
        .with_file_name("noop")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_none_skips() {
        assert_eq!(qemu(Some("none")), None);
        assert_eq!(qemu(Some("/q")), Some(PathBuf::from("/q")));
    }
}
