//! `mvm exec` and `mvm shell`: run a command in a VM through its agent,
//! with pipes (scripts, pipelines) or a real terminal (interactive use).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Args;
use manager::create::parse_env;
use manager::state::VmDir;

use crate::session::{run, LOGIN_SHELL};

#[derive(Args)]
pub struct ExecArgs {
    /// The VM's name.
    pub name: String,
    /// Set KEY=VALUE in the command's environment; repeatable.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Pass the host's value of KEY (or of every variable matching 'PREFIX*'); repeatable.
    #[arg(long = "env-host", value_name = "KEY")]
    pub env_host: Vec<String>,
    /// Working directory in the guest [default: /project when the VM has a project].
    #[arg(long, short = 'w', value_name = "DIR")]
    pub workdir: Option<String>,
    /// Allocate a terminal (default: when stdin and stdout are terminals).
    #[arg(long, short = 't', overrides_with = "no_tty")]
    pub tty: bool,
    /// Never allocate a terminal.
    #[arg(long, short = 'T')]
    pub no_tty: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Args)]
pub struct ShellArgs {
    /// The VM's name.
    pub name: String,
    /// Set KEY=VALUE in the shell's environment; repeatable.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Pass the host's value of KEY (or of every variable matching 'PREFIX*'); repeatable.
    #[arg(long = "env-host", value_name = "KEY")]
    pub env_host: Vec<String>,
}

pub fn exec(args: ExecArgs) -> anyhow::Result<ExitCode> {
    let tty = if args.no_tty {
        false
    } else {
        args.tty || (std::io::stdin().is_terminal() && std::io::stdout().is_terminal())
    };
    run(
        &args.name,
        args.command,
        args.env,
        args.env_host,
        args.workdir,
        tty,
    )
}

/// The project's shell (e.g. `devenv shell`) when it declares one, else a
/// login shell.
pub fn shell(args: ShellArgs) -> anyhow::Result<ExitCode> {
    let spec = VmDir::existing(&args.name)?.spec()?;
    let argv = spec
        .shell
        .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into(), LOGIN_SHELL.into()]);
    run(&args.name, argv, args.env, args.env_host, None, true)
}
