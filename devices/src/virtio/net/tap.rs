//! The tap ([`crate::tap::Tap`]) as the device's backend.

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};

use super::NetBackend;
use crate::tap::Tap;

impl NetBackend for Tap {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.file().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn write_frame(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        loop {
            // writev(2): one frame per call, never split by the tun driver.
            match self.file().write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn set_offload(&mut self, flags: u32) -> io::Result<()> {
        self.set_offload_flags(flags)
    }

    fn vhost_tap(&self) -> Option<&File> {
        Some(self.file())
    }
}
