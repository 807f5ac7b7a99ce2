//! `mvm`: per-project Linux microVMs on our own VMM.

mod commands;
mod paths;
mod startup;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Per-project Linux microVMs.
#[derive(Parser)]
#[command(name = "mvm", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Run(commands::run::RunArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MVM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();

    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => commands::run::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mvm: {e:#}");
            ExitCode::from(commands::EXIT_ERROR)
        }
    }
}
