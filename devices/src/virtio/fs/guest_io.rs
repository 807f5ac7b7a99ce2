//! A descriptor chain as the FUSE server's request and reply
//! ([`cowfs::transport`]): headers are copied, file data moves between the
//! host file and guest memory in one `pwritev`/`preadv` over the guest's
//! buffers (as virtiofsd does).
//!
//! Every range comes from a descriptor whose whole extent was checked to
//! lie in guest memory before it was added ([`Buffers::push`]), and the
//! host pointers come from vm-memory's region slices of those ranges, so
//! no guest value can make the VMM (or the kernel on its behalf) touch
//! memory outside the guest's.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use cowfs::transport::{ReplyWriter, RequestReader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// iovecs per `pwritev`/`preadv` (Linux's IOV_MAX); longer chains take
/// several calls.
const IOV_BATCH: usize = 1024;
/// Buffers kept per direction of one chain; a chain with more
/// (non-adjacent) buffers is cut there, like one with too many bytes.
pub(super) const MAX_BUFFERS: usize = 1024;

/// The guest buffers of one direction of a chain, laid end to end,
/// adjacent ones merged.
#[derive(Debug, Default)]
pub(super) struct Buffers {
    list: Vec<(GuestAddress, usize)>,
    total: usize,
}

impl Buffers {
    pub(super) fn clear(&mut self) {
        self.list.clear();
        self.total = 0;
    }

    /// Adds a buffer already checked to lie in guest memory, keeping at
    /// most `max` bytes and [`MAX_BUFFERS`] buffers in all (the rest is
    /// dropped).
    pub(super) fn push(&mut self, addr: GuestAddress, len: usize, max: usize) {
        let take = len.min(max.saturating_sub(self.total));
        if take == 0 {
            return;
        }
        let full = self.list.len() >= MAX_BUFFERS;
        match self.list.last_mut() {
            Some((last, last_len)) if last.0.checked_add(*last_len as u64) == Some(addr.0) => {
                *last_len += take;
            }
            _ if full => return,
            _ => self.list.push((addr, take)),
        }
        self.total += take;
    }

    /// The guest ranges holding bytes `[start, start + count)` of the
    /// buffers (fewer bytes if they end first).
    fn ranges(
        &self,
        start: usize,
        count: usize,
    ) -> impl Iterator<Item = (GuestAddress, usize)> + '_ {
        let mut skip = start;
        let mut left = count;
        self.list.iter().filter_map(move |&(addr, len)| {
            if skip >= len {
                skip -= len;
                return None;
            }
            let take = (len - skip).min(left);
            // Inside a checked range: no overflow.
            let range = (GuestAddress(addr.0 + skip as u64), take);
            skip = 0;
            left -= take;
            (take > 0).then_some(range)
        })
    }

    /// Host iovecs for bytes `[start, start + count)`, at most
    /// [`IOV_BATCH`] of them, host-adjacent ones merged. Returns how many
    /// iovecs were filled.
    fn iovecs(
        &self,
        mem: &GuestMemoryMmap,
        start: usize,
        count: usize,
        iov: &mut [libc::iovec; IOV_BATCH],
    ) -> io::Result<usize> {
        let mut n = 0usize;
        for (addr, len) in self.ranges(start, count) {
            for slice in mem.get_slices(addr, len) {
                let slice = slice.map_err(io::Error::other)?;
                // No xen backend here: the guard is the mapped pointer and
                // the mapping lives as long as `mem`.
                let base = slice.ptr_guard_mut().as_ptr();
                if let Some(prev) = n.checked_sub(1).map(|i| &mut iov[i]) {
                    if (prev.iov_base as usize).checked_add(prev.iov_len) == Some(base as usize) {
                        prev.iov_len += slice.len();
                        continue;
                    }
                }
                if n == IOV_BATCH {
                    return Ok(n);
                }
                iov[n] = libc::iovec {
                    iov_base: base.cast(),
                    iov_len: slice.len(),
                };
                n += 1;
            }
        }
        Ok(n)
    }

    /// Runs `syscall` (`pwritev` or `preadv`) on the iovecs of bytes
    /// `[start, start + count)`: one call, on the first [`IOV_BATCH`] of
    /// them. Returns how many bytes it moved (at most `count`).
    fn vectored(
        &self,
        mem: &GuestMemoryMmap,
        start: usize,
        count: usize,
        syscall: impl FnOnce(*const libc::iovec, libc::c_int) -> isize,
    ) -> io::Result<usize> {
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; IOV_BATCH];
        let n = self.iovecs(mem, start, count, &mut iov)?;
        if n == 0 {
            return Ok(0);
        }
        // n <= IOV_BATCH, which fits a c_int.
        let ret = syscall(iov.as_ptr(), n as libc::c_int);
        let moved = usize::try_from(ret).map_err(|_| io::Error::last_os_error())?;
        Ok(moved.min(count))
    }
}

fn file_offset(offset: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// The readable part of a chain, consumed from the front.
pub(super) struct GuestRequest<'a> {
    mem: &'a GuestMemoryMmap,
    bufs: &'a Buffers,
    pos: usize,
}

impl<'a> GuestRequest<'a> {
    pub(super) fn new(mem: &'a GuestMemoryMmap, bufs: &'a Buffers) -> Self {
        Self { mem, bufs, pos: 0 }
    }
}

impl RequestReader for GuestRequest<'_> {
    fn remaining(&self) -> usize {
        self.bufs.total - self.pos
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        for (addr, len) in self.bufs.ranges(self.pos, buf.len()) {
            self.mem
                .read_slice(&mut buf[done..done + len], addr)
                .map_err(io::Error::other)?;
            done += len;
        }
        self.pos += done;
        Ok(done)
    }

    fn write_to(&mut self, fd: BorrowedFd<'_>, count: usize, offset: u64) -> io::Result<usize> {
        let offset = file_offset(offset)?;
        let written = self.bufs.vectored(self.mem, self.pos, count, |iov, n| {
            // SAFETY: `iov` holds `n` iovecs into guest memory ranges
            // checked to be mapped (vm-memory slices of checked
            // descriptors); the kernel only reads them. The guest may
            // change them meanwhile, which changes the data written but
            // cannot make the kernel touch anything else.
            unsafe { libc::pwritev(fd.as_raw_fd(), iov, n, offset) }
        })?;
        self.pos += written;
        Ok(written)
    }
}

/// The writable part of a chain.
pub(super) struct GuestReply<'a> {
    mem: &'a GuestMemoryMmap,
    bufs: &'a Buffers,
}

impl<'a> GuestReply<'a> {
    pub(super) fn new(mem: &'a GuestMemoryMmap, bufs: &'a Buffers) -> Self {
        Self { mem, bufs }
    }

    fn check(&self, at: usize, len: usize) -> io::Result<()> {
        match at.checked_add(len) {
            Some(end) if end <= self.bufs.total => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "reply bytes past the chain's buffers",
            )),
        }
    }
}

impl ReplyWriter for GuestReply<'_> {
    fn capacity(&self) -> usize {
        self.bufs.total
    }

    fn write_at(&mut self, at: usize, bytes: &[u8]) -> io::Result<()> {
        self.check(at, bytes.len())?;
        let mut done = 0;
        for (addr, len) in self.bufs.ranges(at, bytes.len()) {
            self.mem
                .write_slice(&bytes[done..done + len], addr)
                .map_err(io::Error::other)?;
            done += len;
        }
        Ok(())
    }

    fn read_from(
        &mut self,
        fd: BorrowedFd<'_>,
        at: usize,
        count: usize,
        offset: u64,
    ) -> io::Result<usize> {
        self.check(at, count)?;
        let offset = file_offset(offset)?;
        self.bufs.vectored(self.mem, at, count, |iov, n| {
            // SAFETY: `iov` holds `n` iovecs into guest memory ranges
            // checked to be mapped and writable (vm-memory slices of
            // checked descriptors); no Rust reference to that memory
            // exists while the kernel fills it. GuestMemoryMmap<()> keeps
            // no dirty bitmap to update.
            unsafe { libc::preadv(fd.as_raw_fd(), iov, n, offset) }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn mem() -> GuestMemoryMmap {
        // Two regions with a hole, so ranges can end at a region boundary.
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x10_0000),
            (GuestAddress(0x10_0000), 0x10_0000),
            (GuestAddress(0x30_0000), 0x1000),
        ])
        .unwrap()
    }

    #[test]
    fn adjacent_buffers_merge_and_caps_hold() {
        let mut b = Buffers::default();
        b.push(GuestAddress(0x1000), 100, 1000);
        b.push(GuestAddress(0x1064), 100, 1000);
        b.push(GuestAddress(0x3000), 5000, 1000);
        assert_eq!(
            b.list,
            [(GuestAddress(0x1000), 200), (GuestAddress(0x3000), 800)]
        );
        assert_eq!(b.total, 1000);
        b.push(GuestAddress(0x9000), 1, 1000);
        assert_eq!(b.list.len(), 2);

        let mut b = Buffers::default();
        for i in 0..2 * MAX_BUFFERS as u64 {
            b.push(GuestAddress(i * 2), 1, usize::MAX);
        }
        assert_eq!((b.list.len(), b.total), (MAX_BUFFERS, MAX_BUFFERS));
        // Adding to the last one still works at the cap.
        b.push(
            GuestAddress(2 * (MAX_BUFFERS as u64 - 1) + 1),
            7,
            usize::MAX,
        );
        assert_eq!(b.total, MAX_BUFFERS + 7);
        // Ranges near the top of the address space never overflow.
        let mut b = Buffers::default();
        b.push(GuestAddress(u64::MAX - 1), 1, 10);
        b.push(GuestAddress(0), 1, 10);
        assert_eq!(b.list.len(), 2);
    }

    #[test]
    fn ranges_cover_a_window() {
        let mut b = Buffers::default();
        b.push(GuestAddress(0x1000), 10, 100);
        b.push(GuestAddress(0x2000), 10, 100);
        b.push(GuestAddress(0x3000), 10, 100);
        let r: Vec<_> = b.ranges(5, 20).collect();
        assert_eq!(
            r,
            [
                (GuestAddress(0x1005), 5),
                (GuestAddress(0x2000), 10),
                (GuestAddress(0x3000), 5)
            ]
        );
        assert_eq!(b.ranges(30, 5).count(), 0);
        assert_eq!(b.ranges(0, 0).count(), 0);
    }

    /// A list past the cap, as if it were allowed.
    fn unbounded(list: Vec<(GuestAddress, usize)>) -> Buffers {
        let total = list.iter().map(|b| b.1).sum();
        Buffers { list, total }
    }

    /// Many scattered buffers (more than one batch of iovecs), one
    /// across a region boundary: a write then a read move the same
    /// bytes, in several calls.
    #[test]
    fn more_buffers_than_one_batch() {
        let mem = mem();
        let file = tempfile::tempfile().unwrap();
        let mut list = Vec::new();
        let mut expect = Vec::new();
        for i in 0..1500u64 {
            let addr = GuestAddress(i * 64);
            let data = [i as u8; 32];
            mem.write_slice(&data, addr).unwrap();
            list.push((addr, 32));
            expect.extend_from_slice(&data);
        }
        let edge = GuestAddress(0x10_0000 - 16);
        mem.write_slice(&[0xaa; 48], edge).unwrap();
        list.push((edge, 48));
        expect.extend_from_slice(&[0xaa; 48]);
        let src = unbounded(list);

        let mut req = GuestRequest::new(&mem, &src);
        let mut head = [0u8; 40];
        assert_eq!(req.read(&mut head).unwrap(), 40);
        assert_eq!(&head[..], &expect[..40]);
        let mut done = 0;
        let mut calls = 0;
        while req.remaining() > 0 {
            done += req.write_to(file.as_fd(), usize::MAX, done as u64).unwrap();
            calls += 1;
        }
        assert!(calls >= 2, "{calls}");
        assert_eq!(done, expect.len() - 40);
        assert_eq!(req.write_to(file.as_fd(), 10, 0).unwrap(), 0);

        let dst = unbounded(
            (0..1200u64)
                .map(|i| (GuestAddress(0x10_0000 + i * 128), 64))
                .collect(),
        );
        let mut reply = GuestReply::new(&mem, &dst);
        assert_eq!(reply.capacity(), 1200 * 64);
        let mut got = 0;
        while got < done {
            match reply
                .read_from(file.as_fd(), 16 + got, done - got, got as u64)
                .unwrap()
            {
                0 => break,
                n => got += n,
            }
        }
        assert_eq!(got, done);
        reply.write_at(0, &[0x55; 16]).unwrap();
        let mut back = vec![0u8; 16 + done];
        let mut at = 0;
        for (addr, len) in dst.ranges(0, back.len()) {
            mem.read_slice(&mut back[at..at + len], addr).unwrap();
            at += len;
        }
        assert_eq!(&back[..16], &[0x55; 16]);
        assert_eq!(&back[16..], &expect[40..]);
        // At end of file: nothing; past the capacity: refused.
        assert_eq!(reply.read_from(file.as_fd(), 16, 100, 1 << 30).unwrap(), 0);
        assert!(reply.read_from(file.as_fd(), 16, dst.total, 0).is_err());
        assert!(reply.write_at(usize::MAX, &[1]).is_err());
        // An offset the kernel cannot take: an error, not a panic.
        assert!(reply.read_from(file.as_fd(), 0, 1, u64::MAX).is_err());
    }

    /// Random splits of a payload over buffers (some adjacent, some
    /// across the region boundary), consumed in random steps: the bytes
    /// reach the file and come back into a reply split differently.
    #[test]
    fn random_splits_round_trip() {
        let mem = mem();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..200 {
            let file = tempfile::tempfile().unwrap();
            let len = 1 + rand(20_000) as usize;
            let data: Vec<u8> = (0..len).map(|_| rand(256) as u8).collect();
            // Buffers laid out upwards from a random start near the end
            // of region 0, with random gaps (0: adjacent, merged).
            let split = |rand: &mut dyn FnMut(u64) -> u64, total: usize| {
                let mut list = Buffers::default();
                let mut addr = 0x10_0000 - rand(0x8000);
                let mut left = total;
                while left > 0 {
                    let n = (1 + rand(5000) as usize).min(left);
                    list.push(GuestAddress(addr), n, usize::MAX);
                    addr += n as u64 + rand(3) * rand(64);
                    left -= n;
                }
                list
            };
            let src = split(&mut rand, len);
            let mut at = 0;
            for (addr, n) in src.ranges(0, len) {
                mem.write_slice(&data[at..at + n], addr).unwrap();
                at += n;
            }
            let mut req = GuestRequest::new(&mem, &src);
            let mut done = 0;
            while done < len {
                let step = 1 + rand(len as u64) as usize;
                done += req.write_to(file.as_fd(), step, done as u64).unwrap();
            }
            assert_eq!(req.remaining(), 0);

            let dst = split(&mut rand, len + 16);
            let mut reply = GuestReply::new(&mem, &dst);
            let mut got = 0;
            while got < len {
                let step = 1 + rand(len as u64) as usize;
                got += reply
                    .read_from(file.as_fd(), 16 + got, step.min(len - got), got as u64)
                    .unwrap();
            }
            let mut back = vec![0u8; len];
            let mut at = 0;
            for (addr, n) in dst.ranges(16, len) {
                mem.read_slice(&mut back[at..at + n], addr).unwrap();
                at += n;
            }
            assert!(back == data);
        }
    }
}
