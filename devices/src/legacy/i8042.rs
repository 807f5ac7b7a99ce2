use super::EndSignal;
use crate::bus::BusDevice;

/// Ports 0x60 (data) to 0x64 (command/status).
pub const I8042_PORT_BASE: u64 = 0x60;
pub const I8042_PORT_LEN: u64 = 5;

/// The keyboard controller, reduced to the CPU reset line: a guest writing
/// 0xfe to port 0x64 raises `reset`, which the VMM treats as the guest
/// asking to stop.
pub struct I8042 {
    inner: vm_superio::I8042Device<EndSignal>,
}

impl I8042 {
    pub fn new(reset: EndSignal) -> Self {
        Self {
            inner: vm_superio::I8042Device::new(reset),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // Status 0: output buffer empty, input buffer empty, so the guest's
        // kb_wait() returns at once.
        data.fill(0);
        if let (Some(first), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.inner.read(off);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (Some(&value), Ok(off)) = (data.first(), u8::try_from(offset)) else {
            return;
        };
        if let Err(e) = self.inner.write(off, value) {
            tracing::error!("i8042: cannot signal reset: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use vmm_sys_util::eventfd::EventFd;

    use super::*;

    #[test]
    fn reset_command_signals_and_others_do_not() {
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut dev = I8042::new(EndSignal::new(evt.try_clone().unwrap()).stopping(stop.clone()));
        dev.write(0, &[0xfe]); // data port: not a command
        dev.write(4, &[0xd1]); // another command
        dev.write(4, &[]); // empty access from a hostile guest
        assert!(evt.read().is_err(), "no reset expected yet");
        assert!(!stop.load(Ordering::Acquire));
        dev.write(4, &[0xfe]);
        assert_eq!(evt.read().unwrap(), 1);
        assert!(
            stop.load(Ordering::Acquire),
            "the vCPU that reset must stop"
        );
        let mut status = [0xffu8; 4];
        dev.read(4, &mut status);
        assert_eq!(status, [0; 4]);
    }
}
