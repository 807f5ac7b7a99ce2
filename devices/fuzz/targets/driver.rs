//! The guest side of a virtio-mmio device, as Linux drives it, shared by
//! the fuzz targets that feed a device through its queues.

use devices::bus::BusDevice;
use devices::virtio::MmioTransport;

fn wr(t: &mut MmioTransport, offset: u64, v: u32) {
    t.write(offset, &v.to_le_bytes());
}

fn rd(t: &mut MmioTransport, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(offset, &mut b);
    u32::from_le_bytes(b)
}

/// What Linux does from probe to DRIVER_OK: acks `features` (and
/// VERSION_1) of what the device offers, and sets up one queue of `size`
/// per (descriptor, avail, used) address triple.
pub fn probe(t: &mut MmioTransport, features: u64, queues: &[(u64, u64, u64)], size: u16) {
    wr(t, 0x70, 0);
    wr(t, 0x70, 1);
    wr(t, 0x70, 3);
    wr(t, 0x14, 1);
    let mut offered = u64::from(rd(t, 0x10)) << 32;
    wr(t, 0x14, 0);
    offered |= u64::from(rd(t, 0x10));
    let acked = offered & (features | 1 << 32);
    wr(t, 0x24, 1);
    wr(t, 0x20, (acked >> 32) as u32);
    wr(t, 0x24, 0);
    wr(t, 0x20, acked as u32);
    wr(t, 0x70, 0xb);
    for (i, &(d, a, u)) in queues.iter().enumerate() {
        wr(t, 0x30, i as u32);
        wr(t, 0x38, u32::from(size));
        for (reg, addr) in [(0x80, d), (0x90, a), (0xa0, u)] {
            wr(t, reg, addr as u32);
            wr(t, reg + 4, (addr >> 32) as u32);
        }
        wr(t, 0x44, 1);
    }
    wr(t, 0x70, 0xf);
}
