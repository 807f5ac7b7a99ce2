//! The 12-byte `virtio_net_hdr_v1` in front of every frame: checks of the
//! guest's (hostile) transmit headers and of the host's receive headers
//! against the negotiated features.
//!
//! Layout, little endian: flags u8, gso_type u8, hdr_len u16, gso_size u16,
//! csum_start u16, csum_offset u16, num_buffers u16.

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_HDR_F_DATA_VALID,
    VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
};

use super::{MAX_FRAME_LEN, VNET_HDR_LEN};

/// Ethernet header: the shortest frame the tap accepts.
pub const ETH_HLEN: usize = 14;

const NEEDS_CSUM: u8 = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
const DATA_VALID: u8 = VIRTIO_NET_HDR_F_DATA_VALID as u8;
const GSO_NONE: u8 = VIRTIO_NET_HDR_GSO_NONE as u8;
const GSO_TCPV4: u8 = VIRTIO_NET_HDR_GSO_TCPV4 as u8;
const GSO_TCPV6: u8 = VIRTIO_NET_HDR_GSO_TCPV6 as u8;
const GSO_ECN: u8 = VIRTIO_NET_HDR_GSO_ECN as u8;

/// Why a frame the guest sent was dropped. Every variant is the guest's
/// doing, so they are logged rate-limited.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxDrop {
    #[error("chain holds {0} bytes, less than a header and an Ethernet header")]
    TooShort(usize),
    #[error("chain holds more than the {max} bytes of a header and the largest frame", max = VNET_HDR_LEN + MAX_FRAME_LEN)]
    TooLong,
    #[error("chain has more than {0} descriptors")]
    TooManyDescriptors(usize),
    #[error("device-writable descriptor in a transmit chain")]
    WritableDescriptor,
    #[error("buffer {addr:#x}+{len:#x} is outside guest memory")]
    OutsideMemory { addr: u64, len: u32 },
    #[error("unknown header flags {0:#x}")]
    BadFlags(u8),
    #[error("NEEDS_CSUM without VIRTIO_NET_F_CSUM negotiated")]
    CsumNotNegotiated,
    #[error("checksum at {start}+{offset} lies outside the {len}-byte frame")]
    CsumOutOfFrame { start: u16, offset: u16, len: usize },
    #[error("gso_type {0:#x} was not negotiated")]
    GsoNotNegotiated(u8),
    #[error("segmentation offload without NEEDS_CSUM")]
    GsoWithoutCsum,
    #[error("segmentation offload with gso_size 0")]
    GsoSizeZero,
    #[error("hdr_len {hdr_len} beyond the {len}-byte frame")]
    HdrLenBeyondFrame { hdr_len: u16, len: usize },
}

/// Why a frame from the host was not given to the guest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RxDrop {
    #[error("{0}-byte read is shorter than a header and an Ethernet header")]
    TooShort(usize),
    #[error("frame longer than {MAX_FRAME_LEN} bytes (truncated by the read)")]
    TooLong,
    #[error("partially checksummed frame for a guest without GUEST_CSUM")]
    CsumNotNegotiated,
    #[error("gso_type {0:#x} not negotiated by the guest")]
    GsoNotNegotiated(u8),
}

fn has(features: u64, bit: u32) -> bool {
    features & (1u64 << bit) != 0
}

fn u16_at(hdr: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([hdr[at], hdr[at + 1]])
}

/// Checks the header at the start of `frame` (header + Ethernet frame, as
/// gathered from a transmit chain) against the features the guest acked,
/// and clears the fields the host must not see (num_buffers, gso_size of a
/// non-GSO frame). Everything else is left for the kernel to use as is.
pub fn check_tx(frame: &mut [u8], acked: u64) -> Result<(), TxDrop> {
    if frame.len() < VNET_HDR_LEN + ETH_HLEN {
        return Err(TxDrop::TooShort(frame.len()));
    }
    if frame.len() > VNET_HDR_LEN + MAX_FRAME_LEN {
        return Err(TxDrop::TooLong);
    }
    let len = frame.len() - VNET_HDR_LEN;
    let hdr = &mut frame[..VNET_HDR_LEN];
    let flags = hdr[0];
    if flags & !NEEDS_CSUM != 0 {
        return Err(TxDrop::BadFlags(flags));
    }
    if flags & NEEDS_CSUM != 0 {
        if !has(acked, VIRTIO_NET_F_CSUM) {
            return Err(TxDrop::CsumNotNegotiated);
        }
        let (start, offset) = (u16_at(hdr, 6), u16_at(hdr, 8));
        if usize::from(start) + usize::from(offset) + 2 > len {
            return Err(TxDrop::CsumOutOfFrame { start, offset, len });
        }
    }
    let gso = hdr[1];
    match gso {
        GSO_NONE => {
            hdr[4..6].fill(0);
        }
        GSO_TCPV4 | GSO_TCPV6 => {
            let bit = if gso == GSO_TCPV4 {
                VIRTIO_NET_F_HOST_TSO4
            } else {
                VIRTIO_NET_F_HOST_TSO6
            };
            if !has(acked, bit) {
                return Err(TxDrop::GsoNotNegotiated(gso));
            }
            if flags & NEEDS_CSUM == 0 {
                return Err(TxDrop::GsoWithoutCsum);
            }
            if u16_at(hdr, 4) == 0 {
                return Err(TxDrop::GsoSizeZero);
            }
            let hdr_len = u16_at(hdr, 2);
            if usize::from(hdr_len) > len {
                return Err(TxDrop::HdrLenBeyondFrame { hdr_len, len });
            }
        }
        // UDP/UFO, USO and ECN are never offered.
        other => return Err(TxDrop::GsoNotNegotiated(other)),
    }
    hdr[10..12].fill(0);
    Ok(())
}

/// Checks the header at the start of `frame` (as read from the tap) against
/// what the guest acked and sets num_buffers. DATA_VALID and NEEDS_CSUM
/// reach only a guest with GUEST_CSUM; GSO frames only a guest with the
/// matching GUEST_TSO feature (the tap's offloads follow the same features,
/// so a mismatch is a host anomaly).
pub fn prepare_rx(frame: &mut [u8], acked: u64, num_buffers: u16) -> Result<(), RxDrop> {
    if frame.len() < VNET_HDR_LEN + ETH_HLEN {
        return Err(RxDrop::TooShort(frame.len()));
    }
    if frame.len() > VNET_HDR_LEN + MAX_FRAME_LEN {
        return Err(RxDrop::TooLong);
    }
    let hdr = &mut frame[..VNET_HDR_LEN];
    let csum = has(acked, VIRTIO_NET_F_GUEST_CSUM);
    if !csum && hdr[0] & NEEDS_CSUM != 0 {
        return Err(RxDrop::CsumNotNegotiated);
    }
    hdr[0] &= if csum { NEEDS_CSUM | DATA_VALID } else { 0 };
    let gso = hdr[1];
    let ok = match gso {
        GSO_NONE => true,
        GSO_TCPV4 => csum && has(acked, VIRTIO_NET_F_GUEST_TSO4),
        GSO_TCPV6 => csum && has(acked, VIRTIO_NET_F_GUEST_TSO6),
        _ => false,
    };
    if !ok || gso & GSO_ECN != 0 {
        return Err(RxDrop::GsoNotNegotiated(gso));
    }
    set_num_buffers(frame, num_buffers);
    Ok(())
}

/// Writes num_buffers into the header at the start of `frame`.
pub fn set_num_buffers(frame: &mut [u8], n: u16) {
    frame[10..12].copy_from_slice(&n.to_le_bytes());
}

/// The tap offloads (TUN_F_*) matching what the guest accepts. The tap
/// only honours TSO together with CSUM, as does the virtio spec.
pub fn tap_offloads(acked: u64) -> u32 {
    if !has(acked, VIRTIO_NET_F_GUEST_CSUM) {
        return 0;
    }
    let mut flags = libc::TUN_F_CSUM;
    if has(acked, VIRTIO_NET_F_GUEST_TSO4) {
        flags |= libc::TUN_F_TSO4;
    }
    if has(acked, VIRTIO_NET_F_GUEST_TSO6) {
        flags |= libc::TUN_F_TSO6;
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: u64 = (1 << VIRTIO_NET_F_CSUM)
        | (1 << VIRTIO_NET_F_HOST_TSO4)
        | (1 << VIRTIO_NET_F_HOST_TSO6)
        | (1 << VIRTIO_NET_F_GUEST_CSUM)
        | (1 << VIRTIO_NET_F_GUEST_TSO4)
        | (1 << VIRTIO_NET_F_GUEST_TSO6);

    fn frame(hdr: [u8; 12], len: usize) -> Vec<u8> {
        let mut f = hdr.to_vec();
        f.resize(VNET_HDR_LEN + len, 0xee);
        f
    }

    fn hdr(flags: u8, gso: u8, hdr_len: u16, gso_size: u16, start: u16, off: u16) -> [u8; 12] {
        let mut h = [0u8; 12];
        h[0] = flags;
        h[1] = gso;
        h[2..4].copy_from_slice(&hdr_len.to_le_bytes());
        h[4..6].copy_from_slice(&gso_size.to_le_bytes());
        h[6..8].copy_from_slice(&start.to_le_bytes());
        h[8..10].copy_from_slice(&off.to_le_bytes());
        h[10..12].copy_from_slice(&0xabcdu16.to_le_bytes());
        h
    }

    #[test]
    fn tx_plain_frames() {
        let mut f = frame(hdr(0, 0, 0, 1400, 0, 0), 60);
        check_tx(&mut f, 0).unwrap();
        assert_eq!(&f[..12], &[0; 12], "gso_size and num_buffers cleared");
        assert_eq!(
            check_tx(&mut frame([0; 12], 13), 0),
            Err(TxDrop::TooShort(25))
        );
        assert_eq!(check_tx(&mut [0; 11], 0), Err(TxDrop::TooShort(11)));
        check_tx(&mut frame([0; 12], 14), 0).unwrap();
        check_tx(&mut frame([0; 12], MAX_FRAME_LEN), 0).unwrap();
        assert_eq!(
            check_tx(&mut frame([0; 12], MAX_FRAME_LEN + 1), 0),
            Err(TxDrop::TooLong)
        );
    }

    #[test]
    fn tx_checksum_offload() {
        let mut f = frame(hdr(1, 0, 0, 0, 34, 6), 42);
        assert_eq!(check_tx(&mut f.clone(), 0), Err(TxDrop::CsumNotNegotiated));
        check_tx(&mut f, ALL).unwrap();
        // The checksum field must lie inside the frame.
        let mut f = frame(hdr(1, 0, 0, 0, 34, 7), 42);
        assert!(matches!(
            check_tx(&mut f, ALL),
            Err(TxDrop::CsumOutOfFrame { .. })
        ));
        let mut f = frame(hdr(1, 0, 0, 0, u16::MAX, u16::MAX), 42);
        assert!(matches!(
            check_tx(&mut f, ALL),
            Err(TxDrop::CsumOutOfFrame { .. })
        ));
        for flags in [2u8, 4, 0x80, 3] {
            let mut f = frame(hdr(flags, 0, 0, 0, 0, 0), 60);
            assert_eq!(check_tx(&mut f, ALL), Err(TxDrop::BadFlags(flags)));
        }
    }

    #[test]
    fn tx_segmentation_offload() {
        let tso4 = hdr(1, GSO_TCPV4, 54, 1448, 34, 16);
        check_tx(&mut frame(tso4, 3000), ALL).unwrap();
        let only_csum = 1 << VIRTIO_NET_F_CSUM;
        assert_eq!(
            check_tx(&mut frame(tso4, 3000), only_csum),
            Err(TxDrop::GsoNotNegotiated(GSO_TCPV4))
        );
        let tso6 = hdr(1, GSO_TCPV6, 74, 1428, 54, 16);
        check_tx(&mut frame(tso6, 3000), ALL).unwrap();
        assert_eq!(
            check_tx(&mut frame(tso6, 3000), ALL & !(1 << VIRTIO_NET_F_HOST_TSO6)),
            Err(TxDrop::GsoNotNegotiated(GSO_TCPV6))
        );
        assert_eq!(
            check_tx(&mut frame(hdr(0, GSO_TCPV4, 54, 1448, 0, 0), 3000), ALL),
            Err(TxDrop::GsoWithoutCsum)
        );
        assert_eq!(
            check_tx(&mut frame(hdr(1, GSO_TCPV4, 54, 0, 34, 16), 3000), ALL),
            Err(TxDrop::GsoSizeZero)
        );
        assert!(matches!(
            check_tx(&mut frame(hdr(1, GSO_TCPV4, 3001, 1448, 34, 16), 3000), ALL),
            Err(TxDrop::HdrLenBeyondFrame { .. })
        ));
        for gso in [3u8, 5, GSO_TCPV4 | GSO_ECN, 0x7f, 0xff] {
            assert_eq!(
                check_tx(&mut frame(hdr(1, gso, 54, 1448, 34, 16), 3000), ALL),
                Err(TxDrop::GsoNotNegotiated(gso))
            );
        }
    }

    #[test]
    fn rx_headers_follow_guest_features() {
        let mut f = frame(hdr(DATA_VALID, 0, 0, 0, 0, 0), 60);
        prepare_rx(&mut f, 0, 1).unwrap();
        assert_eq!(f[0], 0, "DATA_VALID only for GUEST_CSUM");
        assert_eq!(&f[10..12], &[1, 0]);
        let mut f = frame(hdr(DATA_VALID, 0, 0, 0, 0, 0), 60);
        prepare_rx(&mut f, ALL, 3).unwrap();
        assert_eq!(f[0], DATA_VALID);
        assert_eq!(&f[10..12], &[3, 0]);

        let partial = hdr(NEEDS_CSUM, 0, 0, 0, 34, 6);
        assert_eq!(
            prepare_rx(&mut frame(partial, 60), 0, 1),
            Err(RxDrop::CsumNotNegotiated)
        );
        prepare_rx(&mut frame(partial, 60), ALL, 1).unwrap();

        let tso4 = hdr(NEEDS_CSUM, GSO_TCPV4, 54, 1448, 34, 16);
        prepare_rx(&mut frame(tso4, 3000), ALL, 1).unwrap();
        assert_eq!(
            prepare_rx(&mut frame(tso4, 3000), 1 << VIRTIO_NET_F_GUEST_CSUM, 1),
            Err(RxDrop::GsoNotNegotiated(GSO_TCPV4))
        );
        assert_eq!(
            prepare_rx(&mut frame(hdr(1, 3, 0, 0, 0, 0), 100), ALL, 1),
            Err(RxDrop::GsoNotNegotiated(3))
        );
        assert_eq!(prepare_rx(&mut [0; 20], ALL, 1), Err(RxDrop::TooShort(20)));
    }

    #[test]
    fn offloads_need_guest_csum() {
        assert_eq!(tap_offloads(0), 0);
        assert_eq!(tap_offloads(1 << VIRTIO_NET_F_GUEST_TSO4), 0);
        assert_eq!(tap_offloads(1 << VIRTIO_NET_F_GUEST_CSUM), libc::TUN_F_CSUM);
        assert_eq!(
            tap_offloads(ALL),
            libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6
        );
    }
}
