//! Crash clean-up: what VMs whose owner died left behind.

use std::path::Path;

use crate::addr::TAP_PREFIX;
use crate::error::Result;
use crate::lease::{Lease, Store};
use crate::link::Rtnl;
use crate::nft::SET_UPLINKS;
use crate::privilege::privileges;

use super::vm::detach_locked;
use super::{active_alive, NetConfig};

/// What [`reconcile`] cleaned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// VMs whose owner was gone, now detached.
    pub detached: Vec<String>,
    /// Taps with no attached VM, deleted.
    pub taps_removed: Vec<String>,
    /// Set/map elements with no attached VM, deleted.
    pub elements_removed: usize,
    /// Half-written state files of killed writers, deleted.
    pub temporaries_removed: usize,
}

/// Remove what VMs that crashed left behind: detach VMs whose owner process
/// is gone, delete `mvm-*` taps that no attached VM uses, and delete rule
/// elements of VMs that are not attached. Uses the configuration stored in
/// `state_dir`. Pool taps and leases stay; half-written state files go.
pub fn reconcile(state_dir: &Path) -> Result<ReconcileReport> {
    let cfg = NetConfig::load(state_dir)?;
    let store = Store::open(state_dir)?;
    let _lock = store.lock()?;
    let mut rt = Rtnl::open()?;
    let mut rep = ReconcileReport {
        temporaries_removed: store.sweep_temporaries()?,
        ..Default::default()
    };
    for mut l in store.load_all()? {
        if let Some(a) = &l.active {
            if !active_alive(a) {
                detach_locked(&cfg, &store, &mut rt, &mut l)?;
                rep.detached.push(l.id.clone());
            }
        }
    }
    let leases = store.load_all()?;
    let in_use: Vec<&str> = leases
        .iter()
        .filter_map(|l| l.active.as_ref().map(|a| a.tap.as_str()))
        .collect();
    if privileges().net_admin {
        for link in rt.links()? {
            if link.name.starts_with(TAP_PREFIX)
                && link.kind.as_deref() == Some("tun")
                && !in_use.contains(&link.name.as_str())
            {
                rt.delete(link.index)?;
                rep.taps_removed.push(link.name);
            }
        }
        let nft = cfg.nft();
        if nft.installed()? {
            let attached: Vec<&Lease> = leases.iter().filter(|l| l.active.is_some()).collect();
            let stale: Vec<_> = nft
                .elements()?
                .into_iter()
                .filter(|e| e.set != SET_UPLINKS && !e.pool)
                .filter(|e| match &e.vm {
                    Some(vm) => !attached.iter().any(|l| &l.id == vm),
                    None => true,
                })
                .collect();
            rep.elements_removed = stale.len();
            nft.delete_elems(&stale)?;
        }
    }
    if rep != ReconcileReport::default() {
        tracing::info!(?rep, "reconciled");
    }
    Ok(rep)
}
