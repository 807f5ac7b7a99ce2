//! Progress and warnings of long operations: the manager never prints, it
//! tells a [`Report`] the caller passes in (the CLI prints each message as
//! `mvm: MSG` on stderr; an embedder may log or drop them).

/// Where the manager's progress lines and warnings go.
pub trait Report {
    /// Something worth telling while it happens ("starting VM 'web'...").
    fn progress(&self, msg: &str);
    /// Something went around a problem ("vhost-net unavailable; using the
    /// tap path"): the operation goes on.
    fn warn(&self, msg: &str);
}

/// Drops every message.
pub struct Silent;

impl Report for Silent {
    fn progress(&self, _: &str) {}
    fn warn(&self, _: &str) {}
}
