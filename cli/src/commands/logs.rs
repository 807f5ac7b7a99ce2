//! `mvm logs`: the guest console (and, with the agent, service logs).

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use manager::state::VmDir;

#[derive(Args)]
pub struct LogsArgs {
    /// The VM's name.
    pub name: String,
    /// Keep printing new output as it arrives (Ctrl-C to stop).
    #[arg(long, short)]
    pub follow: bool,
    /// A supervised service's output instead of the console.
    #[arg(long, short, value_name = "SERVICE")]
    pub service: Option<String>,
}

pub fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let dir = VmDir::existing(&args.name)?;
    if let Some(service) = args.service {
        return Ok(manager::services::logs(
            &dir.name,
            &service,
            args.follow,
            &mut std::io::stdout(),
        )?);
    }
    let path = dir.console_log();
    let mut out = std::io::stdout().lock();
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !args.follow => {
            eprintln!("mvm: VM '{}' has no console output yet", dir.name);
            return Ok(());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => loop {
            std::thread::sleep(Duration::from_millis(200));
            if let Ok(f) = std::fs::File::open(&path) {
                break f;
            }
        },
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = 0u64;
    loop {
        let n = file.read(&mut buf).context("cannot read the console log")?;
        if n > 0 {
            pos += n as u64;
            if out.write_all(&buf[..n]).is_err() {
                return Ok(()); // the reader went away (e.g. `| head`)
            }
            continue;
        }
        if !args.follow {
            return Ok(());
        }
        let _ = out.flush();
        std::thread::sleep(Duration::from_millis(200));
        // A restart starts a new console.log: follow the new file.
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(pos);
        if len < pos {
            if let Ok(f) = std::fs::File::open(&path) {
                file = f;
                pos = 0;
                file.seek(SeekFrom::Start(0))?;
            }
        }
    }
}
