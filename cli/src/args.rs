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

/// A subcommand's arguments, added to clap's command tree only when that
/// subcommand is the one parsed (`Command::defer`). Building every
/// subcommand's arguments was most of what parsing cost: a third of `mvm
/// run`'s start-up in a nested boot, where cold code is slow.
pub struct Lazy<T>(pub T);

impl<T: clap::FromArgMatches> clap::FromArgMatches for Lazy<T> {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches(matches).map(Lazy)
    }

    fn from_arg_matches_mut(matches: &mut clap::ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches_mut(matches).map(Lazy)
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(matches)
    }

    fn update_from_arg_matches_mut(
        &mut self,
        matches: &mut clap::ArgMatches,
    ) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches_mut(matches)
    }
}

impl<T: clap::Args> clap::Args for Lazy<T> {
    fn group_id() -> Option<clap::Id> {
        T::group_id()
    }

    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.defer(T::augment_args)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        cmd.defer(T::augment_args_for_update)
    }
}
