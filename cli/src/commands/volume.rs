//! `mvm volume create|list|rm` (see `manager::volume`).

use clap::{Args, Subcommand};
use manager::volume;

#[derive(Args)]
pub struct VolumeArgs {
    #[command(subcommand)]
    pub command: VolumeCommand,
}

#[derive(Subcommand)]
pub enum VolumeCommand {
    /// Create a volume: a sparse disk image (takes host space only as the
    /// guest writes), formatted as ext4 by the guest that first mounts it.
    Create {
        /// 1 to 20 lowercase letters, digits, '-' and '_'.
        name: String,
        /// Its size: MiB, or with a unit (512M, 10G, 1T); at least 16M.
        #[arg(long, value_name = "SIZE", value_parser = volume::parse_size)]
        size: u64,
    },
    /// List volumes: size, host space used, the VMs that attach them.
    #[command(alias = "ls")]
    List {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a volume and its data (refused while a VM attaches it).
    Rm { name: String },
}

pub fn volume(args: VolumeArgs) -> anyhow::Result<()> {
    match args.command {
        VolumeCommand::Create { name, size } => {
            volume::create(&name, size)?;
            println!("created volume '{name}' ({})", human(size << 20));
        }
        VolumeCommand::List { json } => {
            let vols = volume::list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&vols)?);
                return Ok(());
            }
            println!(
                "{:<20}  {:>8}  {:>8}  {:<7}  ATTACHED TO",
                "NAME", "SIZE", "USED", "STATE"
            );
            for v in vols {
                println!(
                    "{:<20}  {:>8}  {:>8}  {:<7}  {}",
                    v.name,
                    human(v.size_mib << 20),
                    human(v.used_bytes),
                    if v.in_use { "in use" } else { "free" },
                    if v.attached_to.is_empty() {
                        "-".to_string()
                    } else {
                        v.attached_to.join(", ")
                    }
                );
            }
        }
        VolumeCommand::Rm { name } => {
            volume::remove(&name)?;
            println!("removed volume '{name}'");
        }
    }
    Ok(())
}

/// 10G, 512M, 4.0K: binary units, one decimal below 10.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 || v >= 10.0 || v.fract() == 0.0 {
        format!("{:.0}{}", v, UNITS[u])
    } else {
        format!("{:.1}{}", v, UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_sizes() {
        assert_eq!(super::human(10 << 30), "10G");
        assert_eq!(super::human(512 << 20), "512M");
        assert_eq!(super::human(4096), "4K");
        assert_eq!(super::human(1536), "1.5K");
        assert_eq!(super::human(0), "0B");
    }
}
