//! The kernel and initramfs loader (`vmm::loader`) with hostile images:
//! `probe_kernel` and `load_kernel` (ELF vmlinux with or without the PVH
//! note, bzImage) into 8 MiB of guest memory, then the initramfs placement
//! and the boot structures built from what was loaded (the zero page with
//! the bzImage's own setup header, the PVH start info).
//!
//! Input: byte 0 flags (bit 0: stamp the ELF magic on the image, bit 1:
//! stamp `HdrS` at 0x202 (padding the image to reach it), bit 2: load an
//! initramfs), bytes 1-2 the initramfs length (u16 LE, taken from the end
//! of the input), the rest the kernel image.
//!
//! Checks: no panic; a loaded initramfs lies whole in guest memory, above
//! the kernel and HIMEM_START.

use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm::arch::boot_params::{write_pvh_start_info, write_zero_page};
use vmm::arch::layout::HIMEM_START;
use vmm::loader::{load_initrd, load_kernel, probe_initrd, probe_kernel};

const RAM: u64 = 8 << 20;

pub fn run(data: &[u8]) {
    let Some((&[flags, lo, hi], rest)) = data.split_first_chunk::<3>() else {
        return;
    };
    let initrd_len = usize::from(u16::from_le_bytes([lo, hi])).min(rest.len());
    let (image, initrd) = rest.split_at(rest.len() - initrd_len);
    let mut image = image.to_vec();
    if flags & 1 != 0 && image.len() >= 4 {
        image[..4].copy_from_slice(b"\x7fELF");
    }
    if flags & 2 != 0 {
        if image.len() < 0x206 {
            image.resize(0x206, 0);
        }
        image[0x202..0x206].copy_from_slice(b"HdrS");
    }

    let dir = tempfile::tempdir().unwrap();
    let (kernel, initramfs) = (dir.path().join("kernel"), dir.path().join("initrd"));
    std::fs::write(&kernel, &image).unwrap();
    std::fs::write(&initramfs, initrd).unwrap();
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();

    let _ = probe_kernel(&kernel);
    let _ = probe_initrd(&initramfs);
    let Ok(k) = load_kernel(&mem, &kernel) else {
        return;
    };
    let placed = if flags & 4 != 0 {
        load_initrd(&mem, RAM, k.end, &initramfs).ok()
    } else {
        None
    };
    if let Some(p) = placed {
        assert!(
            p.addr >= k.end.max(HIMEM_START),
            "the initramfs overlaps the kernel"
        );
        assert!(
            p.addr + p.size <= RAM,
            "the initramfs is past the end of memory"
        );
    }
    let _ = write_zero_page(&mem, RAM, k.setup_header, 0, placed, 0);
    let _ = write_pvh_start_info(&mem, RAM, placed, 0);
}
