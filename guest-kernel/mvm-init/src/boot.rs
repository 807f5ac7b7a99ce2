//! PID 1: bring the guest up from the kernel command line, then serve the
//! agent on vsock.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agent_proto::ServiceSpec;

use crate::cmdline::{self, Config, NetConfig};
use crate::power::{self, fatal};
use crate::reaper::Reaper;
use crate::server::Agent;
use crate::services::{Options, Supervisor};
use crate::sys::is_pid1;
use crate::{dhcp, log, mounts, net, vsock};

pub const SERVICE_LOG_DIR: &str = "/run/mvm/services";

/// Panics must not kill PID 1 silently (that panics the kernel): report
/// and reset instead. Installed in every mode; it only resets as PID 1.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        log!("internal error: {info}");
        if is_pid1() {
            power::reboot_now(1);
        }
    }));
}

/// Without /dev/console in the initramfs the kernel starts init with no
/// stdio; open the console once devtmpfs is mounted.
fn ensure_console() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries the descriptor.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1 {
            continue;
        }
        // SAFETY: constant C string and plain flags.
        let c = unsafe { libc::open(c"/dev/console".as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
        if c < 0 {
            return;
        }
        // SAFETY: open returned a new descriptor we own.
        let c = unsafe { OwnedFd::from_raw_fd(c) };
        if c.as_raw_fd() != fd {
            // SAFETY: both descriptors are valid; dup2 onto a closed slot.
            unsafe { libc::dup2(c.as_raw_fd(), fd) };
        } else {
            // It landed on the right number already: keep it open.
            std::mem::forget(c);
        }
    }
}

fn set_clock(secs: i64) {
    let ts = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        log!(
            "setting the clock to {secs}: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn apply_lease(iface: &str, lease: &dhcp::Lease, set_hostname: bool) {
    if let Some(mtu) = lease.mtu {
        if let Err(e) = net::set_mtu(iface, mtu) {
            log!("{iface}: mtu {mtu}: {e}");
        }
    }
    if let Err(e) = net::configure_static(iface, lease.addr, lease.prefix, lease.router) {
        log!("dhcp: {e}");
        return;
    }
    if !lease.dns.is_empty() {
        if let Err(e) = net::write_resolv_conf(
            "/etc/resolv.conf".as_ref(),
            &lease.dns,
            lease.domain.as_deref(),
        ) {
            log!("writing /etc/resolv.conf: {e}");
        }
    }
    if set_hostname {
        if let Some(h) = &lease.hostname {
            let _ = net::set_hostname(h);
        }
    }
    log!(
        "{iface}: {}/{} via {} (dhcp, lease {}s)",
        lease.addr,
        lease.prefix,
        lease.router.map_or("-".to_string(), |r| r.to_string()),
        lease.lease_secs
    );
}

/// DHCP: one bounded attempt now (so exec sees a network), then a thread
/// that renews at T1, or keeps trying if the first attempt failed.
fn dhcp(iface: &str, set_hostname: bool) {
    if let Err(e) = net::set_up(iface) {
        log!("{iface}: bringing up: {e}");
        return;
    }
    let mac = match net::mac_address(iface) {
        Ok(m) => m,
        Err(e) => return log!("{iface}: no MAC address: {e}"),
    };
    let mut t = match dhcp::UdpTransport::new(iface) {
        Ok(t) => t,
        Err(e) => return log!("dhcp: socket on {iface}: {e}"),
    };
    let mut xid = dhcp::new_xid(&mac);
    let first = dhcp::acquire(&mut t, &mac, xid, 4, Duration::from_secs(1));
    let mut lease = match first {
        Ok(l) => {
            apply_lease(iface, &l, set_hostname);
            Some(l)
        }
        Err(e) => {
            log!("dhcp on {iface}: {e}; retrying in the background");
            None
        }
    };
    let iface = iface.to_string();
    let r = std::thread::Builder::new()
        .name("dhcp".into())
        .spawn(move || loop {
            xid = xid.wrapping_add(17);
            match &lease {
                Some(l) => {
                    std::thread::sleep(Duration::from_secs(u64::from(l.renew_secs.max(30))));
                    match dhcp::renew(&mut t, &mac, xid, l) {
                        Ok(new) => {
                            if new.addr != l.addr || new.router != l.router {
                                apply_lease(&iface, &new, set_hostname);
                            }
                            lease = Some(new);
                        }
                        Err(e) => {
                            log!("dhcp renewal on {iface}: {e}; starting over");
                            lease = None;
                        }
                    }
                }
                None => match dhcp::acquire(&mut t, &mac, xid, 1, Duration::from_secs(4)) {
                    Ok(l) => {
                        apply_lease(&iface, &l, set_hostname);
                        lease = Some(l);
                    }
                    Err(_) => std::thread::sleep(Duration::from_secs(10)),
                },
            }
        });
    if let Err(e) = r {
        log!("dhcp: no renewal thread: {e}");
    }
}

fn network(cfg: &Config) {
    if let Err(e) = net::set_up("lo") {
        log!("bringing up lo: {e}");
    }
    if cfg.net == NetConfig::None {
        return;
    }
    let iface = match net::find_iface(cfg.iface.as_deref(), Duration::from_secs(2)) {
        Ok(i) => i,
        Err(e) => return log!("network: {e}"),
    };
    match &cfg.net {
        NetConfig::None => {}
        NetConfig::Dhcp => dhcp(&iface, cfg.hostname.is_none()),
        NetConfig::Static {
            addr,
            prefix,
            gateway,
            dns,
        } => {
            if let Err(e) = net::configure_static(&iface, *addr, *prefix, *gateway) {
                return log!("network: {e}");
            }
            if !dns.is_empty() {
                if let Err(e) = net::write_resolv_conf("/etc/resolv.conf".as_ref(), dns, None) {
                    log!("writing /etc/resolv.conf: {e}");
                }
            }
        }
    }
}

fn declare_boot_services(services: &Supervisor, path: &str) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return log!("mvm.services={path}: {e}"),
    };
    let specs: Vec<ServiceSpec> = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => return log!("mvm.services={path}: not a JSON array of services: {e}"),
    };
    for spec in specs {
        let name = spec.name.clone();
        if let Err(r) = services.declare(spec, true) {
            log!("service {name}: {}", r.1);
        }
    }
}

/// Everything PID 1 does; never returns.
pub fn run_pid1() -> ! {
    install_panic_hook();
    if let Err(e) = mounts::mount_base() {
        ensure_console();
        fatal(&e);
    }
    ensure_console();
    let line = match std::env::var("MVM_INIT_CMDLINE") {
        Ok(l) => l,
        Err(_) => std::fs::read_to_string("/proc/cmdline")
            .unwrap_or_else(|e| fatal(&format!("reading /proc/cmdline: {e}"))),
    };
    let cfg =
        cmdline::parse(&line).unwrap_or_else(|e| fatal(&format!("bad kernel command line: {e}")));
    for w in &cfg.warnings {
        log!("{w}");
    }
    if let Some(t) = cfg.time {
        set_clock(t);
    }
    if let Some(tag) = &cfg.root {
        mounts::switch_root(tag, cfg.root_overlay).unwrap_or_else(|e| fatal(&e));
        mounts::link_nixos_system();
    }
    mounts::mount_tmp().unwrap_or_else(|e| fatal(&e));
    for s in &cfg.shares {
        mounts::mount_share(s).unwrap_or_else(|e| fatal(&e));
    }
    // After the shares (a volume may be mounted inside one) and before the
    // reaper, which would take mkfs's exit status from us.
    for v in &cfg.volumes {
        let owner = cfg
            .volume_owners
            .iter()
            .find(|(serial, _)| *serial == v.tag)
            .map(|(_, o)| o.as_str());
        crate::volumes::mount_volume(v, owner).unwrap_or_else(|e| fatal(&e));
    }
    if let Some(h) = &cfg.hostname {
        if let Err(e) = net::set_hostname(h) {
            log!("setting hostname {h}: {e}");
        }
    }
    network(&cfg);

    let reaper = Reaper::global();
    let services = Supervisor::new(
        PathBuf::from("/"),
        Arc::clone(&reaper),
        Some(PathBuf::from(SERVICE_LOG_DIR)),
        Options::default(),
    );
    let (s2, r2) = (services.clone(), Arc::clone(&reaper));
    let agent = Arc::new(Agent {
        root: PathBuf::from("/"),
        reaper,
        services: services.clone(),
        debug: cfg.debug,
        power: Arc::new(move |action| power::shutdown(&s2, &r2, action)),
    });
    if let Some(path) = &cfg.agent_unix {
        let _ = std::fs::remove_file(path);
        let l = std::os::unix::net::UnixListener::bind(path)
            .unwrap_or_else(|e| fatal(&format!("listening on unix socket {path}: {e}")));
        if let Some(f) = &cfg.services_file {
            declare_boot_services(&services, f);
        }
        log!("ready: agent on unix socket {path}");
        crate::server::serve_unix(l, agent);
    } else {
        let listener = vsock::listen(cfg.agent_port).unwrap_or_else(|e| {
            fatal(&format!(
                "listening on vsock port {}: {e} (is virtio-vsock on the command line?)",
                cfg.agent_port
            ))
        });
        if let Some(f) = &cfg.services_file {
            declare_boot_services(&services, f);
        }
        log!("ready: agent on vsock port {}", cfg.agent_port);
        vsock::serve(listener, agent);
    }
    fatal("the agent listener stopped")
}
