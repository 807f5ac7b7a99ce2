//! The CPUID each vCPU reports: what KVM supports, fixed up so the guest
//! sees a hypervisor, a topology of `count` single-threaded cores in one
//! package whose APIC ids match the vCPU indexes, the TSC frequency, and
//! XSAVE leaves that describe only the state components it may enable.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_XSAVE: u32 = 0xd;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_V2_EXT_TOPOLOGY: u32 = 0x1f;
const LEAF_KVM_SIGNATURE: u32 = 0x4000_0000;
const LEAF_KVM_TIMING: u32 = 0x4000_0010;
const LEAF_AMD_ADDR_SIZES: u32 = 0x8000_0008;
const LEAF_AMD_EXT_APIC_ID: u32 = 0x8000_001e;

const ECX_TSC_DEADLINE: u32 = 1 << 24;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
const ECX_XSAVE: u32 = 1 << 26;

/// The legacy x87/SSE area and the XSAVE header before the first extended
/// component (non-compacted layout).
const XSAVE_LEGACY_AND_HEADER: u32 = 512 + 64;
/// XCR0 bit 0: x87 state, which XCR0 must always include.
const XCR0_X87: u64 = 1;

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

    fix_xsave_leaf(cpuid);

    if let Some(khz) = p.tsc_khz {
        set_tsc_leaf(cpuid, khz);
    }
}

fn get(cpuid: &CpuId, function: u32, index: u32) -> Option<&kvm_cpuid_entry2> {
    cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == function && e.index == index)
}

/// Leaf 0xD: a sub-leaf for each component the guest may enable (XCR0
/// from sub-leaf 0, XSS from sub-leaf 1) and none for the others, and the
/// largest save area (sub-leaf 0 ECX) computed from those sub-leaves, so
/// the sizes the guest adds up match the ones it reads.
fn fix_xsave_leaf(cpuid: &mut CpuId) {
    let (Some(s0), Some(s1)) = (get(cpuid, LEAF_XSAVE, 0), get(cpuid, LEAF_XSAVE, 1)) else {
        return;
    };
    let xcr0 = u64::from(s0.eax) | (u64::from(s0.edx) << 32);
    let xss = u64::from(s1.ecx) | (u64::from(s1.edx) << 32);
    let mut max_size = XSAVE_LEGACY_AND_HEADER;
    for e in find_mut(cpuid, LEAF_XSAVE) {
        let bit = e.index;
        if bit < 2 {
            continue;
        }
        let allowed = bit < 64 && (xcr0 | xss) & (1 << bit) != 0;
        if !allowed {
            (e.eax, e.ebx, e.ecx, e.edx) = (0, 0, 0, 0);
        } else if xcr0 & (1 << bit) != 0 {
            // User components: EBX is the offset, EAX the size.
            max_size = max_size.max(e.ebx.saturating_add(e.eax));
        }
    }
    for e in find_mut(cpuid, LEAF_XSAVE).filter(|e| e.index == 0) {
        e.ecx = max_size;
    }
}

/// The XCR0 a vCPU starts with: every user component its CPUID offers
/// (sub-leaf 0 of leaf 0xD), or `None` without XSAVE. Starting with the
/// full set keeps KVM's size in sub-leaf 0 EBX right even where the
/// guest's own XSETBV does not reach KVM (seen under nested TCG); the
/// guest sets XCR0 itself anyway.
pub fn initial_xcr0(cpuid: &CpuId) -> Option<u64> {
    let xsave = get(cpuid, LEAF_FEATURES, 0).is_some_and(|e| e.ecx & ECX_XSAVE != 0);
    let s0 = get(cpuid, LEAF_XSAVE, 0)?;
    let xcr0 = u64::from(s0.eax) | (u64::from(s0.edx) << 32);
    (xsave && xcr0 & XCR0_X87 != 0).then_some(xcr0)
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
        *super::get(cpuid, function, index).unwrap()
    }

    /// Leaf 0xD as an AMD host with x87, SSE, AVX and PKRU reports it,
    /// plus a stale sub-leaf for AVX-512 state it does not offer.
    fn xsave_sample(features_ecx: u32) -> CpuId {
        let xsave = |index, eax, ebx, ecx| kvm_cpuid_entry2 {
            eax,
            ebx,
            ecx,
            ..entry(LEAF_XSAVE, index)
        };
        CpuId::from_entries(&[
            kvm_cpuid_entry2 {
                ecx: features_ecx,
                ..entry(LEAF_FEATURES, 0)
            },
            xsave(0, 0x207, 0x240, 0x1000),
            xsave(1, 0x5, 0, 0),
            xsave(2, 0x100, 0x240, 0),
            xsave(5, 0x40, 0x440, 0),
            xsave(9, 0x8, 0xa80, 0),
        ])
        .unwrap()
    }

    #[test]
    fn xsave_leaf_describes_only_what_xcr0_allows() {
        let mut c = xsave_sample(ECX_XSAVE);
        fix_xsave_leaf(&mut c);
        // AVX-512 opmask (bit 5) is not in XCR0: its sub-leaf is cleared.
        let k = get(&c, LEAF_XSAVE, 5);
        assert_eq!((k.eax, k.ebx), (0, 0));
        // AVX and PKRU stay; the largest area ends after PKRU.
        assert_eq!(get(&c, LEAF_XSAVE, 2).eax, 0x100);
        assert_eq!(get(&c, LEAF_XSAVE, 9).ebx, 0xa80);
        assert_eq!(get(&c, LEAF_XSAVE, 0).ecx, 0xa80 + 0x8);
        assert_eq!(initial_xcr0(&c), Some(0x207));
    }

    #[test]
    fn xsave_leaf_without_extended_state_is_the_legacy_area() {
        let mut c = xsave_sample(ECX_XSAVE);
        for e in find_mut(&mut c, LEAF_XSAVE).filter(|e| e.index == 0) {
            e.eax = 0x3;
        }
        fix_xsave_leaf(&mut c);
        assert_eq!(get(&c, LEAF_XSAVE, 0).ecx, XSAVE_LEGACY_AND_HEADER);
        assert_eq!(get(&c, LEAF_XSAVE, 2).eax, 0);
        assert_eq!(initial_xcr0(&c), Some(0x3));
        // No XSAVE in leaf 1: the vCPU keeps its reset XCR0.
        assert_eq!(initial_xcr0(&xsave_sample(0)), None);
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
