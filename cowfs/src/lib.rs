//! cowfs: a FUSE server core over copy-on-write directory layers.
//!
//! The virtio-fs device of mvm hands every FUSE request the guest sends to
//! [`Server::serve`] through the [`transport`] traits (file data moves
//! between guest memory and host files in one pass); [`Server::handle`]
//! serves requests held in memory. This crate knows nothing of virtio. A
//! share is one of:
//! - [`ShareMode::Cow`]: a lower directory that is never written and a
//!   per-VM upper directory. Reads fall through to the lower layer; the
//!   first write, truncate, chmod, chown, utimes, setxattr or link copies
//!   the object up (data, mode, times, owner when running as root, xattrs
//!   where the host allows); deleting a lower entry leaves a whiteout; a
//!   directory deleted and recreated (or renamed over a lower one) becomes
//!   opaque. See [`name`] for the on-disk whiteout format and [`origin`] for
//!   the copy-up log;
//! - [`ShareMode::Ro`]: the lower directory, read-only (EROFS on writes);
//! - [`ShareMode::Rw`]: the lower directory, read-write (passthrough).
//!
//! Renaming a directory that has lower content copies its whole merged tree
//! up (bounded by [`Limits::max_tree_copy_entries`] and
//! [`Limits::max_tree_copy_bytes`]; beyond that the rename fails with
//! EXDEV and the guest's `mv` falls back to copy and delete, as it does on
//! overlayfs without `redirect_dir`), makes the moved directory opaque and
//! whites out the old name: the upper layer stays self-describing, which
//! [`diff`] and [`commit`] rely on (see [`commit`] for how a commit is staged
//! and journalled).
//!
//! The guest is untrusted: see [`layer`] for how paths are resolved and
//! [`inode`] / [`handle`] for the bounds on host memory and fds.

/// Logs a warning at most a logarithmic number of times per call site (the
/// first 10, then every power of two): guest-triggered events go through
/// this so a hostile guest cannot flood the host's logs.
#[macro_export]
#[doc(hidden)]
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static COUNT: ::std::sync::atomic::AtomicU64 = ::std::sync::atomic::AtomicU64::new(0);
        let n = COUNT.fetch_add(1, ::std::sync::atomic::Ordering::Relaxed);
        if n < 10 || n.is_power_of_two() {
            ::tracing::warn!(occurrences = n + 1, $($arg)+);
        }
    }};
}

pub mod abi;
mod adopt;
mod budget;
pub mod client;
mod commit;
mod diff;
mod fs;
pub mod handle;
pub mod inode;
pub mod layer;
pub mod name;
pub mod origin;
mod server;
pub mod stats;
pub mod transport;

use std::path::PathBuf;

pub use adopt::adopt_upper;
pub use budget::{UpperBudget, OBJECT_COST};
pub use commit::{commit, recover, Approval, CommitOptions, Recovery, Report};
pub use diff::{diff, Change, ChangeKind, CommitError, Conflict};
pub use fs::{Entry, Filesystem};
pub use rustix::io::Errno;
pub use server::{Server, MAX_WRITE};

/// How a share is exposed to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareMode {
    /// Lower read-only, writes go to the upper directory.
    Cow,
    /// Read-only view of the lower directory.
    Ro,
    /// Read-write passthrough to the lower directory.
    Rw,
}

impl std::str::FromStr for ShareMode {
    type Err = CowfsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cow" => Ok(Self::Cow),
            "ro" => Ok(Self::Ro),
            "rw" => Ok(Self::Rw),
            other => Err(CowfsError::BadMode(other.to_string())),
        }
    }
}

/// One share: the host directory (`lower`), the per-VM upper directory
/// (required for [`ShareMode::Cow`], refused otherwise) and the mode.
#[derive(Debug, Clone)]
pub struct ShareConfig {
    pub lower: PathBuf,
    pub upper: Option<PathBuf>,
    pub mode: ShareMode,
    /// Host directories inside `lower` whose contents the guest must not
    /// see (they show as empty directories): the host's /proc, /sys, /dev
    /// and mvm's own state when the host's root is shared. An upper layer
    /// may live inside a masked directory.
    pub masked: Vec<PathBuf>,
    /// When set, the only host paths inside `lower` the guest sees (each
    /// with what is below it, and the directories on the way to it as
    /// directories listing only what leads to a visible path); everything
    /// else is absent (ENOENT, not listed). A file or a symlink may be
    /// named: its last component is not followed.
    pub visible: Option<Vec<PathBuf>>,
    /// Host paths inside `lower` that are absent for the guest, with
    /// everything below them (secrets inside a visible tree).
    pub hidden: Vec<PathBuf>,
}

/// Bounds on what a guest can make the server hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Inodes known to the guest (LRU-evicted beyond).
    pub max_inodes: usize,
    /// Host bytes the inode table may hold (LRU-evicted beyond).
    pub max_inode_bytes: usize,
    /// Open file and directory handles (EMFILE beyond).
    pub max_handles: usize,
    /// Bytes of directory snapshots held by open directory handles.
    pub max_dir_bytes: usize,
    /// Entries a directory rename may copy up (EXDEV beyond).
    pub max_tree_copy_entries: usize,
    /// File bytes a directory rename may copy up (EXDEV beyond).
    pub max_tree_copy_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_inodes: 1 << 20,
            max_inode_bytes: 128 << 20,
            max_handles: 4096,
            max_dir_bytes: 256 << 20,
            max_tree_copy_entries: 10_000,
            max_tree_copy_bytes: 256 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CowfsError {
    #[error("unknown share mode {0:?} (expected cow, ro or rw)")]
    BadMode(String),
    #[error("a cow share needs an upper directory")]
    MissingUpper,
    #[error("an {0:?} share takes no upper directory")]
    UnexpectedUpper(ShareMode),
    #[error("cannot open share directory {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot count what the upper directory {path} holds: {source}")]
    Budget {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("upper directory {0} is inside the lower directory or the other way round")]
    Nested(PathBuf),
    #[error("cannot read the copy-up log in {path}: {source}")]
    OriginLog {
        path: PathBuf,
        #[source]
        source: Errno,
    },
}
