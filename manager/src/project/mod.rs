//! Projects: a folder whose files say what its VM is (`mvm.toml`, or what
//! detection infers from devenv and common project files).

pub mod config;
pub mod detect;
pub mod direnv;
pub mod env;
pub mod lease;
pub mod trust;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{bail, Context};

use config::{ProjectConfig, Restart, ShareMode};

/// The absolute project folder.
pub fn folder(dir: Option<&Path>) -> crate::Result<PathBuf> {
    let dir = dir.unwrap_or(Path::new("."));
    let abs = std::fs::canonicalize(dir)
        .map_err(|_| crate::error::err!("project folder '{}' does not exist", dir.display()))?;
    if !abs.is_dir() {
        bail!("project '{}' is not a folder", dir.display());
    }
    Ok(abs)
}

/// Detects the project's configuration (see `detect`); an mvm.toml the
/// user has not trusted gets nothing beyond the folder (see `trust`).
pub fn load(dir: &Path, report: &dyn crate::Report) -> crate::Result<detect::Detected> {
    let mut d =
        detect::detect(dir, detect::host_has_nix()).map_err(|e| crate::error::err!("{e}"))?;
    if let Some(text) = &d.config_text {
        trust::gate(
            dir,
            &dir.join(detect::CONFIG_FILE),
            text,
            &mut d.config,
            report,
        );
    }
    Ok(d)
}

/// A configuration file given explicitly (`mvm up --config`): parsed as
/// mvm.toml, nothing detected around it.
pub fn load_file(file: &Path) -> crate::Result<detect::Detected> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| crate::error::err!("cannot read --config {}: {e}", file.display()))?;
    let config = config::parse(file, &text).map_err(|e| crate::error::err!("{e}"))?;
    Ok(detect::Detected {
        config,
        found: vec![format!("{} (--config)", file.display())],
        notes: Vec::new(),
        config_text: None,
    })
}

/// A valid VM name from a folder name: lowercase, runs of anything else
/// become '-', at most 32 characters.
pub fn name_from_folder(dir: &Path) -> crate::Result<String> {
    let base = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut name = String::new();
    for c in base.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            name.push(c);
        } else if !name.ends_with('-') {
            name.push('-');
        }
    }
    let name: String = name.trim_matches('-').chars().take(32).collect();
    let name = name.trim_end_matches('-').to_string();
    crate::state::validate_name(&name).with_context(|| {
        format!(
            "cannot derive a VM name from the folder '{}'; pass --name or set name in mvm.toml",
            dir.display()
        )
    })?;
    Ok(name)
}

/// The VM's name: given, else the config's, else from the folder.
pub fn vm_name(dir: &Path, config: &ProjectConfig, given: Option<&str>) -> crate::Result<String> {
    match given.or(config.name.as_deref()) {
        Some(n) => {
            crate::state::validate_name(n)?;
            Ok(n.to_string())
        }
        None => name_from_folder(dir),
    }
}

/// Per service, the services it waits for.
pub type Dependencies = BTreeMap<String, Vec<String>>;

/// The agent's view of the config's services, in dependency order, and
/// each one's dependencies.
pub fn services(
    config: &ProjectConfig,
) -> crate::Result<(Vec<agent_proto::ServiceSpec>, Dependencies)> {
    let order = config::service_order(config).map_err(|(k, e)| crate::error::err!("{k}: {e}"))?;
    let mut specs = Vec::new();
    let mut deps = BTreeMap::new();
    for name in order {
        let s = &config.services[&name];
        let cwd = match s.cwd.as_deref() {
            None => "/project".to_string(),
            Some(c) if c.starts_with('/') => c.to_string(),
            Some(c) => format!("/project/{c}"),
        };
        let spec = agent_proto::ServiceSpec {
            name: name.clone(),
            argv: s.command.argv(),
            env: s
                .env
                .iter()
                .map(|(k, v)| (k.0.clone(), v.clone()))
                .collect(),
            cwd: Some(cwd),
            user: s.user.as_ref().map(|u| match u.parse() {
                Ok(n) => agent_proto::User::Id(n),
                Err(_) => agent_proto::User::Name(u.clone()),
            }),
            restart: match s.restart.unwrap_or(Restart::OnFailure) {
                Restart::Never => agent_proto::RestartPolicy::Never,
                Restart::OnFailure => agent_proto::RestartPolicy::OnFailure,
                Restart::Always => agent_proto::RestartPolicy::Always,
            },
            readiness: s.ready.as_ref().and_then(|r| match (&r.port, &r.command) {
                (Some(port), _) => Some(agent_proto::Readiness::Tcp { port: *port }),
                (None, Some(c)) => Some(agent_proto::Readiness::Command { argv: c.argv() }),
                (None, None) => None,
            }),
        };
        spec.validate().map_err(|e| crate::error::err!("{e}"))?;
        if !s.depends_on.is_empty() {
            deps.insert(name.clone(), s.depends_on.clone());
        }
        specs.push(spec);
    }
    Ok((specs, deps))
}

/// The config's extra shares with host folders made absolute (relative to
/// the project); each must exist.
pub fn shares(dir: &Path, config: &ProjectConfig) -> crate::Result<Vec<crate::state::ExtraShare>> {
    config
        .shares
        .iter()
        .map(|s| {
            let host = dir.join(&s.host);
            let abs = std::fs::canonicalize(&host).map_err(|_| {
                crate::error::err!("shares: host folder '{}' does not exist", host.display())
            })?;
            if !abs.is_dir() {
                bail!("shares: '{}' is not a folder", host.display());
            }
            crate::state::refuse_pseudo_fs(&abs).map_err(|e| crate::error::err!("shares: {e}"))?;
            Ok(crate::state::ExtraShare {
                host: abs,
                guest: s.guest.clone(),
                ro: s.mode == Some(ShareMode::Ro),
                xattr: s.xattr.unwrap_or(false),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
