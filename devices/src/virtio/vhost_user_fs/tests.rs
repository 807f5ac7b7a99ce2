//! The vhost-user-fs front end against the real reference backend:
//! virtiofsd (scripts/install-virtiofsd.sh installs it; tests/run.sh runs
//! that first) serving a temp directory, driven through the MMIO transport
//! the way Linux does, with memfd-backed guest memory.

use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cowfs::abi::{self, op, ROOT_ID};
use cowfs::client::{cstr, request};
use event_manager::{EventManager, SubscriberOps};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryMmap};
use zerocopy::{FromBytes, IntoBytes};

use super::{VhostUserFs, VhostUserFsError};
use crate::bus::lock;
use crate::virtio::features::VIRTIO_F_VERSION_1;
use crate::virtio::status::{DEVICE_NEEDS_RESET, DRIVER_OK};
use crate::virtio::test_utils::*;
use crate::virtio::{MmioTransport, VirtioDevice, INT_VRING, TYPE_FS};

const REQ: u64 = 0x10000;
const REP: u64 = 0x40000;
const SIZE: u16 = 16;

/// virtiofsd, installed (or found in the cache) by the project's script.
fn virtiofsd_bin() -> PathBuf {
    mvm_test_guests::support::virtiofsd().unwrap_or_else(|e| panic!("virtiofsd is needed: {e}"))
}

/// A virtiofsd serving `dir/share` on `dir/sock`; killed on drop.
struct Backend {
    child: Child,
    socket: PathBuf,
    share: PathBuf,
    _dir: tempfile::TempDir,
}

impl Backend {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (socket, share) = (dir.path().join("sock"), dir.path().join("share"));
        std::fs::create_dir(&share).unwrap();
        std::fs::write(share.join("hello.txt"), b"served by virtiofsd").unwrap();
        let child = Command::new(virtiofsd_bin())
            .arg("--socket-path")
            .arg(&socket)
            .arg("--shared-dir")
            .arg(&share)
            .args(["--sandbox", "none", "--cache", "never"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start virtiofsd");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "virtiofsd did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Backend {
            child,
            socket,
            share,
            _dir: dir,
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Guest memory the backend can map: one memfd.
fn memfd_memory() -> GuestMemoryMmap {
    // SAFETY: a valid NUL-terminated name and flags; the fd is checked.
    let fd = unsafe { libc::memfd_create(c"test-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: fd is a fresh memfd that nothing else owns.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.set_len(MEM_SIZE).unwrap();
    GuestMemoryMmap::from_ranges_with_files([(
        GuestAddress(0),
        MEM_SIZE as usize,
        Some(FileOffset::new(file, 0)),
    )])
    .unwrap()
}

struct Fixture {
    mem: GuestMemoryMmap,
    dev: Arc<std::sync::Mutex<VhostUserFs>>,
    t: MmioTransport,
    rings: Vec<GuestRing>,
    em: EventManager<Arc<std::sync::Mutex<VhostUserFs>>>,
    unique: u64,
}

impl Fixture {
    fn new(backend: &Backend, mem: GuestMemoryMmap) -> Self {
        let dev = shared(VhostUserFs::new(&backend.socket, "vfs", SIZE).unwrap());
        let t = MmioTransport::new(mem.clone(), interrupt(), dev.clone()).unwrap();
        let mut em = EventManager::new().unwrap();
        em.add_subscriber(dev.clone());
        let rings = QUEUE_ADDRS
            .iter()
            .map(|&a| GuestRing::new(&mem, SIZE, a))
            .collect();
        Fixture {
            mem,
            dev,
            t,
            rings,
            em,
            unique: 0,
        }
    }

    fn bring_up(&mut self) {
        linux_probe_with(
            &mut self.t,
            1 << VIRTIO_F_VERSION_1,
            &[
                (u32::from(SIZE), QUEUE_ADDRS[0]),
                (u32::from(SIZE), QUEUE_ADDRS[1]),
            ],
        );
    }

    /// One request on the request queue; waits for the backend's reply
    /// (its call, turned into an interrupt by the event loop).
    fn call(&mut self, opcode: u32, node: u64, args: &[&[u8]]) -> (abi::OutHeader, Vec<u8>) {
        self.unique += 1;
        let req = request(opcode, node, self.unique, args);
        self.mem.write_slice(&req, GuestAddress(REQ)).unwrap();
        let ring = &mut self.rings[1];
        let head = (self.unique * 2 % u64::from(SIZE)) as u16;
        ring.set_desc(head, REQ, req.len() as u32, F_NEXT, head + 1);
        ring.set_desc(head + 1, REP, 0x2000, F_WRITE, 0);
        let before = ring.used_idx();
        ring.push_avail(head);
        wr(&mut self.t, QUEUE_NOTIFY, 1);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.rings[1].used_idx() == before {
            assert!(Instant::now() < deadline, "no reply from virtiofsd");
            self.em.run_with_timeout(100).unwrap();
        }
        // The call reached the event loop: the guest would be interrupted.
        let deadline = Instant::now() + Duration::from_secs(5);
        while rd(&mut self.t, INTERRUPT_STATUS) & INT_VRING == 0 {
            assert!(Instant::now() < deadline, "no interrupt");
            self.em.run_with_timeout(100).unwrap();
        }
        wr(&mut self.t, INTERRUPT_ACK, INT_VRING);
        let (id, len) = self.rings[1].used_elem(before);
        assert_eq!(id, u32::from(head));
        let rep = self.rings[1].read(REP, len as usize);
        let (h, _) = abi::OutHeader::read_from_prefix(&rep).unwrap();
        assert_eq!(h.unique, self.unique);
        (h, rep[16..].to_vec())
    }
}

#[test]
fn bad_arguments_are_refused_before_connecting() {
    let nowhere = Path::new("/nonexistent/vfs.sock");
    assert!(matches!(
        VhostUserFs::new(nowhere, "", 16),
        Err(VhostUserFsError::Tag(_))
    ));
    assert!(matches!(
        VhostUserFs::new(nowhere, &"t".repeat(37), 16),
        Err(VhostUserFsError::Tag(_))
    ));
    for q in [0, 1, 100] {
        assert!(matches!(
            VhostUserFs::new(nowhere, "vfs", q),
            Err(VhostUserFsError::QueueSize(_))
        ));
    }
    let e = VhostUserFs::new(nowhere, "vfs", 16).err().unwrap();
    assert!(e.to_string().contains("/nonexistent/vfs.sock"), "{e}");
}

#[test]
fn guest_reads_and_writes_through_virtiofsd() {
    let backend = Backend::start();
    let mut f = Fixture::new(&backend, memfd_memory());
    assert_eq!(rd(&mut f.t, DEVICE_ID), TYPE_FS);
    let mut tag = [0u8; 4];
    tag.copy_from_slice(&rd(&mut f.t, 0x100).to_le_bytes());
    assert_eq!(&tag[..3], b"vfs");
    assert_eq!(rd(&mut f.t, 0x100 + 36), 1, "one request queue");
    f.bring_up();
    assert_eq!(
        rd(&mut f.t, STATUS) & (DRIVER_OK | DEVICE_NEEDS_RESET),
        DRIVER_OK
    );
    assert!(lock(&f.dev).is_activated());

    let init = abi::InitInCompat {
        major: 7,
        minor: 31,
        max_readahead: 65536,
        flags: 0,
    };
    let (h, out) = f.call(op::INIT, 0, &[init.as_bytes(), &[0u8; 48]]);
    assert_eq!(h.error, 0);
    let (out, _) = abi::InitOut::read_from_prefix(&out).unwrap();
    assert_eq!(out.major, 7);

    // Read the host's file.
    let (h, entry) = f.call(op::LOOKUP, ROOT_ID, &[&cstr(b"hello.txt")]);
    assert_eq!(h.error, 0);
    let (entry, _) = abi::EntryOut::read_from_prefix(&entry).unwrap();
    assert_eq!(entry.attr.size, 19);
    let open_in = [0u8; 8]; // flags O_RDONLY, open_flags 0
    let (h, open) = f.call(op::OPEN, entry.nodeid, &[&open_in]);
    assert_eq!(h.error, 0);
    let fh = u64::from_le_bytes(open[..8].try_into().unwrap());
    let mut read_in = [0u8; 40];
    read_in[..8].copy_from_slice(&fh.to_le_bytes());
    read_in[16..20].copy_from_slice(&4096u32.to_le_bytes());
    let (h, data) = f.call(op::READ, entry.nodeid, &[&read_in]);
    assert_eq!(h.error, 0);
    assert_eq!(data, b"served by virtiofsd");

    // Create a file: it lands in the shared directory on the host.
    let mut create_in = [0u8; 16];
    create_in[..4].copy_from_slice(&((libc::O_WRONLY | libc::O_CREAT) as u32).to_le_bytes());
    create_in[4..8].copy_from_slice(&0o644u32.to_le_bytes());
    let (h, created) = f.call(op::CREATE, ROOT_ID, &[&create_in, &cstr(b"new.txt")]);
    assert_eq!(h.error, 0, "CREATE");
    let (entry, rest) = abi::EntryOut::read_from_prefix(&created).unwrap();
    let fh = u64::from_le_bytes(rest[..8].try_into().unwrap());
    let mut write_in = [0u8; 40];
    write_in[..8].copy_from_slice(&fh.to_le_bytes());
    write_in[16..20].copy_from_slice(&11u32.to_le_bytes());
    let (h, _) = f.call(op::WRITE, entry.nodeid, &[&write_in, b"from guest\n"]);
    assert_eq!(h.error, 0, "WRITE");
    let mut release_in = [0u8; 24];
    release_in[..8].copy_from_slice(&fh.to_le_bytes());
    f.call(op::RELEASE, entry.nodeid, &[&release_in]);
    assert_eq!(
        std::fs::read(backend.share.join("new.txt")).unwrap(),
        b"from guest\n"
    );

    // Reset stops the backend's rings; the device can start again.
    wr(&mut f.t, STATUS, 0);
    assert!(!lock(&f.dev).is_activated());
}

#[test]
fn anonymous_guest_memory_cannot_be_shared() {
    let backend = Backend::start();
    let mut f = Fixture::new(&backend, guest_memory());
    f.bring_up();
    assert!(!lock(&f.dev).is_activated());
    assert_ne!(rd(&mut f.t, STATUS) & DEVICE_NEEDS_RESET, 0);
}
