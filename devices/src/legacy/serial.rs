use std::io::Write;

use vm_superio::serial::NoEvents;
use vmm_sys_util::eventfd::EventFd;

use super::EventFdTrigger;
use crate::bus::BusDevice;

/// COM1, where the guest's `console=ttyS0` lives.
pub const COM1_PORT_BASE: u64 = 0x3f8;
pub const COM1_PORT_LEN: u64 = 8;
pub const COM1_IRQ: u32 = 4;

/// An 8250 UART (vm-superio) whose output goes to any writer: stdout, a
/// log file, or a sink. The interrupt line is an `EventFd` the VMM
/// registers as an irqfd.
pub struct Serial {
    inner: vm_superio::Serial<EventFdTrigger, NoEvents, Box<dyn Write + Send>>,
}

impl Serial {
    pub fn new(irq_evt: EventFd, out: Box<dyn Write + Send>) -> Self {
        Self {
            inner: vm_superio::Serial::new(EventFdTrigger(irq_evt), out),
        }
    }

    /// Queues bytes for the guest to read (console input). Returns how many
    /// fit in the FIFO; the rest must be offered again later.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.inner
            .enqueue_raw_bytes(bytes)
            .map_err(|e| std::io::Error::other(format!("{e:?}")))
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (Some(first), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.inner.read(off);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (Some(&value), Ok(off)) = (data.first(), u8::try_from(offset)) else {
            return;
        };
        // A failing console writer (closed pipe, full disk) must not stop
        // the guest; the byte is dropped.
        if let Err(e) = self.inner.write(off, value) {
            tracing::trace!("serial: write failed: {e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn transmits_bytes_and_raises_input_interrupt() {
        let out = SharedBuf::default();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut serial = Serial::new(irq.try_clone().unwrap(), Box::new(out.clone()));
        for b in b"hi\n" {
            serial.write(0, &[*b]);
        }
        assert_eq!(out.0.lock().unwrap().as_slice(), b"hi\n");

        // Enable the "received data available" interrupt, then feed input.
        serial.write(1, &[0x01]);
        assert_eq!(serial.enqueue_input(b"x").unwrap(), 1);
        assert!(irq.read().unwrap() >= 1);
        let mut b = [0u8; 1];
        serial.read(0, &mut b);
        assert_eq!(&b, b"x");
    }

    #[test]
    fn odd_accesses_do_not_panic() {
        let mut serial = Serial::new(
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            Box::new(std::io::sink()),
        );
        serial.write(u64::MAX, &[1]);
        serial.write(3, &[]);
        let mut empty = [0u8; 0];
        serial.read(7, &mut empty);
        let mut wide = [0u8; 8];
        serial.read(300, &mut wide);
    }
}
