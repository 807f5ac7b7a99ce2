//! `up` / `down`: a project's VM from what its folder declares, with its
//! services running and its ports forwarded.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::bail;
use agent_proto::ServiceInfo;

use crate::create::CreateOptions;
use crate::error::Context as _;
use crate::project::{self, detect::Detected};
use crate::state::{RunState, VmDir, VmLock, VmSpec};
use crate::Report;

/// What `up` is asked for.
#[derive(Clone, Debug)]
pub struct UpOptions {
    /// The project folder [default: the current folder].
    pub dir: Option<PathBuf>,
    /// The VM's name [default: mvm.toml's name, else from the folder name].
    pub name: Option<String>,
    /// Only render the configuration that would be used.
    pub dry_run: bool,
    /// Read the configuration from this mvm.toml instead of the folder's
    /// own files (no detection).
    pub config: Option<PathBuf>,
    /// Environment for services, shells and execs.
    pub env: Vec<(String, String)>,
    /// Host variables (or 'PREFIX*' patterns) to pass.
    pub env_host: Vec<String>,
    /// How long to wait for the services to be ready.
    pub timeout: Duration,
}

impl Default for UpOptions {
    fn default() -> UpOptions {
        UpOptions {
            dir: None,
            name: None,
            dry_run: false,
            config: None,
            env: Vec::new(),
            env_host: Vec::new(),
            timeout: Duration::from_secs(300),
        }
    }
}

/// What `down` is asked for.
#[derive(Clone, Debug)]
pub struct DownOptions {
    /// The project folder [default: the current folder].
    pub dir: Option<PathBuf>,
    /// The VM's name [default: as `up` derives it].
    pub name: Option<String>,
    /// Also remove the VM.
    pub rm: bool,
    /// How long to wait for a clean shutdown before killing the VMM.
    pub timeout: Duration,
}

/// What `up` did.
pub enum Up {
    /// A dry run: the configuration it would use, as TOML.
    DryRun(String),
    /// The VM is up.
    Up(Box<UpStatus>),
}

/// A VM that is up: its spec, its services' states, how long it took.
pub struct UpStatus {
    pub spec: VmSpec,
    /// Whether this call started it (it may have been running).
    pub started_now: bool,
    pub services: Vec<ServiceInfo>,
    pub took: Duration,
}

/// What `down` did.
pub enum Down {
    /// There is no such VM.
    NoVm { name: String, folder: PathBuf },
    /// The VM was removed.
    Removed(String),
    /// The VM is stopped; it was in state `was`.
    Stopped { name: String, was: RunState },
}

/// Tells `report` what detection found and what it cannot do.
pub fn report_detected(d: &Detected, report: &dyn Report) {
    if d.found.is_empty() {
        report.progress("no project files found (mvm.toml, devenv, Procfile, package.json, manage.py): a plain VM");
    }
    for f in &d.found {
        report.progress(&format!("found {f}"));
    }
    for n in &d.notes {
        report.progress(&format!("note: {n}"));
    }
}

/// The resolved configuration as TOML, with what it came from.
pub fn render(d: &Detected, name: &str) -> crate::Result<String> {
    let mut config = d.config.clone();
    config.name = Some(name.to_string());
    let mut out = String::from("# mvm.toml as mvm up would use it\n");
    for f in &d.found {
        out.push_str(&format!("# from: {f}\n"));
    }
    out.push_str(&toml::to_string_pretty(&config).context("cannot render the configuration")?);
    Ok(out)
}

/// Brings a project's VM up: created from the project if new, updated
/// if stopped and its configuration changed, started, its services ready.
pub fn up(args: &UpOptions, report: &dyn Report) -> crate::Result<Up> {
    let folder = project::folder(args.dir.as_deref())?;
    let mut detected = match &args.config {
        Some(file) => project::load_file(file)?,
        None => project::load(&folder, report)?,
    };
    let name = project::vm_name(&folder, &detected.config, args.name.as_deref())?;
    let dir = VmDir::of(&name)?;
    if let Ok(old) = dir.spec() {
        check_owner(&old, &folder)?;
    }
    report_detected(&detected, report);
    for (k, v) in &args.env {
        detected
            .config
            .env
            .insert(project::config::EnvKey(k.clone()), v.clone());
    }
    for p in &args.env_host {
        detected.config.env_host.push(
            project::config::EnvPattern::try_from(p.clone())
                .map_err(|e| crate::error::err!("--env-host: {e}"))?,
        );
    }
    if args.dry_run {
        return Ok(Up::DryRun(render(&detected, &name)?));
    }
    let create = CreateOptions::for_project(name.clone(), folder.clone());
    if !dir.spec_path().exists() {
        // Ports are picked and written under one lock (see `create`).
        let _ports = crate::state::VmLock::acquire_ports()?;
        let spec = crate::create::validate(&create, &dir, &detected.config, report)?;
        match crate::create::write_vm(&dir, &spec) {
            Ok(()) => report.progress(&format!("created VM '{name}' for {}", folder.display())),
            // Another `mvm up` (a second shell entering) created it first.
            Err(_) if dir.spec_path().exists() => {}
            Err(e) => return Err(e),
        }
    }
    let _lock = VmLock::acquire(&dir.path, &dir.name, report)?;
    let old = dir.spec()?;
    // Checked again under the lock: a concurrent `up` may have created it.
    check_owner(&old, &folder)?;
    let running = matches!(dir.run_state(), RunState::Running | RunState::Paused);
    {
        let _ports = crate::state::VmLock::acquire_ports()?;
        let mut spec = crate::create::spec_for(&create, &detected.config, Some(&old), report)?;
        spec.id = old.id.clone();
        spec.created = old.created;
        if spec != old {
            if running {
                report.progress(&format!("VM '{name}' runs with an older configuration; `mvm down && mvm up` applies the project's current one"));
            } else {
                spec.save(&dir.spec_path())?;
                report.progress(&format!(
                    "updated VM '{name}' from the project's configuration"
                ));
            }
        }
    }
    let spec = dir.spec()?;
    if !running {
        report.progress(&format!(
            "starting VM '{name}' ({} vCPUs, {} MiB, {} service(s))...",
            spec.cpus,
            spec.memory_mib,
            spec.services.len()
        ));
    }
    let started = Instant::now();
    let started_now = crate::lifecycle::start_locked(&dir, report)?;
    let names: Vec<String> = spec.services.iter().map(|s| s.name.clone()).collect();
    let infos = if names.is_empty() {
        Vec::new()
    } else {
        let mut client = crate::agent::client(&dir, Duration::from_secs(120))?;
        let mut last = String::new();
        crate::services::wait_ready(&mut client, &names, args.timeout, |infos| {
            let line = infos
                .iter()
                .map(|i| format!("{} {}", i.name, crate::services::state_word(i)))
                .collect::<Vec<_>>()
                .join(", ");
            if line != last {
                report.progress(&format!("services: {line}"));
                last = line;
            }
        })
        .with_context(|| format!("see `mvm logs {name} --service SERVICE`"))?
    };
    Ok(Up::Up(Box::new(UpStatus {
        spec,
        started_now,
        services: infos,
        took: started.elapsed(),
    })))
}

/// A VM name is one project's: another folder must pick another name.
pub fn check_owner(spec: &VmSpec, folder: &std::path::Path) -> crate::Result<()> {
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

/// The status lines `mvm up` prints: the VM, its services, its forwards.
impl std::fmt::Display for UpStatus {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (spec, infos, took) = (&self.spec, &self.services, self.took);
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
                crate::services::state_word(i),
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
}

/// Stops a project's VM (`rm`: and removes it).
pub fn down(args: &DownOptions, report: &dyn Report) -> crate::Result<Down> {
    let folder = project::folder(args.dir.as_deref())?;
    let named = args.name.is_some();
    let name = match &args.name {
        Some(n) => n.clone(),
        None => {
            let d = project::load(&folder, report)?;
            project::vm_name(&folder, &d.config, None)?
        }
    };
    let dir = VmDir::of(&name)?;
    let Ok(spec) = dir.spec() else {
        return Ok(Down::NoVm { name, folder });
    };
    if !named {
        check_owner(&spec, &folder)?;
    }
    if args.rm {
        crate::lifecycle::rm(&name, true, report)?;
        return Ok(Down::Removed(name));
    }
    let _lock = VmLock::acquire(&dir.path, &dir.name, report)?;
    let was = crate::lifecycle::stop_locked(&dir, args.timeout, report)?;
    Ok(Down::Stopped { name, was })
}
