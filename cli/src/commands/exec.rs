//! `mvm exec` and `mvm shell`: run a command in a VM through its agent,
//! with pipes (scripts, pipelines) or a real terminal (interactive use).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use agent_proto::{ExecRequest, ExitStatus, WinSize};
use anyhow::Context;
use clap::Args;

use crate::state::VmDir;
use crate::terminal::{self, RawMode};

/// How long exec/shell wait for a booting guest's agent.
const AGENT_WAIT: Duration = Duration::from_secs(60);

#[derive(Args)]
pub struct ExecArgs {
    /// The VM's name.
    pub name: String,
    /// Set KEY=VALUE in the command's environment; repeatable.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = super::create::parse_env)]
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
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = super::create::parse_env)]
    pub env: Vec<(String, String)>,
    /// Pass the host's value of KEY (or of every variable matching 'PREFIX*'); repeatable.
    #[arg(long = "env-host", value_name = "KEY")]
    pub env_host: Vec<String>,
}

/// A login shell: bash where the guest has it, else sh.
pub(crate) const LOGIN_SHELL: &str =
    "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi";

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

pub(crate) fn run(
    name: &str,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    env_host: Vec<String>,
    workdir: Option<String>,
    tty: bool,
) -> anyhow::Result<ExitCode> {
    let dir = VmDir::existing(name)?;
    let spec = dir.spec()?;
    let mut environment: BTreeMap<String, String> =
        crate::project::env::resolve(&spec, &env_host, &env)?;
    if tty {
        if let Ok(term) = std::env::var("TERM") {
            environment.entry("TERM".into()).or_insert(term);
        }
    }
    let cwd = workdir.or_else(|| spec.project.as_ref().map(|_| "/project".to_string()));
    let request = ExecRequest {
        argv,
        env: environment,
        cwd,
        user: None,
        tty,
        winsize: if tty {
            terminal::size().map(|(rows, cols)| WinSize { rows, cols })
        } else {
            None
        },
    };

    let client = crate::agent::session_client(&dir, AGENT_WAIT)?;
    let _watch = crate::agent::watch(&dir);
    // From the request on, input belongs to the command: a Ctrl-C pressed
    // while it starts must reach it, not end mvm (which would only hang
    // the session up). With a terminal, raw mode makes it a ^C byte that
    // waits in the local input for the stdin pump; without, the signal is
    // held pending until it can be forwarded.
    let raw = if tty && std::io::stdin().is_terminal() {
        Some(RawMode::enable().context("cannot put the terminal in raw mode")?)
    } else {
        None
    };
    let held = (!tty).then(terminal::HeldSignals::hold);
    let session = client
        .exec_start(&request)
        .with_context(|| format!("cannot run {:?} in VM '{name}'", request.argv))?;
    let control = session.control();
    if let Some(held) = held {
        held.forward(move |sig| control.signal(sig).is_ok());
    } else {
        let started = request.winsize.map(|w| (w.rows, w.cols));
        terminal::watch_resizes(started, move |rows, cols| {
            control.resize(rows, cols).is_ok()
        });
    }
    session.pump_stdin(std::io::stdin());
    let status = session
        .wait(&mut std::io::stdout(), &mut std::io::stderr())
        .with_context(|| format!("lost the connection to VM '{name}'"))?;
    drop(raw);
    Ok(match status {
        ExitStatus::Code { code } => ExitCode::from(code.clamp(0, 255) as u8),
        ExitStatus::Signal { signal, .. } => ExitCode::from((128 + signal).clamp(0, 255) as u8),
    })
}
