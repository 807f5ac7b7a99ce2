//! The vhost-user-fs front end (`devices::virtio::vhost_user_fs`) against
//! a hostile backend: a thread on the other end of the socket answers each
//! request from the input (well formed with any value, raw bytes, nothing,
//! or hanging up) while the device connects, negotiates, is activated by a
//! Linux-like bring-up over MMIO (SET_MEM_TABLE, the vring messages) and
//! reset (GET_VRING_BASE).
//!
//! Input: one script entry per request the backend receives, an opcode
//! byte (low 3 bits):
//! - 0 answer, u64: a reply with that body to requests that want one
//!   (GET_*, or NEED_REPLY set); nothing to the others
//! - 1 raw: len u8, then that many bytes sent as they are
//! - 2 nothing
//! - 3 hang up
//! - 4 answer (as 0, u64), then len u8 and that many bytes more
//!
//! Others, and the end of the input, hang up. A front end still waiting
//! after the backend sent nothing is hung up on after 100 ms.
//!
//! Checks: no panic, and no hang.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use devices::bus::BusDevice;
use devices::virtio::vhost_user_fs::VhostUserFs;
use devices::virtio::{Interrupt, MmioTransport};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

#[path = "input.rs"]
mod input;
use input::Input;

const MEM: u64 = 0x1_0000;
const SIZE: u16 = 16;
const QUEUES: [(u64, u64, u64); 2] = [(0x1000, 0x2000, 0x3000), (0x4000, 0x5000, 0x6000)];
/// Front-end requests whose reply comes whatever the flags say.
const GETS: [u32; 4] = [1, 11, 15, 17];
const NEED_REPLY: u32 = 0x8;

/// The backend: one script entry per request, until the script ends, the
/// front end goes away or it is hung up on.
fn backend(listener: UnixListener, script: Vec<u8>) {
    let Ok((mut s, _)) = listener.accept() else {
        return;
    };
    let mut input = Input(&script);
    // Only ever waits this long for a front end blocked on a reply.
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    loop {
        let mut hdr = [0u8; 12];
        if s.read_exact(&mut hdr).is_err() {
            return;
        }
        let word = |i: usize| u32::from_le_bytes(hdr[i..i + 4].try_into().unwrap());
        let (code, flags, size) = (word(0), word(4), word(8));
        // The body (any fds it carried are closed by the kernel).
        let mut body = vec![0u8; size.min(0x1_0000) as usize];
        if s.read_exact(&mut body).is_err() {
            return;
        }
        let Some(op) = input.u8() else {
            return;
        };
        let wants = GETS.contains(&code) || flags & NEED_REPLY != 0;
        let mut out = Vec::new();
        if matches!(op & 7, 0 | 4) {
            let value = input.u64().unwrap_or(0);
            if wants {
                out.extend_from_slice(&code.to_le_bytes());
                out.extend_from_slice(&0x5u32.to_le_bytes()); // REPLY | version 1
                out.extend_from_slice(&8u32.to_le_bytes());
                out.extend_from_slice(&value.to_le_bytes());
            }
        }
        match op & 7 {
            0 | 2 => {}
            1 | 4 => {
                let n = usize::from(input.u8().unwrap_or(0));
                out.extend_from_slice(input.bytes(n));
            }
            _ => return,
        }
        if !out.is_empty() && s.write_all(&out).is_err() {
            return;
        }
    }
}

fn memfd_memory() -> GuestMemoryMmap {
    let fd = rustix::fs::memfd_create("fuzz-guest-ram", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    let file = std::fs::File::from(fd);
    file.set_len(MEM).unwrap();
    GuestMemoryMmap::from_ranges_with_files([(
        GuestAddress(0),
        MEM as usize,
        Some(FileOffset::new(file, 0)),
    )])
    .unwrap()
}

fn wr(t: &mut MmioTransport, offset: u64, v: u32) {
    t.write(offset, &v.to_le_bytes());
}

pub fn run(data: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vhost-user.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let script = data.to_vec();
    let backend = std::thread::spawn(move || backend(listener, script));

    if let Ok(dev) = VhostUserFs::new(&socket, "fuzz", SIZE) {
        let mem = memfd_memory();
        let irq = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        let mut t = MmioTransport::new(mem, irq, Arc::new(Mutex::new(dev))).unwrap();
        // Linux's bring-up: ACKNOWLEDGE, DRIVER, VERSION_1, FEATURES_OK,
        // both queues, DRIVER_OK (activation), then a reset.
        wr(&mut t, 0x70, 1);
        wr(&mut t, 0x70, 3);
        wr(&mut t, 0x24, 1);
        wr(&mut t, 0x20, 1);
        wr(&mut t, 0x70, 0xb);
        for (i, (desc, avail, used)) in QUEUES.into_iter().enumerate() {
            wr(&mut t, 0x30, i as u32);
            wr(&mut t, 0x38, u32::from(SIZE));
            for (reg, addr) in [(0x80, desc), (0x90, avail), (0xa0, used)] {
                wr(&mut t, reg, addr as u32);
                wr(&mut t, reg + 4, 0);
            }
            wr(&mut t, 0x44, 1);
        }
        wr(&mut t, 0x70, 0xf);
        wr(&mut t, 0x50, 1);
        wr(&mut t, 0x70, 0);
    }
    backend.join().unwrap();
}
