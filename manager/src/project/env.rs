//! Environment passthrough: the VM's own variables, host variables named
//! or matched by a pattern, and command-line ones, in that order (later
//! wins). Host values are read by the `mvm` that needs them, so they never
//! land in vm.toml; they travel to the guest only over the agent's vsock
//! channel, never on the kernel command line (which the console shows).

use std::collections::BTreeMap;

use super::config::EnvPattern;

/// Host variables matched by `patterns` ("NAME" or "PREFIX*"), from `vars`.
pub fn from_host(
    patterns: &[String],
    vars: impl IntoIterator<Item = (String, String)>,
) -> BTreeMap<String, String> {
    let patterns: Vec<EnvPattern> = patterns
        .iter()
        .filter_map(|p| EnvPattern::try_from(p.clone()).ok())
        .collect();
    vars.into_iter()
        .filter(|(k, _)| super::config::valid_env_name(k) && patterns.iter().any(|p| p.matches(k)))
        .collect()
}

/// The environment of a service, shell or exec in VM `spec`: its env, then
/// the host's matching variables (from this process), then `extra`.
pub fn resolve(
    spec: &crate::state::VmSpec,
    extra_patterns: &[String],
    extra: &[(String, String)],
) -> crate::Result<BTreeMap<String, String>> {
    let mut env = spec.env.clone();
    env.extend(from_host(&spec.env_host, host_vars()));
    for p in extra_patterns {
        let pattern =
            EnvPattern::try_from(p.clone()).map_err(|e| crate::error::err!("--env-host {e}"))?;
        let found = from_host(std::slice::from_ref(&pattern.0), host_vars());
        if found.is_empty() && !p.ends_with('*') {
            crate::error::bail!("--env-host {p}: the host has no variable {p}");
        }
        env.extend(found);
    }
    env.extend(extra.iter().cloned());
    Ok(env)
}

fn host_vars() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_select_host_variables() {
        let vars = [
            ("AWS_KEY", "k"),
            ("AWS_REGION", "r"),
            ("HOME", "/root"),
            ("GITHUB_TOKEN", "t"),
            ("AWSX", "no"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let got = from_host(&["AWS_*".into(), "GITHUB_TOKEN".into()], vars.clone());
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            ["AWS_KEY", "AWS_REGION", "GITHUB_TOKEN"]
        );
        assert!(from_host(&[], vars.clone()).is_empty());
        // "*" alone passes everything (the user asked for it).
        assert_eq!(from_host(&["*".into()], vars).len(), 5);
    }
}
