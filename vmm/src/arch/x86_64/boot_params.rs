//! What the kernel is told at entry: the memory map, and either the Linux
//! zero page (64-bit boot protocol) or the PVH `hvm_start_info`.

use linux_loader::configurator::{
    linux::LinuxBootConfigurator, pvh::PvhBootConfigurator, BootConfigurator, BootParams,
};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::layout::*;

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT: u32 = 0x100_0000;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

#[derive(Debug, thiserror::Error)]
pub enum BootParamsError {
    #[error("the memory map has {0} entries, more than the zero page holds")]
    TooManyRegions(usize),
    #[error("cannot write the boot parameters into guest memory: {0}")]
    Write(linux_loader::configurator::Error),
}

/// One range of the guest's physical memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRange {
    pub addr: u64,
    pub size: u64,
    pub ram: bool,
}

/// The memory map for `ram_size` bytes of RAM laid out as in
/// [`crate::memory`]: low RAM, the EBDA and legacy hole reserved, RAM from
/// 1 MiB to the MMIO gap, and the rest above 4 GiB.
pub fn memory_map(ram_size: u64) -> Vec<MemoryRange> {
    let mut map = vec![
        MemoryRange {
            addr: 0,
            size: EBDA_START,
            ram: true,
        },
        MemoryRange {
            addr: EBDA_START,
            size: HIMEM_START - EBDA_START,
            ram: false,
        },
    ];
    let low_end = ram_size.min(MMIO_GAP_START);
    if low_end > HIMEM_START {
        map.push(MemoryRange {
            addr: HIMEM_START,
            size: low_end - HIMEM_START,
            ram: true,
        });
    }
    if ram_size > MMIO_GAP_START {
        map.push(MemoryRange {
            addr: MMIO_GAP_END,
            size: ram_size - MMIO_GAP_START,
            ram: true,
        });
    }
    map
}

/// Where the initramfs was put, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitrdPlacement {
    pub addr: u64,
    pub size: u64,
}

/// Fills and writes the Linux zero page for the 64-bit boot protocol.
/// `header` is the bzImage's setup header, or `None` for an ELF vmlinux;
/// `rsdp_addr` the ACPI RSDP (kernels with ACPI use it instead of
/// scanning the BIOS area).
pub fn write_zero_page(
    mem: &GuestMemoryMmap,
    ram_size: u64,
    header: Option<setup_header>,
    cmdline_len: usize,
    initrd: Option<InitrdPlacement>,
    rsdp_addr: u64,
) -> Result<(), BootParamsError> {
    let mut params = boot_params::default();
    if let Some(h) = header {
        params.hdr = h;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    params.acpi_rsdp_addr = rsdp_addr;
    if params.hdr.kernel_alignment == 0 {
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT;
    }
    if let Some(i) = initrd {
        params.hdr.ramdisk_image = i.addr as u32;
        params.hdr.ramdisk_size = i.size as u32;
    }

    let map = memory_map(ram_size);
    if map.len() > params.e820_table.len() {
        return Err(BootParamsError::TooManyRegions(map.len()));
    }
    for (slot, r) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: r.addr,
            size: r.size,
            r#type: if r.ram { E820_RAM } else { E820_RESERVED },
        };
    }
    params.e820_entries = map.len() as u8;

    LinuxBootConfigurator::write_bootparams(
        &BootParams::new(&params, GuestAddress(ZERO_PAGE_START)),
        mem,
    )
    .map_err(BootParamsError::Write)
}

/// Fills and writes `hvm_start_info`, its memory map and the initramfs as
/// its one module, for the PVH entry.
pub fn write_pvh_start_info(
    mem: &GuestMemoryMmap,
    ram_size: u64,
    initrd: Option<InitrdPlacement>,
    rsdp_addr: u64,
) -> Result<(), BootParamsError> {
    let map: Vec<hvm_memmap_table_entry> = memory_map(ram_size)
        .iter()
        .map(|r| hvm_memmap_table_entry {
            addr: r.addr,
            size: r.size,
            type_: if r.ram { E820_RAM } else { E820_RESERVED },
            reserved: 0,
        })
        .collect();
    let memmap_bytes = (map.len() * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
    let modlist_addr = PVH_MEMMAP_START + memmap_bytes;

    let mut start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: map.len() as u32,
        rsdp_paddr: rsdp_addr,
        ..Default::default()
    };
    let mut params = BootParams::new(&start_info, GuestAddress(PVH_INFO_START));
    params.set_sections(&map, GuestAddress(PVH_MEMMAP_START));
    if let Some(i) = initrd {
        start_info.nr_modules = 1;
        start_info.modlist_paddr = modlist_addr;
        params = BootParams::new(&start_info, GuestAddress(PVH_INFO_START));
        params.set_sections(&map, GuestAddress(PVH_MEMMAP_START));
        params.set_modules(
            &[hvm_modlist_entry {
                paddr: i.addr,
                size: i.size,
                ..Default::default()
            }],
            GuestAddress(modlist_addr),
        );
    }
    PvhBootConfigurator::write_bootparams(&params, mem).map_err(BootParamsError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    const MIB: u64 = 1 << 20;

    #[test]
    fn small_guest_has_no_high_memory() {
        let map = memory_map(256 * MIB);
        assert_eq!(map.len(), 3);
        assert_eq!(map[2].addr, HIMEM_START);
        assert_eq!(map[2].size, 255 * MIB);
        assert!(!map[1].ram);
        let ram: u64 = map.iter().filter(|r| r.ram).map(|r| r.size).sum();
        assert_eq!(ram, 256 * MIB - (HIMEM_START - EBDA_START));
    }

    #[test]
    fn large_guest_continues_above_the_gap() {
        let map = memory_map(5 << 30);
        assert_eq!(map.len(), 4);
        assert_eq!(map[2].addr + map[2].size, MMIO_GAP_START);
        assert_eq!(map[3].addr, MMIO_GAP_END);
        assert_eq!(map[3].size, (5 << 30) - MMIO_GAP_START);
        // No RAM range overlaps the MMIO gap.
        assert!(map
            .iter()
            .all(|r| r.addr + r.size <= MMIO_GAP_START || r.addr >= MMIO_GAP_END));
    }

    #[test]
    fn zero_page_carries_cmdline_initrd_and_e820() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let initrd = InitrdPlacement {
            addr: 0x80_0000,
            size: 0x1234,
        };
        write_zero_page(&mem, 64 * MIB, None, 42, Some(initrd), 0xe_0000).unwrap();
        let p: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ p.hdr.boot_flag }, KERNEL_BOOT_FLAG_MAGIC);
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ p.hdr.cmdline_size }, 42);
        assert_eq!({ p.hdr.ramdisk_image }, 0x80_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 0x1234);
        assert_eq!({ p.acpi_rsdp_addr }, 0xe_0000);
        assert_eq!(p.e820_entries, 3);
        assert_eq!({ p.e820_table[2].size }, 63 * MIB);
    }

    #[test]
    fn pvh_start_info_points_at_map_and_module() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let initrd = InitrdPlacement {
            addr: 0x80_0000,
            size: 0x999,
        };
        write_pvh_start_info(&mem, 5 << 30, Some(initrd), 0xe_0000).unwrap();
        let si: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_START)).unwrap();
        assert_eq!(si.magic, XEN_HVM_START_MAGIC);
        assert_eq!(si.memmap_entries, 4);
        assert_eq!(si.rsdp_paddr, 0xe_0000);
        assert_eq!(si.nr_modules, 1);
        let m: hvm_modlist_entry = mem.read_obj(GuestAddress(si.modlist_paddr)).unwrap();
        assert_eq!((m.paddr, m.size), (0x80_0000, 0x999));
        let last: hvm_memmap_table_entry = mem
            .read_obj(GuestAddress(si.memmap_paddr + 3 * 24))
            .unwrap();
        assert_eq!(last.addr, MMIO_GAP_END);
        // The module list must not run into the zero page area.
        assert!(si.modlist_paddr + 32 <= ZERO_PAGE_START);
    }
}
