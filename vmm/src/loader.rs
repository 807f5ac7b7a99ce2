//! Loading the kernel, the initramfs and the command line into guest
//! memory (linux-loader does the parsing of the kernel formats).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::{BzImage, Elf, KernelLoader};
use vm_memory::{Address, GuestAddress, GuestMemoryMmap, ReadVolatile};

use crate::arch::boot_params::InitrdPlacement;
use crate::arch::layout::{CMDLINE_MAX_SIZE, CMDLINE_START, HIMEM_START, MMIO_GAP_START};
use crate::arch::regs::EntryProtocol;

/// bzImage `xloadflags` bit: the kernel has a 64-bit entry point.
const XLF_KERNEL_64: u16 = 1;
/// The 64-bit entry sits 0x200 bytes into the protected-mode kernel.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// Keep the initramfs below 2 GiB: older kernels' `initrd_addr_max`.
const INITRD_ADDR_MAX: u64 = 0x8000_0000;
const PAGE: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("kernel {0} does not exist")]
    KernelMissing(PathBuf),
    #[error("cannot read kernel {0}: {1}")]
    KernelUnreadable(PathBuf, std::io::Error),
    #[error("{0} is not a kernel: expected an x86_64 ELF vmlinux or a bzImage")]
    NotAKernel(PathBuf),
    #[error("bzImage {0} has no 64-bit entry point")]
    Not64Bit(PathBuf),
    #[error("cannot load kernel {0}: {1} (is guest memory large enough?)")]
    Kernel(PathBuf, linux_loader::loader::Error),
    #[error("initrd {0} does not exist")]
    InitrdMissing(PathBuf),
    #[error("cannot read initrd {0}: {1}")]
    InitrdUnreadable(PathBuf, std::io::Error),
    #[error("initrd {path} ({size} bytes) does not fit in guest memory above the kernel; give the VM more memory (memory_mib)")]
    InitrdTooBig { path: PathBuf, size: u64 },
    #[error("invalid kernel command line: {0}")]
    Cmdline(String),
}

/// Where and how the boot vCPU enters the loaded kernel.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    pub entry: GuestAddress,
    pub protocol: EntryProtocol,
    /// The bzImage setup header, to be copied into the zero page.
    pub setup_header: Option<setup_header>,
    /// First byte after the kernel image.
    pub end: u64,
}

fn open_kernel(path: &Path) -> Result<File, LoadError> {
    File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => LoadError::KernelMissing(path.to_path_buf()),
        _ => LoadError::KernelUnreadable(path.to_path_buf(), e),
    })
}

fn open_initrd(path: &Path) -> Result<File, LoadError> {
    File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => LoadError::InitrdMissing(path.to_path_buf()),
        _ => LoadError::InitrdUnreadable(path.to_path_buf(), e),
    })
}

/// The kernel image formats we boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    Elf,
    BzImage,
}

/// Opens the kernel and tells its format from its magic numbers, without
/// loading it: the cheap check done before any host resources are taken.
pub fn probe_kernel(path: &Path) -> Result<(File, KernelFormat), LoadError> {
    let mut file = open_kernel(path)?;
    let unreadable = |e| LoadError::KernelUnreadable(path.to_path_buf(), e);
    if file.metadata().map_err(unreadable)?.is_dir() {
        return Err(LoadError::NotAKernel(path.to_path_buf()));
    }
    let mut magic = [0u8; 4];
    let is_elf = file.read_exact(&mut magic).is_ok() && magic == *b"\x7fELF";
    let mut hdrs = [0u8; 4];
    let is_bzimage = file.seek(SeekFrom::Start(0x202)).is_ok()
        && file.read_exact(&mut hdrs).is_ok()
        && hdrs == *b"HdrS";
    file.rewind().map_err(unreadable)?;
    match (is_elf, is_bzimage) {
        (true, _) => Ok((file, KernelFormat::Elf)),
        (false, true) => Ok((file, KernelFormat::BzImage)),
        _ => Err(LoadError::NotAKernel(path.to_path_buf())),
    }
}

/// Checks the initramfs exists and is a readable file.
pub fn probe_initrd(path: &Path) -> Result<(), LoadError> {
    let meta = open_initrd(path)?
        .metadata()
        .map_err(|e| LoadError::InitrdUnreadable(path.to_path_buf(), e))?;
    if meta.is_dir() {
        return Err(LoadError::InitrdUnreadable(
            path.to_path_buf(),
            std::io::Error::other("it is a directory"),
        ));
    }
    Ok(())
}

/// Loads an ELF vmlinux (PVH entry when it has the note) or a bzImage.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, LoadError> {
    let (mut file, format) = probe_kernel(path)?;
    let is_elf = format == KernelFormat::Elf;
    let highmem = Some(GuestAddress(HIMEM_START));
    if is_elf {
        let r = Elf::load(mem, None, &mut file, highmem)
            .map_err(|e| LoadError::Kernel(path.to_path_buf(), e))?;
        let (entry, protocol) = match r.pvh_boot_cap {
            PvhBootCapability::PvhEntryPresent(addr) => (addr, EntryProtocol::Pvh),
            _ => (r.kernel_load, EntryProtocol::Linux64),
        };
        Ok(LoadedKernel {
            entry,
            protocol,
            setup_header: None,
            end: r.kernel_end,
        })
    } else {
        let r = BzImage::load(mem, None, &mut file, highmem)
            .map_err(|e| LoadError::Kernel(path.to_path_buf(), e))?;
        let hdr = r
            .setup_header
            .ok_or(LoadError::NotAKernel(path.to_path_buf()))?;
        if hdr.xloadflags & XLF_KERNEL_64 == 0 {
            return Err(LoadError::Not64Bit(path.to_path_buf()));
        }
        Ok(LoadedKernel {
            entry: r
                .kernel_load
                .checked_add(BZIMAGE_64BIT_ENTRY_OFFSET)
                .ok_or(LoadError::NotAKernel(path.to_path_buf()))?,
            protocol: EntryProtocol::Linux64,
            setup_header: Some(hdr),
            end: r.kernel_end,
        })
    }
}

/// Places the initramfs page-aligned at the top of low memory, above the
/// kernel.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    ram_size: u64,
    kernel_end: u64,
    path: &Path,
) -> Result<InitrdPlacement, LoadError> {
    let mut file = open_initrd(path)?;
    let unreadable = |e| LoadError::InitrdUnreadable(path.to_path_buf(), e);
    let meta = file.metadata().map_err(unreadable)?;
    if meta.is_dir() {
        return Err(unreadable(std::io::Error::other("it is a directory")));
    }
    let size = meta.len();
    let too_big = || LoadError::InitrdTooBig {
        path: path.to_path_buf(),
        size,
    };
    let top = ram_size.min(MMIO_GAP_START).min(INITRD_ADDR_MAX);
    let addr = top.checked_sub(size).ok_or_else(too_big)? & !(PAGE - 1);
    if addr < kernel_end.max(HIMEM_START) {
        return Err(too_big());
    }
    let len = usize::try_from(size).map_err(|_| too_big())?;
    read_into(mem, GuestAddress(addr), &mut file, len).map_err(unreadable)?;
    Ok(InitrdPlacement { addr, size })
}

fn read_into<F: ReadVolatile>(
    mem: &GuestMemoryMmap,
    addr: GuestAddress,
    file: &mut F,
    len: usize,
) -> std::io::Result<()> {
    use vm_memory::Bytes;
    mem.read_exact_volatile_from(addr, file, len)
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// Builds the command line, checking it fits the space we give it.
pub fn build_cmdline(text: &str) -> Result<Cmdline, LoadError> {
    let mut cmdline =
        Cmdline::new(CMDLINE_MAX_SIZE).map_err(|e| LoadError::Cmdline(e.to_string()))?;
    cmdline
        .insert_str(text)
        .map_err(|e| LoadError::Cmdline(format!("{e} (at most {} bytes)", CMDLINE_MAX_SIZE - 1)))?;
    Ok(cmdline)
}

pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &Cmdline) -> Result<usize, LoadError> {
    linux_loader::loader::load_cmdline(mem, GuestAddress(CMDLINE_START), cmdline)
        .map_err(|e| LoadError::Cmdline(e.to_string()))?;
    let len = cmdline
        .as_cstring()
        .map(|c| c.as_bytes().len())
        .map_err(|e| LoadError::Cmdline(e.to_string()))?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap()
    }

    fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mvm-loader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
        p
    }

    #[test]
    fn rejects_missing_and_non_kernels() {
        let m = mem();
        assert!(matches!(
            load_kernel(&m, Path::new("/nonexistent/vmlinux")),
            Err(LoadError::KernelMissing(_))
        ));
        let junk = temp_file("junk", b"hello, not a kernel at all");
        assert!(matches!(
            load_kernel(&m, &junk),
            Err(LoadError::NotAKernel(_))
        ));
        let empty = temp_file("empty", b"");
        assert!(matches!(
            load_kernel(&m, &empty),
            Err(LoadError::NotAKernel(_))
        ));
        assert!(matches!(
            load_kernel(&m, Path::new("/tmp")),
            Err(LoadError::NotAKernel(_))
        ));
        // An ELF header that is truncated is an error, not a panic.
        let bad_elf = temp_file("bad-elf", b"\x7fELF\x02\x01\x01");
        assert!(matches!(
            load_kernel(&m, &bad_elf),
            Err(LoadError::Kernel(..))
        ));
    }

    #[test]
    fn initrd_goes_to_the_top_and_must_fit() {
        let m = mem();
        let p = temp_file("initrd", &[0xab; 10_000]);
        let placed = load_initrd(&m, 64 << 20, 0x200_0000, &p).unwrap();
        assert_eq!(placed.size, 10_000);
        assert_eq!(placed.addr % PAGE, 0);
        assert!(placed.addr + placed.size <= 64 << 20);
        use vm_memory::Bytes;
        let b: u8 = m.read_obj(GuestAddress(placed.addr + 9_999)).unwrap();
        assert_eq!(b, 0xab);

        assert!(matches!(
            load_initrd(&m, 64 << 20, (64 << 20) - 4096, &p),
            Err(LoadError::InitrdTooBig { .. })
        ));
        assert!(matches!(
            load_initrd(&m, 64 << 20, 0, Path::new("/nonexistent/initrd")),
            Err(LoadError::InitrdMissing(_))
        ));
    }

    #[test]
    fn cmdline_is_bounded() {
        assert!(build_cmdline("console=ttyS0").is_ok());
        assert!(matches!(
            build_cmdline(&"x".repeat(CMDLINE_MAX_SIZE + 10)),
            Err(LoadError::Cmdline(_))
        ));
    }
}
