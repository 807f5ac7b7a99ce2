//! `mvm service NAME [status|start|stop|restart|logs] [SERVICE]`: the
//! processes the guest agent supervises.

use clap::{Args, Subcommand};

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
    let dir = VmDir::existing(&args.name)?;
    let mut c = manager::agent::client(&dir, std::time::Duration::from_secs(10))?;
    let fail = |e: agent_proto::client::ClientError| anyhow::anyhow!("{e}");
    match args.action.unwrap_or(ServiceAction::Status) {
        ServiceAction::Status => {
            println!(
                "{:<16} {:<9} {:>7} {:>8}  LAST EXIT",
                "SERVICE", "STATE", "PID", "RESTARTS"
            );
            for s in c.service_status(None).map_err(fail)? {
                println!(
                    "{:<16} {:<9} {:>7} {:>8}  {}",
                    s.name,
                    format!("{:?}", s.state).to_lowercase(),
                    s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                    s.restarts,
                    s.last_exit
                        .map(|e| format!("{e:?}"))
                        .unwrap_or_else(|| "-".into())
                );
            }
        }
        ServiceAction::Start { service } => c.service_start(&service).map_err(fail)?,
        ServiceAction::Stop { service } => c.service_stop(&service).map_err(fail)?,
        ServiceAction::Restart { service } => c.service_restart(&service).map_err(fail)?,
        ServiceAction::Logs { service, follow } => c
            .service_logs(&service, None, follow, &mut std::io::stdout())
            .map_err(fail)?,
    }
    Ok(())
}
