//! Opening KVM and checking what this host's KVM can do, with errors a
//! user can act on.

use kvm_ioctls::{Cap, Kvm};

use crate::arch::msr::MSR_PVM_VCPU_STRUCT;

const KVM_PATH: &str = "/dev/kvm";

#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    #[error("{KVM_PATH} does not exist: this host has no KVM (load kvm_intel or kvm_amd, and enable hardware virtualization)")]
    Missing,
    #[error("{KVM_PATH} is not accessible to this user: add the user to the group owning it (usually 'kvm') or run as root")]
    NoAccess,
    #[error("cannot open {KVM_PATH}: {0}")]
    Open(std::io::Error),
    #[error("{KVM_PATH} speaks KVM API version {0}, not 12")]
    ApiVersion(i32),
    #[error("this host's KVM lacks {0:?}, which mvm needs")]
    MissingCap(Cap),
    #[error("this host's KVM is PVM-backed (pagetable-based virtualization, no VT-x/AMD-V): standard Linux guest kernels cannot boot on it; run mvm inside a VM with nested virtualization, or use the nested route (tests/nested/run-l2.sh) described in README.md")]
    PvmHost,
    #[error("KVM_CREATE_VM failed: {0}")]
    CreateVm(kvm_ioctls::Error),
}

/// Opens /dev/kvm and checks the capabilities the VMM relies on.
pub fn open() -> Result<Kvm, KvmError> {
    let kvm = Kvm::new().map_err(|e| match e.errno() {
        libc::ENOENT | libc::ENXIO | libc::ENODEV => KvmError::Missing,
        libc::EACCES | libc::EPERM => KvmError::NoAccess,
        _ => KvmError::Open(std::io::Error::from_raw_os_error(e.errno())),
    })?;
    let version = kvm.get_api_version();
    if version != 12 {
        return Err(KvmError::ApiVersion(version));
    }
    for cap in [
        Cap::Irqchip,
        Cap::Irqfd,
        Cap::Ioeventfd,
        Cap::UserMemory,
        Cap::SetTssAddr,
        Cap::Pit2,
        Cap::ExtCpuid,
    ] {
        if !kvm.check_extension(cap) {
            return Err(KvmError::MissingCap(cap));
        }
    }
    Ok(kvm)
}

/// True when KVM is served by kvm_pvm: the module is loaded, or KVM lists
/// PVM's own MSR (not every PVM build does).
pub fn is_pvm(kvm: &Kvm) -> bool {
    std::path::Path::new("/sys/module/kvm_pvm").exists()
        || kvm
            .get_msr_index_list()
            .map(|list| list.as_slice().contains(&MSR_PVM_VCPU_STRUCT))
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_this_hosts_kvm() {
        // The test machines have /dev/kvm (PVM-backed or nested real KVM).
        let kvm = open().expect("/dev/kvm must be usable where tests run");
        assert!(kvm.get_max_vcpus() >= 1);
        // A loaded kvm_pvm must be recognised: the answer decides whether
        // standard kernels are refused with an explanation.
        if std::path::Path::new("/sys/module/kvm_pvm").exists() {
            assert!(is_pvm(&kvm));
        }
    }
}
