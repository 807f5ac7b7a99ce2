//! What the server needs from a transport: the request's bytes (a cursor)
//! and the reply's room.
//!
//! Headers and arguments are copied out of the request into the server's
//! buffers, but file data is not: a WRITE's payload goes from the request
//! straight to the host file ([`RequestReader::write_to`]) and a READ's data
//! from the host file straight into the reply after its header
//! ([`ReplyWriter::read_from`]), so a transport over guest memory moves it
//! in one `pwritev`/`preadv`. The in-memory implementations here back
//! [`Server::handle`](crate::Server::handle), so both paths run the same
//! dispatch code.

use std::io;
use std::os::fd::BorrowedFd;

/// The bytes of one request not yet consumed by the server.
pub trait RequestReader {
    /// Bytes left.
    fn remaining(&self) -> usize;

    /// Copies the next bytes into `buf` and consumes them; fewer than
    /// `buf.len()` only when fewer remain.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// Writes up to `count` of the next bytes to `fd` at `offset` with one
    /// positional write and consumes what was written. Returns how many
    /// were written (0 only when `count` or [`remaining`](Self::remaining)
    /// is 0).
    fn write_to(&mut self, fd: BorrowedFd<'_>, count: usize, offset: u64) -> io::Result<usize>;
}

/// The room for one reply: [`capacity`](Self::capacity) bytes, the
/// `fuse_out_header` first. The server never asks for bytes past the
/// capacity; implementations check anyway.
pub trait ReplyWriter {
    /// Bytes the reply may take, header included.
    fn capacity(&self) -> usize;

    /// Writes `bytes` at `at` bytes from the start of the reply.
    fn write_at(&mut self, at: usize, bytes: &[u8]) -> io::Result<()>;

    /// Reads up to `count` bytes of `fd` at `offset` into the reply at `at`
    /// with one positional read. Returns how many were read (0 at end of
    /// file).
    fn read_from(
        &mut self,
        fd: BorrowedFd<'_>,
        at: usize,
        count: usize,
        offset: u64,
    ) -> io::Result<usize>;
}

/// A request in memory: reading consumes the front of the slice.
impl RequestReader for &[u8] {
    fn remaining(&self) -> usize {
        self.len()
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.len());
        let (head, rest) = self.split_at(n);
        buf[..n].copy_from_slice(head);
        *self = rest;
        Ok(n)
    }

    fn write_to(&mut self, fd: BorrowedFd<'_>, count: usize, offset: u64) -> io::Result<usize> {
        let n = count.min(self.len());
        if n == 0 {
            return Ok(0);
        }
        let written = rustix::io::pwrite(fd, &self[..n], offset)?.min(n);
        *self = &self[written..];
        Ok(written)
    }
}

/// A reply built in a `Vec` (grown as written, never past `capacity`).
#[derive(Debug)]
pub struct MemReply<'a> {
    buf: &'a mut Vec<u8>,
    capacity: usize,
}

impl<'a> MemReply<'a> {
    /// A reply of at most `capacity` bytes into `buf` (cleared first).
    pub fn new(buf: &'a mut Vec<u8>, capacity: usize) -> Self {
        buf.clear();
        Self { buf, capacity }
    }

    /// The span `[at, at + len)` if it fits in the capacity.
    fn span(&self, at: usize, len: usize) -> io::Result<std::ops::Range<usize>> {
        match at.checked_add(len) {
            Some(end) if end <= self.capacity => Ok(at..end),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "reply bytes past the capacity",
            )),
        }
    }
}

impl ReplyWriter for MemReply<'_> {
    fn capacity(&self) -> usize {
        self.capacity
    }

    fn write_at(&mut self, at: usize, bytes: &[u8]) -> io::Result<()> {
        let span = self.span(at, bytes.len())?;
        if self.buf.len() < span.end {
            self.buf.resize(span.end, 0);
        }
        self.buf[span].copy_from_slice(bytes);
        Ok(())
    }

    fn read_from(
        &mut self,
        fd: BorrowedFd<'_>,
        at: usize,
        count: usize,
        offset: u64,
    ) -> io::Result<usize> {
        let span = self.span(at, count)?;
        self.buf.resize(span.end, 0);
        let n = rustix::io::pread(fd, &mut self.buf[span], offset)?.min(count);
        self.buf.truncate(at + n);
        Ok(n)
    }
}

/// Fills `buf` from `req` as far as it goes; returns how many bytes were
/// read.
pub(crate) fn read_full<R: RequestReader + ?Sized>(
    req: &mut R,
    buf: &mut [u8],
) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match req.read(&mut buf[done..])? {
            0 => break,
            n => done += n.min(buf.len() - done),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn slices_read_and_write_as_cursors() {
        let file = tempfile::tempfile().unwrap();
        let mut req: &[u8] = b"headpayload";
        let mut head = [0u8; 4];
        assert_eq!(req.read(&mut head).unwrap(), 4);
        assert_eq!(&head, b"head");
        assert_eq!(req.remaining(), 7);
        assert_eq!(req.write_to(file.as_fd(), 3, 10).unwrap(), 3);
        assert_eq!(req.write_to(file.as_fd(), 100, 13).unwrap(), 4);
        assert_eq!(req.write_to(file.as_fd(), 100, 0).unwrap(), 0);
        let mut all = [0u8; 32];
        let n = rustix::io::pread(&file, &mut all, 0).unwrap();
        assert_eq!(&all[10..n], b"payload");

        let mut buf = Vec::new();
        let mut reply = MemReply::new(&mut buf, 16);
        assert!(reply.read_from(file.as_fd(), 4, 100, 10).is_err());
        assert_eq!(reply.read_from(file.as_fd(), 4, 12, 10).unwrap(), 7);
        reply.write_at(0, b"hdr:").unwrap();
        assert!(reply.write_at(15, b"xy").is_err());
        assert_eq!(&buf[..], b"hdr:payload");
    }
}
