//! `mvm list`: every VM with its state, as a table or JSON.

use clap::Args;
use manager::state;

use crate::report::Stderr;

#[derive(Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn list(args: ListArgs) -> anyhow::Result<()> {
    let rows = state::list(&Stderr)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<8} {:<15} {:<18} {:>4} {:>7} {:>8}  PROJECT",
        "NAME", "STATE", "IP", "PORTS", "CPUS", "MEMORY", "UPTIME"
    );
    for r in rows {
        println!(
            "{:<16} {:<8} {:<15} {:<18} {:>4} {:>6}M {:>8}  {}",
            r.name,
            r.state.to_string(),
            r.ip.unwrap_or_else(|| "-".into()),
            if r.ports.is_empty() {
                "-".into()
            } else {
                r.ports.join(",")
            },
            r.cpus,
            r.memory_mib,
            r.uptime_s.map(format_uptime).unwrap_or_else(|| "-".into()),
            r.project.unwrap_or_else(|| "-".into())
        );
    }
    Ok(())
}

fn format_uptime(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}
