//! Small helpers the native tests of several crates share (no harness, no
//! dependencies): reading `/proc/PID/status`, finding virtiofsd.

use std::path::PathBuf;
use std::process::Command;

/// The value of field `key` (`"Uid:"`) of a `/proc/PID/status` text, its
/// words joined by one space; empty when the field is missing.
pub fn proc_status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The checkout: the parent of the running test's crate folder
/// (`CARGO_MANIFEST_DIR`, read at run time so that a copy of the checkout
/// sharing the target dir is not sent back to the original), else this
/// crate's.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .expect("every crate sits in the workspace")
        .to_path_buf()
}

/// virtiofsd, the reference vhost-user-fs backend: `$MVM_VIRTIOFSD`, else
/// installed (or found in the cache) by scripts/install-virtiofsd.sh.
pub fn virtiofsd() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("MVM_VIRTIOFSD") {
        return Ok(p.into());
    }
    let script = workspace_root().join("scripts/install-virtiofsd.sh");
    let out = Command::new(&script)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}):\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_fields_are_read_whole() {
        let status = "Name:\tmvm\nUid:\t1000\t1000\t1000\t1000\nCapEff:\t0000000000000000\n";
        assert_eq!(
            super::proc_status_field(status, "Uid:"),
            "1000 1000 1000 1000"
        );
        assert_eq!(
            super::proc_status_field(status, "CapEff:"),
            "0000000000000000"
        );
        assert_eq!(super::proc_status_field(status, "Gid:"), "");
    }
}
