//! Request parsing and dispatch: one FUSE request in, one reply out.
//!
//! Nothing the guest sends is trusted: every struct is read with a length
//! check, names must be NUL-terminated inside the request, and a request
//! that does not parse gets an EINVAL reply (never a panic). Replies are
//! built in a reusable buffer and never exceed the capacity the transport
//! has for them; a fixed-size reply that cannot fit is refused (ENOMEM, or
//! ERANGE for xattrs) before the operation runs, so no lookup is counted
//! for an entry the guest never receives.

use std::io::Write;

use rustix::io::Errno;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::abi::{self, op, EntryOut, InHeader, OutHeader};
use crate::fs::{Entry, Filesystem};
use crate::transport::{read_full, MemReply, ReplyWriter, RequestReader};

/// Largest WRITE payload the guest is told to send (and largest READ).
pub const MAX_WRITE: u32 = 1 << 20;
const MAX_PAGES: u16 = (MAX_WRITE / 4096) as u16;
/// Cache timeouts for entries and attributes.
const TIMEOUT_SECS: u64 = 1;
/// Flags of every opened file. FLUSH has nothing to do here (writes are
/// synchronous and POSIX locks are the guest kernel's own), so the kernel
/// is told not to send one on every close(): `echo x > f` in a shell
/// closes twice, two round trips of the seven a new small file costs.
const FILE_OPEN_FLAGS: u32 = abi::FOPEN_NOFLUSH;

/// The guest-supplied argument bytes of one request.
struct Args<'a>(&'a [u8]);

impl<'a> Args<'a> {
    fn obj<T: FromBytes + KnownLayout + Immutable>(&mut self) -> Result<T, Errno> {
        let (t, rest) = T::read_from_prefix(self.0).map_err(|_| Errno::INVAL)?;
        self.0 = rest;
        Ok(t)
    }

    /// A NUL-terminated string.
    fn name(&mut self) -> Result<&'a [u8], Errno> {
        let end = self.0.iter().position(|&b| b == 0).ok_or(Errno::INVAL)?;
        let (n, rest) = self.0.split_at(end);
        self.0 = &rest[1..];
        Ok(n)
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], Errno> {
        if n > self.0.len() {
            return Err(Errno::INVAL);
        }
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(b)
    }
}

fn xattr_name(n: &[u8]) -> Result<&str, Errno> {
    if n.is_empty() || n.len() > 255 {
        return Err(Errno::INVAL);
    }
    std::str::from_utf8(n).map_err(|_| Errno::INVAL)
}

fn entry_out(e: &Entry) -> EntryOut {
    EntryOut {
        nodeid: e.nodeid,
        generation: 0,
        entry_valid: TIMEOUT_SECS,
        attr_valid: TIMEOUT_SECS,
        entry_valid_nsec: 0,
        attr_valid_nsec: 0,
        attr: e.attr,
    }
}

fn attr_out(attr: abi::Attr) -> abi::AttrOut {
    abi::AttrOut {
        attr_valid: TIMEOUT_SECS,
        attr_valid_nsec: 0,
        dummy: 0,
        attr,
    }
}

/// The smallest successful reply payload of `opcode`; a transport buffer
/// that cannot hold it gets an error before the operation runs.
fn min_payload(opcode: u32) -> usize {
    match opcode {
        op::LOOKUP | op::MKDIR | op::MKNOD | op::SYMLINK | op::LINK => size_of::<EntryOut>(),
        op::CREATE => size_of::<EntryOut>() + size_of::<abi::OpenOut>(),
        op::GETATTR | op::SETATTR => size_of::<abi::AttrOut>(),
        op::OPEN | op::OPENDIR => size_of::<abi::OpenOut>(),
        op::WRITE | op::GETXATTR | op::LISTXATTR | op::LSEEK => 8,
        op::STATFS => size_of::<abi::Kstatfs>(),
        op::INIT => 8,
        _ => 0,
    }
}

/// The FUSE server of one share.
#[derive(Debug)]
pub struct Server {
    fs: Filesystem,
    initialized: bool,
    proto_minor: u32,
    /// Reply under construction: header + payload.
    buf: Vec<u8>,
    /// Arguments of the request being served (reused).
    args: Vec<u8>,
    /// The reply of [`handle`](Self::handle) (reused).
    scratch: Vec<u8>,
    stats: crate::stats::OpStats,
    /// Extended attributes are served; without, the xattr requests get
    /// ENOSYS, which the Linux client remembers: it then never asks again,
    /// in particular not for `security.capability` before the first write
    /// to every file (one round trip per new file saved).
    xattr: bool,
}

impl Server {
    pub fn new(fs: Filesystem) -> Self {
        Self {
            fs,
            initialized: false,
            proto_minor: 0,
            buf: Vec::with_capacity(64 * 1024),
            args: Vec::new(),
            scratch: Vec::new(),
            stats: Default::default(),
            xattr: true,
        }
    }

    pub fn filesystem(&self) -> &Filesystem {
        &self.fs
    }

    /// Keep the guest's owners in the copy-up log
    /// ([`Filesystem::record_owners`]).
    pub fn record_owners(&mut self) {
        self.fs.record_owners()
    }

    /// Bounds the share's upper layer ([`Filesystem::set_budget`]).
    pub fn set_budget(&mut self, budget: crate::UpperBudget) -> Result<(), crate::CowfsError> {
        self.fs.set_budget(budget)
    }

    /// Serve extended attributes (the default) or answer every xattr
    /// request ENOSYS, as virtiofsd does without `--xattr`. Copy-up
    /// preserves the host files' xattrs either way.
    pub fn set_xattr(&mut self, enabled: bool) {
        self.xattr = enabled;
    }

    /// Requests served so far, per opcode, and the time spent on them.
    pub fn stats(&self) -> &crate::stats::OpStats {
        &self.stats
    }

    /// Back to the state before INIT (device reset): every inode and handle
    /// is dropped and the next request must be INIT.
    pub fn reset(&mut self) {
        self.fs.reset();
        self.initialized = false;
    }

    /// Largest request the server will accept (a WRITE of `MAX_WRITE` bytes
    /// plus headers); transports cap what they gather at this.
    pub const fn max_request_len() -> usize {
        MAX_WRITE as usize + 4096
    }

    /// Serves one request (`fuse_in_header` and its arguments) and writes
    /// the reply, at most `capacity` bytes, to `out`. Returns the reply
    /// length: 0 for requests that get none (FORGET, BATCH_FORGET,
    /// INTERRUPT, or a buffer too short to hold even a header). The
    /// in-memory form of [`serve`](Self::serve).
    pub fn handle<W: Write + ?Sized>(
        &mut self,
        mut request: &[u8],
        capacity: usize,
        out: &mut W,
    ) -> std::io::Result<usize> {
        let mut buf = std::mem::take(&mut self.scratch);
        let result = self.serve(&mut request, &mut MemReply::new(&mut buf, capacity));
        let written = result.and_then(|n| out.write_all(&buf[..n]).map(|()| n));
        self.scratch = buf;
        written
    }

    /// Serves the request `req` holds and writes the reply into `reply`;
    /// returns the reply length as [`handle`](Self::handle) does. Only the
    /// header and arguments are copied out of `req`: a WRITE's data goes
    /// from `req` to the file and a READ's from the file into `reply`.
    pub fn serve<R, W>(&mut self, req: &mut R, reply: &mut W) -> std::io::Result<usize>
    where
        R: RequestReader + ?Sized,
        W: ReplyWriter + ?Sized,
    {
        let started = std::time::Instant::now();
        let mut head = [0u8; abi::IN_HEADER_SIZE];
        let got = read_full(req, &mut head)?;
        let Ok(h) = InHeader::read_from_bytes(&head[..got]) else {
            crate::warn_limited!(len = got, "cowfs: request shorter than a FUSE header");
            return Ok(0);
        };
        let result = self.serve_timed(&h, req, reply);
        self.stats.record(h.opcode, started.elapsed());
        result
    }

    fn serve_timed<R, W>(
        &mut self,
        h: &InHeader,
        req: &mut R,
        reply: &mut W,
    ) -> std::io::Result<usize>
    where
        R: RequestReader + ?Sized,
        W: ReplyWriter + ?Sized,
    {
        let capacity = reply.capacity();
        self.buf.clear();
        self.buf.extend_from_slice(OutHeader::default().as_bytes());
        let room = capacity.saturating_sub(abi::OUT_HEADER_SIZE);
        let args_len = usize::try_from(h.len)
            .ok()
            .and_then(|len| len.checked_sub(abi::IN_HEADER_SIZE))
            .filter(|&n| n <= req.remaining());
        let result = match args_len {
            Some(_) if room < min_payload(h.opcode) => {
                Err(if matches!(h.opcode, op::GETXATTR | op::LISTXATTR) {
                    Errno::RANGE
                } else {
                    Errno::NOMEM
                })
            }
            Some(len) => self.gather_and_dispatch(h, len, req, reply, room),
            None => {
                crate::warn_limited!(
                    header_len = h.len,
                    len = abi::IN_HEADER_SIZE + req.remaining(),
                    opcode = h.opcode,
                    "cowfs: request length mismatch"
                );
                Err(Errno::INVAL)
            }
        };
        let (error, len) = match result {
            Ok(Outcome::None) => return Ok(0),
            Ok(Outcome::Data) => (0, self.buf.len()),
            Ok(Outcome::Direct(n)) => (0, abi::OUT_HEADER_SIZE + n),
            Err(e) => (-e.raw_os_error(), abi::OUT_HEADER_SIZE),
        };
        if capacity < abi::OUT_HEADER_SIZE {
            return Ok(0);
        }
        let (error, len) = if len > capacity {
            (-Errno::NOMEM.raw_os_error(), abi::OUT_HEADER_SIZE)
        } else {
            (error, len)
        };
        let hdr = OutHeader {
            len: len as u32,
            error,
            unique: h.unique,
        };
        self.buf[..abi::OUT_HEADER_SIZE].copy_from_slice(hdr.as_bytes());
        // A Direct reply's data is already in place after the header.
        let inline = if len > self.buf.len() {
            abi::OUT_HEADER_SIZE
        } else {
            len
        };
        reply.write_at(0, &self.buf[..inline])?;
        Ok(len)
    }

    /// Copies the arguments out of `req` (for a WRITE only its `write_in`:
    /// the data stays in `req`) and dispatches.
    fn gather_and_dispatch<R, W>(
        &mut self,
        h: &InHeader,
        args_len: usize,
        req: &mut R,
        reply: &mut W,
        room: usize,
    ) -> Result<Outcome, Errno>
    where
        R: RequestReader + ?Sized,
        W: ReplyWriter + ?Sized,
    {
        let gather = if h.opcode == op::WRITE {
            args_len.min(size_of::<abi::WriteIn>())
        } else {
            args_len
        };
        let mut args = std::mem::take(&mut self.args);
        args.resize(gather, 0);
        let result = match read_full(req, &mut args) {
            Ok(n) if n == gather => {
                let io = Io {
                    payload: args_len - gather,
                    req,
                    reply,
                    room,
                };
                self.dispatch(h, Args(&args), io)
            }
            Ok(_) => Err(Errno::INVAL),
            Err(e) => Err(Errno::from_io_error(&e).unwrap_or(Errno::IO)),
        };
        self.args = args;
        result
    }

    fn push<T: IntoBytes + Immutable>(&mut self, v: &T) {
        self.buf.extend_from_slice(v.as_bytes());
    }

    fn dispatch<R, W>(
        &mut self,
        h: &InHeader,
        mut a: Args<'_>,
        io: Io<'_, R, W>,
    ) -> Result<Outcome, Errno>
    where
        R: RequestReader + ?Sized,
        W: ReplyWriter + ?Sized,
    {
        let room = io.room;
        if h.opcode == op::INIT {
            return self.init(&mut a);
        }
        if !self.initialized {
            return match h.opcode {
                op::FORGET | op::BATCH_FORGET | op::INTERRUPT => Ok(Outcome::None),
                _ => Err(Errno::IO),
            };
        }
        if !self.xattr
            && matches!(
                h.opcode,
                op::GETXATTR | op::LISTXATTR | op::SETXATTR | op::REMOVEXATTR
            )
        {
            return Err(Errno::NOSYS);
        }
        let owner = (h.uid, h.gid);
        let fs = &mut self.fs;
        let id = h.nodeid;
        match h.opcode {
            op::LOOKUP => {
                let e = fs.lookup(id, a.name()?)?;
                self.push(&entry_out(&e));
            }
            op::FORGET => {
                let f: abi::ForgetIn = a.obj()?;
                fs.forget(id, f.nlookup);
                return Ok(Outcome::None);
            }
            op::BATCH_FORGET => {
                let b: abi::BatchForgetIn = a.obj()?;
                for _ in 0..b.count {
                    let Ok(f) = a.obj::<abi::ForgetOne>() else {
                        break;
                    };
                    fs.forget(f.nodeid, f.nlookup);
                }
                return Ok(Outcome::None);
            }
            op::INTERRUPT | op::NOTIFY_REPLY => return Ok(Outcome::None),
            op::GETATTR => {
                let g: abi::GetattrIn = a.obj().unwrap_or_default();
                let fh = (g.getattr_flags & abi::GETATTR_FH != 0).then_some(g.fh);
                let attr = fs.getattr(id, fh)?;
                self.push(&attr_out(attr));
            }
            op::SETATTR => {
                let s: abi::SetattrIn = a.obj()?;
                let mut attr = fs.setattr(id, &s)?;
                if s.valid & abi::fattr::KILL_SUIDGID != 0 && attr.mode & 0o6000 != 0 {
                    fs.kill_suidgid_node(id)?;
                    attr = fs.getattr(id, None)?;
                }
                self.push(&attr_out(attr));
            }
            op::READLINK => {
                let target = fs.readlink(id)?;
                if target.len() > room {
                    return Err(Errno::NAMETOOLONG);
                }
                self.buf.extend_from_slice(&target);
            }
            op::SYMLINK => {
                let name = a.name()?;
                let target = a.name()?;
                let e = fs.symlink(id, name, target, owner)?;
                self.push(&entry_out(&e));
            }
            op::MKNOD => {
                let m: abi::MknodIn = a.obj()?;
                let e = fs.mknod(id, a.name()?, m.mode, owner)?;
                self.push(&entry_out(&e));
            }
            op::MKDIR => {
                let m: abi::MkdirIn = a.obj()?;
                let e = fs.mkdir(id, a.name()?, m.mode, owner)?;
                self.push(&entry_out(&e));
            }
            op::UNLINK => fs.unlink(id, a.name()?)?,
            op::RMDIR => fs.rmdir(id, a.name()?)?,
            op::RENAME => {
                let r: abi::RenameIn = a.obj()?;
                let (old, new) = (a.name()?, a.name()?);
                fs.rename(id, old, r.newdir, new, 0)?;
            }
            op::RENAME2 => {
                let r: abi::Rename2In = a.obj()?;
                let (old, new) = (a.name()?, a.name()?);
                fs.rename(id, old, r.newdir, new, r.flags)?;
            }
            op::LINK => {
                let l: abi::LinkIn = a.obj()?;
                let e = fs.link(l.oldnodeid, id, a.name()?)?;
                self.push(&entry_out(&e));
            }
            op::OPEN => {
                let o: abi::OpenIn = a.obj()?;
                let fh = fs.open(id, o.flags)?;
                if o.open_flags & abi::OPEN_KILL_SUIDGID != 0 {
                    if let Err(e) = fs.kill_suidgid(fh) {
                        let _ = fs.release(fh);
                        return Err(e);
                    }
                }
                self.push(&abi::OpenOut {
                    fh,
                    open_flags: FILE_OPEN_FLAGS,
                    backing_id: 0,
                });
            }
            op::CREATE => {
                let c: abi::CreateIn = a.obj()?;
                let (e, fh) = fs.create(id, a.name()?, c.flags, c.mode, owner)?;
                // An existing file opened with O_TRUNC by a writer without
                // CAP_FSETID (HANDLE_KILLPRIV_V2).
                if c.open_flags & abi::OPEN_KILL_SUIDGID != 0 {
                    if let Err(err) = fs.kill_suidgid(fh) {
                        let _ = fs.release(fh);
                        fs.forget(e.nodeid, 1);
                        return Err(err);
                    }
                }
                self.push(&entry_out(&e));
                self.push(&abi::OpenOut {
                    fh,
                    open_flags: FILE_OPEN_FLAGS,
                    backing_id: 0,
                });
            }
            op::READ => {
                let r: abi::ReadIn = a.obj()?;
                let n = (r.size.min(MAX_WRITE) as usize).min(room);
                let got = fs.read(r.fh, r.offset, io.reply, abi::OUT_HEADER_SIZE, n)?;
                return Ok(Outcome::Direct(got));
            }
            op::WRITE => {
                let w: abi::WriteIn = a.obj()?;
                // The data must all be there: no short write of a request
                // whose size field disagrees with its payload.
                if w.size > MAX_WRITE || w.size as usize > io.payload {
                    return Err(Errno::INVAL);
                }
                let n = fs.write(w.fh, w.offset, io.req, w.size as usize)?;
                if w.write_flags & abi::WRITE_KILL_SUIDGID != 0 {
                    fs.kill_suidgid(w.fh)?;
                }
                self.push(&abi::WriteOut {
                    size: n as u32,
                    padding: 0,
                });
            }
            op::STATFS => {
                let s = fs.statfs()?;
                self.push(&s);
            }
            op::RELEASE | op::RELEASEDIR => {
                let r: abi::ReleaseIn = a.obj()?;
                fs.release(r.fh)?;
            }
            op::FLUSH => {
                let f: abi::FlushIn = a.obj()?;
                fs.flush(f.fh)?;
            }
            op::FSYNC | op::FSYNCDIR => {
                let f: abi::FsyncIn = a.obj()?;
                fs.fsync(f.fh, f.fsync_flags & abi::FSYNC_FDATASYNC != 0)?;
            }
            op::SETXATTR => {
                // SETXATTR_EXT is never offered: the compat layout is in use.
                let sx: abi::SetxattrInCompat = a.obj()?;
                let (size, flags) = (sx.size, sx.flags);
                let name = xattr_name(a.name()?)?;
                let value = a.bytes(size as usize)?;
                fs.setxattr(id, name, Some(value), flags)?;
            }
            op::GETXATTR | op::LISTXATTR => {
                let g: abi::GetxattrIn = a.obj()?;
                let value = if h.opcode == op::GETXATTR {
                    fs.getxattr(id, xattr_name(a.name()?)?)?
                } else {
                    fs.listxattr(id)?
                };
                if g.size == 0 {
                    self.push(&abi::GetxattrOut {
                        size: value.len() as u32,
                        padding: 0,
                    });
                } else if value.len() > g.size as usize || value.len() > room {
                    return Err(Errno::RANGE);
                } else {
                    self.buf.extend_from_slice(&value);
                }
            }
            op::REMOVEXATTR => {
                let name = xattr_name(a.name()?)?;
                fs.setxattr(id, name, None, 0)?;
            }
            op::OPENDIR => {
                let _: abi::OpenIn = a.obj()?;
                let fh = fs.opendir(id)?;
                self.push(&abi::OpenOut {
                    fh,
                    open_flags: 0,
                    backing_id: 0,
                });
            }
            op::READDIR | op::READDIRPLUS => {
                let r: abi::ReadIn = a.obj()?;
                let limit = (r.size.min(MAX_WRITE) as usize).min(room);
                self.readdir(r.fh, r.offset, limit, h.opcode == op::READDIRPLUS)?;
            }
            op::ACCESS => {
                let acc: abi::AccessIn = a.obj()?;
                fs.access(id, acc.mask)?;
            }
            op::FALLOCATE => {
                let f: abi::FallocateIn = a.obj()?;
                fs.fallocate(f.fh, f.offset, f.length, f.mode)?;
            }
            op::LSEEK => {
                let l: abi::LseekIn = a.obj()?;
                let offset = fs.lseek(l.fh, l.offset, l.whence)?;
                self.push(&abi::LseekOut { offset });
            }
            op::DESTROY => {
                fs.reset();
                self.initialized = false;
            }
            op::SYNCFS => {}
            op::GETLK
            | op::SETLK
            | op::SETLKW
            | op::BMAP
            | op::IOCTL
            | op::POLL
            | op::COPY_FILE_RANGE
            | op::TMPFILE
            | op::STATX => {
                // Known and deliberately unsupported: the kernel falls back
                // (local locks, read/write copies, GETATTR for statx).
                return Err(Errno::NOSYS);
            }
            other => {
                crate::warn_limited!(opcode = other, "cowfs: unknown opcode");
                return Err(Errno::NOSYS);
            }
        }
        Ok(Outcome::Data)
    }

    fn init(&mut self, a: &mut Args<'_>) -> Result<Outcome, Errno> {
        let i: abi::InitInCompat = a.obj()?;
        if i.major < abi::KERNEL_VERSION {
            return Err(Errno::PROTO);
        }
        if i.major > abi::KERNEL_VERSION {
            // Tell the kernel our major; it will send a new INIT.
            self.push(&abi::KERNEL_VERSION);
            self.push(&abi::KERNEL_MINOR_VERSION);
            return Ok(Outcome::Data);
        }
        let mut flags = u64::from(i.flags);
        if flags & abi::init::INIT_EXT != 0 {
            if let Ok(ext) = a.obj::<abi::InitInExt>() {
                flags |= u64::from(ext.flags2) << 32;
            }
        }
        let offered = abi::init::ASYNC_READ
            | abi::init::ATOMIC_O_TRUNC
            | abi::init::BIG_WRITES
            | abi::init::DO_READDIRPLUS
            | abi::init::READDIRPLUS_AUTO
            | abi::init::PARALLEL_DIROPS
            | abi::init::MAX_PAGES
            | abi::init::HANDLE_KILLPRIV_V2;
        let agreed = flags & offered;
        if self.initialized {
            self.fs.reset();
        }
        self.initialized = true;
        self.proto_minor = i.minor.min(abi::KERNEL_MINOR_VERSION);
        let reply = abi::InitOut {
            major: abi::KERNEL_VERSION,
            minor: abi::KERNEL_MINOR_VERSION,
            max_readahead: i.max_readahead,
            flags: agreed as u32,
            max_background: 64,
            congestion_threshold: 48,
            max_write: MAX_WRITE,
            time_gran: 1,
            max_pages: MAX_PAGES,
            map_alignment: 0,
            flags2: (agreed >> 32) as u32,
            max_stack_depth: 0,
            unused: [0; 6],
        };
        let size = match i.minor {
            0..=4 => 8,
            5..=22 => 24,
            _ => size_of::<abi::InitOut>(),
        };
        self.buf.extend_from_slice(&reply.as_bytes()[..size]);
        Ok(Outcome::Data)
    }

    fn readdir(&mut self, fh: u64, offset: u64, limit: usize, plus: bool) -> Result<(), Errno> {
        let (dir, entries) = self.fs.dir_entries(fh)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        // No more than fit in `limit` (a record is at least DIRENT_SIZE).
        let batch = entries
            .iter()
            .skip(start)
            .take(limit / abi::DIRENT_SIZE + 1);
        let base = self.buf.len();
        let mut dirs = None;
        for (i, e) in batch.enumerate() {
            let header = if plus {
                abi::ENTRY_OUT_SIZE + abi::DIRENT_SIZE
            } else {
                abi::DIRENT_SIZE
            };
            let rec = abi::dirent_align(header + e.name.len());
            if self.buf.len() - base + rec > limit {
                break;
            }
            let mut typ = e.typ;
            if plus {
                let special = e.name == b"." || e.name == b"..";
                let out = if special {
                    EntryOut::default()
                } else {
                    match self.fs.lookup_in(dir, &e.name, &mut dirs) {
                        Ok(ent) => {
                            typ = Filesystem::to_dt(ent.attr.mode);
                            entry_out(&ent)
                        }
                        // Gone since OPENDIR: skip it.
                        Err(Errno::NOENT) => continue,
                        Err(err) if i == 0 => return Err(err),
                        Err(_) => break,
                    }
                };
                self.push(&out);
            }
            let d = abi::Dirent {
                ino: e.ino,
                off: (start + i + 1) as u64,
                namelen: e.name.len() as u32,
                typ,
            };
            self.push(&d);
            self.buf.extend_from_slice(&e.name);
            let pad = rec - header - e.name.len();
            self.buf.extend_from_slice(&[0u8; 8][..pad]);
        }
        Ok(())
    }
}

enum Outcome {
    /// No reply at all (FORGET and friends).
    None,
    /// The payload in the buffer (possibly empty).
    Data,
    /// This many payload bytes already in the transport's reply, after
    /// the header (READ).
    Direct(usize),
}

/// What the data opcodes need of the transport.
struct Io<'a, R: ?Sized, W: ?Sized> {
    /// Request bytes left in `req` after the gathered arguments.
    payload: usize,
    req: &'a mut R,
    reply: &'a mut W,
    /// Reply room after the header.
    room: usize,
}
