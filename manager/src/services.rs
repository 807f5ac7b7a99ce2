//! A VM's services, the processes its guest agent supervises: declared
//! at start (each once those it depends on are ready), waited for, and
//! listed, started, stopped or read from on demand.

use std::io::Write;
use std::time::{Duration, Instant};

use agent_proto::{ServiceInfo, ServiceState};

use crate::error::{bail, err, Context};
use crate::state::{VmDir, VmSpec};

/// How long a request about services waits for the guest agent.
const AGENT_WAIT: Duration = Duration::from_secs(10);

/// How long a service waits for the services it depends on to be ready.
const DEPENDENCY_WAIT: Duration = Duration::from_secs(300);

/// Hands the VM's services to the guest agent, started, each once the
/// services it depends on are ready. Their environment: the VM's, the
/// host's variables its patterns name (read now, by this process), then
/// the service's own.
pub fn declare(dir: &VmDir, spec: &VmSpec) -> crate::Result<()> {
    let mut client = crate::agent::client(dir, Duration::from_secs(120))?;
    let env = crate::project::env::resolve(spec, &[], &[])?;
    for svc in &spec.services {
        let deps = spec
            .depends_on
            .get(&svc.name)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        wait_ready(&mut client, deps, DEPENDENCY_WAIT, |_| {})
            .with_context(|| format!("service '{}' cannot start", svc.name))?;
        let mut svc = svc.clone();
        let own = std::mem::take(&mut svc.env);
        svc.env = env.clone();
        svc.env.extend(own);
        client
            .service_declare(&svc, true)
            .with_context(|| format!("cannot start service '{}'", svc.name))?;
    }
    Ok(())
}

/// A service's state as one lowercase word ("running").
pub fn state_word(i: &ServiceInfo) -> String {
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
) -> crate::Result<Vec<ServiceInfo>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let deadline = Instant::now() + timeout;
    loop {
        let all = client
            .service_status(None)
            .map_err(|e| crate::error::err!("cannot read the services' status: {e}"))?;
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

/// Every service of VM `name`.
pub fn status(name: &str) -> crate::Result<Vec<ServiceInfo>> {
    let dir = VmDir::existing(name)?;
    let mut c = crate::agent::client(&dir, AGENT_WAIT)?;
    c.service_status(None).map_err(|e| err!("{e}"))
}

/// What [`control`] does to a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
}

/// Starts, stops or restarts `service` of VM `name`.
pub fn control(name: &str, service: &str, action: Action) -> crate::Result<()> {
    let dir = VmDir::existing(name)?;
    let mut c = crate::agent::client(&dir, AGENT_WAIT)?;
    match action {
        Action::Start => c.service_start(service),
        Action::Stop => c.service_stop(service),
        Action::Restart => c.service_restart(service),
    }
    .map_err(|e| err!("{e}"))
}

/// Copies `service`'s output to `out`; `follow`: and what comes after,
/// until the VM or the connection ends.
pub fn logs(name: &str, service: &str, follow: bool, out: &mut dyn Write) -> crate::Result<()> {
    let dir = VmDir::existing(name)?;
    let mut c = if follow {
        crate::agent::session_client(&dir, AGENT_WAIT)?
    } else {
        crate::agent::client(&dir, AGENT_WAIT)?
    };
    c.service_logs(service, None, follow, out)
        .map_err(|e| err!("{e}"))
}
