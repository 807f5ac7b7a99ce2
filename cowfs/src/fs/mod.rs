//! The merged view: which layer an object lives in, and the operations the
//! FUSE server maps requests onto (split by concern into `ops`, `rename`,
//! `io`, `dir` and `copyup`).

mod copyup;
mod dir;
mod io;
mod ops;
mod rename;

pub(crate) use copyup::{copy_data, times_of};

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::abi::{self, Attr};
use crate::budget::{cost, OBJECT_COST};
use crate::handle::HandleTable;
use crate::inode::{InodeTable, Presence};
use crate::layer::{fstat, join, Layer, St};
use crate::name;
use crate::origin::OriginLog;
use crate::{CowfsError, Limits, ShareConfig, ShareMode, UpperBudget};

/// A LOOKUP-style answer: the node ID (one lookup counted) and attributes.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub nodeid: u64,
    pub attr: Attr,
}

/// A directory's upper and lower halves, opened once (see
/// [`Filesystem::parent_dirs`]); `None` where that half is absent.
pub(crate) struct ParentDirs {
    upper: Option<OwnedFd>,
    lower: Option<OwnedFd>,
    /// The directory's merged path and presence when the batch began (a
    /// batch is one request: nothing changes it meanwhile).
    pub(crate) path: Vec<u8>,
    pub(crate) presence: Presence,
}

/// The layers of one share plus the guest-visible state over them.
#[derive(Debug)]
pub struct Filesystem {
    mode: ShareMode,
    /// The host directory read (never written in `cow`/`ro`). `None` in
    /// `rw`, where the host directory is the (only) upper layer.
    lower: Option<Layer>,
    /// Where writes go (`None` in `ro`).
    upper: Option<Layer>,
    pub(crate) inodes: InodeTable,
    pub(crate) handles: HandleTable,
    origins: Option<OriginLog>,
    /// st_dev values seen, indexed for inode-number mixing.
    devs: Vec<u64>,
    /// The server runs as root: created objects get the caller's owner.
    as_root: bool,
    /// Owners the guest gives are kept in the copy-up log, not on the
    /// host files ([`Filesystem::record_owners`]).
    record_owners: bool,
    tmp_counter: u64,
    limits: Limits,
    /// The upper directory as configured (for counting it).
    upper_path: Option<std::path::PathBuf>,
    /// The VM's upper-layer byte budget (cow shares; none: unbounded).
    budget: Option<UpperBudget>,
    /// Upper files unlinked while a handle held them open: their bytes
    /// are refunded when the last handle goes (st_ino).
    orphans: std::collections::HashSet<u64>,
}

/// The set-user-ID and set-group-ID bits.
const SET_ID: u32 = 0o6000;

/// The masked directories as paths relative to the lower root (those not
/// inside it are ignored).
fn masked_paths(config: &ShareConfig) -> Vec<Vec<u8>> {
    let Ok(lower) = std::fs::canonicalize(&config.lower) else {
        return Vec::new();
    };
    config
        .masked
        .iter()
        .filter_map(|m| {
            let m = std::fs::canonicalize(m).ok()?;
            let rel = m.strip_prefix(&lower).ok()?;
            let bytes = rel.as_os_str().as_bytes().to_vec();
            (!bytes.is_empty()).then_some(bytes)
        })
        .collect()
}

/// `path` relative to the canonical `lower`, its parent resolved and its
/// last component kept as is (a symlink names itself, not its target).
fn view_path(lower: &std::path::Path, path: &std::path::Path) -> Option<Vec<u8>> {
    let name = path.file_name()?;
    let parent = std::fs::canonicalize(path.parent()?).ok()?;
    let rel = parent.strip_prefix(lower).ok()?.join(name);
    Some(rel.as_os_str().as_bytes().to_vec())
}

/// The visible and hidden paths relative to the lower root. A visible path
/// that is not inside the lower shows nothing; a hidden one hides nothing.
fn view_paths(config: &ShareConfig) -> (Option<Vec<Vec<u8>>>, Vec<Vec<u8>>) {
    let Ok(lower) = std::fs::canonicalize(&config.lower) else {
        return (config.visible.as_ref().map(|_| Vec::new()), Vec::new());
    };
    let rel = |paths: &[std::path::PathBuf]| -> Vec<Vec<u8>> {
        paths.iter().filter_map(|p| view_path(&lower, p)).collect()
    };
    (config.visible.as_deref().map(rel), rel(&config.hidden))
}

/// A lower layer with the share's masks and view applied.
fn open_lower(config: &ShareConfig) -> Result<Layer, CowfsError> {
    let mut lower = open_layer(&config.lower)?;
    lower.set_masked(masked_paths(config));
    let (visible, hidden) = view_paths(config);
    lower.set_view(visible, hidden);
    Ok(lower)
}

fn open_layer(path: &std::path::Path) -> Result<Layer, CowfsError> {
    Layer::open(path).map_err(|source| CowfsError::Open {
        path: path.to_path_buf(),
        source,
    })
}

impl Filesystem {
    pub fn new(config: &ShareConfig) -> Result<Self, CowfsError> {
        Self::with_limits(config, Limits::default())
    }

    pub fn with_limits(config: &ShareConfig, limits: Limits) -> Result<Self, CowfsError> {
        let (lower, upper) = match (config.mode, &config.upper) {
            (ShareMode::Cow, None) => return Err(CowfsError::MissingUpper),
            (ShareMode::Cow, Some(u)) => {
                let (l, u2) = (
                    std::fs::canonicalize(&config.lower),
                    std::fs::canonicalize(u),
                );
                let lower = open_lower(config)?;
                if let (Ok(l), Ok(u2)) = (&l, u2) {
                    let in_mask = masked_paths(config)
                        .iter()
                        .any(|m| u2.starts_with(l.join(std::ffi::OsStr::from_bytes(m))));
                    // An upper the guest cannot see through the lower is
                    // not reachable from the merged view either.
                    let unseen = u2
                        .strip_prefix(l)
                        .is_ok_and(|r| lower.is_hidden(r.as_os_str().as_bytes()));
                    if l.starts_with(&u2) || (u2.starts_with(l) && !in_mask && !unseen) {
                        return Err(CowfsError::Nested(u.clone()));
                    }
                }
                (Some(lower), Some(open_layer(u)?))
            }
            (mode, Some(_)) => return Err(CowfsError::UnexpectedUpper(mode)),
            (ShareMode::Ro, None) => (Some(open_lower(config)?), None),
            (ShareMode::Rw, None) => (None, Some(open_layer(&config.lower)?)),
        };
        let origins = match (&lower, &upper) {
            (Some(_), Some(u)) => {
                Some(
                    OriginLog::open(u.root()).map_err(|source| CowfsError::OriginLog {
                        path: config.upper.clone().unwrap_or_default(),
                        source,
                    })?,
                )
            }
            _ => None,
        };
        let devs = lower.iter().chain(upper.iter()).map(|l| l.dev).collect();
        let root = Presence {
            upper: upper.is_some(),
            lower: lower.is_some(),
            is_dir: true,
        };
        Ok(Self {
            mode: config.mode,
            lower,
            upper,
            inodes: InodeTable::new(limits.max_inodes, root).with_byte_cap(limits.max_inode_bytes),
            handles: HandleTable::new(limits.max_handles, limits.max_dir_bytes),
            origins,
            devs,
            as_root: rustix::process::geteuid().is_root(),
            record_owners: false,
            tmp_counter: 0,
            limits,
            budget: None,
            upper_path: config.upper.clone(),
            orphans: Default::default(),
        })
    }

    /// For a server that will run as an ordinary user (a jailed VMM that
    /// drops root after building the VM): the owners the guest gives its
    /// files (create, chown, copy-up) are kept in the upper layer's
    /// copy-up log and shown from there, while the host files belong to
    /// that user. Without it such a server can only give the guest's
    /// files its own user. Set-ID bits are dropped on the host copy as
    /// a root server does. A rw share (no upper layer) keeps host owners
    /// and refuses chown to others, as the host does.
    pub fn record_owners(&mut self) {
        self.as_root = false;
        self.record_owners = true;
    }

    pub(crate) fn records_owners(&self) -> bool {
        self.record_owners && self.origins.is_some()
    }

    /// A new upper object `st` the guest made with `owner`: counted in
    /// the budget, its owner given.
    pub(crate) fn new_upper_object(&mut self, st: &St, owner: (u32, u32)) {
        self.charge_new(st, false);
        self.note_owner(st, owner);
    }

    /// Records the guest's `owner` of upper object `st` when recording
    /// owners (root servers chowned it already).
    pub(crate) fn note_owner(&mut self, st: &St, owner: (u32, u32)) {
        if self.record_owners {
            if let Some(o) = &mut self.origins {
                o.set_owner(st.ino, owner, (st.uid, st.gid));
            }
        }
    }

    /// Bounds what the guest may store in this share's upper layer by
    /// `budget` (shared with the VM's other shares), counting what the
    /// layer already holds. Only a cow share has an upper layer of mvm's
    /// own: a ro share stores nothing and a rw share is the user's folder.
    pub fn set_budget(&mut self, budget: UpperBudget) -> Result<(), CowfsError> {
        if !self.cow() {
            return Ok(());
        }
        let Some(upper) = self.upper_path.clone() else {
            return Ok(());
        };
        budget
            .count_existing(&upper)
            .map_err(|source| CowfsError::Budget {
                path: upper,
                source,
            })?;
        self.budget = Some(budget);
        Ok(())
    }

    /// The upper-layer budget, if one is set.
    pub fn budget(&self) -> Option<&UpperBudget> {
        self.budget.as_ref()
    }

    /// Ok if `more` bytes fit in the budget (ENOSPC otherwise).
    pub(crate) fn room(&self, more: u64) -> Result<(), Errno> {
        self.budget.as_ref().map_or(Ok(()), |b| b.room(more))
    }

    /// A new upper object (`st`) or, with `name_only`, a new name for an
    /// existing one (a hard link).
    pub(crate) fn charge_new(&self, st: &St, name_only: bool) {
        if let Some(b) = &self.budget {
            b.charge(if name_only { OBJECT_COST } else { cost(st) });
        }
    }

    /// Runs `op` on the upper file `fd`, first checking that `need(st)`
    /// more bytes fit and then counting the change in its blocks.
    pub(crate) fn budgeted<T>(
        &self,
        fd: impl AsFd,
        need: impl FnOnce(&St) -> u64,
        op: impl FnOnce() -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        let Some(b) = &self.budget else {
            return op();
        };
        let before = fstat(&fd)?;
        b.room(need(&before))?;
        let r = op();
        if let Ok(after) = fstat(&fd) {
            b.blocks_changed(before.blocks, after.blocks);
        }
        r
    }

    /// The last handle of an upper file went: if the file was unlinked
    /// while open, its bytes come back to the budget now.
    pub(crate) fn handle_closed(&mut self, st: &St) {
        if st.nlink == 0 && self.orphans.remove(&st.ino) {
            if let Some(b) = &self.budget {
                b.refund(st.blocks.saturating_mul(512));
            }
        }
    }

    pub fn mode(&self) -> ShareMode {
        self.mode
    }

    /// Two layers: whiteouts, copy-up and reserved names are in play.
    pub(crate) fn cow(&self) -> bool {
        self.lower.is_some() && self.upper.is_some()
    }

    fn root_presence(&self) -> Presence {
        Presence {
            upper: self.upper.is_some(),
            lower: self.lower.is_some(),
            is_dir: true,
        }
    }

    /// DESTROY (or a second INIT): forget every inode and handle.
    pub fn reset(&mut self) {
        let root = self.root_presence();
        self.inodes.clear(root);
        self.handles.clear();
    }

    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    pub fn handle_count(&self) -> usize {
        self.handles.len()
    }

    pub(crate) fn upper(&self) -> Result<&Layer, Errno> {
        self.upper.as_ref().ok_or(Errno::ROFS)
    }

    pub(crate) fn lower(&self) -> Result<&Layer, Errno> {
        self.lower.as_ref().ok_or(Errno::IO)
    }

    /// The layer holding the object itself.
    pub(crate) fn primary(&self, p: Presence) -> Result<&Layer, Errno> {
        if p.upper {
            self.upper()
        } else {
            self.lower()
        }
    }

    pub(crate) fn primary_stat(&self, path: &[u8], p: Presence) -> Result<St, Errno> {
        self.primary(p)?.stat(path)?.ok_or(Errno::NOENT)
    }

    /// Whether the lower layer has an object at `path` under a parent whose
    /// lower half is visible (visible itself, or shadowed by a copy-up).
    pub(crate) fn lower_has(&self, parent: Presence, path: &[u8]) -> Result<Option<St>, Errno> {
        if !self.cow() || !parent.lower {
            return Ok(None);
        }
        self.lower()?.stat(path)
    }

    pub(crate) fn is_opaque(&self, dir: &[u8]) -> Result<bool, Errno> {
        Ok(self
            .upper()?
            .stat(&join(dir, name::OPAQUE_MARKER))?
            .is_some())
    }

    /// The parent directory's halves, opened once for a batch of probes
    /// (READDIRPLUS): each entry then costs one `statat` per layer instead
    /// of path walks from the layer roots.
    pub(crate) fn parent_dirs(&self, ppath: &[u8], pp: Presence) -> Result<ParentDirs, Errno> {
        let open = |layer: &Option<Layer>, visible: bool| match layer {
            Some(l) if visible => match l.dir(ppath) {
                Ok(fd) => Ok(Some(fd)),
                Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(None),
                Err(e) => Err(e),
            },
            _ => Ok(None),
        };
        Ok(ParentDirs {
            upper: open(&self.upper, pp.upper)?,
            lower: open(&self.lower, pp.lower)?,
            path: ppath.to_vec(),
            presence: pp,
        })
    }

    /// Finds `name` in the directory at `ppath`: where it lives and the
    /// stat of the object itself. `None` if the merged view has no such
    /// name.
    pub(crate) fn probe(
        &self,
        ppath: &[u8],
        pp: Presence,
        name: &[u8],
    ) -> Result<Option<(Presence, St)>, Errno> {
        self.probe_with(ppath, pp, name, None)
    }

    /// [`probe`](Self::probe), in `dirs` (from
    /// [`parent_dirs`](Self::parent_dirs) for the same parent) when given.
    pub(crate) fn probe_with(
        &self,
        ppath: &[u8],
        pp: Presence,
        name: &[u8],
        dirs: Option<&ParentDirs>,
    ) -> Result<Option<(Presence, St)>, Errno> {
        let path = join(ppath, name);
        // `n` in the parent, in one layer.
        let stat = |layer: &Layer, dir: Option<&Option<OwnedFd>>, n: &[u8]| match dir {
            None => layer.stat(&join(ppath, n)),
            Some(None) => Ok(None),
            Some(Some(fd)) => layer.stat_child(fd.as_fd(), &join(ppath, n), n),
        };
        let up = match (&self.upper, pp.upper) {
            (Some(u), true) => stat(u, dirs.map(|d| &d.upper), name)?,
            _ => None,
        };
        let want_lower = pp.lower && up.is_none_or(|u| u.is_dir());
        let whited_out = want_lower
            && up.is_none()
            && self.cow()
            && pp.upper
            && match name::whiteout(name) {
                Ok(wh) => stat(self.upper()?, dirs.map(|d| &d.upper), &wh)?.is_some(),
                Err(_) => false,
            };
        let lo = if want_lower && !whited_out {
            stat(self.lower()?, dirs.map(|d| &d.lower), name)?
        } else {
            None
        };
        Ok(match (up, lo) {
            (None, None) => None,
            (Some(u), Some(l)) if l.is_dir() => {
                let opaque = self.is_opaque(&path)?;
                Some((
                    Presence {
                        upper: true,
                        lower: !opaque,
                        is_dir: true,
                    },
                    u,
                ))
            }
            (Some(u), _) => Some((Presence::upper(u.is_dir()), u)),
            (None, Some(l)) => Some((
                Presence {
                    upper: false,
                    lower: true,
                    is_dir: l.is_dir(),
                },
                l,
            )),
        })
    }

    /// The inode number the guest sees: lower objects keep theirs, copied-up
    /// objects keep their lower one, and the device index goes in the top
    /// byte so numbers from different host filesystems never collide.
    pub(crate) fn guest_ino(&mut self, upper_obj: bool, dev: u64, ino: u64) -> u64 {
        let (dev, ino) = match (&self.origins, upper_obj) {
            (Some(o), true) => o.identity(ino).unwrap_or((dev, ino)),
            _ => (dev, ino),
        };
        let idx = match self.devs.iter().position(|&d| d == dev) {
            Some(i) => i as u64,
            None if self.devs.len() < 255 => {
                self.devs.push(dev);
                (self.devs.len() - 1) as u64
            }
            None => 255,
        };
        const LOW: u64 = (1 << 56) - 1;
        let low = if ino <= LOW {
            ino
        } else {
            (ino ^ (ino >> 56)) & LOW
        };
        (idx << 56) | low
    }

    pub(crate) fn attr(&mut self, p: Presence, st: &St) -> Attr {
        let ino = self.guest_ino(p.upper, st.dev, st.ino);
        // Like overlayfs: a merged directory's link count is unknown.
        let nlink = if p.upper && p.lower && p.is_dir {
            1
        } else {
            st.nlink
        };
        let (uid, gid) = match (&self.origins, p.upper && self.record_owners) {
            (Some(o), true) => o.owner(st.ino).unwrap_or((st.uid, st.gid)),
            _ => (st.uid, st.gid),
        };
        Attr {
            ino,
            size: st.size,
            blocks: st.blocks,
            atime: st.atime as u64,
            mtime: st.mtime as u64,
            ctime: st.ctime as u64,
            atimensec: st.atime_nsec,
            mtimensec: st.mtime_nsec,
            ctimensec: st.ctime_nsec,
            mode: st.mode,
            nlink: u32::try_from(nlink).unwrap_or(u32::MAX),
            uid,
            gid,
            rdev: st.rdev as u32,
            blksize: u32::try_from(st.blksize).unwrap_or(4096),
            flags: 0,
        }
    }

    /// Counts a lookup of the object at `path` and builds its entry.
    pub(crate) fn entry(&mut self, path: &[u8], p: Presence, st: &St) -> Entry {
        let nodeid = self.inodes.lookup(path, p);
        Entry {
            nodeid,
            attr: self.attr(p, st),
        }
    }

    /// A fresh name for a temporary file in an upper directory.
    pub(crate) fn tmp_name(&mut self) -> Vec<u8> {
        self.tmp_counter += 1;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        [
            name::TMP_PREFIX,
            format!("{}.{}.{nanos}", pid(), self.tmp_counter).as_bytes(),
        ]
        .concat()
    }

    /// Creates an empty marker file (whiteout, opaque marker) `name` in the
    /// upper directory `dir`.
    pub(crate) fn make_marker(&self, dir: &[u8], name: &[u8]) -> Result<(), Errno> {
        let d = self.upper()?.dir(dir)?;
        match rustix::fs::openat(
            &d,
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(_) | Err(Errno::EXIST) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whites out `name` in `dir` (copying `dir` up first) and records what
    /// the lower object looked like.
    pub(crate) fn whiteout(&mut self, dir: &[u8], name: &[u8], lower: &St) -> Result<(), Errno> {
        let wh = name::whiteout(name)?;
        self.ensure_upper_dir(dir)?;
        self.make_marker(dir, &wh)?;
        if let Some(o) = &mut self.origins {
            o.snapshot(&join(dir, name), lower);
        }
        Ok(())
    }

    /// Removes the whiteout for `name` in the upper `dir`; true if there was one.
    pub(crate) fn remove_whiteout(&self, dir: &[u8], name: &[u8]) -> Result<bool, Errno> {
        let Ok(wh) = name::whiteout(name) else {
            return Ok(false);
        };
        let d = self.upper()?.dir(dir)?;
        match rustix::fs::unlinkat(&d, wh.as_slice(), rustix::fs::AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Forgets the identity of an upper object being deleted (last link).
    /// Also gives its bytes back to the budget, or only its name's while
    /// other links remain; a file still open keeps its bytes until its
    /// last handle goes ([`handle_closed`](Self::handle_closed)).
    pub(crate) fn upper_deleted(&mut self, st: &St, nodeid: Option<u64>) {
        let last = st.nlink <= 1 || st.is_dir();
        if last {
            if let Some(o) = &mut self.origins {
                o.drop_identity(st.ino);
            }
        }
        if let Some(b) = &self.budget {
            let open = nodeid.is_some_and(|id| self.handles.has_file(id));
            match (last, open) {
                (false, _) => b.refund(OBJECT_COST),
                (true, false) => b.refund(cost(st)),
                (true, true) => {
                    b.refund(OBJECT_COST);
                    self.orphans.insert(st.ino);
                }
            }
        }
    }

    /// Sets owner (when root) and exact mode on a freshly created upper
    /// object `name` in `dir` (the host umask must not apply).
    pub(crate) fn finish_new(
        &self,
        dir: impl AsFd,
        name: &[u8],
        mode: Option<u32>,
        owner: (u32, u32),
    ) -> Result<St, Errno> {
        let fd: OwnedFd = rustix::fs::openat(
            &dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        if self.as_root {
            ops::chown_fd(&fd, Some(owner.0), Some(owner.1))?;
        }
        if let Some(mode) = mode {
            ops::chmod_fd(&fd, mode)?;
        }
        fstat(&fd)
    }

    /// The permission bits a guest-made or copied-up object gets on the
    /// host. Running as root, a non-directory never keeps its set-user-ID
    /// or set-group-ID bit: the upper layer (and a rw share) is a host
    /// folder, and a root-owned set-ID file there with guest-chosen
    /// content would be a privilege on the host. A directory's
    /// set-group-ID bit only steers group inheritance and is kept.
    /// Unprivileged, the files belong to the user running the VMM and
    /// their bits grant no one more than that user has.
    pub(crate) fn host_mode(&self, mode: u32, is_dir: bool) -> u32 {
        if (self.as_root || self.record_owners) && !is_dir {
            mode & 0o7777 & !SET_ID
        } else {
            mode & 0o7777
        }
    }

    pub(crate) fn to_dt(mode: u32) -> u32 {
        (mode & crate::layer::S_IFMT) >> 12
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Statistics of the layer writes go to (else the lower one).
    pub fn statfs(&self) -> Result<abi::Kstatfs, Errno> {
        let layer = self
            .upper
            .as_ref()
            .or(self.lower.as_ref())
            .ok_or(Errno::IO)?;
        let s = rustix::fs::fstatvfs(layer.root())?;
        // With a budget the guest's `df` shows it: its size, and what is
        // left of it (or of the host's disk, whichever is less).
        let (blocks, bfree, bavail) = match &self.budget {
            Some(b) => {
                let frsize = s.f_frsize.max(1);
                let left = b.cap().saturating_sub(b.used()) / frsize;
                (b.cap() / frsize, left.min(s.f_bfree), left.min(s.f_bavail))
            }
            None => (s.f_blocks, s.f_bfree, s.f_bavail),
        };
        Ok(abi::Kstatfs {
            blocks,
            bfree,
            bavail,
            files: s.f_files,
            ffree: s.f_ffree,
            bsize: u32::try_from(s.f_bsize).unwrap_or(4096),
            namelen: if self.cow() {
                (name::NAME_MAX - name::WHITEOUT_PREFIX.len()) as u32
            } else {
                name::NAME_MAX as u32
            },
            frsize: u32::try_from(s.f_frsize).unwrap_or(4096),
            padding: 0,
            spare: [0; 6],
        })
    }
}

/// This process's id, asked once (a syscall per copy-up otherwise).
fn pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}
