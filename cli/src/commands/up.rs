//! `mvm up` / `mvm down` / `mvm config`: a project's VM from what its
//! folder declares, with its services running and its ports forwarded.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use agent_proto::{ServiceInfo, ServiceState};
use anyhow::{bail, Context};
use clap::Args;

use crate::project::{self, detect::Detected};
use crate::state::{RunState, VmDir, VmLock};

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
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = super::create::parse_env)]
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

/// Says on stderr what detection found and what it cannot do.
pub fn report(d: &Detected) {
    if d.found.is_empty() {
        eprintln!("mvm: no project files found (mvm.toml, devenv, Procfile, package.json, manage.py): a plain VM");
    }
    for f in &d.found {
        eprintln!("mvm: found {f}");
    }
    for n in &d.notes {
        eprintln!("mvm: note: {n}");
    }
}

/// The resolved configuration as TOML, with what it came from.
fn render(d: &Detected, name: &str) -> anyhow::Result<String> {
    let mut config = d.config.clone();
    config.name = Some(name.to_string());
    let mut out = String::from("# mvm.toml as mvm up would use it\n");
    for f in &d.found {
        out.push_str(&format!("# from: {f}\n"));
    }
    out.push_str(&toml::to_string_pretty(&config).context("cannot render the configuration")?);
    Ok(out)
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
    let d = project::load(&folder)?;
    report(&d);
    print!(
        "{}",
        render(&d, &project::vm_name(&folder, &d.config, None)?)?
    );
    Ok(())
}

pub fn up(args: UpArgs) -> anyhow::Result<()> {
    bring_up(&args, &mut std::io::stdout()).map(|_| ())
}

/// `mvm up`, with the final status written to `out`; the VM's spec and
/// whether this call started it (None for a dry run).
pub fn bring_up(
    args: &UpArgs,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<Option<(crate::state::VmSpec, bool)>> {
    let folder = project::folder(args.dir.as_deref())?;
    let mut detected = match &args.config {
        Some(file) => project::load_file(file)?,
        None => project::load(&folder)?,
    };
    let name = project::vm_name(&folder, &detected.config, args.name.as_deref())?;
    let dir = VmDir::of(&name)?;
    if let Ok(old) = dir.spec() {
        check_owner(&old, &folder)?;
    }
    report(&detected);
    for (k, v) in &args.env {
        detected
            .config
            .env
            .insert(project::config::EnvKey(k.clone()), v.clone());
    }
    for p in &args.env_host {
        detected.config.env_host.push(
            project::config::EnvPattern::try_from(p.clone())
                .map_err(|e| anyhow::anyhow!("--env-host: {e}"))?,
        );
    }
    if args.dry_run {
        write!(out, "{}", render(&detected, &name)?)?;
        return Ok(None);
    }
    let create = super::create::CreateArgs::for_project(name.clone(), folder.clone());
    if !dir.spec_path().exists() {
        let spec = super::create::validate(&create, &dir, &detected.config)?;
        match super::create::write_vm(&dir, &spec) {
            Ok(()) => eprintln!("mvm: created VM '{name}' for {}", folder.display()),
            // Another `mvm up` (a second shell entering) created it first.
            Err(_) if dir.spec_path().exists() => {}
            Err(e) => return Err(e),
        }
    }
    let _lock = VmLock::acquire(&dir.path, &dir.name)?;
    let old = dir.spec()?;
    if old.project.as_deref() != Some(folder.as_path()) {
        bail!(
            "VM '{name}' belongs to another project ({}); pass --name to choose another name",
            old.project
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "none".into())
        );
    }
    let mut spec = super::create::spec_for(&create, &detected.config, Some(&old))?;
    spec.id = old.id.clone();
    spec.created = old.created;
    let running = matches!(dir.run_state(), RunState::Running | RunState::Paused);
    if spec != old {
        if running {
            eprintln!("mvm: VM '{name}' runs with an older configuration; `mvm down && mvm up` applies the project's current one");
        } else {
            spec.save(&dir.spec_path())?;
            eprintln!("mvm: updated VM '{name}' from the project's configuration");
        }
    }
    let spec = dir.spec()?;
    if !running {
        eprintln!(
            "mvm: starting VM '{name}' ({} vCPUs, {} MiB, {} service(s))...",
            spec.cpus,
            spec.memory_mib,
            spec.services.len()
        );
    }
    let started = Instant::now();
    let started_now = super::lifecycle::start_locked(&dir)?;
    let names: Vec<String> = spec.services.iter().map(|s| s.name.clone()).collect();
    let infos = if names.is_empty() {
        Vec::new()
    } else {
        let mut client = crate::agent::client(&dir, Duration::from_secs(120))?;
        let mut last = String::new();
        wait_ready(
            &mut client,
            &names,
            Duration::from_secs(args.timeout),
            |infos| {
                let line = infos
                    .iter()
                    .map(|i| format!("{} {}", i.name, state_word(i)))
                    .collect::<Vec<_>>()
                    .join(", ");
                if line != last {
                    eprintln!("mvm: services: {line}");
                    last = line;
                }
            },
        )
        .with_context(|| format!("see `mvm logs {name} --service SERVICE`"))?
    };
    print_status(out, &spec, &infos, started.elapsed())?;
    Ok(Some((spec, started_now)))
}

/// A VM name is one project's: another folder must pick another name.
fn check_owner(spec: &crate::state::VmSpec, folder: &std::path::Path) -> anyhow::Result<()> {
    if spec.project.as_deref() != Some(folder) {
        bail!(
            "VM '{}' belongs to another project ({}); pass --name to choose another name",
            spec.name,
            spec.project
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "none".into())
        );
    }
    Ok(())
}

fn state_word(i: &ServiceInfo) -> String {
    format!("{:?}", i.state).to_lowercase()
}

/// Ready: running, and past its readiness probe if it has one.
fn is_ready(i: &ServiceInfo) -> bool {
    i.state == ServiceState::Running
}

/// Waits until every service in `names` is ready; fails at once when one
/// has exited for good, or after `timeout`.
pub fn wait_ready<S: agent_proto::client::Duplex>(
    client: &mut agent_proto::client::Client<S>,
    names: &[String],
    timeout: Duration,
    mut progress: impl FnMut(&[ServiceInfo]),
) -> anyhow::Result<Vec<ServiceInfo>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let deadline = Instant::now() + timeout;
    loop {
        let all = client
            .service_status(None)
            .map_err(|e| anyhow::anyhow!("cannot read the services' status: {e}"))?;
        let mine: Vec<ServiceInfo> = all
            .into_iter()
            .filter(|i| names.contains(&i.name))
            .collect();
        progress(&mine);
        // Exited: ended and not restarted under its policy. (A service just
        // declared shows as stopped until the supervisor has started it.)
        if let Some(dead) = mine.iter().find(|i| i.state == ServiceState::Exited) {
            bail!(
                "service '{}' exited ({}) and is not restarted",
                dead.name,
                dead.last_exit
                    .map(|e| format!("{e:?}"))
                    .unwrap_or_else(|| "no status".into())
            );
        }
        if mine.len() == names.len() && mine.iter().all(is_ready) {
            return Ok(mine);
        }
        if Instant::now() > deadline {
            let waiting: Vec<&str> = names
                .iter()
                .filter(|n| !mine.iter().any(|i| &i.name == *n && is_ready(i)))
                .map(String::as_str)
                .collect();
            bail!(
                "not ready after {}s: {}",
                timeout.as_secs(),
                waiting.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn print_status(
    out: &mut dyn std::io::Write,
    spec: &crate::state::VmSpec,
    infos: &[ServiceInfo],
    took: Duration,
) -> std::io::Result<()> {
    let ip = if spec.network {
        crate::net::ip(spec)
    } else {
        None
    };
    writeln!(
        out,
        "VM '{}' is up ({:.1}s){}",
        spec.name,
        took.as_secs_f64(),
        ip.as_ref()
            .map(|ip| format!(": {ip}, {}.mvm", spec.name))
            .unwrap_or_default()
    )?;
    for i in infos {
        writeln!(
            out,
            "  service {:<16} {:<8} pid {}",
            i.name,
            state_word(i),
            i.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into())
        )?;
    }
    for p in &spec.ports {
        let scheme = match p.protocol {
            netstack::Protocol::Tcp => "http://",
            _ => "udp ",
        };
        // Where it listens: loopback by default, else the named address.
        let (at, note) = match p.addr {
            None => (format!("localhost:{}", p.host_port), ""),
            Some(a) if a.is_unspecified() => {
                (format!("localhost:{}", p.host_port), " (all interfaces)")
            }
            Some(_) => (p.listen(), ""),
        };
        writeln!(out, "  {scheme}{at} -> guest port {}{note}", p.guest_port)?;
    }
    Ok(())
}

pub fn down(args: DownArgs) -> anyhow::Result<()> {
    let folder = project::folder(args.dir.as_deref())?;
    let named = args.name.is_some();
    let name = match args.name {
        Some(n) => n,
        None => {
            let d = project::load(&folder)?;
            project::vm_name(&folder, &d.config, None)?
        }
    };
    let dir = VmDir::of(&name)?;
    let Ok(spec) = dir.spec() else {
        println!("no VM '{name}' for {}", folder.display());
        return Ok(());
    };
    if !named {
        check_owner(&spec, &folder)?;
    }
    if args.rm {
        return super::lifecycle::rm(super::lifecycle::RmArgs { name, force: true });
    }
    let _lock = VmLock::acquire(&dir.path, &dir.name)?;
    match super::lifecycle::stop_locked(&dir, Duration::from_secs(args.timeout))? {
        RunState::Stopped => println!("VM '{name}' is not running"),
        _ => println!("stopped VM '{name}'"),
    }
    Ok(())
}
