//! `mvm`: per-project Linux microVMs on our own VMM.

mod args;
mod commands;
mod report;
mod session;
mod terminal;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use args::Lazy;

/// Per-project Linux microVMs.
#[derive(Parser)]
#[command(name = "mvm", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a VM (writes its spec; does not start it).
    Create(Lazy<commands::create::CreateArgs>),
    /// Bring a project's VM up: create it from the folder's mvm.toml (or what
    /// detection infers), start it, wait for its services, show its URLs.
    Up(Lazy<commands::up::UpArgs>),
    /// Stop a project's VM (`--rm`: and remove it).
    Down(Lazy<commands::up::DownArgs>),
    /// Print a project's resolved configuration, or mvm.toml's JSON Schema.
    Config(Lazy<commands::up::ConfigArgs>),
    /// Trust a project's mvm.toml as it is now: its shares outside the
    /// folder, home paths and env_host wildcards then apply (`--revoke` undoes).
    #[command(alias = "allow")]
    Trust(Lazy<commands::trust::TrustArgs>),
    /// Print the .envrc snippet that makes direnv bring this project's VM up.
    Direnv(Lazy<commands::direnv::DirenvArgs>),
    /// Write mvm.toml from what detection finds (`--direnv`: and .envrc).
    Init(Lazy<commands::direnv::InitArgs>),
    /// Stops a direnv-started VM once no shell is in its folder.
    #[command(name = "_linger", hide = true)]
    Linger(Lazy<commands::direnv::LingerArgs>),
    /// Start a VM (does nothing if it runs already).
    Start(Lazy<commands::lifecycle::NameArg>),
    /// Stop a VM: clean guest shutdown, killed after a timeout.
    Stop(Lazy<commands::lifecycle::StopArgs>),
    /// Stop and start a VM.
    Restart(Lazy<commands::lifecycle::StopArgs>),
    /// Remove a VM and its state.
    Rm(Lazy<commands::lifecycle::RmArgs>),
    /// Create, list and remove volumes (persistent disks for VMs).
    Volume(Lazy<commands::volume::VolumeArgs>),
    /// List VMs.
    #[command(alias = "ls")]
    List(Lazy<commands::list::ListArgs>),
    /// Check what this host can do for mvm, and how to fix what is missing.
    Doctor(Lazy<commands::doctor::DoctorArgs>),
    /// Run a command in a VM (exit status, stdin/stdout and pipelines pass through).
    Exec(Lazy<commands::exec::ExecArgs>),
    /// An interactive login shell in a VM.
    Shell(Lazy<commands::exec::ShellArgs>),
    /// Show what the guest changed in the project (A added, M modified, D deleted).
    Diff(Lazy<commands::changes::DiffArgs>),
    /// Apply the guest's project changes to the host folder.
    Commit(Lazy<commands::changes::CommitArgs>),
    /// List, add (also while running) or remove port forwards.
    Port(Lazy<commands::port::PortArgs>),
    /// One-time host network set-up (bridge, NAT, tap pool), as root.
    Net(Lazy<commands::net_cmd::NetArgs>),
    /// Status, start/stop/restart and logs of a VM's supervised services.
    Service(Lazy<commands::service::ServiceArgs>),
    /// A running VM's state dump (vCPUs, interrupts, virtio rings): why it stalls.
    #[command(hide = true)]
    Debug(Lazy<commands::debug::DebugArgs>),
    /// Show a VM's console output.
    Logs(Lazy<commands::logs::LogsArgs>),
    /// Run a command (or a shell) in a throw-away VM for a project, or boot a kernel and initramfs
    Run(Lazy<commands::run::RunArgs>),
    /// The VMM process of a managed VM (started by `mvm start`).
    #[command(name = "_vmm", hide = true)]
    Vmm(Lazy<commands::vmm_process::VmmArgs>),
    /// The host's DHCP and DNS servers for VMs (started on demand).
    #[command(name = "_netd", hide = true)]
    Netd,
}

fn main() -> ExitCode {
    manager::startup::enable_from_env();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MVM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();

    vmm::stages::stamp("logging");
    let cli = Cli::parse();
    vmm::stages::stamp("arguments");
    let ok = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
    let result = match cli.command {
        Command::Create(Lazy(args)) => ok(commands::create::create(args)),
        Command::Up(Lazy(args)) => ok(commands::up::up(args)),
        Command::Down(Lazy(args)) => ok(commands::up::down(args)),
        Command::Config(Lazy(args)) => ok(commands::up::config(args)),
        Command::Trust(Lazy(args)) => ok(commands::trust::trust(args)),
        Command::Direnv(Lazy(args)) => ok(commands::direnv::direnv(args)),
        Command::Init(Lazy(args)) => ok(commands::direnv::init(args)),
        Command::Linger(Lazy(args)) => ok(commands::direnv::linger(args)),
        Command::Start(Lazy(args)) => ok(commands::lifecycle::start(args)),
        Command::Stop(Lazy(args)) => ok(commands::lifecycle::stop(args)),
        Command::Restart(Lazy(args)) => ok(commands::lifecycle::restart(args)),
        Command::Rm(Lazy(args)) => ok(commands::lifecycle::rm(args)),
        Command::List(Lazy(args)) => ok(commands::list::list(args)),
        Command::Logs(Lazy(args)) => ok(commands::logs::logs(args)),
        Command::Debug(Lazy(args)) => ok(commands::debug::debug(args)),
        Command::Diff(Lazy(args)) => ok(commands::changes::diff(args)),
        Command::Commit(Lazy(args)) => ok(commands::changes::commit(args)),
        Command::Exec(Lazy(args)) => commands::exec::exec(args),
        Command::Shell(Lazy(args)) => commands::exec::shell(args),
        Command::Doctor(Lazy(args)) => commands::doctor::doctor(args).map(|good| {
            if good {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(commands::EXIT_ERROR)
            }
        }),
        Command::Run(Lazy(args)) => commands::run::run(args),
        Command::Vmm(Lazy(args)) => commands::vmm_process::run(args),
        Command::Netd => ok(commands::net_cmd::netd()),
        Command::Service(Lazy(args)) => ok(commands::service::service(args)),
        Command::Port(Lazy(args)) => ok(commands::port::port(args)),
        Command::Volume(Lazy(args)) => ok(commands::volume::volume(args)),
        Command::Net(Lazy(args)) => ok(commands::net_cmd::net(args)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mvm: {e:#}");
            ExitCode::from(commands::EXIT_ERROR)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_tree_is_consistent_with_every_subcommand_built() {
        // debug_assert builds the deferred subcommands too.
        super::Cli::command().debug_assert();
    }
}
