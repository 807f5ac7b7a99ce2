//! Where mvm keeps things on the host.

use std::path::PathBuf;

/// `$MVM_CACHE_DIR`, else `$XDG_CACHE_HOME/mvm`, else `~/.cache/mvm`: the
/// same rule guest-kernel/build.sh follows.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("MVM_CACHE_DIR").filter(|v| !v.is_empty()) {
        return Some(dir.into());
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(dir).join("mvm"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|home| PathBuf::from(home).join(".cache/mvm"))
}

/// The guest kernel guest-kernel/build.sh last built.
pub fn cached_kernel() -> Option<PathBuf> {
    cache_dir().map(|d| d.join("guest-kernel/vmlinux"))
}
