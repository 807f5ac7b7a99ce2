//! A chain's guest buffers as (address, length) segments, and copying a
//! packet out of or into them.

use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::packet::HDR_SIZE;
use super::MAX_PKT_PAYLOAD;

/// Collects the chain's device-readable buffers (those before the first
/// writable one) or, with `writable`, its device-writable ones, enough for
/// a header and a maximal payload, into `segs`. Returns their total length
/// (capped at a full packet), or None if one lies outside guest memory.
pub(super) fn collect_segments(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    segs: &mut Vec<(GuestAddress, usize)>,
    writable: bool,
) -> Option<usize> {
    const ENOUGH: usize = HDR_SIZE + MAX_PKT_PAYLOAD;
    segs.clear();
    let mut total = 0usize;
    for desc in chain {
        if desc.is_write_only() != writable {
            if writable {
                // Readable buffers before the writable ones: skip them.
                continue;
            }
            break;
        }
        let len = desc.len() as usize;
        if len == 0 {
            continue;
        }
        if !GuestMemoryBackend::check_range(mem, desc.addr(), len) {
            return None;
        }
        // Cap what we keep: a huge chain costs nothing beyond a full packet.
        let len = len.min(ENOUGH - total);
        segs.push((desc.addr(), len));
        total += len;
        if total == ENOUGH {
            break;
        }
    }
    Some(total)
}

/// Copies `buf.len()` bytes starting `offset` bytes into the buffers.
pub(super) fn gather(
    mem: &GuestMemoryMmap,
    segs: &[(GuestAddress, usize)],
    mut offset: usize,
    buf: &mut [u8],
) -> bool {
    let mut done = 0;
    for &(addr, len) in segs {
        if done == buf.len() {
            break;
        }
        if offset >= len {
            offset -= len;
            continue;
        }
        let n = (len - offset).min(buf.len() - done);
        let Some(at) = addr.0.checked_add(offset as u64) else {
            return false;
        };
        if mem
            .read_slice(&mut buf[done..done + n], GuestAddress(at))
            .is_err()
        {
            return false;
        }
        done += n;
        offset = 0;
    }
    done == buf.len()
}

/// Writes `hdr` then `payload` across the buffers.
pub(super) fn scatter(
    mem: &GuestMemoryMmap,
    segs: &[(GuestAddress, usize)],
    hdr: &[u8],
    payload: &[u8],
) -> bool {
    let mut parts = [hdr, payload];
    let mut part = 0;
    for &(addr, len) in segs {
        let mut at = addr.0;
        let mut room = len;
        while room > 0 && part < parts.len() {
            let src = parts[part];
            if src.is_empty() {
                part += 1;
                continue;
            }
            let n = room.min(src.len());
            if mem.write_slice(&src[..n], GuestAddress(at)).is_err() {
                return false;
            }
            parts[part] = &src[n..];
            at += n as u64;
            room -= n;
        }
    }
    parts.iter().all(|p| p.is_empty())
}
