//! direnv integration: `mvm direnv` prints an .envrc snippet, `mvm init
//! --direnv` writes one. Entering the folder runs `mvm direnv --enter`:
//! the VM is brought up (or reused), the entering shell takes a lease, and
//! MVM_VM, the VM's address and its forwarded ports are exported.
//!
//! Leaving: direnv has no unload hook, so `mvm _linger NAME` (one per VM,
//! detached) polls the leases every second. A lease holds while its shell
//! lives (same pid and start time) with its working directory inside the
//! project folder. When none holds for the grace period, the VM is
//! stopped, but only if `--enter` started it (a VM brought up by hand stays)
//! and the project does not say `direnv.keep_running`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use manager::project::{self, direnv};

use crate::report::Stderr;

#[derive(Args)]
pub struct DirenvArgs {
    /// The project folder [default: the current folder].
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Bring the VM up and print the exports (what the .envrc runs).
    #[arg(long)]
    pub enter: bool,
    /// The shell taking the lease [default: the shell running direnv].
    #[arg(long, value_name = "PID", requires = "enter")]
    pub shell_pid: Option<i32>,
    /// The VM to bring up: a copy of the project (`mvm up --name`)
    /// [default: as `mvm up` derives it].
    #[arg(long, requires = "enter")]
    pub name: Option<String>,
}

#[derive(Args)]
pub struct InitArgs {
    /// The project folder [default: the current folder].
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Also write (or extend) .envrc so direnv brings the VM up on entering.
    #[arg(long)]
    pub direnv: bool,
}

#[derive(Args)]
pub struct LingerArgs {
    pub name: String,
    #[arg(long, value_name = "SECS")]
    pub grace: u64,
}

/// The line the .envrc needs.
const ENVRC_LINE: &str = "eval \"$(mvm direnv --enter)\"";

fn snippet() -> String {
    format!(
        "# mvm: entering this folder starts (or reuses) the project's VM and exports\n\
         # MVM_VM, MVM_VM_IP, MVM_VM_HOST and MVM_PORT_<guest port>; once no shell is\n\
         # in the folder any more, the VM stops after a grace period (mvm.toml: [direnv]).\n\
         {ENVRC_LINE}\n"
    )
}

pub fn direnv(args: DirenvArgs) -> anyhow::Result<()> {
    if !args.enter {
        print!("{}", snippet());
        return Ok(());
    }
    enter(args)
}

fn enter(args: DirenvArgs) -> anyhow::Result<()> {
    let folder = project::folder(args.dir.as_deref())?;
    let up = manager::up::UpOptions {
        dir: Some(folder.clone()),
        name: args.name.clone(),
        ..Default::default()
    };
    // Progress and status go to stderr: stdout is what the shell evaluates.
    let manager::up::Up::Up(status) = manager::up::up(&up, &Stderr)? else {
        anyhow::bail!("nothing was brought up");
    };
    eprint!("{status}");
    let (spec, started) = (&status.spec, status.started_now);
    direnv::hold(&folder, spec, started, args.shell_pid, &Stderr)?;
    let mut out = std::io::stdout().lock();
    for (k, v) in direnv::exports(spec) {
        writeln!(out, "export {k}={}", quote(&v))?;
    }
    Ok(())
}

/// Single-quoted for sh.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The watcher: one per VM (an flock), until the VM stops.
pub fn linger(args: LingerArgs) -> anyhow::Result<()> {
    Ok(direnv::linger(
        &args.name,
        Duration::from_secs(args.grace),
        &Stderr,
    )?)
}

/// `mvm init`: writes mvm.toml from what detection found (unless there is
/// one), and with --direnv the .envrc line.
pub fn init(args: InitArgs) -> anyhow::Result<()> {
    let folder = project::folder(args.dir.as_deref())?;
    let toml_path = folder.join(project::detect::CONFIG_FILE);
    if toml_path.exists() {
        println!("{} exists; left as it is", toml_path.display());
    } else {
        let d = project::load(&folder, &Stderr)?;
        manager::up::report_detected(&d, &Stderr);
        let text = toml::to_string_pretty(&d.config).context("cannot render mvm.toml")?;
        let text = format!(
            "# written by mvm init from what it detected; see `mvm config --schema`\n{text}"
        );
        std::fs::write(&toml_path, &text)
            .with_context(|| format!("cannot write {}", toml_path.display()))?;
        // mvm wrote it (detection adds nothing beyond the folder but the
        // Nix store), so it is trusted as written; an edit needs `mvm trust`.
        project::trust::trust(&toml_path, text.as_bytes())?;
        println!("wrote {}", toml_path.display());
    }
    if args.direnv {
        let envrc = folder.join(".envrc");
        let old = std::fs::read_to_string(&envrc).unwrap_or_default();
        if old.contains(ENVRC_LINE) {
            println!("{} already brings the VM up", envrc.display());
        } else {
            let sep = if old.is_empty() || old.ends_with('\n') {
                ""
            } else {
                "\n"
            };
            std::fs::write(&envrc, format!("{old}{sep}{}", snippet()))
                .with_context(|| format!("cannot write {}", envrc.display()))?;
            println!(
                "wrote {}; run `direnv allow` there to enable it",
                envrc.display()
            );
        }
    }
    Ok(())
}
