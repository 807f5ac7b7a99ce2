//! `mvm doctor`: what this host can and cannot do for mvm, and how to fix
//! what is missing. Exit status 0 when VMs can run here.

use clap::Args;

#[derive(Args)]
pub struct DoctorArgs {}

struct Report {
    failed: bool,
}

impl Report {
    fn ok(&self, what: &str) {
        println!("ok    {what}");
    }
    fn warn(&self, what: &str) {
        println!("warn  {what}");
    }
    fn fail(&mut self, what: &str) {
        self.failed = true;
        println!("FAIL  {what}");
    }
}

pub fn doctor(_args: DoctorArgs) -> anyhow::Result<bool> {
    let mut r = Report { failed: false };
    match vmm::kvm::open() {
        Ok(kvm) => {
            if vmm::kvm::is_pvm(&kvm) {
                r.fail(&vmm::kvm::KvmError::PvmHost.to_string());
            } else {
                r.ok(&format!(
                    "/dev/kvm works (up to {} vCPUs per VM)",
                    kvm.get_max_vcpus()
                ));
            }
        }
        Err(e) => r.fail(&e.to_string()),
    }
    match manager::image::kernel_path(None) {
        Ok(k) => match vmm::loader::probe_kernel(&k) {
            Ok(_) => r.ok(&format!("guest kernel: {}", k.display())),
            Err(e) => r.fail(&e.to_string()),
        },
        Err(e) => r.fail(&e.to_string()),
    }
    match manager::image::mvm_init() {
        Ok(p) => r.ok(&format!("guest agent: {}", p.display())),
        Err(e) => r.fail(&e.to_string()),
    }
    match manager::state::home() {
        Ok(h) => {
            let probe = std::fs::create_dir_all(&h).and_then(|_| {
                let f = h.join(".doctor-probe");
                std::fs::write(&f, b"")?;
                std::fs::remove_file(f)
            });
            match probe {
                Ok(()) => r.ok(&format!("state folder: {}", h.display())),
                Err(e) => r.fail(&format!(
                    "state folder {} is not writable: {e}",
                    h.display()
                )),
            }
        }
        Err(e) => r.fail(&e.to_string()),
    }
    match vmm::memory::host_ram_mib() {
        Ok(m) if m < 1024 => r.warn(&format!("only {m} MiB of RAM: VMs will be small")),
        Ok(m) => r.ok(&format!("{m} MiB of RAM")),
        Err(e) => r.warn(&e.to_string()),
    }
    // Optional: `--net vhost` falls back to the tap path without it.
    match vmm::vhost_net_usable() {
        Ok(()) => r.ok("vhost-net: usable (`--net vhost`)"),
        Err(e) => r.warn(&format!(
            "vhost-net unusable ({e}): `--net vhost` takes the tap path; `modprobe vhost_net` and access to /dev/vhost-net enable it"
        )),
    }
    // Optional: a user's VMMs run unjailed otherwise.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        r.ok("jail: each VMM runs in its own namespaces on a root of its folder, as the project's owner or with root's powers cut (docs/security.md)");
    } else {
        match vmm::jail::user_namespaces_allowed() {
            Ok(()) => r.ok("jail: each VMM runs in a user namespace of its own on a root of its folder, without capabilities"),
            Err(e) => r.warn(&format!(
                "jail: {e}, so this user's VMMs run unjailed; allow unprivileged user namespaces, or start VMs as root"
            )),
        }
    }
    // Optional: VMs run without CPU, memory and task bounds otherwise.
    match manager::cgroup::mount_point() {
        Ok(m) => r.ok(&format!(
            "cgroup v2 at {}: each VM gets cpu.max, memory.max and pids.max",
            m.display()
        )),
        Err(e) => r.warn(&format!(
            "{e}: VMs run without CPU, memory and task bounds; run mvm as root on a host with the unified cgroup hierarchy (systemd.unified_cgroup_hierarchy=1, the default on NixOS), or mount it: `mount -t cgroup2 none /sys/fs/cgroup`"
        )),
    }
    Ok(!r.failed)
}
