//! Guest RAM: anonymous host memory, mapped lazily (MAP_NORESERVE), split
//! around the 32-bit MMIO gap. With a vhost-user device, RAM is a memfd
//! instead (MAP_SHARED), so the backend process can map it too.

use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap};

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
/// memory otherwise (quicker to set up and tear down).
pub fn create_guest_memory(mib: u64, shared: bool) -> Result<GuestMemoryMmap, MemoryError> {
    let ranges = ram_ranges(mib << 20);
    if !shared {
        return GuestMemoryMmap::from_ranges(&ranges).map_err(|e| MemoryError::Map(mib, e));
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
    GuestMemoryMmap::from_ranges_with_files(with_files).map_err(|e| MemoryError::Map(mib, e))
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
        let mem = create_guest_memory(4096 + 64, false).unwrap();
        assert_eq!(mem.num_regions(), 2);
        let high = mem.iter().nth(1).unwrap();
        assert_eq!(high.start_addr(), GuestAddress(MMIO_GAP_END));
        assert!(high.file_offset().is_none());
    }

    #[test]
    fn shared_memory_is_one_memfd_at_consecutive_offsets() {
        use vm_memory::Bytes;
        let mem = create_guest_memory(4096 + 64, true).unwrap();
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
