//! `mvm list`: every VM with its state, as a table or JSON.

use clap::Args;
use serde::Serialize;

use manager::state::{self, RunState};

#[derive(Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Row {
    name: String,
    state: RunState,
    ip: Option<String>,
    ports: Vec<String>,
    cpus: u8,
    memory_mib: u64,
    uptime_s: Option<u64>,
    project: Option<String>,
    pid: Option<i32>,
}

fn uptime_s(dir: &state::VmDir) -> Option<u64> {
    let r = vmm::api::call(
        &dir.api_socket(),
        &vmm::api::ApiRequest::Status,
        std::time::Duration::from_secs(1),
    )
    .ok()?;
    r.uptime_ms.map(|ms| ms / 1000)
}

pub fn list(args: ListArgs) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for dir in state::all_vms()? {
        let Ok(spec) = dir.spec() else {
            eprintln!("mvm: skipping {}: unreadable vm.toml", dir.path.display());
            continue;
        };
        let state = dir.run_state();
        let running = matches!(state, RunState::Running | RunState::Paused);
        rows.push(Row {
            name: spec.name.clone(),
            state,
            ip: if running && spec.network {
                manager::net::ip(&spec)
            } else {
                None
            },
            ports: spec.ports.iter().map(|p| p.describe()).collect(),
            cpus: spec.cpus,
            memory_mib: spec.memory_mib,
            uptime_s: if running { uptime_s(&dir) } else { None },
            project: spec.project.as_ref().map(|p| p.display().to_string()),
            pid: if running { dir.pid() } else { None },
        });
    }
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
