//! The crate's error: a message for the user, what was being done when
//! something failed, or the failure of a lower layer, chained through
//! `source()` so that `{:#}` of an `crate::Error` made from it, or
//! [`Error::chain`], reads "what: why: root cause" as before.

use std::fmt::Display;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A complete one-line message (bad value, refused operation...).
    #[error("{0}")]
    Msg(String),
    /// There is no VM of that name.
    #[error("no VM named '{0}' (see `mvm list`)")]
    NoSuchVm(String),
    /// A VM of that name exists already.
    #[error("a VM named '{0}' already exists")]
    VmExists(String),
    /// The operation needs the VM stopped (or forced).
    #[error("VM '{0}' is running; stop it first or use `mvm rm --force`")]
    VmRunning(String),
    /// Another mvm command held the VM's lock for longer than we wait.
    #[error("another mvm command is still working on VM '{name}' after {secs} s; try again when it is done")]
    Busy { name: String, secs: u64 },
    /// What was being done when `source` failed.
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<Error>,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Vmm(#[from] vmm::Error),
    #[error(transparent)]
    Net(#[from] netstack::Error),
    #[error(transparent)]
    Agent(#[from] agent_proto::client::ClientError),
    #[error(transparent)]
    Commit(#[from] cowfs::CommitError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    TomlSer(#[from] toml::ser::Error),
}

/// The VMM's own errors, through [`vmm::Error`].
macro_rules! via_vmm {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::Vmm(e.into())
            }
        }
    )*};
}
via_vmm!(
    vmm::loader::LoadError,
    vmm::api::ApiError,
    vmm::memory::MemoryError
);

impl Error {
    /// The message and every cause, joined by ": " (anyhow's `{:#}`).
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut next = std::error::Error::source(self);
        while let Some(e) = next {
            out.push_str(": ");
            out.push_str(&e.to_string());
            next = e.source();
        }
        out
    }
}

/// Adds what was being done to an error (as `anyhow::Context` does).
pub trait Context<T> {
    fn context<C: Display>(self, context: C) -> Result<T>;
    fn with_context<C: Display, F: FnOnce() -> C>(self, f: F) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context<C: Display>(self, context: C) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: context.to_string(),
            source: Box::new(e.into()),
        })
    }
    fn with_context<C: Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: f().to_string(),
            source: Box::new(e.into()),
        })
    }
}

impl<T> Context<T> for Option<T> {
    fn context<C: Display>(self, context: C) -> Result<T> {
        self.ok_or_else(|| Error::Msg(context.to_string()))
    }
    fn with_context<C: Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
        self.ok_or_else(|| Error::Msg(f().to_string()))
    }
}

/// An [`Error::Msg`] from format arguments.
macro_rules! err {
    ($($arg:tt)*) => {
        $crate::error::Error::Msg(format!($($arg)*))
    };
}

/// Returns an [`Error::Msg`] from format arguments.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::err!($($arg)*))
    };
}

pub(crate) use {bail, err};

#[cfg(test)]
mod tests {
    use super::*;

    /// Context reads as anyhow's did: the outer message alone, and the
    /// whole chain through `source()`.
    #[test]
    fn context_chains_like_anyhow() {
        let io: Result<()> = Err(std::io::Error::other("disk on fire").into());
        let e = io
            .context("cannot read vm.toml")
            .context("VM 'web' cannot start")
            .unwrap_err();
        assert_eq!(e.to_string(), "VM 'web' cannot start");
        assert_eq!(
            e.chain(),
            "VM 'web' cannot start: cannot read vm.toml: disk on fire"
        );
        let none: Option<u8> = None;
        assert_eq!(none.context("no VM").unwrap_err().chain(), "no VM");
        let busy = Error::Busy {
            name: "web".into(),
            secs: 120,
        };
        assert!(busy.to_string().starts_with("another mvm command"));
    }
}
