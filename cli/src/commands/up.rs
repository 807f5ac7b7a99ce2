//! `mvm up` / `mvm down` / `mvm config` (see `manager::up`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use manager::create::parse_env;
use manager::project;
use manager::state::RunState;
use manager::up::{Down, DownOptions, Up, UpOptions};

use crate::report::Stderr;

#[derive(Args)]
pub struct UpArgs {
    /// The project folder [default: the current folder].
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The VM's name [default: mvm.toml's name, else from the folder name].
    #[arg(long)]
    pub name: Option<String>,
    /// Print the configuration mvm would use (TOML) and do nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Read the configuration from this mvm.toml instead of the folder's
    /// own files (no detection): for configurations kept outside the
    /// project, such as the NixOS module's declared VMs.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Environment for services, shells and execs: KEY=VALUE; repeatable.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Pass the host's variable KEY (or all matching 'PREFIX*'); repeatable.
    #[arg(long = "env-host", value_name = "KEY")]
    pub env_host: Vec<String>,
    /// Seconds to wait for the services to be ready.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Args)]
pub struct DownArgs {
    /// The project folder [default: the current folder].
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The VM's name [default: as `mvm up` derives it].
    #[arg(long)]
    pub name: Option<String>,
    /// Also remove the VM (its spec and any kept state).
    #[arg(long)]
    pub rm: bool,
    /// Seconds to wait for a clean shutdown before killing the VMM.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub timeout: u64,
}

#[derive(Args)]
pub struct ConfigArgs {
    /// The project folder [default: the current folder].
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print the JSON Schema of mvm.toml instead.
    #[arg(long)]
    pub schema: bool,
}

impl UpArgs {
    pub fn options(&self) -> UpOptions {
        UpOptions {
            dir: self.dir.clone(),
            name: self.name.clone(),
            dry_run: self.dry_run,
            config: self.config.clone(),
            env: self.env.clone(),
            env_host: self.env_host.clone(),
            timeout: Duration::from_secs(self.timeout),
        }
    }
}

pub fn config(args: ConfigArgs) -> anyhow::Result<()> {
    if args.schema {
        println!(
            "{}",
            serde_json::to_string_pretty(&project::config::schema())?
        );
        return Ok(());
    }
    let folder = project::folder(args.dir.as_deref())?;
    let d = project::load(&folder, &Stderr)?;
    manager::up::report_detected(&d, &Stderr);
    print!(
        "{}",
        manager::up::render(&d, &project::vm_name(&folder, &d.config, None)?)?
    );
    Ok(())
}

pub fn up(args: UpArgs) -> anyhow::Result<()> {
    match manager::up::up(&args.options(), &Stderr)? {
        Up::DryRun(config) => print!("{config}"),
        Up::Up(status) => print!("{status}"),
    }
    Ok(())
}

pub fn down(args: DownArgs) -> anyhow::Result<()> {
    let opts = DownOptions {
        dir: args.dir,
        name: args.name,
        rm: args.rm,
        timeout: Duration::from_secs(args.timeout),
    };
    match manager::up::down(&opts, &Stderr)? {
        Down::NoVm { name, folder } => println!("no VM '{name}' for {}", folder.display()),
        Down::Removed(name) => println!("removed VM '{name}'"),
        Down::Stopped {
            name,
            was: RunState::Stopped,
        } => println!("VM '{name}' is not running"),
        Down::Stopped { name, .. } => println!("stopped VM '{name}'"),
    }
    Ok(())
}
