//! Guest RAM: anonymous host memory, mapped lazily (MAP_NORESERVE), split
//! around the 32-bit MMIO gap, each part 2 MiB-aligned in the host and
//! advised for transparent huge pages (KVM maps a huge page only where
//! guest and host addresses agree modulo 2 MiB). With a vhost-user
//! device, RAM is a memfd instead (MAP_SHARED), so the backend process
//! can map it too.

use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use vm_memory::mmap::{FromRangesError, MmapRegionBuilder};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap};

use crate::arch::layout::{MMIO_GAP_END, MMIO_GAP_START};

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("memory_mib {requested} is more than this host has ({host} MiB of RAM)")]
    MoreThanHost { requested: u64, host: u64 },
    #[error("memory_mib {0} is too small: a Linux guest needs at least {min} MiB", min = crate::config::MIN_MEMORY_MIB)]
    TooSmall(u64),
    #[error("cannot read the host's memory size from /proc/meminfo: {0}")]
    HostInfo(std::io::Error),
    #[error("cannot map {0} MiB of guest memory: {1}")]
    Map(u64, vm_memory::mmap::FromRangesError),
    #[error("cannot create {0} MiB of shareable guest memory (memfd): {1}")]
    Memfd(u64, std::io::Error),
    #[error("cannot reserve {0} MiB of host address space for guest memory: {1}")]
    Reserve(u64, std::io::Error),
}

/// Transparent huge pages are 2 MiB on x86_64.
const HUGE_PAGE: usize = 2 << 20;

/// Host mappings this module made itself (aligned anonymous RAM), unmapped
/// when the last holder drops them. vm-memory does not unmap memory it did
/// not map, so whatever may hold a clone of the [`GuestMemoryMmap`] past
/// the `Vm` (vCPU threads, the state dumper) holds one of these too.
#[derive(Debug, Default)]
pub struct HostMappings(Vec<(usize, usize)>);

impl Drop for HostMappings {
    fn drop(&mut self) {
        for &(addr, len) in &self.0 {
            // SAFETY: a mapping `map_aligned` made and nothing else unmaps;
            // the holders of guest memory over it are gone (see above).
            unsafe { libc::munmap(addr as *mut libc::c_void, len) };
        }
    }
}

/// Guest memory and what keeps it mapped.
#[derive(Debug)]
pub struct GuestRam {
    pub mem: GuestMemoryMmap,
    pub mappings: Arc<HostMappings>,
}

const RAM_PROT: i32 = libc::PROT_READ | libc::PROT_WRITE;
const RAM_FLAGS: i32 = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;

/// Maps `len` bytes of anonymous memory starting on a 2 MiB boundary:
/// maps 2 MiB more than asked and trims both ends.
fn map_aligned(len: usize) -> std::io::Result<usize> {
    let padded = len
        .checked_add(HUGE_PAGE)
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOMEM))?;
    // SAFETY: a new private anonymous mapping where the kernel chooses;
    // nothing existing is touched. The result is checked.
    let raw = unsafe { libc::mmap(std::ptr::null_mut(), padded, RAM_PROT, RAM_FLAGS, -1, 0) };
    if raw == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let start = raw as usize;
    let aligned = start.next_multiple_of(HUGE_PAGE);
    let (head, tail) = (aligned - start, start + padded - (aligned + len));
    // SAFETY: both ranges lie inside the mapping just made and outside
    // [aligned, aligned + len), which is what we keep; munmap of a zero
    // length is skipped.
    unsafe {
        if head > 0 {
            libc::munmap(raw, head);
        }
        if tail > 0 {
            libc::munmap((aligned + len) as *mut libc::c_void, tail);
        }
        // Advice only: without THP the memory works the same.
        libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
    }
    Ok(aligned)
}

/// Anonymous guest RAM for `ranges`, each range 2 MiB-aligned in the host.
fn anonymous_ram(mib: u64, ranges: &[(GuestAddress, usize)]) -> Result<GuestRam, MemoryError> {
    let mut mappings = HostMappings::default();
    let mut regions = Vec::with_capacity(ranges.len());
    for &(guest, len) in ranges {
        let addr = map_aligned(len).map_err(|e| MemoryError::Reserve(mib, e))?;
        mappings.0.push((addr, len));
        // SAFETY: [addr, addr + len) is the live mapping just made, owned
        // by `mappings`, which outlives every user of the region (above).
        let builder = unsafe {
            MmapRegionBuilder::new(len)
                .with_mmap_prot(RAM_PROT)
                .with_mmap_flags(RAM_FLAGS)
                .with_raw_mmap_pointer(addr as *mut u8)
        };
        let region = builder
            .build()
            .map_err(|e| MemoryError::Map(mib, FromRangesError::MmapRegion(e)))?;
        let region = GuestRegionMmap::new(region, guest)
            .ok_or(MemoryError::Map(mib, FromRangesError::InvalidGuestRegion))?;
        regions.push(region);
    }
    let mem = GuestMemoryMmap::from_regions(regions)
        .map_err(|e| MemoryError::Map(mib, FromRangesError::Collection(e)))?;
    Ok(GuestRam {
        mem,
        mappings: Arc::new(mappings),
    })
}

/// The host ranges backing `size` bytes of guest RAM.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, usize)> {
    if size <= MMIO_GAP_START {
        vec![(GuestAddress(0), size as usize)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START as usize),
            (GuestAddress(MMIO_GAP_END), (size - MMIO_GAP_START) as usize),
        ]
    }
}

/// Total RAM of the host in MiB (MemTotal).
pub fn host_ram_mib() -> Result<u64, MemoryError> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").map_err(MemoryError::HostInfo)?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib / 1024)
        .ok_or_else(|| MemoryError::HostInfo(std::io::Error::other("no MemTotal line")))
}

/// Checks that `mib` is a size this host could ever back. Memory is
/// mapped lazily, so this rejects the impossible, not the merely large.
pub fn check_size(mib: u64, host_mib: u64) -> Result<(), MemoryError> {
    if mib < crate::config::MIN_MEMORY_MIB {
        return Err(MemoryError::TooSmall(mib));
    }
    if mib > host_mib {
        return Err(MemoryError::MoreThanHost {
            requested: mib,
            host: host_mib,
        });
    }
    Ok(())
}

/// Maps guest RAM of `mib` MiB. The size must already have passed
/// [`check_size`] (`Vm::new` checks it before taking any host resource).
/// `shared` backs it with one memfd (for vhost-user backends); anonymous
/// memory otherwise (quicker to set up and tear down, and huge pages).
pub fn create_guest_memory(mib: u64, shared: bool) -> Result<GuestRam, MemoryError> {
    let ranges = ram_ranges(mib << 20);
    if !shared {
        return anonymous_ram(mib, &ranges);
    }
    let file = Arc::new(memfd(mib << 20).map_err(|e| MemoryError::Memfd(mib, e))?);
    let mut offset = 0u64;
    let with_files: Vec<_> = ranges
        .iter()
        .map(|&(addr, len)| {
            let r = (addr, len, Some(FileOffset::from_arc(file.clone(), offset)));
            offset += len as u64;
            r
        })
        .collect();
    let mem = GuestMemoryMmap::from_ranges_with_files(with_files)
        .map_err(|e| MemoryError::Map(mib, e))?;
    // vm-memory mapped (and will unmap) these itself.
    Ok(GuestRam {
        mem,
        mappings: Arc::default(),
    })
}

/// A memfd of `size` bytes (sparse: pages are allocated when touched).
fn memfd(size: u64) -> std::io::Result<File> {
    // SAFETY: a valid NUL-terminated name and flags; the result is checked.
    let fd = unsafe { libc::memfd_create(c"mvm-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

    #[test]
    fn ranges_skip_the_gap() {
        assert_eq!(ram_ranges(256 << 20), vec![(GuestAddress(0), 256 << 20)]);
        assert_eq!(ram_ranges(3 << 30).len(), 1);
        let r = ram_ranges(4 << 30);
        assert_eq!(r[1], (GuestAddress(4 << 30), 1 << 30));
    }

    #[test]
    fn sizes_are_checked() {
        assert!(matches!(check_size(0, 1024), Err(MemoryError::TooSmall(0))));
        assert!(matches!(
            check_size(2048, 1024),
            Err(MemoryError::MoreThanHost { .. })
        ));
        check_size(1024, 1024).unwrap();
        assert!(host_ram_mib().unwrap() > 0);
    }

    #[test]
    fn large_guest_maps_lazily_above_4g() {
        // Mapped lazily: hosts with less RAM exercise the layout too.
        let ram = create_guest_memory(4096 + 64, false).unwrap();
        let mem = &ram.mem;
        assert_eq!(mem.num_regions(), 2);
        let high = mem.iter().nth(1).unwrap();
        assert_eq!(high.start_addr(), GuestAddress(MMIO_GAP_END));
        assert!(high.file_offset().is_none());
    }

    #[test]
    fn anonymous_ram_is_2mib_aligned_and_usable() {
        use vm_memory::Bytes;
        let ram = create_guest_memory(4096 + 64, false).unwrap();
        for region in ram.mem.iter() {
            let host = ram.mem.get_host_address(region.start_addr()).unwrap() as usize;
            assert_eq!(host % HUGE_PAGE, 0, "region at {:?}", region.start_addr());
        }
        ram.mem
            .write_obj(0x5au8, GuestAddress(MMIO_GAP_END + 4095))
            .unwrap();
        let last = GuestAddress(MMIO_GAP_END + (64 << 20) - 1);
        ram.mem.write_obj(0xa5u8, last).unwrap();
        assert_eq!(ram.mem.read_obj::<u8>(last).unwrap(), 0xa5);
    }

    #[test]
    fn shared_memory_is_one_memfd_at_consecutive_offsets() {
        use vm_memory::Bytes;
        let ram = create_guest_memory(4096 + 64, true).unwrap();
        let mem = &ram.mem;
        let regions: Vec<_> = mem.iter().collect();
        let (low, high) = (regions[0], regions[1]);
        let (lf, hf) = (low.file_offset().unwrap(), high.file_offset().unwrap());
        assert!(Arc::ptr_eq(lf.arc(), hf.arc()));
        assert_eq!((lf.start(), hf.start()), (0, MMIO_GAP_START));
        assert_eq!(lf.file().metadata().unwrap().len(), (4096 + 64) << 20);
        // Writes through the mapping are in the file (MAP_SHARED).
        mem.write_obj(0xabcdu16, GuestAddress(MMIO_GAP_END))
            .unwrap();
        let mut b = [0u8; 2];
        std::os::unix::fs::FileExt::read_exact_at(hf.file(), &mut b, MMIO_GAP_START).unwrap();
        assert_eq!(u16::from_le_bytes(b), 0xabcd);
    }
}
