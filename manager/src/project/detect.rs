//! What a project folder declares, in order: `mvm.toml`; then devenv
//! (`devenv.nix`, `devenv.yaml`, `devenv.lock`, or a `flake.nix` with a
//! devenv input); then common project files (`Procfile`, `package.json`
//! scripts, Django's `manage.py`; `docker-compose.yml` services as hints).

use std::path::Path;

use super::config::{CommandLine, EnvKey, Port, ProjectConfig, Ready, Service, Share, ShareMode};

pub const CONFIG_FILE: &str = "mvm.toml";

/// The inferred configuration and what led to it.
#[derive(Debug, Default)]
pub struct Detected {
    pub config: ProjectConfig,
    /// What was found, one line each ("mvm.toml", "Procfile: 2 processes").
    pub found: Vec<String>,
    /// What was found but cannot be used here, or was ignored, and why.
    pub notes: Vec<String>,
    /// The text of the project's mvm.toml as parsed (trust is by content).
    pub config_text: Option<String>,
}

/// How devenv is set up in a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Devenv {
    /// devenv.nix / devenv.yaml / devenv.lock: the devenv CLI.
    Cli,
    /// A flake.nix with a devenv input: `nix develop`.
    Flake,
}

/// Whether the host has Nix (a /nix/store the guest can share).
pub fn host_has_nix() -> bool {
    Path::new("/nix/store").is_dir()
}

/// Reads the project folder `dir`; `nix`: the host has a Nix store.
pub fn detect(dir: &Path, nix: bool) -> Result<Detected, String> {
    let mut d = Detected::default();
    let config_path = dir.join(CONFIG_FILE);
    if config_path.exists() {
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| format!("cannot read {}: {e}", config_path.display()))?;
        d.config = super::config::parse(&config_path, &text)?;
        d.config_text = Some(text);
        d.found.push(CONFIG_FILE.into());
        let others: Vec<&str> = [
            "devenv.nix",
            "Procfile",
            "package.json",
            "manage.py",
            "docker-compose.yml",
        ]
        .into_iter()
        .filter(|f| dir.join(f).exists())
        .collect();
        if !others.is_empty() {
            d.notes.push(format!(
                "{} also present: not used, mvm.toml decides",
                others.join(", ")
            ));
        }
        return Ok(d);
    }
    if let Some(kind) = devenv(dir) {
        apply_devenv(&mut d, kind, nix);
    }
    procfile(dir, &mut d)?;
    package_json(dir, &mut d)?;
    django(dir, &mut d);
    compose_hints(dir, &mut d);
    Ok(d)
}

/// devenv's own files first, then a flake with a devenv input.
pub fn devenv(dir: &Path) -> Option<Devenv> {
    if ["devenv.nix", "devenv.yaml", "devenv.lock"]
        .iter()
        .any(|f| dir.join(f).exists())
    {
        return Some(Devenv::Cli);
    }
    let flake = std::fs::read_to_string(dir.join("flake.nix")).ok()?;
    // An input named devenv ("devenv.url = ..." or "devenv = { url ...")
    // or a URL pointing at cachix/devenv.
    let has_input = flake.contains("cachix/devenv")
        || flake.lines().any(|l| {
            l.trim_start().starts_with("devenv.url") || l.trim_start().starts_with("devenv = {")
        });
    has_input.then_some(Devenv::Flake)
}

fn apply_devenv(d: &mut Detected, kind: Devenv, nix: bool) {
    let (what, shell, up): (&str, Vec<&str>, Vec<&str>) = match kind {
        Devenv::Cli => (
            "devenv (devenv.nix/devenv.yaml/devenv.lock)",
            vec!["devenv", "shell"],
            vec!["devenv", "up"],
        ),
        Devenv::Flake => (
            "devenv through flake.nix",
            vec!["nix", "develop", "--no-pure-eval"],
            vec!["nix", "develop", "--no-pure-eval", "-c", "devenv", "up"],
        ),
    };
    d.found.push(what.into());
    if !nix {
        d.notes.push(format!(
            "{what}: this host has no Nix (/nix/store is missing), so `mvm shell` cannot enter the devenv shell and devenv's processes cannot run; the rest of the project runs"
        ));
        return;
    }
    let argv = |v: Vec<&str>| CommandLine::Argv(v.into_iter().map(String::from).collect());
    d.config.shell = Some(argv(shell));
    d.config.shares.push(Share {
        host: "/nix/store".into(),
        guest: "/nix/store".into(),
        mode: Some(ShareMode::Ro),
        xattr: None,
    });
    d.config.services.insert("devenv".into(), service(argv(up)));
}

fn service(command: CommandLine) -> Service {
    Service {
        command,
        cwd: None,
        env: Default::default(),
        user: None,
        restart: None,
        ready: None,
        depends_on: Vec::new(),
    }
}

/// Adds service `name` unless one of that name exists already.
fn add(d: &mut Detected, source: &str, name: &str, svc: Service) -> bool {
    if d.config.services.contains_key(name) {
        d.notes.push(format!(
            "{source}: service '{name}' is already defined by an earlier file; ignored"
        ));
        return false;
    }
    d.config.services.insert(name.into(), svc);
    true
}

/// A web service on `port`: forwarded at the same host port, ready when
/// the port answers.
fn web(
    d: &mut Detected,
    source: &str,
    name: &str,
    command: String,
    port: u16,
    env: &[(&str, &str)],
) {
    let mut svc = service(CommandLine::Shell(command));
    svc.env = env
        .iter()
        .map(|(k, v)| (EnvKey(k.to_string()), v.to_string()))
        .collect();
    svc.ready = Some(Ready {
        port: Some(port),
        command: None,
    });
    if add(d, source, name, svc) {
        let fwd = netstack::PortForward::tcp(port, port);
        if !d.config.ports.iter().any(|p| p.0.same_host_port(&fwd)) {
            d.config.ports.push(Port(fwd));
        }
    }
}

/// `name: command` lines.
fn procfile(dir: &Path, d: &mut Detected) -> Result<(), String> {
    let path = dir.join("Procfile");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let mut n = 0;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || {
            format!(
                "{}:{}: expected NAME: COMMAND, found '{line}'",
                path.display(),
                i + 1
            )
        };
        let (name, cmd) = line.split_once(':').ok_or_else(bad)?;
        let (name, cmd) = (name.trim(), cmd.trim());
        if cmd.is_empty() {
            return Err(bad());
        }
        agent_proto::validate_service_name(name)
            .map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        add(d, "Procfile", name, service(CommandLine::Shell(cmd.into())));
        n += 1;
    }
    d.found.push(format!("Procfile: {n} process(es)"));
    Ok(())
}

/// `scripts.dev`, else `scripts.start`: service "web" on port 3000 (with
/// PORT and HOST set so common servers listen where it is forwarded).
fn package_json(dir: &Path, d: &mut Detected) -> Result<(), String> {
    let path = dir.join("package.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("{}:{}: invalid JSON: {e}", path.display(), e.line()))?;
    let scripts = json.get("scripts").and_then(|s| s.as_object());
    let Some(script) = ["dev", "start"]
        .into_iter()
        .find(|s| scripts.is_some_and(|m| m.get(*s).is_some_and(|v| v.is_string())))
    else {
        d.notes
            .push("package.json has no \"dev\" or \"start\" script: no service inferred".into());
        return Ok(());
    };
    d.found.push(format!("package.json: npm run {script}"));
    let env = [("PORT", "3000"), ("HOST", "0.0.0.0")];
    web(
        d,
        "package.json",
        "web",
        format!("npm run {script}"),
        3000,
        &env,
    );
    Ok(())
}

/// Django: `manage.py runserver` on port 8000.
fn django(dir: &Path, d: &mut Detected) {
    if !dir.join("manage.py").is_file() {
        return;
    }
    d.found.push("manage.py: Django dev server".into());
    web(
        d,
        "manage.py",
        "web",
        "python3 manage.py runserver 0.0.0.0:8000".into(),
        8000,
        &[],
    );
}

/// docker-compose services are listed, not run: their images are not the
/// guest's root.
fn compose_hints(dir: &Path, d: &mut Detected) {
    let Some(text) = [
        "docker-compose.yml",
        "docker-compose.yaml",
        "compose.yml",
        "compose.yaml",
    ]
    .iter()
    .find_map(|f| std::fs::read_to_string(dir.join(f)).ok()) else {
        return;
    };
    let names = compose_services(&text);
    if !names.is_empty() {
        d.found
            .push(format!("docker-compose: services {}", names.join(", ")));
        d.notes.push(format!(
            "docker-compose services ({}) are hints only: mvm does not run container images; declare them under [services] in mvm.toml with commands from the guest root",
            names.join(", ")
        ));
    }
}

/// The keys directly under a top-level `services:` (first indentation level).
pub fn compose_services(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    let mut indent = None;
    for line in text.lines() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let lead = line.len() - line.trim_start().len();
        if lead == 0 {
            inside = line.trim_end() == "services:";
            indent = None;
            continue;
        }
        if !inside {
            continue;
        }
        let level = *indent.get_or_insert(lead);
        if lead == level {
            if let Some(name) = line.trim().strip_suffix(':') {
                out.push(name.trim_matches(['"', '\'']).to_string());
            }
        }
    }
    out
}
