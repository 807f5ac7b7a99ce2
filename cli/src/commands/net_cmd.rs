//! `mvm net setup|teardown`: the one-time host network set-up (as root):
//! the bridge, NAT and a pool of taps the user may use without privileges.

use clap::{Args, Subcommand};

#[derive(Args)]
pub struct NetArgs {
    #[command(subcommand)]
    pub action: NetAction,
}

#[derive(Subcommand)]
pub enum NetAction {
    /// Create the bridge, NAT rules and a tap pool owned by a user (run as root).
    Setup {
        /// The user who will run VMs [default: $SUDO_UID, else the caller].
        #[arg(long)]
        uid: Option<u32>,
        /// Taps to create for unprivileged use.
        #[arg(long, default_value_t = 8)]
        pool: u16,
    },
    /// Remove everything `setup` created.
    Teardown,
}

pub fn net(args: NetArgs) -> anyhow::Result<()> {
    let cfg = crate::net::config()?;
    match args.action {
        NetAction::Setup { uid, pool } => {
            netstack::require_net_admin("setting up the mvm network")
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let uid = uid
                .or_else(|| std::env::var("SUDO_UID").ok().and_then(|u| u.parse().ok()))
                // SAFETY: getuid cannot fail.
                .unwrap_or_else(|| unsafe { libc::getuid() });
            let setup =
                netstack::setup_host(&cfg, uid, pool).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{setup:?}");
            Ok(())
        }
        NetAction::Teardown => {
            netstack::teardown_host(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("removed the mvm network");
            Ok(())
        }
    }
}
