//! The CPUID each vCPU reports: what KVM supports, fixed up so the guest
//! sees a hypervisor, a topology of `count` single-threaded cores in one
//! package whose APIC ids match the vCPU indexes, and the TSC frequency.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_V2_EXT_TOPOLOGY: u32 = 0x1f;
const LEAF_KVM_SIGNATURE: u32 = 0x4000_0000;
const LEAF_KVM_TIMING: u32 = 0x4000_0010;
const LEAF_AMD_ADDR_SIZES: u32 = 0x8000_0008;
const LEAF_AMD_EXT_APIC_ID: u32 = 0x8000_001e;

const ECX_TSC_DEADLINE: u32 = 1 << 24;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;

/// The local APIC timer of KVM's in-kernel LAPIC ticks at 1 GHz.
const KVM_APIC_BUS_KHZ: u32 = 1_000_000;

/// What the fix-ups need to know about the VM and host.
#[derive(Debug, Clone, Copy)]
pub struct CpuidParams {
    pub vcpu_index: u8,
    pub vcpu_count: u8,
    /// The guest TSC frequency, when KVM knows it.
    pub tsc_khz: Option<u32>,
    /// KVM_CAP_TSC_DEADLINE_TIMER: the in-kernel LAPIC emulates it.
    pub tsc_deadline: bool,
}

/// Bits needed to hold `n` distinct ids.
fn id_bits(n: u8) -> u32 {
    (u32::from(n.max(1))).next_power_of_two().trailing_zeros()
}

fn find_mut(cpuid: &mut CpuId, function: u32) -> impl Iterator<Item = &mut kvm_cpuid_entry2> {
    cpuid
        .as_mut_slice()
        .iter_mut()
        .filter(move |e| e.function == function)
}

/// Applies the fix-ups to a copy of KVM_GET_SUPPORTED_CPUID.
pub fn normalize(cpuid: &mut CpuId, p: CpuidParams) {
    let apic_id = u32::from(p.vcpu_index);
    let count = u32::from(p.vcpu_count.max(1));

    for e in find_mut(cpuid, LEAF_FEATURES) {
        // EBX: [31:24] initial APIC id, [23:16] logical processors in the
        // package, [15:8] CLFLUSH line size in 8-byte units.
        e.ebx = (apic_id << 24) | (count << 16) | (8 << 8) | (e.ebx & 0xff);
        e.ecx |= ECX_HYPERVISOR;
        if p.tsc_deadline {
            e.ecx |= ECX_TSC_DEADLINE;
        } else {
            e.ecx &= !ECX_TSC_DEADLINE;
        }
        if count > 1 {
            e.edx |= EDX_HTT;
        } else {
            e.edx &= !EDX_HTT;
        }
    }

    for e in find_mut(cpuid, LEAF_CACHE_PARAMS) {
        // EAX[31:26]: cores per package - 1; EAX[25:14]: threads sharing
        // this cache - 1 (only the last level is shared by all cores).
        let level = (e.eax >> 5) & 0x7;
        let sharing = if level >= 3 { count - 1 } else { 0 };
        e.eax = (e.eax & 0x3fff) | ((count - 1) << 26) | (sharing << 14);
    }

    for leaf in [LEAF_EXT_TOPOLOGY, LEAF_V2_EXT_TOPOLOGY] {
        for e in find_mut(cpuid, leaf) {
            e.edx = apic_id;
            match e.index {
                // SMT level: one thread per core.
                0 => {
                    e.eax = 0;
                    e.ebx = 1;
                    e.ecx = 1 << 8;
                }
                // Core level: `count` cores.
                1 => {
                    e.eax = id_bits(p.vcpu_count);
                    e.ebx = count;
                    e.ecx = (2 << 8) | 1;
                }
                n => {
                    e.eax = 0;
                    e.ebx = 0;
                    e.ecx = n & 0xff;
                }
            }
        }
    }

    for e in find_mut(cpuid, LEAF_AMD_ADDR_SIZES) {
        // ECX[15:12] APIC id size, [7:0] cores - 1.
        e.ecx = (e.ecx & !0xf0ff) | (id_bits(p.vcpu_count) << 12) | (count - 1);
    }
    for e in find_mut(cpuid, LEAF_AMD_EXT_APIC_ID) {
        e.eax = apic_id;
        e.ebx = apic_id & 0xff; // compute unit = core, one thread each
        e.ecx = 0;
    }

    if let Some(khz) = p.tsc_khz {
        set_tsc_leaf(cpuid, khz);
    }
}

/// Adds the 0x40000010 timing leaf (TSC and APIC bus frequency in kHz) and
/// raises the hypervisor's maximum leaf to include it.
fn set_tsc_leaf(cpuid: &mut CpuId, khz: u32) {
    let mut has_kvm_leaves = false;
    for e in find_mut(cpuid, LEAF_KVM_SIGNATURE) {
        e.eax = e.eax.max(LEAF_KVM_TIMING);
        has_kvm_leaves = true;
    }
    if !has_kvm_leaves {
        return;
    }
    let timing = kvm_cpuid_entry2 {
        function: LEAF_KVM_TIMING,
        eax: khz,
        ebx: KVM_APIC_BUS_KHZ,
        ..Default::default()
    };
    let existing = find_mut(cpuid, LEAF_KVM_TIMING).next().map(|e| *e = timing);
    if existing.is_none() && cpuid.push(timing).is_err() {
        tracing::debug!("no room for the CPUID timing leaf; the guest will calibrate its TSC");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    fn sample() -> CpuId {
        CpuId::from_entries(&[
            entry(0, 0),
            entry(LEAF_FEATURES, 0),
            kvm_cpuid_entry2 {
                eax: (3 << 5) | 1,
                ..entry(LEAF_CACHE_PARAMS, 3)
            },
            kvm_cpuid_entry2 {
                eax: (1 << 5) | 1,
                ..entry(LEAF_CACHE_PARAMS, 0)
            },
            entry(LEAF_EXT_TOPOLOGY, 0),
            entry(LEAF_EXT_TOPOLOGY, 1),
            entry(LEAF_EXT_TOPOLOGY, 2),
            kvm_cpuid_entry2 {
                eax: 0x4000_0001,
                ..entry(LEAF_KVM_SIGNATURE, 0)
            },
            entry(LEAF_AMD_ADDR_SIZES, 0),
        ])
        .unwrap()
    }

    fn get(cpuid: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    #[test]
    fn topology_matches_vcpu_index_and_count() {
        let mut c = sample();
        normalize(
            &mut c,
            CpuidParams {
                vcpu_index: 2,
                vcpu_count: 3,
                tsc_khz: None,
                tsc_deadline: true,
            },
        );
        let f = get(&c, LEAF_FEATURES, 0);
        assert_eq!(f.ebx >> 24, 2);
        assert_eq!((f.ebx >> 16) & 0xff, 3);
        assert_ne!(f.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(f.ecx & ECX_TSC_DEADLINE, 0);
        assert_ne!(f.edx & EDX_HTT, 0);

        let smt = get(&c, LEAF_EXT_TOPOLOGY, 0);
        assert_eq!((smt.eax, smt.ebx, smt.ecx >> 8, smt.edx), (0, 1, 1, 2));
        let core = get(&c, LEAF_EXT_TOPOLOGY, 1);
        assert_eq!((core.eax, core.ebx, core.ecx >> 8, core.edx), (2, 3, 2, 2));
        let end = get(&c, LEAF_EXT_TOPOLOGY, 2);
        assert_eq!((end.ebx, end.ecx >> 8), (0, 0));

        let l3 = get(&c, LEAF_CACHE_PARAMS, 3);
        assert_eq!((l3.eax >> 26, (l3.eax >> 14) & 0xfff), (2, 2));
        let l1 = get(&c, LEAF_CACHE_PARAMS, 0);
        assert_eq!((l1.eax >> 26, (l1.eax >> 14) & 0xfff), (2, 0));
        assert_eq!(get(&c, LEAF_AMD_ADDR_SIZES, 0).ecx & 0xff, 2);
    }

    #[test]
    fn single_vcpu_has_no_htt_and_timing_leaf_is_added() {
        let mut c = sample();
        normalize(
            &mut c,
            CpuidParams {
                vcpu_index: 0,
                vcpu_count: 1,
                tsc_khz: Some(2_500_000),
                tsc_deadline: false,
            },
        );
        let f = get(&c, LEAF_FEATURES, 0);
        assert_eq!(f.edx & EDX_HTT, 0);
        assert_eq!(f.ecx & ECX_TSC_DEADLINE, 0);
        assert_eq!(get(&c, LEAF_KVM_SIGNATURE, 0).eax, LEAF_KVM_TIMING);
        let t = get(&c, LEAF_KVM_TIMING, 0);
        assert_eq!((t.eax, t.ebx), (2_500_000, KVM_APIC_BUS_KHZ));
    }

    #[test]
    fn id_bits_rounds_up() {
        assert_eq!([1, 2, 3, 4, 5, 64, 255].map(id_bits), [0, 1, 2, 2, 3, 6, 8]);
    }
}
