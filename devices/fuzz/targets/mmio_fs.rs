//! Feeds arbitrary register accesses, guest memory writes and queue runs
//! to a virtio-mmio transport with a virtio-fs device behind it (a
//! copy-on-write share over real temporary directories): descriptor chains
//! the guest controls reach the device's chain parsing, the zero-copy
//! READ/WRITE path (`pwritev`/`preadv` on guest memory), the lazy
//! high-priority queue and the notifications served on the calling thread.
//! Checks that nothing panics and the lower directory never changes.
//!
//! Input: a sequence of operations, each one opcode byte (low 2 bits):
//! - 0 write:  offset u16, width u8, value u64 (all little endian); a
//!   QueueNotify write serves the queue right there (as on a vCPU)
//! - 1 read:   offset u16, width u8
//! - 2 memory: addr u16, len u8, then `len` bytes written to guest memory
//! - 3 run queue `op >> 2 & 1` (as the event loop would)
//!
//! Widths: `w & 3` selects 1/2/4/8 bytes, unless bit 7 is set, in which
//! case `w & 15` bytes (0..=15, including nonsense widths) are used.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use devices::bus::{lock, BusDevice};
use devices::virtio::fs::{Fs, ShareConfig, ShareMode};
use devices::virtio::{Interrupt, MmioTransport, VirtioDevice};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

#[path = "input.rs"]
mod input;
use input::Input;

struct Fixture {
    base: PathBuf,
    lower: PathBuf,
    lower_state: Vec<(PathBuf, Vec<u8>)>,
}

/// Every file under `dir` with its contents (directories and links as
/// empty entries), sorted.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let (path, kind) = (e.path(), e.file_type().unwrap());
            if kind.is_dir() {
                todo.push(path.clone());
            }
            let data = if kind.is_file() {
                std::fs::read(&path).unwrap()
            } else {
                Vec::new()
            };
            out.push((path, data));
        }
    }
    out.sort();
    out
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let parent = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        // Fixtures of earlier runs (libFuzzer exits without destructors).
        for e in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("mmio-fs-fuzz-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let base = parent.join(format!("mmio-fs-fuzz-{}", std::process::id()));
        let lower = base.join("lower");
        std::fs::create_dir_all(lower.join("dir")).unwrap();
        std::fs::write(lower.join("a"), b"lower file a").unwrap();
        std::fs::write(lower.join("dir/b"), vec![7u8; 9000]).unwrap();
        let lower_state = snapshot(&lower);
        Fixture {
            base,
            lower,
            lower_state,
        }
    })
}

pub fn run(data: &[u8]) {
    let f = fixture();
    let upper = tempfile::Builder::new()
        .prefix("upper")
        .tempdir_in(&f.base)
        .unwrap();
    let share = ShareConfig {
        lower: f.lower.clone(),
        upper: Some(upper.path().to_path_buf()),
        mode: ShareMode::Cow,
        masked: Vec::new(),
        visible: None,
        hidden: Vec::new(),
    };
    // Two regions with a hole between them, so rings and buffers can
    // straddle the end of memory.
    let mem = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0x1_0000),
        (GuestAddress(0x2_0000), 0x1000),
    ])
    .unwrap();
    let irq = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    let fs = Arc::new(Mutex::new(Fs::new("fuzz", share).unwrap()));
    let mut t = MmioTransport::new(mem.clone(), irq, fs.clone()).unwrap();

    let mut input = Input(data);
    while let Some(op) = input.u8() {
        match op & 3 {
            0 => {
                let (Some(offset), Some(width), Some(value)) =
                    (input.u16(), input.width(), input.u64())
                else {
                    break;
                };
                let mut buf = [0u8; 16];
                buf[..8].copy_from_slice(&value.to_le_bytes());
                t.write(u64::from(offset), &buf[..width]);
            }
            1 => {
                let (Some(offset), Some(width)) = (input.u16(), input.width()) else {
                    break;
                };
                let mut buf = [0u8; 16];
                t.read(u64::from(offset), &mut buf[..width]);
            }
            2 => {
                let (Some(addr), Some(len)) = (input.u16(), input.u8()) else {
                    break;
                };
                let bytes = input.bytes(usize::from(len));
                // Partial writes at the end of memory are fine to lose.
                let _ = mem.write_slice(bytes, GuestAddress(u64::from(addr)));
            }
            _ => {
                let index = usize::from(op >> 2 & 1);
                let mut fs = lock(&fs);
                let _ = fs.queue_events()[index].read();
                fs.process_queue(index);
            }
        }
    }
    // For checking that seeds reach the interesting states.
    if std::env::var_os("MMIO_FS_TRACE").is_some() {
        eprintln!(
            "status {:#x} requests (opcode:count/ms) {}",
            t.device_status(),
            lock(&fs).server().stats()
        );
    }
    drop(t);
    drop(fs);
    assert!(
        snapshot(&f.lower) == f.lower_state,
        "the lower directory changed"
    );
}
