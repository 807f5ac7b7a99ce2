//! Port I/O dispatch of the legacy devices as the VMM wires them: a `Bus`
//! with the serial port (COM1, 0x3f8) and the i8042 (0x60-0x64), driven by
//! arbitrary reads and writes at any port near them (or any port at all)
//! and of any width, with console input queued in between.
//!
//! Input: a sequence of operations, each an opcode byte (low 2 bits):
//! - 0 write: port byte, width byte, value u64 (little endian)
//! - 1 read:  port byte, width byte
//! - 2 input: len u8, then that many bytes queued for the guest to read
//! - 3 drain the serial's interrupt line
//!
//! The port byte `p` picks `COM1 - 4 + (p & 15)` or, with bit 6 set,
//! `0x60 - 4 + (p & 15)`; 0xff takes a raw u16 port next. Widths: `w & 3`
//! selects 1/2/4/8 bytes, or with bit 7 set `w & 15` bytes (0..=15).
//!
//! Checks: no panic; a read no device claims whole reads all ones; the
//! reset line fires exactly as often as the guest wrote 0xfe to 0x64.

use std::sync::{Arc, Mutex};

use devices::bus::Bus;
use devices::legacy::{
    EndSignal, Serial, COM1_PORT_BASE, COM1_PORT_LEN, I8042, I8042_PORT_BASE, I8042_PORT_LEN,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

#[path = "input.rs"]
mod input;
use input::Input;

fn port(input: &mut Input) -> Option<u64> {
    let p = input.u8()?;
    Some(match p {
        0xff => u64::from(input.u16()?),
        _ if p & 0x40 != 0 => I8042_PORT_BASE - 4 + u64::from(p & 15),
        _ => COM1_PORT_BASE - 4 + u64::from(p & 15),
    })
}

fn claimed(port: u64, width: usize) -> bool {
    let inside = |base: u64, len: u64| port >= base && port + width as u64 <= base + len;
    inside(COM1_PORT_BASE, COM1_PORT_LEN) || inside(I8042_PORT_BASE, I8042_PORT_LEN)
}

pub fn run(data: &[u8]) {
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let reset = EventFd::new(EFD_NONBLOCK).unwrap();
    let serial = Arc::new(Mutex::new(Serial::new(
        irq.try_clone().unwrap(),
        Box::new(std::io::sink()),
    )));
    let mut bus = Bus::new();
    bus.insert(serial.clone(), COM1_PORT_BASE, COM1_PORT_LEN)
        .unwrap();
    let i8042 = Arc::new(Mutex::new(I8042::new(EndSignal::new(
        reset.try_clone().unwrap(),
    ))));
    bus.insert(i8042, I8042_PORT_BASE, I8042_PORT_LEN).unwrap();

    let mut resets = 0u64;
    let mut input = Input(data);
    while let Some(op) = input.u8() {
        match op & 3 {
            0 => {
                let (Some(port), Some(width), Some(value)) =
                    (port(&mut input), input.width(), input.u64())
                else {
                    break;
                };
                let mut buf = [0u8; 16];
                buf[..8].copy_from_slice(&value.to_le_bytes());
                let buf = &buf[..width];
                let hit = bus.write(port, buf);
                assert_eq!(hit, claimed(port, width), "write at {port:#x}+{width}");
                if hit && port == I8042_PORT_BASE + 4 && buf.first() == Some(&0xfe) {
                    resets += 1;
                }
            }
            1 => {
                let (Some(port), Some(width)) = (port(&mut input), input.width()) else {
                    break;
                };
                let mut buf = [0u8; 16];
                let hit = bus.read(port, &mut buf[..width]);
                assert_eq!(hit, claimed(port, width), "read at {port:#x}+{width}");
                if !hit {
                    assert!(buf[..width].iter().all(|&b| b == 0xff), "an unclaimed read");
                }
            }
            2 => {
                let Some(len) = input.u8() else {
                    break;
                };
                let bytes = input.bytes(usize::from(len));
                let _ = serial.lock().unwrap().enqueue_input(bytes);
            }
            _ => {
                let _ = irq.read();
            }
        }
    }
    assert_eq!(reset.read().unwrap_or(0), resets, "reset signals");
}
