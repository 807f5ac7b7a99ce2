//! Argument types that several commands share.

use manager::net::NetMode;

/// `--net` of `mvm create` and `mvm run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NetArg {
    Tap,
    Vhost,
    None,
}

impl NetArg {
    /// The manager's mode; `--no-net` wins.
    pub fn mode(self, no_net: bool) -> NetMode {
        match self {
            _ if no_net => NetMode::None,
            NetArg::Tap => NetMode::Tap,
            NetArg::Vhost => NetMode::Vhost,
            NetArg::None => NetMode::None,
        }
    }
}
