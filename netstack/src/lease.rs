//! The state folder: one JSON file per VM (its lease: MAC, address, forwards,
//! and whether it is attached now), the network configuration, and a lock
//! so that concurrent `mvm` processes allocate addresses one at a time.
//!
//! Layout under the folder the caller gives:
//! ```text
//! network.json        the NetConfig in force (written by setup/attach)
//! host.json           what setup changed on the host (uplinks' forwarding)
//! leases/<id>.json    one Lease per VM, kept across restarts
//! lock                flock(2) target
//! ```

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::addr::{Cidr, MacAddr, Subnet};
use crate::error::{Error, Result};
use crate::forward::PortForward;

/// A VM's network lease: kept while the VM exists, so it keeps its address
/// and MAC across restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The VM id.
    pub id: String,
    /// The VM name: its hostname and `<name>.mvm` DNS name.
    pub name: String,
    /// The guest MAC, derived from the id.
    pub mac: MacAddr,
    /// The guest address.
    pub ip: Ipv4Addr,
    /// Whether the VM allows every other VM (as if `allow` held the subnet).
    #[serde(default)]
    pub allow_vm_to_vm: bool,
    /// Networks it may reach although refused by default (and VMs it
    /// allows, by address).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<Cidr>,
    /// Port forwards, restored on every attach.
    #[serde(default)]
    pub forwards: Vec<PortForward>,
    /// Set while the VM is attached (it has a tap and rules).
    #[serde(default)]
    pub active: Option<Active>,
}

impl Lease {
    /// Whether this VM allows traffic with the VM at `ip`.
    pub fn allows_vm(&self, ip: Ipv4Addr) -> bool {
        self.allow_vm_to_vm || self.allow.iter().any(|c| c.contains(ip))
    }

    /// Whether it lets any VM at all talk to it (its port then need not
    /// be isolated).
    pub(crate) fn allows_some_vm(&self, subnet: &Subnet) -> bool {
        self.allow_vm_to_vm
            || self
                .allow
                .iter()
                .any(|c| subnet.overlaps(c.network(), c.prefix_len()))
    }
}

/// The addresses of the attached VMs of `all` that `l` may talk to: both
/// allow each other.
pub(crate) fn peers_of(l: &Lease, all: &[Lease]) -> Vec<Ipv4Addr> {
    all.iter()
        .filter(|o| o.id != l.id && o.active.is_some())
        .filter(|o| l.allows_vm(o.ip) && o.allows_vm(l.ip))
        .map(|o| o.ip)
        .collect()
}

/// The attached state of a VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Active {
    /// Its tap.
    pub tap: String,
    /// Whether the tap is one of the pool's (kept on detach) or its own.
    #[serde(default)]
    pub pooled: bool,
    /// The process that uses the tap (the VMM); `None` until recorded.
    #[serde(default)]
    pub owner_pid: Option<u32>,
    /// The process that attached it (the CLI), alive until the VMM runs.
    #[serde(default)]
    pub attached_by: Option<u32>,
}

/// What setup changed on the host, so teardown can put it back.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    /// Uplinks on which setup turned per-interface IPv4 forwarding on.
    #[serde(default)]
    pub forwarding_enabled: Vec<String>,
}

/// Access to a state folder.
#[derive(Clone, Debug)]
pub(crate) struct Store {
    dir: PathBuf,
}

/// Holds the state folder's lock until dropped.
pub(crate) struct StoreLock {
    _file: File,
}

impl Store {
    pub(crate) fn open(dir: &Path) -> Result<Store> {
        let leases = dir.join("leases");
        fs::create_dir_all(&leases)
            .map_err(|e| Error::io(format!("creating {}", leases.display()), e))?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    /// Like `open` but never creates anything (for readers such as the DHCP
    /// and DNS servers).
    pub(crate) fn at(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn leases_dir(&self) -> PathBuf {
        self.dir.join("leases")
    }

    pub(crate) fn lock(&self) -> Result<StoreLock> {
        let path = self.dir.join("lock");
        match crate::lockfile::lock_exclusive(&path, true) {
            Ok(Some(file)) => Ok(StoreLock { _file: file }),
            Ok(None) => Err(Error::io(
                format!("locking {}", path.display()),
                std::io::ErrorKind::WouldBlock.into(),
            )),
            Err(e) => Err(Error::io(format!("locking {}", path.display()), e)),
        }
    }

    fn lease_path(&self, id: &str) -> PathBuf {
        self.leases_dir().join(format!("{id}.json"))
    }

    pub(crate) fn load(&self, id: &str) -> Result<Option<Lease>> {
        read_json(&self.lease_path(id))
    }

    pub(crate) fn load_all(&self) -> Result<Vec<Lease>> {
        let dir = self.leases_dir();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("reading {}", dir.display()), e)),
        };
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
            let p = ent.path();
            if p.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            if let Some(l) = read_json::<Lease>(&p)? {
                out.push(l);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    pub(crate) fn save(&self, lease: &Lease) -> Result<()> {
        write_json(&self.lease_path(&lease.id), lease)
    }

    pub(crate) fn remove(&self, id: &str) -> Result<()> {
        let p = self.lease_path(id);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {}", p.display()), e)),
        }
    }

    /// Delete the temporary files of writes that a killed process left
    /// half done. Call with the store lock held: every write takes it, so
    /// no temporary file is then in use.
    pub(crate) fn sweep_temporaries(&self) -> Result<usize> {
        let mut n = 0;
        for dir in [self.leases_dir(), self.dir.clone()] {
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for ent in rd.flatten() {
                let p = ent.path();
                if p.extension().and_then(|e| e.to_str()) == Some("tmp") {
                    match fs::remove_file(&p) {
                        Ok(()) => n += 1,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(Error::io(format!("removing {}", p.display()), e)),
                    }
                }
            }
        }
        Ok(n)
    }

    /// Setup as root: removes a `network.json` or `host.json` that is
    /// not root's own (older versions gave them to the plane's user),
    /// rather than act on what someone else may have written; setup
    /// writes both afresh.
    pub(crate) fn drop_untrusted_config(&self) -> Result<()> {
        for name in ["network.json", "host.json"] {
            let p = self.dir.join(name);
            if let Err(Error::Untrusted { .. }) = read_trusted_json::<serde_json::Value>(&p) {
                tracing::warn!("{} was not root's own: removed", p.display());
                fs::remove_file(&p)
                    .map_err(|e| Error::io(format!("removing {}", p.display()), e))?;
            }
        }
        Ok(())
    }

    pub(crate) fn load_host(&self) -> Result<HostState> {
        Ok(read_trusted_json(&self.dir.join("host.json"))?.unwrap_or_default())
    }

    pub(crate) fn save_host(&self, h: &HostState) -> Result<()> {
        write_json(&self.dir.join("host.json"), h)
    }
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|source| Error::State {
            path: path.to_path_buf(),
            source,
        })
}

/// [`read_json`] of a file whose content root acts on (the plane's
/// configuration, what setup changed on the host): run as root, the file
/// must be root's and writable by no one else, as a user may write the
/// state folder itself (a NixOS host gives it the VMs' user).
pub(crate) fn read_trusted_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        match fs::symlink_metadata(path) {
            Ok(m) if m.uid() != 0 || m.mode() & 0o022 != 0 || !m.is_file() => {
                return Err(Error::Untrusted {
                    path: path.to_path_buf(),
                    uid: m.uid(),
                })
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }
    read_json(path)
}

/// Write a file atomically (temporary file + rename), so readers never see
/// half a lease.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(value).map_err(|source| Error::State {
        path: path.to_path_buf(),
        source,
    })?;
    text.push(b'\n');
    let tmp = path.with_extension("json.tmp");
    let ctx = |e| Error::io(format!("writing {}", tmp.display()), e);
    let mut f = File::create(&tmp).map_err(ctx)?;
    f.write_all(&text).map_err(ctx)?;
    f.sync_all().map_err(ctx)?;
    fs::rename(&tmp, path).map_err(|e| Error::io(format!("renaming to {}", path.display()), e))
}

/// The lowest address of the subnet that is neither the gateway, the network
/// or broadcast address, nor any other VM's (or in `also_used`).
pub(crate) fn allocate_ip(
    subnet: &Subnet,
    leases: &[Lease],
    also_used: &[Ipv4Addr],
) -> Result<Ipv4Addr> {
    subnet
        .vm_addresses()
        .find(|ip| !leases.iter().any(|l| l.ip == *ip) && !also_used.contains(ip))
        .ok_or_else(|| Error::AddressesExhausted(subnet.cidr()))
}

/// A read-only view of the VMs for the DHCP and DNS servers, reloaded when
/// the leases folder changes (every write is a rename, which touches the
/// folder's mtime).
pub struct Registry {
    store: Store,
    stamp: Option<SystemTime>,
    by_mac: HashMap<MacAddr, (Ipv4Addr, String)>,
    by_name: HashMap<String, Ipv4Addr>,
}

impl Registry {
    /// A registry over the leases in `state_dir`.
    pub fn new(state_dir: &Path) -> Registry {
        Registry {
            store: Store::at(state_dir),
            stamp: None,
            by_mac: HashMap::new(),
            by_name: HashMap::new(),
        }
    }

    /// A fixed registry (tests, fuzzing): `(mac, ip, name, attached)`.
    pub fn fixed(entries: &[(MacAddr, Ipv4Addr, &str, bool)]) -> Registry {
        let mut r = Registry::new(Path::new("/nonexistent/netstack-fixed"));
        r.stamp = Some(SystemTime::UNIX_EPOCH);
        for (mac, ip, name, attached) in entries {
            r.by_mac.insert(*mac, (*ip, name.to_string()));
            if *attached {
                r.by_name.insert(name.to_ascii_lowercase(), *ip);
            }
        }
        r
    }

    /// Reload if the folder changed.
    pub fn refresh(&mut self) {
        if self.stamp == Some(SystemTime::UNIX_EPOCH) {
            return; // fixed
        }
        let stamp = fs::metadata(self.store.leases_dir())
            .and_then(|m| m.modified())
            .ok();
        if stamp.is_some() && stamp == self.stamp {
            return;
        }
        match self.store.load_all() {
            Ok(leases) => {
                self.by_mac.clear();
                self.by_name.clear();
                // Attached VMs last, so they win a MAC that an old lease
                // of the same pool tap still names.
                let (on, off): (Vec<Lease>, Vec<Lease>) =
                    leases.into_iter().partition(|l| l.active.is_some());
                for l in off.into_iter().chain(on) {
                    self.by_mac.insert(l.mac, (l.ip, l.name.clone()));
                    if l.active.is_some() {
                        self.by_name.insert(l.name.to_ascii_lowercase(), l.ip);
                    }
                }
                self.stamp = stamp;
            }
            Err(e) => tracing::warn!("registry: {e}"),
        }
    }

    /// The address and hostname of a known VM's MAC.
    pub fn by_mac(&self, mac: &MacAddr) -> Option<(Ipv4Addr, &str)> {
        self.by_mac.get(mac).map(|(ip, n)| (*ip, n.as_str()))
    }

    /// The address of an attached VM by name (case-insensitive).
    pub fn by_name(&self, name: &str) -> Option<Ipv4Addr> {
        self.by_name.get(&name.to_ascii_lowercase()).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(id: &str, ip: [u8; 4]) -> Lease {
        Lease {
            id: id.into(),
            name: id.into(),
            mac: MacAddr::for_vm(id),
            ip: ip.into(),
            allow_vm_to_vm: false,
            allow: vec![],
            forwards: vec![],
            active: None,
        }
    }

    #[test]
    fn allocation_skips_used() {
        let s = Subnet::default();
        let ls = vec![lease("a", [10, 77, 0, 2]), lease("b", [10, 77, 0, 4])];
        assert_eq!(
            allocate_ip(&s, &ls, &[]).unwrap(),
            Ipv4Addr::new(10, 77, 0, 3)
        );
        assert_eq!(
            allocate_ip(&s, &ls, &[Ipv4Addr::new(10, 77, 0, 3)]).unwrap(),
            Ipv4Addr::new(10, 77, 0, 5)
        );
        let small: Subnet = "10.9.9.1/30".parse().unwrap();
        let full = vec![lease("a", [10, 9, 9, 2])];
        assert!(allocate_ip(&small, &full, &[]).is_err());
    }

    #[test]
    fn store_roundtrip() {
        let dir = std::env::temp_dir().join(format!("netstack-lease-{}", std::process::id()));
        let st = Store::open(&dir).unwrap();
        let _g = st.lock().unwrap();
        let l = lease("web", [10, 77, 0, 9]);
        st.save(&l).unwrap();
        assert_eq!(st.load("web").unwrap(), Some(l.clone()));
        assert_eq!(st.load_all().unwrap(), vec![l]);
        let mut r = Registry::new(&dir);
        r.refresh();
        assert!(r.by_mac(&MacAddr::for_vm("web")).is_some());
        assert!(r.by_name("web").is_none()); // not attached
        st.remove("web").unwrap();
        st.remove("web").unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_killed_writers_temporary_files_are_swept() {
        let dir = std::env::temp_dir().join(format!("netstack-sweep-{}", std::process::id()));
        let st = Store::open(&dir).unwrap();
        let _g = st.lock().unwrap();
        st.save(&lease("web", [10, 77, 0, 9])).unwrap();
        fs::write(st.leases_dir().join("dead.json.tmp"), b"{\"half").unwrap();
        fs::write(dir.join("host.json.tmp"), b"{").unwrap();
        assert_eq!(st.sweep_temporaries().unwrap(), 2);
        let left: Vec<_> = fs::read_dir(st.leases_dir())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("web.json")]);
        assert!(!dir.join("host.json.tmp").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
