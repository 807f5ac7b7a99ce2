//! A command running in a VM through its agent, with pipes (scripts,
//! pipelines) or a real terminal (interactive use): what `mvm exec`,
//! `mvm shell` and `mvm run` share.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use agent_proto::{ExecRequest, ExitStatus, WinSize};
use anyhow::Context;
use manager::agent::Health;
use manager::state::VmDir;

use crate::terminal::{self, RawMode};

/// How long exec/shell wait for a booting guest's agent.
const AGENT_WAIT: Duration = Duration::from_secs(60);

/// A login shell: bash where the guest has it, else sh.
pub const LOGIN_SHELL: &str =
    "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi";

pub fn run(
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
        manager::project::env::resolve(&spec, &env_host, &env)?;
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

    let client = manager::agent::session_client(&dir, AGENT_WAIT)?;
    let _watch = manager::agent::watch(&dir, {
        let name = dir.name.clone();
        // The terminal may be raw: each line returns the carriage itself.
        move |health| {
            match health {
            Health::Stalled(e) => eprintln!(
                "\r\nmvm: VM '{name}' stopped answering: {}\r\nmvm: `mvm debug {name}` shows what its vCPUs and devices are doing\r",
                e.chain()
            ),
            Health::Answers => eprintln!("\r\nmvm: VM '{name}' answers again\r"),
        }
        }
    });
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
