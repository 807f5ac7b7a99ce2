//! Trusting a project's `mvm.toml`. The file comes with the project, so it
//! is untrusted input: what would reach beyond the project folder and its
//! VM (shares of host folders outside it, home paths, `env_host`
//! wildcards, private networks in `network.allow`, forwards listening on
//! other than the host's loopback, volumes of another project or made by
//! hand) is honoured only once the user has run `mvm trust` on that
//! folder, as `direnv allow` does. A trust is remembered by the file's
//! path and the SHA-256 of its content: any edit needs a new `mvm trust`.

use std::path::{Path, PathBuf};

use sha2::Digest;

use crate::error::Context;

use super::config::{Network, ProjectConfig};

/// Where trusts are kept: one file per trusted mvm.toml.
fn trust_dir() -> crate::Result<PathBuf> {
    Ok(crate::state::home()?.join("trust"))
}

/// The record of `file`: named by the hash of its path, holding the hash
/// of the trusted content and the path.
fn record(file: &Path) -> crate::Result<PathBuf> {
    Ok(trust_dir()?.join(hex(&sha256(file.as_os_str().as_encoded_bytes()))))
}

fn record_text(file: &Path, content: &[u8]) -> String {
    format!("{}\n{}\n", hex(&sha256(content)), file.display())
}

/// Whether `file` (absolute) with this content was trusted.
pub fn is_trusted(file: &Path, content: &[u8]) -> bool {
    record(file)
        .and_then(|r| Ok(std::fs::read_to_string(r)?))
        .is_ok_and(|t| t == record_text(file, content))
}

/// Trusts `file` with this content (replacing an older trust of it).
pub fn trust(file: &Path, content: &[u8]) -> crate::Result<()> {
    let dir = trust_dir()?;
    crate::state::create_private_dir(&dir)?;
    let rec = record(file)?;
    let tmp = rec.with_extension("tmp");
    std::fs::write(&tmp, record_text(file, content))
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &rec).with_context(|| format!("cannot write {}", rec.display()))
}

/// Forgets the trust of `file`; false when there was none.
pub fn revoke(file: &Path) -> crate::Result<bool> {
    match std::fs::remove_file(record(file)?) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).context("cannot remove the trust record"),
    }
}

/// What an untrusted mvm.toml asks for beyond the project folder, one
/// short phrase each; `config` keeps only the rest.
pub fn strip_untrusted(project: &Path, config: &mut ProjectConfig) -> Vec<String> {
    let mut skipped = Vec::new();
    config.shares.retain(|s| {
        let inside =
            std::fs::canonicalize(project.join(&s.host)).is_ok_and(|abs| abs.starts_with(project));
        if !inside {
            skipped.push(format!("share {}", s.host));
        }
        inside
    });
    for h in config.home.drain(..) {
        skipped.push(format!("home {h}"));
    }
    config.env_host.retain(|p| {
        let wildcard = p.0.ends_with('*');
        if wildcard {
            skipped.push(format!("env_host {}", p.0));
        }
        !wildcard
    });
    if let Some(Network::Table(t)) = &mut config.network {
        for a in t.allow.drain(..) {
            skipped.push(format!("network.allow {}", a.0));
        }
    }
    // A forward on another address is kept, on the loopback.
    for p in &mut config.ports {
        if let Some(addr) = p.0.addr.filter(|a| !a.is_loopback()) {
            skipped.push(format!(
                "port {} on {addr} (kept on loopback)",
                p.0.host_port
            ));
            p.0.addr = None;
        }
    }
    // A volume this project's mvm.toml made (or will make) is its own;
    // another one may hold another project's data.
    config.volumes.retain(|v| {
        let own = !crate::volume::exists(&v.name).unwrap_or(true)
            || crate::volume::meta(&v.name)
                .and_then(|m| m.project)
                .as_deref()
                == Some(project);
        if !own {
            skipped.push(format!("volume {} (not made by this project)", v.name));
        }
        own
    });
    skipped
}

/// Applies the trust rule to a project's mvm.toml (`text`, as parsed into
/// `config`): untrusted, what it asks beyond the folder is dropped, and one
/// line says what and how to allow it.
pub fn gate(
    project: &Path,
    file: &Path,
    text: &str,
    config: &mut ProjectConfig,
    report: &dyn crate::Report,
) {
    if is_trusted(file, text.as_bytes()) {
        return;
    }
    let skipped = strip_untrusted(project, config);
    if !skipped.is_empty() {
        report.progress(&format!(
            "{} is not trusted, skipped: {}; run `mvm trust {}` to allow them",
            file.display(),
            skipped.join(", "),
            project.display()
        ));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(data).into()
}
