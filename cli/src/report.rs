//! The manager's progress lines and warnings, printed as mvm always has:
//! `mvm: ...` on stderr.

/// Prints each message on stderr, `mvm: ` first.
pub struct Stderr;

impl manager::Report for Stderr {
    fn progress(&self, msg: &str) {
        eprintln!("mvm: {msg}");
    }
    fn warn(&self, msg: &str) {
        eprintln!("mvm: warning: {msg}");
    }
}
