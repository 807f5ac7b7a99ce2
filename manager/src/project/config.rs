//! `mvm.toml`: what a project declares about its VM. This schema is the
//! single source of truth: `mvm config --schema` prints it as JSON Schema
//! (other tools generate their options from it), so renaming or retyping a
//! key is a breaking change.

use std::collections::BTreeMap;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A project's `mvm.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "mvm.toml")]
pub struct ProjectConfig {
    /// The VM's name (becomes NAME.mvm); default: derived from the folder name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Number of vCPUs (1 to 254); default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 254))]
    pub cpus: Option<u8>,
    /// Guest memory: MiB as an integer, or a size with a unit ("512M", "2G"); default 1G.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// What the guest may store in its copy-on-write layers (root and
    /// project together; past it writes fail with "no space left"): a
    /// size such as "20G"; default 20G.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<Disk>,
    /// Keep the guest's writes (root and project upper layers) across restarts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub persistent: bool,
    /// The guest's root file system; default "host".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<GuestRoot>,
    /// A network interface (DHCP address, NAME.mvm, NAT): `false` for
    /// none, or a table `{ enable, allow }`; default on, with private
    /// networks refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// Port forwards "[ADDRESS:]HOST:GUEST[/tcp|/udp]": on the host's
    /// loopback unless an address is named ("0.0.0.0:8080:80" for every
    /// interface).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    /// Environment of shells, execs and services in the VM.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<EnvKey, String>,
    /// Host variables passed through by name when set on the host: exact
    /// names or patterns with a trailing '*' ("AWS_*"). Their values are read
    /// when the VM's services start and at each shell/exec, never stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_host: Vec<EnvPattern>,
    /// Extra host folders in the guest (the project itself is always at /project).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<Share>,
    /// Volumes: persistent disks (ext4, formatted on first use) mounted in
    /// the guest, created with `size` the first time the VM starts; they
    /// outlive the VM (`mvm rm --volumes` removes them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// Paths in your home shared with the guest, files or folders ("~/.gitconfig",
    /// "~/.npmrc"), each at the same place under the guest's home (/root);
    /// copy-on-write: the host's files never change. Off by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub home: Vec<String>,
    /// What `mvm shell` runs instead of a login shell (e.g. "devenv shell").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<CommandLine>,
    /// Supervised processes, by name ([A-Za-z0-9_.-]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, Service>,
    /// What happens when the last shell leaves the folder (`mvm direnv`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direnv: Option<Direnv>,
}

/// `network = false`, or `[network]` with `enable` and `allow`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Network {
    /// Whether the VM has a network interface.
    Enable(bool),
    /// The interface and what it may reach.
    Table(NetworkTable),
}

/// The network interface and what it may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkTable {
    /// A network interface at all; default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable: Option<bool>,
    /// Networks the VM may reach although refused by default (RFC 1918,
    /// CGNAT 100.64/10, link-local 169.254/16 with the cloud metadata
    /// address), as IPv4 "ADDRESS" or "ADDRESS/PREFIX". Another VM's
    /// address (or the VMs' subnet) lets this VM talk to it, if it allows
    /// this one too. The host itself stays closed but for DHCP, DNS and
    /// forwarded ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<AllowNet>,
}

// By hand rather than `untagged`, which would hide the table's own error
// (a bad `allow` entry) behind "did not match any variant".
impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Network;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false, or a table with `enable` and `allow`")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Network, E> {
                Ok(Network::Enable(b))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<Network, A::Error> {
                NetworkTable::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(Network::Table)
            }
        }
        d.deserialize_any(V)
    }
}

impl Network {
    /// Whether the VM gets an interface.
    pub fn enabled(&self) -> bool {
        match self {
            Network::Enable(b) => *b,
            Network::Table(t) => t.enable != Some(false),
        }
    }

    /// The networks opened to it.
    pub fn allow(&self) -> Vec<netstack::Cidr> {
        match self {
            Network::Enable(_) => Vec::new(),
            Network::Table(t) => t.allow.iter().map(|a| a.0).collect(),
        }
    }
}

/// `mvm direnv`: entering the folder starts (or reuses) the VM; once no
/// shell is in the folder any more, a VM that entering started is stopped
/// after a grace period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Direnv {
    /// Seconds to wait after the last shell left before stopping; default 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_secs: Option<u64>,
    /// Never stop the VM on leaving (`mvm down` stops it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_running: bool,
}

/// The guest's root file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GuestRoot {
    /// The host's own `/`, read-only under a per-VM copy-on-write layer.
    Host,
    /// The minimal initramfs root (busybox).
    Minimal,
}

/// One supervised process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// A shell command (run by `sh -c`) or an argv array.
    pub command: CommandLine,
    /// Working directory in the guest, absolute or relative to /project; default /project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Extra environment for this service (over the project's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<EnvKey, String>,
    /// Run as this guest user (a name from the guest's /etc/passwd); default root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// When the agent restarts it; default "on-failure".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<Restart>,
    /// How to tell it is ready; default: running is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<Ready>,
    /// Services that must be ready before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    Never,
    OnFailure,
    Always,
}

/// Readiness: exactly one of `port` or `command`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "ReadyFields")]
pub struct Ready {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandLine>,
}

/// Readiness: exactly one of `port` or `command`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadyFields {
    /// Ready when a TCP connect to this port in the guest succeeds.
    #[serde(default)]
    #[schemars(range(min = 1))]
    port: Option<u16>,
    /// Ready when this command exits 0 (retried).
    #[serde(default)]
    command: Option<CommandLine>,
}

impl TryFrom<ReadyFields> for Ready {
    type Error = String;
    fn try_from(r: ReadyFields) -> Result<Self, String> {
        match (&r.port, &r.command) {
            (Some(0), _) => Err("ready.port must be 1 to 65535".into()),
            (Some(_), None) | (None, Some(_)) => Ok(Ready {
                port: r.port,
                command: r.command,
            }),
            _ => Err("give exactly one of ready.port or ready.command".into()),
        }
    }
}

/// A shell command string (run by `sh -c`) or an argv array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged, try_from = "CommandFields")]
pub enum CommandLine {
    Shell(String),
    Argv(Vec<String>),
}

/// A shell command string (run by `sh -c`) or an argv array.
#[derive(Deserialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "a command string or a non-empty array of strings"
)]
enum CommandFields {
    Shell(String),
    Argv(Vec<String>),
}

impl TryFrom<CommandFields> for CommandLine {
    type Error = String;
    fn try_from(c: CommandFields) -> Result<Self, String> {
        match c {
            CommandFields::Shell(s) if s.trim().is_empty() => Err("the command is empty".into()),
            CommandFields::Argv(v) if v.is_empty() => Err("the command array is empty".into()),
            CommandFields::Shell(s) => Ok(CommandLine::Shell(s)),
            CommandFields::Argv(v) => Ok(CommandLine::Argv(v)),
        }
    }
}

impl CommandLine {
    pub fn argv(&self) -> Vec<String> {
        match self {
            CommandLine::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
            CommandLine::Argv(v) => v.clone(),
        }
    }
}

/// A size in MiB written as an integer (MiB) or with a unit ("512M",
/// "2G"), checked by `$parse`, with its JSON schema.
macro_rules! size_mib {
    ($(#[$doc:meta])* $name:ident, $parse:path, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(try_from = "SizeFields", into = "String")]
        pub struct $name(pub u64);

        impl TryFrom<SizeFields> for $name {
            type Error = String;
            fn try_from(m: SizeFields) -> Result<Self, String> {
                let text = match m {
                    SizeFields::Mib(n) => n.to_string(),
                    SizeFields::Text(s) => s,
                };
                $parse(&text).map($name)
            }
        }

        impl From<$name> for String {
            fn from(m: $name) -> String {
                if m.0.is_multiple_of(1024) {
                    format!("{}G", m.0 / 1024)
                } else {
                    format!("{}M", m.0)
                }
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "description": $what,
                    "anyOf": [
                        {"type": "integer", "minimum": 1},
                        {"type": "string", "pattern": "^[0-9]+[KkMmGgTt]?[iI]?[bB]?$"}
                    ]
                })
            }
        }
    };
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "MiB as an integer or a size such as \"512M\" or \"2G\""
)]
enum SizeFields {
    Mib(u64),
    Text(String),
}

size_mib!(
    /// Guest memory in MiB; written as an integer (MiB) or "512M"/"2G".
    Memory,
    crate::create::parse_memory,
    "MiB as an integer, or a size with a unit K, M, G (\"512M\", \"2G\")"
);

size_mib!(
    /// The byte budget of the guest's copy-on-write layers, in MiB.
    Disk,
    crate::create::parse_disk,
    "MiB as an integer, or a size with a unit M, G, T (\"20G\")"
);

size_mib!(
    /// A volume's size in MiB.
    VolumeSize,
    crate::volume::parse_size,
    "MiB as an integer, or a size with a unit M, G, T (\"10G\"); at least 16M"
);

/// A string key holding a netstack value parsed with `FromStr` (its
/// one-line error becomes the TOML error), with its JSON schema.
macro_rules! parsed_string {
    ($(#[$doc:meta])* $name:ident($inner:ty), $schema:tt) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(pub $inner);

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                s.parse::<$inner>().map($name).map_err(|e| e.to_string())
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0.to_string()
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!($schema)
            }
        }
    };
}

parsed_string!(
    /// A port forward "[ADDRESS:]HOST:GUEST[/tcp|/udp]".
    Port(netstack::PortForward),
    {
        "description": "[ADDRESS:]HOST:GUEST[/tcp|/udp], e.g. \"8080:3000\" (host loopback only) or \"0.0.0.0:8080:3000\" (every interface)",
        "type": "string",
        "pattern": "^(([0-9.]+|\\[[0-9A-Fa-f:.]+\\]):)?[0-9]+:[0-9]+(/(tcp|udp))?$"
    }
);

parsed_string!(
    /// An allowed IPv4 network: "10.1.0.0/16" or "10.1.2.3".
    AllowNet(netstack::Cidr),
    {
        "description": "an IPv4 ADDRESS or ADDRESS/PREFIX, e.g. \"10.1.0.0/16\"",
        "type": "string",
        "pattern": "^[0-9]{1,3}(\\.[0-9]{1,3}){3}(/[0-9]{1,2})?$"
    }
);

/// An environment variable name: letters, digits and '_', not starting with a digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnvKey(pub String);

pub fn valid_env_name(k: &str) -> bool {
    !k.is_empty()
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !k.as_bytes()[0].is_ascii_digit()
}

impl TryFrom<String> for EnvKey {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if valid_env_name(&s) {
            Ok(EnvKey(s))
        } else {
            Err(format!(
                "invalid variable name '{s}': use letters, digits and '_', not starting with a digit"
            ))
        }
    }
}

impl From<EnvKey> for String {
    fn from(k: EnvKey) -> String {
        k.0
    }
}

impl JsonSchema for EnvKey {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EnvKey".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"})
    }
}

/// A host variable name, or a prefix pattern ending in '*' ("AWS_*").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnvPattern(pub String);

impl EnvPattern {
    pub fn matches(&self, name: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == self.0,
        }
    }
}

impl TryFrom<String> for EnvPattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let name = s.strip_suffix('*').unwrap_or(&s);
        let ok = if s.ends_with('*') {
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        } else {
            valid_env_name(name)
        };
        if ok {
            Ok(EnvPattern(s))
        } else {
            Err(format!(
                "invalid env_host entry '{s}': a variable name, or a prefix ending in '*' (\"AWS_*\")"
            ))
        }
    }
}

impl From<EnvPattern> for String {
    fn from(p: EnvPattern) -> String {
        p.0
    }
}

impl JsonSchema for EnvPattern {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EnvPattern".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "pattern": "^([A-Za-z_][A-Za-z0-9_]*|[A-Za-z0-9_]*\\*)$"})
    }
}

/// An extra host folder in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Share {
    /// Host folder, absolute or relative to the project folder.
    pub host: String,
    /// Absolute mount point in the guest.
    pub guest: String,
    /// "cow" (default: guest writes stay in the VM) or "ro".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ShareMode>,
    /// Serve extended attributes (default false, as virtiofsd: the
    /// guest's xattr calls fail with EOPNOTSUPP, and writes are faster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xattr: Option<bool>,
}

/// A volume: a named persistent disk mounted in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    /// The volume's name (1 to 20 of a-z, 0-9, '-', '_'); VMs and projects
    /// naming the same volume share its data.
    pub name: String,
    /// Absolute mount point in the guest (not under /project).
    pub guest: String,
    /// Its size when it has to be created ("10G"); without it the volume
    /// must exist (`mvm volume create`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<VolumeSize>,
    /// Mounted read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ro: bool,
    /// Who owns the volume's root folder when it is formatted (its first
    /// start): a user of the guest root ("postgres") or a uid. Later
    /// starts leave ownership as the guest left it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl Volume {
    /// As the VM's spec records it.
    pub fn mount(&self) -> crate::volume::VolumeMount {
        crate::volume::VolumeMount {
            name: self.name.clone(),
            guest: self.guest.clone(),
            ro: self.ro,
            size_mib: self.size.map(|s| s.0),
            owner: self.owner.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ShareMode {
    Cow,
    Ro,
}

/// The JSON Schema of `mvm.toml`.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(ProjectConfig)).unwrap_or_default()
}

/// Parses `mvm.toml` text; errors name the file, line, column and key.
pub fn parse(path: &Path, text: &str) -> Result<ProjectConfig, String> {
    let config: ProjectConfig = toml::from_str(text).map_err(|e| {
        let at = e.span().map(|s| locate(text, s.start)).unwrap_or_default();
        format!("{}{at}: {}", path.display(), e.message().trim())
    })?;
    check(&config).map_err(|(key, why)| {
        let at = line_of(text, &key)
            .map(|l| format!(":{l}"))
            .unwrap_or_default();
        format!("{}{at}: {key}: {why}", path.display())
    })?;
    Ok(config)
}

/// ":LINE:COL: key `a.b`" for a byte offset.
fn locate(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    match key_at(text, line) {
        Some(k) => format!(":{line}:{col}: key `{k}`"),
        None => format!(":{line}:{col}"),
    }
}

/// The dotted key defined on line `line` (1-based), under its table header.
fn key_at(text: &str, line: usize) -> Option<String> {
    let mut table = String::new();
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if let Some(h) = t.strip_prefix('[') {
            table = h
                .trim_start_matches('[')
                .trim_end_matches(']')
                .trim()
                .to_string();
        }
        if i + 1 == line {
            if t.starts_with('[') {
                return Some(table);
            }
            let key = t.split('=').next()?.trim().trim_matches('"');
            if key.is_empty() {
                return None;
            }
            return Some(if table.is_empty() {
                key.to_string()
            } else {
                format!("{table}.{key}")
            });
        }
    }
    None
}

/// The line defining dotted `key`, when written in the usual layout.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let n = text.lines().count();
    (1..=n).find(|&l| key_at(text, l).as_deref() == Some(key))
}

/// Checks across keys (types were checked while parsing).
fn check(c: &ProjectConfig) -> Result<(), (String, String)> {
    if let Some(n) = &c.name {
        crate::state::validate_name(n).map_err(|e| ("name".into(), e.to_string()))?;
    }
    if c.cpus == Some(0) || c.cpus == Some(255) {
        return Err(("cpus".into(), "use 1 to 254".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for p in &c.ports {
        if !seen.insert((p.0.host_port, p.0.protocol)) {
            return Err((
                "ports".into(),
                format!("host port {} is forwarded twice", p.0.host_port),
            ));
        }
    }
    for s in &c.shares {
        crate::state::validate_guest_path(&s.guest).map_err(|e| ("shares".into(), e))?;
    }
    for h in &c.home {
        crate::state::home_relative(h).map_err(|e| ("home".into(), e))?;
    }
    let mut names = std::collections::HashSet::new();
    for v in &c.volumes {
        crate::volume::validate_name(&v.name).map_err(|e| ("volumes".into(), e.to_string()))?;
        crate::volume::check_guest_path(&v.guest).map_err(|e| ("volumes".into(), e))?;
        if let Some(o) = &v.owner {
            agent_proto::cmdline::validate_owner(o)
                .map_err(|e| ("volumes".into(), format!("volume '{}': {e}", v.name)))?;
        }
        if !names.insert(&v.name) {
            return Err((
                "volumes".into(),
                format!("volume '{}' is listed twice", v.name),
            ));
        }
    }
    for (name, svc) in &c.services {
        let key = format!("services.{name}");
        agent_proto::validate_service_name(name).map_err(|e| (key.clone(), e))?;
        for d in &svc.depends_on {
            if !c.services.contains_key(d) {
                return Err((
                    format!("{key}.depends_on"),
                    format!("no service named '{d}'"),
                ));
            }
        }
    }
    service_order(c).map(|_| ())
}

/// Service names, each after the services it depends on.
pub fn service_order(c: &ProjectConfig) -> Result<Vec<String>, (String, String)> {
    let mut order: Vec<String> = Vec::new();
    let mut visiting = Vec::new();
    fn visit(
        c: &ProjectConfig,
        name: &str,
        order: &mut Vec<String>,
        visiting: &mut Vec<String>,
    ) -> Result<(), (String, String)> {
        if order.iter().any(|n| n == name) {
            return Ok(());
        }
        if visiting.iter().any(|n| n == name) {
            visiting.push(name.to_string());
            return Err((
                format!("services.{name}.depends_on"),
                format!("dependency cycle: {}", visiting.join(" -> ")),
            ));
        }
        visiting.push(name.to_string());
        for d in &c.services[name].depends_on {
            visit(c, d, order, visiting)?;
        }
        visiting.pop();
        order.push(name.to_string());
        Ok(())
    }
    for name in c.services.keys() {
        visit(c, name, &mut order, &mut visiting)?;
    }
    Ok(order)
}
