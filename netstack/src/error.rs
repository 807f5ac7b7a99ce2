//! The one error type of netstack. Every message is one line and names the
//! bad value, so the CLI can print it as is.

use std::path::PathBuf;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the host network plane.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `HOST_PORT:GUEST_PORT[/tcp|/udp]` spec that does not parse.
    #[error("invalid port forward {spec:?}: {reason}")]
    InvalidPortSpec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A subnet that does not parse or is unusable.
    #[error("invalid subnet {spec:?}: {reason}")]
    InvalidSubnet {
        /// The subnet as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The subnet overlaps a route or address already on the host.
    #[error("subnet {subnet} overlaps {existing} on {dev}; choose another subnet")]
    SubnetOverlap {
        /// Our subnet.
        subnet: String,
        /// The overlapping route or address.
        existing: String,
        /// The interface it is on.
        dev: String,
    },
    /// A `network.allow` / `--allow-net` entry that does not parse.
    #[error("invalid allowed network {spec:?}: {reason}")]
    InvalidAllow {
        /// The entry as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A VM id or name that cannot be used.
    #[error("invalid VM {what} {value:?}: {reason}")]
    InvalidName {
        /// "id" or "name".
        what: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A host port someone else holds.
    #[error("host port {port}/{proto} is already in use on this host")]
    PortInUse {
        /// The port.
        port: u16,
        /// tcp or udp.
        proto: &'static str,
    },
    /// A host port that is already forwarded.
    #[error("host port {port}/{proto} is already forwarded to VM {vm:?}")]
    DuplicateForward {
        /// The port.
        port: u16,
        /// tcp or udp.
        proto: &'static str,
        /// The VM that has it.
        vm: String,
    },
    /// Removing a forward that does not exist.
    #[error("VM {vm:?} has no forward of host port {port}/{proto}")]
    NoSuchForward {
        /// The VM.
        vm: String,
        /// The port.
        port: u16,
        /// tcp or udp.
        proto: &'static str,
    },
    /// A VM id without a lease in the state folder.
    #[error("VM {0:?} has no network lease (was it attached?)")]
    UnknownVm(String),
    /// Every host address of the subnet is taken.
    #[error("no free address left in subnet {0}")]
    AddressesExhausted(String),
    /// Every tap of the pre-created pool is in use.
    #[error(
        "no free tap in the pool for uid {uid}; run `sudo mvm net setup --pool N` with a larger N"
    )]
    PoolExhausted {
        /// The uid that asked.
        uid: u32,
    },
    /// Two VM ids give the same MAC address.
    #[error("VM {a:?} and VM {b:?} derive the same MAC {mac}; rename one of them")]
    MacCollision {
        /// First VM.
        a: String,
        /// Second VM.
        b: String,
        /// The MAC.
        mac: String,
    },
    /// The bridge is missing (not set up).
    #[error("bridge {0} does not exist; run `sudo mvm net setup` once")]
    NoBridge(String),
    /// A privilege is missing.
    #[error("{what} needs {cap}, which this process lacks; {how}")]
    MissingPrivilege {
        /// What was attempted.
        what: String,
        /// The capability.
        cap: &'static str,
        /// How to grant it.
        how: &'static str,
    },
    /// A netlink request failed.
    #[error("netlink: {op}: {source}")]
    Netlink {
        /// The operation.
        op: String,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// An nft invocation failed.
    #[error("nftables: {0}")]
    Nft(String),
    /// Any other I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A configuration file root would act on that someone else may have
    /// written.
    #[error("{path} belongs to uid {uid} or is writable by others: as root, mvm reads only root's own network configuration (remove it and run `sudo mvm net setup` again)")]
    Untrusted {
        /// The file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// A state file that does not parse.
    #[error("state file {path}: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn netlink(op: impl Into<String>, source: std::io::Error) -> Self {
        Error::Netlink {
            op: op.into(),
            source,
        }
    }
}
