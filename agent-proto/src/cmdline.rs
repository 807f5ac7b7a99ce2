//! The `mvm.*` keys of the kernel command line: written by the host
//! ([`Writer`]) and parsed by mvm-init ([`parse`], from `/proc/cmdline`),
//! one module so that the two cannot drift apart.
//!
//! | key | meaning |
//! | --- | --- |
//! | `mvm.root=TAG` | the root is the virtio-fs share TAG: mounted, then switched to |
//! | `mvm.root_overlay=1` | put a tmpfs-backed overlay over that root (writes stay in guest RAM) |
//! | `mvm.share=TAG:/mnt[:ro]` | mount virtio-fs TAG at /mnt after the root switch; repeatable |
//! | `mvm.volume=SERIAL:/mnt[:ro]` | the virtio-blk disk whose serial is SERIAL: formatted (ext4) when blank, mounted at /mnt after the shares; repeatable |
//! | `mvm.volume_owner=SERIAL:USER` | when that disk is formatted, its root folder is given to USER (a name in the guest's /etc/passwd, or a uid) |
//! | `mvm.hostname=NAME` | hostname (an invalid one is ignored with a warning) |
//! | `mvm.ip=ADDR/PREFIX[,GW[,DNS...]]` | static IPv4 configuration of the interface |
//! | `mvm.net=dhcp` / `mvm.net=none` | DHCP on the interface, or loopback only (default) |
//! | `mvm.iface=NAME` | the interface to configure (default: the first non-loopback one) |
//! | `mvm.time=UNIX_SECONDS` | set the wall clock |
//! | `mvm.agent_port=PORT` | vsock port of the agent (default 1024) |
//! | `mvm.services=PATH` | JSON array of service specs (in the final root) declared and started at boot |
//! | `mvm.debug=1` | log every agent connection and request on the console |
//! | `mvm.agent_unix=/PATH` | test hook: serve the agent on a Unix socket instead of vsock |
//!
//! Test hook: when the environment variable `MVM_INIT_CMDLINE` is set, PID 1
//! parses it instead of `/proc/cmdline` (for running as PID 1 of a PID
//! namespace on a host, see `scripts/ns-smoke.sh`).
//!
//! Values may be double-quoted as the kernel allows (`mvm.hostname="x"`).
//! Unknown `mvm.*` keys are reported as warnings and ignored, so an older
//! init keeps booting with a newer host.

use std::fmt::Display;
use std::net::Ipv4Addr;

/// The prefix of every key.
pub const PREFIX: &str = "mvm.";
/// The keys, without [`PREFIX`].
pub mod key {
    pub const ROOT: &str = "root";
    pub const ROOT_OVERLAY: &str = "root_overlay";
    pub const SHARE: &str = "share";
    pub const VOLUME: &str = "volume";
    pub const VOLUME_OWNER: &str = "volume_owner";
    pub const HOSTNAME: &str = "hostname";
    pub const IP: &str = "ip";
    pub const NET: &str = "net";
    pub const IFACE: &str = "iface";
    pub const TIME: &str = "time";
    pub const AGENT_PORT: &str = "agent_port";
    pub const SERVICES: &str = "services";
    pub const DEBUG: &str = "debug";
    pub const AGENT_UNIX: &str = "agent_unix";
}

/// Longest interface name plus its NUL (Linux's IFNAMSIZ).
const IFNAMSIZ: usize = 16;

/// Builds the `mvm.*` part of a command line, key by key, each word
/// separated by one space.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    line: String,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    fn push(&mut self, key: &str, value: impl Display) -> &mut Writer {
        if !self.line.is_empty() {
            self.line.push(' ');
        }
        self.line.push_str(&format!("{PREFIX}{key}={value}"));
        self
    }

    pub fn hostname(&mut self, name: &str) -> &mut Writer {
        self.push(key::HOSTNAME, name)
    }
    /// The wall clock, in UNIX seconds.
    pub fn time(&mut self, unix_secs: u64) -> &mut Writer {
        self.push(key::TIME, unix_secs)
    }
    pub fn agent_port(&mut self, port: u32) -> &mut Writer {
        self.push(key::AGENT_PORT, port)
    }
    /// The root is virtio-fs share `tag`.
    pub fn root(&mut self, tag: &str) -> &mut Writer {
        self.push(key::ROOT, tag)
    }
    /// Mount virtio-fs share `tag` at `mountpoint`.
    pub fn share(&mut self, tag: &str, mountpoint: &str, read_only: bool) -> &mut Writer {
        let ro = if read_only { ":ro" } else { "" };
        self.push(key::SHARE, format!("{tag}:{mountpoint}{ro}"))
    }
    /// Mount the disk whose serial is `serial` at `mountpoint` (formatted
    /// first when blank).
    pub fn volume(&mut self, serial: &str, mountpoint: &str, read_only: bool) -> &mut Writer {
        let ro = if read_only { ":ro" } else { "" };
        self.push(key::VOLUME, format!("{serial}:{mountpoint}{ro}"))
    }
    /// Give the root folder of disk `serial` to `owner` when it is
    /// formatted (see [`validate_owner`]).
    pub fn volume_owner(&mut self, serial: &str, owner: &str) -> &mut Writer {
        self.push(key::VOLUME_OWNER, format!("{serial}:{owner}"))
    }
    /// DHCP on the interface.
    pub fn dhcp(&mut self) -> &mut Writer {
        self.push(key::NET, "dhcp")
    }

    /// The words written so far, space-separated.
    pub fn as_str(&self) -> &str {
        &self.line
    }

    /// The words, each after a space: to append to a command line.
    pub fn appended(&self) -> String {
        if self.line.is_empty() {
            String::new()
        } else {
            format!(" {}", self.line)
        }
    }
}

impl Display for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.line)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub tag: String,
    pub mountpoint: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NetConfig {
    /// Loopback only.
    #[default]
    None,
    Dhcp,
    Static {
        addr: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
        dns: Vec<Ipv4Addr>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub root: Option<String>,
    pub root_overlay: bool,
    pub shares: Vec<Share>,
    /// Disks to mount, by serial (`tag` holds the serial).
    pub volumes: Vec<Share>,
    /// Who gets a disk's root folder when it is formatted, by serial.
    pub volume_owners: Vec<(String, String)>,
    pub hostname: Option<String>,
    pub net: NetConfig,
    pub iface: Option<String>,
    pub time: Option<i64>,
    pub agent_port: u32,
    pub services_file: Option<String>,
    /// Test hook: serve the agent on this Unix socket instead of vsock.
    pub agent_unix: Option<String>,
    pub debug: bool,
    /// Problems that did not stop parsing (unknown keys).
    pub warnings: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: None,
            root_overlay: false,
            shares: Vec::new(),
            volumes: Vec::new(),
            volume_owners: Vec::new(),
            hostname: None,
            net: NetConfig::None,
            iface: None,
            time: None,
            agent_port: crate::DEFAULT_AGENT_PORT,
            services_file: None,
            agent_unix: None,
            debug: false,
            warnings: Vec::new(),
        }
    }
}

/// Splits a command line into words the way the kernel does: on spaces,
/// with double quotes grouping (and removed).
pub fn split(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut in_word = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_ascii_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "1" | "y" | "yes" | "on" | "true" => Ok(true),
        "0" | "n" | "no" | "off" | "false" => Ok(false),
        _ => Err(format!("{key}={v}: expected 1 or 0")),
    }
}

fn parse_share(v: &str) -> Result<Share, String> {
    parse_mount("mvm.share", "TAG", v)
}

/// A volume owner: a user name as passwd(5) has them, or a uid (1 to 32
/// of `A-Z a-z 0-9 . _ -`, not starting with `-`).
pub fn validate_owner(owner: &str) -> Result<(), String> {
    let ok = !owner.is_empty()
        && owner.len() <= 32
        && !owner.starts_with('-')
        && owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "owner '{owner}' is not a user name or uid (1 to 32 of A-Z, a-z, 0-9, '.', '_', '-')"
        ))
    }
}

fn parse_mount(key: &str, what: &str, v: &str) -> Result<Share, String> {
    let bad = |why: &str| format!("{key}={v}: {why} (want {what}:/mountpoint[:ro])");
    let (tag, rest) = v.split_once(':').ok_or_else(|| bad("missing ':'"))?;
    let (mountpoint, read_only) = match rest.rsplit_once(':') {
        Some((m, "ro")) => (m, true),
        Some((m, "rw")) => (m, false),
        Some((_, opt)) => return Err(bad(&format!("unknown option '{opt}'"))),
        None => (rest, false),
    };
    if tag.is_empty() {
        return Err(bad(&format!("empty {}", what.to_lowercase())));
    }
    if !mountpoint.starts_with('/') || mountpoint == "/" {
        return Err(bad("the mountpoint must be an absolute path other than /"));
    }
    if mountpoint.split('/').any(|c| c == "..") {
        return Err(bad("the mountpoint must not contain '..'"));
    }
    Ok(Share {
        tag: tag.to_string(),
        mountpoint: mountpoint.to_string(),
        read_only,
    })
}

fn parse_ip(v: &str) -> Result<NetConfig, String> {
    let bad = |why: String| format!("mvm.ip={v}: {why} (want ADDR/PREFIX[,GW[,DNS...]])");
    let mut parts = v.split(',');
    let cidr = parts.next().unwrap_or_default();
    let (addr, prefix) = cidr
        .split_once('/')
        .ok_or_else(|| bad("missing /PREFIX".into()))?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| bad(format!("bad address '{addr}'")))?;
    let prefix: u8 = match prefix.parse() {
        Ok(p) if p <= 32 => p,
        _ => return Err(bad(format!("bad prefix length '{prefix}'"))),
    };
    let ip = |s: &str| -> Result<Ipv4Addr, String> {
        s.parse().map_err(|_| bad(format!("bad address '{s}'")))
    };
    let gateway = match parts.next() {
        None | Some("") => None,
        Some(g) => Some(ip(g)?),
    };
    let dns = parts
        .filter(|s| !s.is_empty())
        .map(ip)
        .collect::<Result<_, _>>()?;
    Ok(NetConfig::Static {
        addr,
        prefix,
        gateway,
        dns,
    })
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 64
        && h.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Parses the whole command line. Errors name the offending word.
pub fn parse(cmdline: &str) -> Result<Config, String> {
    let mut c = Config::default();
    let mut net_key: Option<&str> = None;
    for word in split(cmdline) {
        let Some(rest) = word.strip_prefix(PREFIX) else {
            continue;
        };
        let (key, v) = match rest.split_once('=') {
            Some((k, v)) => (k, v),
            None => (rest, ""),
        };
        let full = format!("{PREFIX}{key}");
        match key {
            key::ROOT => {
                if v.is_empty() {
                    return Err("mvm.root=: empty tag".into());
                }
                c.root = Some(v.to_string());
            }
            key::ROOT_OVERLAY => c.root_overlay = parse_bool(&full, v)?,
            key::SHARE => c.shares.push(parse_share(v)?),
            key::VOLUME => c.volumes.push(parse_mount("mvm.volume", "SERIAL", v)?),
            key::VOLUME_OWNER => {
                let bad = |why: String| format!("mvm.volume_owner={v}: {why} (want SERIAL:USER)");
                let (serial, owner) = v.split_once(':').ok_or_else(|| bad("missing ':'".into()))?;
                if serial.is_empty() {
                    return Err(bad("empty serial".into()));
                }
                validate_owner(owner).map_err(bad)?;
                c.volume_owners
                    .push((serial.to_string(), owner.to_string()));
            }
            key::HOSTNAME => {
                // Not worth failing the boot over: keep the default name.
                if valid_hostname(v) {
                    c.hostname = Some(v.to_string());
                } else {
                    c.warnings
                        .push(format!("ignoring mvm.hostname={v}: not a valid hostname"));
                }
            }
            key::IP | key::NET => {
                if let Some(prev) = net_key {
                    return Err(format!(
                        "{full}={v}: conflicts with an earlier mvm.{prev}= (give one network setting)"
                    ));
                }
                c.net = if key == key::IP {
                    parse_ip(v)?
                } else {
                    match v {
                        "dhcp" => NetConfig::Dhcp,
                        "none" => NetConfig::None,
                        _ => return Err(format!("mvm.net={v}: expected dhcp or none")),
                    }
                };
                net_key = Some(if key == key::IP { key::IP } else { key::NET });
            }
            key::IFACE => {
                if v.is_empty() || v.len() >= IFNAMSIZ || v.contains('/') {
                    return Err(format!("mvm.iface={v}: not an interface name"));
                }
                c.iface = Some(v.to_string());
            }
            key::TIME => {
                c.time = Some(
                    v.parse()
                        .map_err(|_| format!("mvm.time={v}: expected UNIX seconds"))?,
                )
            }
            key::AGENT_PORT => {
                c.agent_port = match v.parse::<u32>() {
                    Ok(p) if p > 0 && p != u32::MAX => p,
                    _ => return Err(format!("mvm.agent_port={v}: expected a port number")),
                }
            }
            key::SERVICES => {
                if !v.starts_with('/') {
                    return Err(format!("mvm.services={v}: expected an absolute path"));
                }
                c.services_file = Some(v.to_string());
            }
            key::AGENT_UNIX => {
                if !v.starts_with('/') {
                    return Err(format!("mvm.agent_unix={v}: expected an absolute path"));
                }
                c.agent_unix = Some(v.to_string());
            }
            key::DEBUG => c.debug = parse_bool(&full, v)?,
            _ => c.warnings.push(format!("ignoring unknown option {word}")),
        }
    }
    if c.root_overlay && c.root.is_none() {
        return Err("mvm.root_overlay=1 needs mvm.root=TAG".into());
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_round_trip() {
        let mut w = Writer::new();
        w.volume("pgdata", "/var/lib/postgresql", false)
            .volume("assets", "/srv/assets", true);
        let c = parse(w.as_str()).unwrap();
        assert_eq!(
            c.volumes,
            [
                Share {
                    tag: "pgdata".into(),
                    mountpoint: "/var/lib/postgresql".into(),
                    read_only: false
                },
                Share {
                    tag: "assets".into(),
                    mountpoint: "/srv/assets".into(),
                    read_only: true
                }
            ]
        );
        assert!(c.shares.is_empty());
        assert!(c.volume_owners.is_empty());
        let mut w = Writer::new();
        w.volume("pgdata", "/var/lib/postgresql", false)
            .volume_owner("pgdata", "postgres")
            .volume_owner("cache", "1000");
        let c = parse(w.as_str()).unwrap();
        assert_eq!(
            c.volume_owners,
            [
                ("pgdata".to_string(), "postgres".to_string()),
                ("cache".to_string(), "1000".to_string())
            ]
        );
        for bad in [
            "mvm.volume_owner=pgdata",
            "mvm.volume_owner=:postgres",
            "mvm.volume_owner=pgdata:",
            "mvm.volume_owner=pgdata:-x",
            "mvm.volume_owner=pgdata:a/b",
            "mvm.volume_owner=pgdata:a:b",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.starts_with("mvm.volume_owner="), "{e}");
        }
        for bad in [
            "mvm.volume=x",
            "mvm.volume=:/a",
            "mvm.volume=x:/",
            "mvm.volume=x:rel",
            "mvm.volume=x:/a/../b",
            "mvm.volume=x:/a:rx",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.starts_with("mvm.volume="), "{e}");
        }
    }

    #[test]
    fn splits_like_the_kernel() {
        assert_eq!(
            split(r#" console=ttyS0  mvm.hostname="web"  a="b c" d"#),
            ["console=ttyS0", "mvm.hostname=web", "a=b c", "d"]
        );
        assert!(split("   ").is_empty());
        assert_eq!(split(r#"x="""#), ["x="]);
    }

    #[test]
    fn full_command_line() {
        let c = parse(
            "console=ttyS0 reboot=k,panic_warm panic=-1 virtio_mmio.device=4K@0xd0000000:5 \
             mvm.root=root mvm.root_overlay=1 mvm.share=project:/project \
             mvm.share=nix:/nix/store:ro mvm.hostname=web mvm.ip=10.0.2.15/24,10.0.2.2,10.0.2.3,1.1.1.1 \
             mvm.time=1764000000 mvm.agent_port=2000 mvm.services=/project/.mvm/services.json \
             mvm.iface=eth1 mvm.debug=1 mvm.agent_unix=/run/a.sock mvm.future=x",
        )
        .unwrap();
        assert_eq!(c.root.as_deref(), Some("root"));
        assert!(c.root_overlay);
        assert_eq!(
            c.shares,
            [
                Share {
                    tag: "project".into(),
                    mountpoint: "/project".into(),
                    read_only: false
                },
                Share {
                    tag: "nix".into(),
                    mountpoint: "/nix/store".into(),
                    read_only: true
                }
            ]
        );
        assert_eq!(c.hostname.as_deref(), Some("web"));
        assert_eq!(
            c.net,
            NetConfig::Static {
                addr: Ipv4Addr::new(10, 0, 2, 15),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
                dns: vec![Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)],
            }
        );
        assert_eq!(c.time, Some(1764000000));
        assert_eq!(c.agent_port, 2000);
        assert_eq!(c.iface.as_deref(), Some("eth1"));
        assert!(c.debug);
        assert_eq!(c.agent_unix.as_deref(), Some("/run/a.sock"));
        assert_eq!(
            c.services_file.as_deref(),
            Some("/project/.mvm/services.json")
        );
        assert_eq!(c.warnings, ["ignoring unknown option mvm.future=x"]);
    }

    #[test]
    fn what_the_host_writes_parses_back() {
        let mut w = Writer::new();
        w.hostname("web")
            .time(1764000000)
            .agent_port(crate::DEFAULT_AGENT_PORT)
            .root("root")
            .share("project", "/project", false)
            .share("nix", "/nix/store", true)
            .dhcp();
        assert_eq!(
            w.as_str(),
            "mvm.hostname=web mvm.time=1764000000 mvm.agent_port=1024 mvm.root=root \
             mvm.share=project:/project mvm.share=nix:/nix/store:ro mvm.net=dhcp"
        );
        let c = parse(&format!("console=ttyS0{}", w.appended())).unwrap();
        assert_eq!(c.hostname.as_deref(), Some("web"));
        assert_eq!(c.root.as_deref(), Some("root"));
        assert_eq!(c.shares.len(), 2);
        assert_eq!(c.net, NetConfig::Dhcp);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn bad_hostname_is_only_a_warning() {
        for h in ["-bad", "a b", "a..b", "x/y"] {
            let c = parse(&format!("\"mvm.hostname={h}\"")).unwrap();
            assert_eq!(c.hostname, None);
            assert!(c.warnings[0].contains("not a valid hostname"), "{h}");
        }
        assert_eq!(
            parse("mvm.hostname=my_vm.local")
                .unwrap()
                .hostname
                .as_deref(),
            Some("my_vm.local")
        );
    }

    #[test]
    fn defaults() {
        let c = parse("console=ttyS0 root=/dev/vda quiet").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.agent_port, 1024);
        assert_eq!(parse("mvm.net=dhcp").unwrap().net, NetConfig::Dhcp);
        assert_eq!(
            parse("mvm.ip=192.168.1.2/32").unwrap().net,
            NetConfig::Static {
                addr: Ipv4Addr::new(192, 168, 1, 2),
                prefix: 32,
                gateway: None,
                dns: vec![]
            }
        );
    }

    #[test]
    fn errors_name_the_bad_value() {
        for (line, needle) in [
            ("mvm.share=nocolon", "mvm.share=nocolon"),
            ("mvm.share=t:relative", "absolute"),
            ("mvm.share=t:/", "absolute"),
            ("mvm.share=t:/a/../b", ".."),
            ("mvm.share=:/x", "empty tag"),
            ("mvm.share=t:/x:rx", "unknown option 'rx'"),
            ("mvm.ip=10.0.0.1", "missing /PREFIX"),
            ("mvm.ip=10.0.0.300/24", "bad address '10.0.0.300'"),
            ("mvm.ip=10.0.0.1/33", "bad prefix length '33'"),
            ("mvm.ip=10.0.0.1/24,gw", "bad address 'gw'"),
            ("mvm.net=static", "mvm.net=static"),
            ("mvm.net=dhcp mvm.ip=1.2.3.4/8", "conflicts"),
            ("mvm.time=soon", "mvm.time=soon"),
            ("mvm.agent_port=0", "mvm.agent_port=0"),
            ("mvm.agent_port=x", "mvm.agent_port=x"),
            ("mvm.root_overlay=1", "needs mvm.root"),
            (
                "mvm.root_overlay=maybe mvm.root=r",
                "mvm.root_overlay=maybe",
            ),
            ("mvm.root=", "empty tag"),
            ("mvm.iface=a/b", "mvm.iface=a/b"),
            ("mvm.services=rel.json", "absolute"),
        ] {
            let err = parse(line).expect_err(line);
            assert!(err.contains(needle), "{line}: {err}");
        }
    }
}
