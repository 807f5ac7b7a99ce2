//! The network of a one-off `mvm run --initrd ... --net` VM: attached for
//! the life of this process (which is the VMM), taken off the network and
//! its lease forgotten when it ends. A run killed with SIGKILL leaves a
//! detached lease and a tap; the next `mvm` that reconciles removes both.

use netstack::VmNet;

/// Lease names of one-off VMs: `raw-<id>` (project runs are `run-<id>`
/// and have a VM folder).
const PREFIX: &str = "raw-";

pub struct RawRunNet<'r> {
    pub net: VmNet,
    report: &'r dyn crate::Report,
}

impl<'r> RawRunNet<'r> {
    /// A tap on the bridge with a lease the DHCP server answers, owned by
    /// this process. Asked for explicitly, so a host that does not allow
    /// it is an error (saying what is missing), not a silent "no network".
    pub fn attach(
        allow: &[netstack::Cidr],
        report: &'r dyn crate::Report,
    ) -> crate::Result<RawRunNet<'r>> {
        super::reconcile();
        let id = crate::state::spec_new_id()?;
        let name = format!("{PREFIX}{id}");
        let net = super::attach_id(&id, &name, false, allow)?
            .map_err(|e| crate::error::err!("--net: cannot attach the VM to the network: {e}"))?;
        // From here on, Drop undoes the attach.
        let guard = RawRunNet { net, report };
        super::set_owner_pid(&guard.net.id, std::process::id());
        super::ensure_daemon()?;
        Ok(guard)
    }
}

impl Drop for RawRunNet<'_> {
    fn drop(&mut self) {
        if let Ok(cfg) = super::config() {
            if let Err(e) = netstack::forget_vm(&cfg, &self.net.id) {
                self.report.progress(&format!(
                    "cannot take tap {} off the network: {e}",
                    self.net.tap
                ));
            }
        }
    }
}

/// Forgets the detached leases of one-off VMs (their process is gone:
/// reconcile detached them).
pub(super) fn forget_stale() {
    let Ok(cfg) = super::config() else {
        return;
    };
    for l in netstack::leases(&cfg).unwrap_or_default() {
        if l.name.starts_with(PREFIX) && l.active.is_none() {
            let _ = netstack::forget_vm(&cfg, &l.id);
        }
    }
}
