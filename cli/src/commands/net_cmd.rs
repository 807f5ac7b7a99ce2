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
        /// The user who will run VMs, by name or uid [default: $SUDO_UID,
        /// else the caller].
        #[arg(long, alias = "uid", value_name = "USER", value_parser = parse_user)]
        user: Option<u32>,
        /// Taps to create for unprivileged use.
        #[arg(long, default_value_t = 8)]
        pool: u16,
        /// The VMs' private subnet as GATEWAY/PREFIX (the bridge's address)
        /// [default: the one in use, else 10.77.0.1/24].
        #[arg(long, value_name = "GATEWAY/PREFIX", value_parser = parse_subnet)]
        subnet: Option<netstack::Subnet>,
    },
    /// Remove everything `setup` created.
    Teardown,
}

/// A user name or a numeric uid -> the uid.
fn parse_user(s: &str) -> Result<u32, String> {
    if let Ok(uid) = s.parse::<u32>() {
        return Ok(uid);
    }
    let name = std::ffi::CString::new(s).map_err(|_| format!("'{s}' is not a user name"))?;
    // SAFETY: `name` is a valid C string; getpwnam returns null or a pointer
    // to a static passwd record that we read at once, before any other
    // getpw* call.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(format!(
            "no user '{s}' on this host (give a user name or a numeric uid)"
        ));
    }
    // SAFETY: non-null, so it points to a valid passwd record.
    Ok(unsafe { (*pw).pw_uid })
}

fn parse_subnet(s: &str) -> Result<netstack::Subnet, String> {
    s.parse().map_err(|e: netstack::Error| e.to_string())
}

pub fn net(args: NetArgs) -> anyhow::Result<()> {
    let mut cfg = manager::net::config()?;
    match args.action {
        NetAction::Setup {
            user: uid,
            pool,
            subnet,
        } => {
            netstack::require_net_admin("setting up the mvm network")
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if let Some(subnet) = subnet.filter(|s| *s != cfg.subnet) {
                // Leases and rules of the old subnet would be stranded.
                if cfg.state_dir.join("network.json").exists() {
                    anyhow::bail!(
                        "--subnet {subnet}: the mvm network already uses {}; run `mvm net teardown` first",
                        cfg.subnet
                    );
                }
                cfg.subnet = subnet;
            }
            let uid = uid
                .or_else(|| std::env::var("SUDO_UID").ok().and_then(|u| u.parse().ok()))
                .unwrap_or_else(manager::net::uid);
            let setup =
                netstack::setup_host(&cfg, uid, pool).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "mvm network ready: bridge {} at {}, taps for uid {uid}: {}",
                setup.bridge,
                setup.subnet,
                if setup.pool.is_empty() {
                    "none".to_string()
                } else {
                    setup.pool.join(" ")
                }
            );
            Ok(())
        }
        NetAction::Teardown => {
            netstack::teardown_host(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("removed the mvm network");
            Ok(())
        }
    }
}

/// `mvm _netd`: serves DHCP and DNS for all VMs until killed.
pub fn netd() -> anyhow::Result<()> {
    let daemon = manager::net::start_daemon()?;
    eprintln!("mvm-netd: serving DHCP and DNS on {}", daemon.bridge);
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
