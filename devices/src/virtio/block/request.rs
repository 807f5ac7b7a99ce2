//! One virtio-blk request: its chain read as two byte streams (what the
//! driver gives, what the device fills), checked, and served against the
//! image.
//!
//! A chain is readable buffers then writable ones. The readable stream
//! starts with the 16-byte header (type, reserved, sector) and holds the
//! data of OUT and the segments of DISCARD / WRITE_ZEROES; the writable
//! stream holds the data of IN and GET_ID and ends with the status byte.
//! Buffers may split any of these anywhere: the driver's layout is not
//! trusted, only the streams' bytes.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::{ID_BYTES, MAX_DISCARD_SECTORS, MAX_DISCARD_SEGMENTS, MAX_REQUEST_BYTES, SECTOR_SIZE};

/// Request types (virtio 1.2, 5.2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum RequestType {
    In = 0,
    Out = 1,
    Flush = 4,
    GetId = 8,
    Discard = 11,
    WriteZeroes = 13,
}

impl RequestType {
    fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::In,
            1 => Self::Out,
            4 => Self::Flush,
            8 => Self::GetId,
            11 => Self::Discard,
            13 => Self::WriteZeroes,
            _ => return None,
        })
    }
}

/// Request status byte values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Ok = 0,
    IoErr = 1,
    Unsupp = 2,
}

/// Header bytes: le32 type, le32 reserved, le64 sector.
const HEADER_LEN: u64 = 16;
/// DISCARD / WRITE_ZEROES segment: le64 sector, le32 num_sectors, le32 flags.
const SEGMENT_LEN: u64 = 16;
/// WRITE_ZEROES flag: the device may unmap (we always do).
const FLAG_UNMAP: u32 = 1;
/// Descriptors kept per chain; a longer chain is answered IOERR (Linux
/// uses at most SEG_MAX + 2).
pub(crate) const MAX_DESCS: usize = super::QUEUE_SIZE as usize;

/// One guest buffer, already checked to lie in guest memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Buf {
    addr: GuestAddress,
    len: u64,
}

/// What serving needs of the device: the image and its shape, the copy
/// buffer, and the reusable descriptor lists (so a request allocates
/// nothing).
pub(crate) struct Disk<'a> {
    pub file: &'a File,
    /// Bytes; a whole number of sectors.
    pub capacity: u64,
    pub read_only: bool,
    pub id: &'a [u8; ID_BYTES],
    pub scratch: &'a mut [u8],
    pub readable: &'a mut Vec<Buf>,
    pub writable: &'a mut Vec<Buf>,
}

/// Why a request failed, for the log (the guest sees only the status).
#[derive(Debug)]
enum Fail {
    /// IOERR: the request was wrong or the image refused it.
    Bad(&'static str),
    Io(io::Error),
    Unsupp,
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        Fail::Io(e)
    }
}

impl Disk<'_> {
    /// Serves one chain; returns the bytes written into it (data and
    /// status; 0 when it has nowhere to put a status) and whether the
    /// request succeeded.
    pub fn serve(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: DescriptorChain<&GuestMemoryMmap>,
    ) -> (u32, bool) {
        self.readable.clear();
        self.writable.clear();
        let mut malformed: Option<&'static str> = None;
        // The status byte's buffer: the last writable one, wherever the
        // chain is otherwise broken.
        let mut last_writable: Option<Buf> = None;
        let mut count = 0usize;
        for desc in chain {
            count += 1;
            let Some(len) = crate::virtio::serve::guest_buffer("virtio-blk", mem, &desc) else {
                malformed.get_or_insert("buffer outside guest memory");
                last_writable = None;
                continue;
            };
            let buf = Buf {
                addr: desc.addr(),
                len: len as u64,
            };
            if desc.is_write_only() {
                if len > 0 {
                    last_writable = Some(buf);
                }
                if count <= MAX_DESCS {
                    self.writable.push(buf);
                }
            } else {
                if !self.writable.is_empty() {
                    malformed.get_or_insert("readable buffer after a writable one");
                }
                if count <= MAX_DESCS {
                    self.readable.push(buf);
                }
            }
        }
        if count > MAX_DESCS {
            malformed.get_or_insert("too many descriptors");
        }
        // The status byte must be the last byte of the last writable buffer
        // of the chain as it is, not of what we kept.
        let Some(status_buf) = last_writable.filter(|b| {
            self.writable
                .last()
                .is_some_and(|w| w.addr == b.addr && w.len == b.len)
        }) else {
            warn_limited!(
                reason = malformed.unwrap_or("no status byte"),
                "virtio-blk: chain without a usable status byte"
            );
            return (0, false);
        };
        // Guest memory was checked, so this cannot overflow.
        let status_addr = status_buf.addr.unchecked_add(status_buf.len - 1);
        let w_total: u64 = self.writable.iter().map(|b| b.len).sum();
        let data_room = w_total - 1;

        let (status, written) = match malformed {
            Some(why) => (Err(Fail::Bad(why)), 0),
            None => self.dispatch(mem, data_room),
        };
        let status = match status {
            Ok(()) => Status::Ok,
            Err(Fail::Unsupp) => Status::Unsupp,
            Err(Fail::Bad(why)) => {
                warn_limited!(reason = why, "virtio-blk: request refused");
                Status::IoErr
            }
            Err(Fail::Io(e)) => {
                warn_limited!(error = %e, "virtio-blk: image I/O failed");
                Status::IoErr
            }
        };
        if mem.write_obj(status as u8, status_addr).is_err() {
            return (0, false);
        }
        // written <= MAX_REQUEST_BYTES (IN) or ID_BYTES (GET_ID): it fits.
        let len = u32::try_from(written + 1).unwrap_or(u32::MAX);
        (len, status == Status::Ok)
    }

    /// Reads the header and serves the request; returns the outcome and the
    /// data bytes written into the chain.
    fn dispatch(&mut self, mem: &GuestMemoryMmap, data_room: u64) -> (Result<(), Fail>, u64) {
        let r_total: u64 = self.readable.iter().map(|b| b.len).sum();
        let mut header = [0u8; HEADER_LEN as usize];
        if r_total < HEADER_LEN || !read_stream(mem, self.readable, 0, &mut header) {
            return (Err(Fail::Bad("short request header")), 0);
        }
        let kind = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default());
        let sector = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        let payload = r_total - HEADER_LEN;
        let Some(kind) = RequestType::from_u32(kind) else {
            return (Err(Fail::Unsupp), 0);
        };
        match kind {
            RequestType::In => {
                let r = self.check_range(sector, data_room);
                match r {
                    Ok(offset) => {
                        let mut done = 0;
                        let r = self.read_into(mem, offset, data_room, &mut done);
                        (r, done)
                    }
                    Err(e) => (Err(e), 0),
                }
            }
            RequestType::Out => {
                if self.read_only {
                    return (Err(Fail::Bad("write to a read-only volume")), 0);
                }
                let r = self
                    .check_range(sector, payload)
                    .and_then(|offset| self.write_from(mem, offset, payload));
                (r, 0)
            }
            RequestType::Flush => {
                if self.read_only {
                    return (Ok(()), 0);
                }
                (self.file.sync_data().map_err(Fail::Io), 0)
            }
            RequestType::GetId => {
                let n = data_room.min(ID_BYTES as u64);
                let ok = write_stream(mem, self.writable, 0, &self.id[..n as usize]);
                if ok {
                    (Ok(()), n)
                } else {
                    (Err(Fail::Bad("GET_ID buffer not writable")), 0)
                }
            }
            RequestType::Discard | RequestType::WriteZeroes => {
                if self.read_only {
                    return (Err(Fail::Bad("discard on a read-only volume")), 0);
                }
                (self.zero_segments(mem, kind, payload), 0)
            }
        }
    }

    /// The byte offset of `sector` when `len` bytes from it are whole
    /// sectors within the image and within one request's bound.
    fn check_range(&self, sector: u64, len: u64) -> Result<u64, Fail> {
        if !len.is_multiple_of(SECTOR_SIZE) {
            return Err(Fail::Bad("data is not a whole number of sectors"));
        }
        if len > MAX_REQUEST_BYTES {
            return Err(Fail::Bad("request larger than the device allows"));
        }
        sector
            .checked_mul(SECTOR_SIZE)
            .filter(|&off| off.checked_add(len).is_some_and(|end| end <= self.capacity))
            .ok_or(Fail::Bad("sector range beyond the end of the volume"))
    }

    /// IN: `len` bytes of the image from `offset` into the writable stream.
    fn read_into(
        &mut self,
        mem: &GuestMemoryMmap,
        offset: u64,
        len: u64,
        done: &mut u64,
    ) -> Result<(), Fail> {
        while *done < len {
            let n = (len - *done).min(self.scratch.len() as u64) as usize;
            let buf = &mut self.scratch[..n];
            read_full_at(self.file, buf, offset + *done)?;
            if !write_stream(mem, self.writable, *done, buf) {
                return Err(Fail::Bad("read buffer not writable"));
            }
            *done += n as u64;
        }
        Ok(())
    }

    /// OUT: `len` bytes of the readable stream after the header to the
    /// image at `offset`.
    fn write_from(&mut self, mem: &GuestMemoryMmap, offset: u64, len: u64) -> Result<(), Fail> {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(self.scratch.len() as u64) as usize;
            let buf = &mut self.scratch[..n];
            if !read_stream(mem, self.readable, HEADER_LEN + done, buf) {
                return Err(Fail::Bad("write buffer not readable"));
            }
            self.file.write_all_at(buf, offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    /// DISCARD / WRITE_ZEROES: every segment checked first, then each range
    /// punched out (reads as zeroes, frees the host's blocks).
    fn zero_segments(
        &mut self,
        mem: &GuestMemoryMmap,
        kind: RequestType,
        payload: u64,
    ) -> Result<(), Fail> {
        if payload == 0 || !payload.is_multiple_of(SEGMENT_LEN) {
            return Err(Fail::Bad("discard segments malformed"));
        }
        let count = payload / SEGMENT_LEN;
        if count > u64::from(MAX_DISCARD_SEGMENTS) {
            return Err(Fail::Bad("too many discard segments"));
        }
        // Checked in a first pass: a request is applied whole or not at all.
        for pass in 0..2 {
            for i in 0..count {
                let mut seg = [0u8; SEGMENT_LEN as usize];
                if !read_stream(mem, self.readable, HEADER_LEN + i * SEGMENT_LEN, &mut seg) {
                    return Err(Fail::Bad("discard segment not readable"));
                }
                let sector = u64::from_le_bytes(seg[0..8].try_into().unwrap_or_default());
                let sectors = u32::from_le_bytes(seg[8..12].try_into().unwrap_or_default());
                let flags = u32::from_le_bytes(seg[12..16].try_into().unwrap_or_default());
                let allowed = if kind == RequestType::WriteZeroes {
                    FLAG_UNMAP
                } else {
                    0
                };
                if flags & !allowed != 0 {
                    return Err(Fail::Unsupp);
                }
                if sectors > MAX_DISCARD_SECTORS {
                    return Err(Fail::Bad("discard segment too large"));
                }
                let len = u64::from(sectors) * SECTOR_SIZE;
                let offset = sector
                    .checked_mul(SECTOR_SIZE)
                    .filter(|&off| off.checked_add(len).is_some_and(|end| end <= self.capacity))
                    .ok_or(Fail::Bad("discard range beyond the end of the volume"))?;
                if pass == 1 && len > 0 {
                    self.punch(kind, offset, len)?;
                }
            }
        }
        Ok(())
    }

    fn punch(&mut self, kind: RequestType, offset: u64, len: u64) -> Result<(), Fail> {
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        // Both fit: the range lies within the image, whose size is an i64.
        let (off, n) = (offset as libc::off_t, len as libc::off_t);
        // SAFETY: fallocate on a descriptor we own; KEEP_SIZE never changes
        // the file's size and the range was checked against it.
        let ret = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, off, n) };
        if ret == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EOPNOTSUPP) {
            return Err(Fail::Io(err));
        }
        // A file system without holes: a discard is only a hint, but
        // zeroes asked for are written.
        if kind == RequestType::Discard {
            return Ok(());
        }
        self.scratch.fill(0);
        let mut done = 0;
        while done < len {
            let n = (len - done).min(self.scratch.len() as u64) as usize;
            self.file.write_all_at(&self.scratch[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }
}

/// Reads the image at `offset` into all of `buf`; past the end of a file
/// that shrank under us, zeroes.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => {
                buf[filled..].fill(0);
                break;
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Calls `f(addr, range)` for the part of each buffer of the stream
/// `bufs` that falls in `[start, start + len)`, in order; stops and
/// returns false when `f` does.
fn walk(
    bufs: &[Buf],
    start: u64,
    len: usize,
    mut f: impl FnMut(GuestAddress, std::ops::Range<usize>) -> bool,
) -> bool {
    let mut pos = 0u64; // stream offset of the current buffer
    let mut done = 0usize; // bytes of [start, start+len) handled
    for b in bufs {
        if done == len {
            break;
        }
        let end = pos + b.len;
        let at = start + done as u64;
        if at < end {
            let skip = at - pos;
            let n = ((b.len - skip) as usize).min(len - done);
            if !f(b.addr.unchecked_add(skip), done..done + n) {
                return false;
            }
            done += n;
        }
        pos = end;
    }
    done == len
}

/// Fills `out` from the stream at `start`; false if the stream is shorter
/// or memory refused.
fn read_stream(mem: &GuestMemoryMmap, bufs: &[Buf], start: u64, out: &mut [u8]) -> bool {
    let len = out.len();
    walk(bufs, start, len, |addr, r| {
        mem.read_slice(&mut out[r], addr).is_ok()
    })
}

/// Writes `data` into the stream at `start`.
fn write_stream(mem: &GuestMemoryMmap, bufs: &[Buf], start: u64, data: &[u8]) -> bool {
    walk(bufs, start, data.len(), |addr, r| {
        mem.write_slice(&data[r], addr).is_ok()
    })
}
