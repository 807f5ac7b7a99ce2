//! `vm.toml`: what a VM is (as opposed to what it is doing).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{bail, Context};
use serde::{Deserialize, Serialize};

/// VM names become host names (`NAME.mvm`) and folder names.
pub fn validate_name(name: &str) -> crate::Result<()> {
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
    /// What the guest may store in its upper layers together, in MiB
    /// (ENOSPC past it).
    #[serde(default = "default_disk")]
    pub disk_mib: u64,
    /// The guest's root is the host's own `/`, read-only underneath a
    /// per-VM copy-on-write layer (so the host's tools are there); false:
    /// the minimal initramfs root (busybox).
    #[serde(default = "yes")]
    pub host_root: bool,
    /// A network interface on the mvm bridge (when the host allows).
    #[serde(default = "yes")]
    pub network: bool,
    /// Who moves its frames: the VMM (tap) or the kernel (vhost).
    #[serde(default, skip_serializing_if = "is_tap")]
    pub net_backend: vmm::NetBackend,
    /// Allows every other VM (traffic between two VMs needs both to allow it).
    #[serde(default)]
    pub allow_vm_to_vm: bool,
    /// Networks it may reach although refused by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_net: Vec<netstack::Cidr>,
    /// The guest kernel; default: $MVM_KERNEL, then the cached build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<netstack::PortForward>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Host variables (names or 'PREFIX*' patterns) passed through: their
    /// values are read when services start and at each shell/exec, never
    /// stored here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_host: Vec<String>,
    /// Processes the guest agent supervises (dev servers, databases), each
    /// after the services it depends on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<agent_proto::ServiceSpec>,
    /// Per service: the services that must be ready before it starts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub depends_on: BTreeMap<String, Vec<String>>,
    /// Extra host folders in the guest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<ExtraShare>,
    /// Volumes (persistent disks) mounted in the guest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<crate::volume::VolumeMount>,
    /// Paths of the host user's home shared with the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<super::HomeShares>,
    /// What `mvm shell` runs instead of a login shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    /// Unix time of `mvm create`.
    pub created: u64,
    /// seccomp on the VMM's threads: on unless turned off for debugging
    /// (hidden `--seccomp`).
    #[serde(default = "seccomp_on", skip_serializing_if = "is_seccomp_on")]
    pub seccomp: vmm::seccomp::Seccomp,
    /// The VMM runs jailed (vmm::jail) when mvm runs as root: on unless
    /// turned off for debugging (hidden `--no-jail`).
    #[serde(default = "jail_on", skip_serializing_if = "is_jail_on")]
    pub jail: bool,
}

/// A host folder mounted in the guest besides the project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraShare {
    pub host: PathBuf,
    pub guest: String,
    /// Read-only; otherwise copy-on-write.
    #[serde(default)]
    pub ro: bool,
    /// Extended attributes served (mvm.toml `xattr = true`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub xattr: bool,
}

impl VmSpec {
    pub fn load(path: &Path) -> crate::Result<VmSpec> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let spec: VmSpec = toml::from_str(&text).map_err(|e| {
            crate::error::err!("{} is not a valid VM spec: {}", path.display(), e.message())
        })?;
        // Guest paths go onto the kernel command line: a hand-edited spec
        // must not smuggle arguments in.
        for s in &spec.shares {
            super::validate_guest_path(&s.guest).map_err(|e| {
                crate::error::err!("{} is not a valid VM spec: {e}", path.display())
            })?;
        }
        // Volume names and paths go onto the command line too.
        for v in &spec.volumes {
            crate::volume::validate_name(&v.name)
                .map_err(|e| e.to_string())
                .and_then(|()| crate::volume::check_guest_path(&v.guest))
                .map_err(|e| {
                    crate::error::err!("{} is not a valid VM spec: {e}", path.display())
                })?;
        }
        Ok(spec)
    }

    /// Writes the spec atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> crate::Result<()> {
        let text = toml::to_string_pretty(self).context("cannot serialise the VM spec")?;
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    }

    /// The guest's vsock CID: 3 and up (0-2 are reserved), from the id.
    pub fn cid(&self) -> u32 {
        3 + (fnv1a(self.id.as_bytes()) % (u32::MAX as u64 - 3)) as u32
    }
}

fn is_tap(b: &vmm::NetBackend) -> bool {
    *b == vmm::NetBackend::Tap
}

fn yes() -> bool {
    true
}

fn jail_on() -> bool {
    true
}

fn is_jail_on(on: &bool) -> bool {
    *on
}

fn seccomp_on() -> vmm::seccomp::Seccomp {
    vmm::seccomp::Seccomp::Kill
}

fn is_seccomp_on(s: &vmm::seccomp::Seccomp) -> bool {
    *s == vmm::seccomp::Seccomp::Kill
}

fn default_disk() -> u64 {
    crate::create::DEFAULT_DISK_MIB
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A fresh random VM id: 8 hex digits from the kernel's random source.
pub fn new_id() -> crate::Result<String> {
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
    fn spec_round_trips_and_rejects_unknown_keys() {
        let spec = VmSpec {
            id: "0123abcd".into(),
            name: "web".into(),
            project: Some("/src/web".into()),
            cpus: 2,
            memory_mib: 1024,
            persistent: true,
            disk_mib: 2048,
            host_root: true,
            network: true,
            net_backend: vmm::NetBackend::Vhost,
            allow_vm_to_vm: false,
            allow_net: vec!["10.1.0.0/16".parse().unwrap()],
            kernel: None,
            ports: vec!["8080:80".parse().unwrap()],
            env: [("A".to_string(), "1".to_string())].into(),
            env_host: vec!["AWS_*".into()],
            services: Vec::new(),
            depends_on: Default::default(),
            shares: Vec::new(),
            volumes: vec![crate::volume::VolumeMount {
                name: "pgdata".into(),
                guest: "/var/lib/postgresql".into(),
                ro: false,
                size_mib: Some(10240),
                owner: Some("postgres".into()),
            }],
            home: None,
            shell: None,
            created: 1,
            seccomp: vmm::seccomp::Seccomp::Kill,
            jail: true,
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
        // A hand-edited guest path cannot put words on the kernel command line.
        let mut evil = spec.clone();
        evil.shares = vec![ExtraShare {
            host: "/data".into(),
            guest: "/data init=/bin/sh".into(),
            ro: false,
            xattr: false,
        }];
        evil.save(&p).unwrap();
        let e = VmSpec::load(&p).unwrap_err().to_string();
        assert!(e.contains("guest path '/data init=/bin/sh'"), "{e}");
        let mut evil = spec.clone();
        evil.volumes[0].name = "x init=/bin/sh".into();
        evil.save(&p).unwrap();
        let e = VmSpec::load(&p).unwrap_err().to_string();
        assert!(e.contains("invalid volume name 'x init=/bin/sh'"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
        assert!(spec.cid() >= 3);
    }
}
