//! `mvm service NAME [status|start|stop|restart|logs] [SERVICE]`: the
//! processes the guest agent supervises.

use clap::{Args, Subcommand};

use manager::services::{self, Action};
use manager::state::VmDir;

#[derive(Args)]
pub struct ServiceArgs {
    /// The VM's name.
    pub name: String,
    #[command(subcommand)]
    pub action: Option<ServiceAction>,
}

#[derive(Subcommand)]
pub enum ServiceAction {
    /// State, pid, restarts and last exit of each service (the default).
    Status,
    Start {
        service: String,
    },
    Stop {
        service: String,
    },
    Restart {
        service: String,
    },
    /// A service's output.
    Logs {
        service: String,
        /// Keep printing new output.
        #[arg(long, short)]
        follow: bool,
    },
}

pub fn service(args: ServiceArgs) -> anyhow::Result<()> {
    let name = &args.name;
    match args.action.unwrap_or(ServiceAction::Status) {
        ServiceAction::Status => {
            let services = services::status(name)?;
            println!(
                "{:<16} {:<9} {:>7} {:>8}  LAST EXIT",
                "SERVICE", "STATE", "PID", "RESTARTS"
            );
            for s in services {
                println!(
                    "{:<16} {:<9} {:>7} {:>8}  {}",
                    s.name,
                    services::state_word(&s),
                    s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                    s.restarts,
                    s.last_exit
                        .map(|e| format!("{e:?}"))
                        .unwrap_or_else(|| "-".into())
                );
            }
        }
        ServiceAction::Start { service } => services::control(name, &service, Action::Start)?,
        ServiceAction::Stop { service } => services::control(name, &service, Action::Stop)?,
        ServiceAction::Restart { service } => services::control(name, &service, Action::Restart)?,
        ServiceAction::Logs { service, follow } => {
            // A plain client, as ever: its request timeout bounds a silent follow.
            let dir = VmDir::existing(name)?;
            let mut c = manager::agent::client(&dir, std::time::Duration::from_secs(10))?;
            c.service_logs(&service, None, follow, &mut std::io::stdout())
                .map_err(|e| anyhow::anyhow!("{e}"))?
        }
    }
    Ok(())
}
