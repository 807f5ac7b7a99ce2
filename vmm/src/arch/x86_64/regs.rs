//! Initial register state of the boot vCPU for the two entry protocols:
//! PVH (32-bit protected mode, paging off) and the Linux 64-bit boot
//! protocol (long mode with identity-mapped page tables).

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::*;

#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    #[error("cannot write the boot GDT, IDT or page tables into guest memory")]
    WriteTables,
    #[error("KVM refused the vCPU's {what}: {source}")]
    Kvm {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
}

/// How the boot vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryProtocol {
    /// PVH: 32-bit flat protected mode, `rbx` points at `hvm_start_info`.
    Pvh,
    /// Linux 64-bit boot protocol: long mode, `rsi` points at the zero page.
    Linux64,
}

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Builds a GDT descriptor from its flags (access byte in bits 0-7, the
/// flags nibble in bits 12-15), base and limit.
pub fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((u64::from(base) & 0xff00_0000) << (56 - 24))
        | ((u64::from(flags) & 0x0000_f0ff) << 40)
        | ((u64::from(limit) & 0x000f_0000) << (48 - 16))
        | ((u64::from(base) & 0x00ff_ffff) << 16)
        | (u64::from(limit) & 0x0000_ffff)
}

/// The KVM segment a GDT descriptor at `index` describes.
pub fn segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let bit = |n: u32| ((entry >> n) & 1) as u8;
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let mut limit = ((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)) as u32;
    let g = bit(55);
    if g == 1 {
        limit = (limit << 12) | 0xfff;
    }
    kvm_segment {
        base,
        limit,
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: bit(47),
        dpl: ((entry >> 45) & 0x3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g,
        avl: bit(52),
        padding: 0,
        unusable: u8::from(bit(47) == 0),
    }
}

fn boot_gdt(protocol: EntryProtocol) -> [u64; 4] {
    match protocol {
        EntryProtocol::Linux64 => [
            0,
            gdt_entry(0xa09b, 0, 0xfffff), // 64-bit code
            gdt_entry(0xc093, 0, 0xfffff), // data
            gdt_entry(0x808b, 0, 0xfffff), // TSS
        ],
        EntryProtocol::Pvh => [
            0,
            gdt_entry(0xc09b, 0, 0xffff_ffff), // 32-bit flat code
            gdt_entry(0xc093, 0, 0xffff_ffff), // flat data
            gdt_entry(0x008b, 0, 0x67),        // TSS
        ],
    }
}

/// Writes the GDT/IDT (and for long mode the page tables) into guest
/// memory and returns the special registers that use them.
pub fn boot_sregs(
    mem: &GuestMemoryMmap,
    protocol: EntryProtocol,
    mut sregs: kvm_sregs,
) -> Result<kvm_sregs, RegsError> {
    let gdt = boot_gdt(protocol);
    for (i, entry) in gdt.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(BOOT_GDT_START + i as u64 * 8))
            .map_err(|_| RegsError::WriteTables)?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(|_| RegsError::WriteTables)?;

    let code = segment_from_gdt(gdt[1], 1);
    let data = segment_from_gdt(gdt[2], 2);
    let tss = segment_from_gdt(gdt[3], 3);
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (gdt.len() * 8 - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;

    match protocol {
        EntryProtocol::Pvh => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
        EntryProtocol::Linux64 => {
            write_identity_page_tables(mem)?;
            sregs.cr3 = PML4_START;
            sregs.cr4 |= X86_CR4_PAE;
            sregs.cr0 |= X86_CR0_PE | X86_CR0_PG | X86_CR0_ET;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
    }
    Ok(sregs)
}

/// Identity-maps the first GiB with 2 MiB pages: enough for the kernel,
/// the zero page and the command line, which is all the 64-bit boot
/// protocol requires to be mapped.
fn write_identity_page_tables(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    let w = |val: u64, addr: u64| {
        mem.write_obj(val, GuestAddress(addr))
            .map_err(|_| RegsError::WriteTables)
    };
    w(PDPTE_START | 0x03, PML4_START)?;
    w(PDE_START | 0x03, PDPTE_START)?;
    for i in 0..512u64 {
        w((i << 21) | 0x83, PDE_START + i * 8)?;
    }
    Ok(())
}

/// The general registers at the kernel's entry point.
pub fn boot_regs(protocol: EntryProtocol, entry: GuestAddress) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: 0x2,
        rip: entry.raw_value(),
        ..Default::default()
    };
    match protocol {
        EntryProtocol::Pvh => regs.rbx = PVH_INFO_START,
        EntryProtocol::Linux64 => {
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
            regs.rsi = ZERO_PAGE_START;
        }
    }
    regs
}

/// Sets up the boot vCPU's registers, segments and FPU for `protocol`.
pub fn setup_boot_vcpu(
    vcpu: &VcpuFd,
    mem: &GuestMemoryMmap,
    protocol: EntryProtocol,
    entry: GuestAddress,
) -> Result<(), RegsError> {
    let kvm = |what| move |source| RegsError::Kvm { what, source };
    let sregs = vcpu.get_sregs().map_err(kvm("special registers"))?;
    let sregs = boot_sregs(mem, protocol, sregs)?;
    vcpu.set_sregs(&sregs).map_err(kvm("special registers"))?;
    vcpu.set_regs(&boot_regs(protocol, entry))
        .map_err(kvm("registers"))?;
    setup_fpu(vcpu)
}

/// Sets XCR0 (see [`super::cpuid::initial_xcr0`]).
pub fn setup_xcr0(vcpu: &VcpuFd, xcr0: u64) -> Result<(), RegsError> {
    let mut xcrs = kvm_bindings::kvm_xcrs {
        nr_xcrs: 1,
        ..Default::default()
    };
    xcrs.xcrs[0].xcr = 0;
    xcrs.xcrs[0].value = xcr0;
    vcpu.set_xcrs(&xcrs).map_err(|source| RegsError::Kvm {
        what: "XCR0",
        source,
    })
}

/// x87 and SSE control words as after FNINIT / reset.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(|source| RegsError::Kvm {
        what: "FPU state",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_round_trips_through_segments() {
        let code64 = segment_from_gdt(gdt_entry(0xa09b, 0, 0xfffff), 1);
        assert_eq!(code64.selector, 8);
        assert_eq!(
            (code64.l, code64.db, code64.g, code64.present),
            (1, 0, 1, 1)
        );
        assert_eq!(code64.type_, 0xb);
        assert_eq!(code64.limit, 0xffff_ffff);

        let code32 = segment_from_gdt(gdt_entry(0xc09b, 0, 0xffff_ffff), 1);
        assert_eq!((code32.l, code32.db), (0, 1));
        assert_eq!(code32.base, 0);

        let tss = segment_from_gdt(gdt_entry(0x008b, 0x1234_5678, 0x67), 3);
        assert_eq!(tss.base, 0x1234_5678);
        assert_eq!(tss.limit, 0x67);
        assert_eq!(tss.selector, 24);
        assert_eq!(segment_from_gdt(0, 0).unusable, 1);
    }

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    #[test]
    fn long_mode_sregs_and_page_tables() {
        let mem = mem();
        let s = boot_sregs(&mem, EntryProtocol::Linux64, kvm_sregs::default()).unwrap();
        assert_eq!(s.cr3, PML4_START);
        assert_ne!(s.cr0 & X86_CR0_PG, 0);
        assert_ne!(s.efer & EFER_LMA, 0);
        assert_eq!(s.cs.l, 1);
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, PDPTE_START | 3);
        let last: u64 = mem.read_obj(GuestAddress(PDE_START + 511 * 8)).unwrap();
        assert_eq!(last, (511 << 21) | 0x83);
        let regs = boot_regs(EntryProtocol::Linux64, GuestAddress(0x100_0000));
        assert_eq!((regs.rip, regs.rsi), (0x100_0000, ZERO_PAGE_START));
    }

    #[test]
    fn pvh_is_flat_protected_mode_without_paging() {
        let mem = mem();
        let s = boot_sregs(&mem, EntryProtocol::Pvh, kvm_sregs::default()).unwrap();
        assert_eq!(s.cr0, X86_CR0_PE | X86_CR0_ET);
        assert_eq!((s.cr4, s.efer), (0, 0));
        assert_eq!((s.cs.db, s.cs.l, s.cs.limit), (1, 0, 0xffff_ffff));
        let regs = boot_regs(EntryProtocol::Pvh, GuestAddress(0x100_0200));
        assert_eq!((regs.rip, regs.rbx), (0x100_0200, PVH_INFO_START));
    }
}
