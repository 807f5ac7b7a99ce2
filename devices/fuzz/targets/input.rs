//! The input reader of the targets that take operations from bytes
//! (`block_requests`, `mmio_rng`, `mmio_fs`, `port_io`, `vhost_user`, `commit_upper`,
//! `net_tx`, `vsock_packets`); each
//! uses part of it.
#![allow(dead_code)]

pub struct Input<'a>(pub &'a [u8]);

impl Input<'_> {
    pub fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    pub fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }
    pub fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }
    pub fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    pub fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    pub fn width(&mut self) -> Option<usize> {
        let w = self.u8()?;
        Some(if w & 0x80 != 0 {
            usize::from(w & 15)
        } else {
            1 << (w & 3)
        })
    }
    pub fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
}
