//! `vm.toml`: what a VM is (as opposed to what it is doing).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// VM names become host names (`NAME.mvm`) and folder names.
pub fn validate_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        bail!(
            "invalid VM name '{name}': use 1 to 32 lowercase letters, digits and '-', not starting or ending with '-'"
        );
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// A port forward: host port to guest port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortSpec {
    pub host: u16,
    pub guest: u16,
    pub protocol: Protocol,
}

impl std::str::FromStr for PortSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let err = || {
            format!("invalid port forward '{s}': expected HOST_PORT:GUEST_PORT[/tcp|/udp] with ports 1 to 65535, e.g. 8080:80")
        };
        let (ports, protocol) = match s.rsplit_once('/') {
            Some((p, "tcp")) => (p, Protocol::Tcp),
            Some((p, "udp")) => (p, Protocol::Udp),
            Some(_) => return Err(err()),
            None => (s, Protocol::Tcp),
        };
        let (h, g) = ports.split_once(':').ok_or_else(err)?;
        let port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|&n| n > 0 && p.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(err)
        };
        Ok(PortSpec {
            host: port(h)?,
            guest: port(g)?,
            protocol,
        })
    }
}

impl std::fmt::Display for PortSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        write!(f, "{}:{}/{proto}", self.host, self.guest)
    }
}

impl TryFrom<String> for PortSpec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<PortSpec> for String {
    fn from(p: PortSpec) -> String {
        p.to_string()
    }
}

/// Everything `mvm create` records about a VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// Random, stable for the VM's life: MACs, taps and CIDs derive from it.
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<PathBuf>,
    pub cpus: u8,
    pub memory_mib: u64,
    /// Keep the guest's writes (upper layers) across restarts.
    #[serde(default)]
    pub persistent: bool,
    /// The guest's root is the host's own `/`, read-only underneath a
    /// per-VM copy-on-write layer (so the host's tools are there); false:
    /// the minimal initramfs root (busybox).
    #[serde(default = "yes")]
    pub host_root: bool,
    /// The guest kernel; default: $MVM_KERNEL, then the cached build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Unix time of `mvm create`.
    pub created: u64,
}

impl VmSpec {
    pub fn load(path: &Path) -> anyhow::Result<VmSpec> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!("{} is not a valid VM spec: {}", path.display(), e.message())
        })
    }

    /// Writes the spec atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = toml::to_string_pretty(self).context("cannot serialise the VM spec")?;
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    }

    /// A locally administered unicast MAC derived from the id.
    pub fn mac(&self) -> [u8; 6] {
        let h = fnv1a(self.id.as_bytes());
        let b = h.to_be_bytes();
        [0x02, b[3], b[4], b[5], b[6], b[7]]
    }

    /// The guest's vsock CID: 3 and up (0-2 are reserved), from the id.
    pub fn cid(&self) -> u32 {
        3 + (fnv1a(self.id.as_bytes()) % (u32::MAX as u64 - 3)) as u32
    }
}

fn yes() -> bool {
    true
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A fresh random VM id: 8 hex digits from the kernel's random source.
pub fn new_id() -> anyhow::Result<String> {
    let mut b = [0u8; 4];
    let mut f = std::fs::File::open("/dev/urandom").context("cannot open /dev/urandom")?;
    std::io::Read::read_exact(&mut f, &mut b).context("cannot read /dev/urandom")?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["web", "a", "my-app-2", &"x".repeat(32)] {
            validate_name(ok).unwrap();
        }
        for bad in [
            "",
            "Web",
            "-a",
            "a-",
            "a_b",
            "a.b",
            "../x",
            "a/b",
            &"x".repeat(33),
            "é",
        ] {
            let e = validate_name(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("'{bad}'")), "{e}");
        }
    }

    #[test]
    fn ports() {
        assert_eq!(
            "8080:80".parse::<PortSpec>().unwrap(),
            PortSpec {
                host: 8080,
                guest: 80,
                protocol: Protocol::Tcp
            }
        );
        assert_eq!(
            "53:5353/udp".parse::<PortSpec>().unwrap().protocol,
            Protocol::Udp
        );
        assert_eq!("1:65535/tcp".parse::<PortSpec>().unwrap().guest, 65535);
        for bad in [
            "0:80",
            "80:0",
            "65536:80",
            "80",
            "80:",
            ":80",
            "a:b",
            "80:80/sctp",
            "+80:80",
            "80:80/",
            " 80:80",
        ] {
            let e = bad.parse::<PortSpec>().unwrap_err();
            assert!(e.contains(&format!("'{bad}'")), "{e}");
        }
        assert_eq!(
            "8080:80".parse::<PortSpec>().unwrap().to_string(),
            "8080:80/tcp"
        );
    }

    #[test]
    fn spec_round_trips_and_rejects_unknown_keys() {
        let spec = VmSpec {
            id: "0123abcd".into(),
            name: "web".into(),
            project: Some("/src/web".into()),
            cpus: 2,
            memory_mib: 1024,
            persistent: true,
            host_root: true,
            kernel: None,
            ports: vec!["8080:80".parse().unwrap()],
            env: [("A".to_string(), "1".to_string())].into(),
            created: 1,
        };
        let dir = std::env::temp_dir().join(format!("mvm-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("vm.toml");
        spec.save(&p).unwrap();
        assert_eq!(VmSpec::load(&p).unwrap(), spec);
        std::fs::write(
            &p,
            "id = \"x\"\nname = \"web\"\ncpus = 1\nmemory_mib = 1\ncreated = 0\nbogus = 1\n",
        )
        .unwrap();
        assert!(VmSpec::load(&p).unwrap_err().to_string().contains("bogus"));
        std::fs::remove_dir_all(dir).unwrap();
        assert_eq!(spec.mac()[0], 0x02);
        assert!(spec.cid() >= 3);
    }
}
