//! Where things live in guest physical memory. Everything below 1 MiB
//! follows the PC conventions the Linux boot protocols expect.

/// The GDT and IDT the vCPUs start with.
pub const BOOT_GDT_START: u64 = 0x500;
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info` and its memory map right after it.
pub const PVH_INFO_START: u64 = 0x6000;
pub const PVH_MEMMAP_START: u64 = 0x6040;
/// The Linux zero page (`boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack of the boot vCPU for the 64-bit protocol (grows down).
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity-mapped page tables for the 64-bit protocol: PML4, PDPT, PD.
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
/// The kernel command line, and its maximum size including the NUL.
pub const CMDLINE_START: u64 = 0x20000;
pub const CMDLINE_MAX_SIZE: usize = 4096;
/// The Extended BIOS Data Area: the MP table goes here, and memory from
/// here to 1 MiB is reported as reserved.
pub const EBDA_START: u64 = 0x9fc00;
/// The kernel is loaded at or above 1 MiB.
pub const HIMEM_START: u64 = 0x10_0000;
/// The BIOS warm-reset flag word: Linux writes 0x1234 here before a warm
/// reboot, which we use to tell a panic reboot from a clean one.
pub const BIOS_RESET_FLAG: u64 = 0x472;

/// The 32-bit hole for device MMIO: [3 GiB, 4 GiB). RAM beyond 3 GiB
/// continues at 4 GiB.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// virtio-mmio device windows are handed out from here, one page each.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
/// Local APIC and IO-APIC, which KVM's in-kernel irqchip emulates.
pub const IOAPIC_START: u64 = 0xfec0_0000;
pub const APIC_START: u64 = 0xfee0_0000;

/// IRQ lines for virtio devices: 5 onwards, skipping the legacy ones we
/// use (4 is COM1). The IO-APIC has 24 pins.
pub const IRQ_BASE: u32 = 5;
pub const IRQ_MAX: u32 = 23;
