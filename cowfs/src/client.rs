//! A FUSE client over a [`Server`], for tests, fuzz seeds and tools:
//! encodes requests the way the Linux kernel does and decodes replies.
//! Errors are positive errno values.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::abi::{self, op, Attr, EntryOut, InHeader, OutHeader};
use crate::server::Server;

pub type Res<T> = Result<T, i32>;

/// Encodes one request: header (with the right length) and arguments.
pub fn request(opcode: u32, nodeid: u64, unique: u64, args: &[&[u8]]) -> Vec<u8> {
    let len: usize = abi::IN_HEADER_SIZE + args.iter().map(|a| a.len()).sum::<usize>();
    let h = InHeader {
        len: len as u32,
        opcode,
        unique,
        nodeid,
        uid: 0,
        gid: 0,
        pid: 1,
        total_extlen: 0,
        padding: 0,
    };
    let mut v = h.as_bytes().to_vec();
    for a in args {
        v.extend_from_slice(a);
    }
    v
}

/// `name` followed by its NUL terminator.
pub fn cstr(name: &[u8]) -> Vec<u8> {
    let mut v = name.to_vec();
    v.push(0);
    v
}

fn parse<T: FromBytes + KnownLayout + Immutable>(b: &[u8]) -> Res<T> {
    T::read_from_prefix(b)
        .map(|(t, _)| t)
        .map_err(|_| libc_eproto())
}

const fn libc_eproto() -> i32 {
    71
}

/// One entry of a READDIR / READDIRPLUS reply.
#[derive(Debug, Clone)]
pub struct DirItem {
    pub name: Vec<u8>,
    pub ino: u64,
    pub typ: u32,
    pub off: u64,
    /// READDIRPLUS only.
    pub entry: Option<EntryOut>,
}

/// Parses the payload of a READDIR (`plus` false) or READDIRPLUS reply.
pub fn parse_dirents(mut b: &[u8], plus: bool) -> Res<Vec<DirItem>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let entry = if plus {
            let e: EntryOut = parse(b)?;
            b = &b[abi::ENTRY_OUT_SIZE..];
            Some(e)
        } else {
            None
        };
        let d: abi::Dirent = parse(b)?;
        let namelen = d.namelen as usize;
        let name = b
            .get(abi::DIRENT_SIZE..abi::DIRENT_SIZE + namelen)
            .ok_or(libc_eproto())?
            .to_vec();
        let rec = abi::dirent_align(abi::DIRENT_SIZE + namelen);
        b = b.get(rec..).unwrap_or(&[]);
        out.push(DirItem {
            name,
            ino: d.ino,
            typ: d.typ,
            off: d.off,
            entry,
        });
    }
    Ok(out)
}

pub struct Client {
    pub server: Server,
    unique: u64,
    /// Reply capacity offered with each request.
    pub capacity: usize,
}

impl Client {
    pub fn new(server: Server) -> Self {
        Self {
            server,
            unique: 0,
            capacity: 2 << 20,
        }
    }

    /// Sends raw request bytes; returns (error, payload) or None if the
    /// server sent no reply.
    pub fn send(&mut self, req: &[u8]) -> Option<(i32, Vec<u8>)> {
        let mut out = Vec::new();
        let n = self
            .server
            .handle(req, self.capacity, &mut out)
            .expect("writing to a Vec cannot fail");
        assert_eq!(n, out.len());
        if n == 0 {
            return None;
        }
        let (h, _) = OutHeader::read_from_prefix(&out).expect("reply shorter than a header");
        assert_eq!(h.len as usize, n, "reply length field");
        assert!(h.error <= 0, "positive error in reply");
        assert!(
            h.error == 0 || n == abi::OUT_HEADER_SIZE,
            "error reply with payload"
        );
        Some((-h.error, out[abi::OUT_HEADER_SIZE..].to_vec()))
    }

    /// Sends one request and returns its payload or errno.
    pub fn call(&mut self, opcode: u32, nodeid: u64, args: &[&[u8]]) -> Res<Vec<u8>> {
        self.unique += 1;
        let req = request(opcode, nodeid, self.unique, args);
        match self.send(&req) {
            Some((0, payload)) => Ok(payload),
            Some((e, _)) => Err(e),
            None => Ok(Vec::new()),
        }
    }

    pub fn init(&mut self) -> Res<abi::InitOut> {
        let i = abi::InitInCompat {
            major: 7,
            minor: 41,
            max_readahead: 1 << 17,
            flags: (abi::init::DO_READDIRPLUS
                | abi::init::MAX_PAGES
                | abi::init::INIT_EXT
                | abi::init::BIG_WRITES) as u32,
        };
        let ext = abi::InitInExt::default();
        let b = self.call(op::INIT, 0, &[i.as_bytes(), ext.as_bytes()])?;
        parse(&b)
    }

    pub fn lookup(&mut self, parent: u64, name: &[u8]) -> Res<EntryOut> {
        parse(&self.call(op::LOOKUP, parent, &[&cstr(name)])?)
    }

    pub fn forget(&mut self, node: u64, n: u64) {
        let _ = self.call(op::FORGET, node, &[abi::ForgetIn { nlookup: n }.as_bytes()]);
    }

    pub fn getattr(&mut self, node: u64) -> Res<Attr> {
        let g = abi::GetattrIn::default();
        parse::<abi::AttrOut>(&self.call(op::GETATTR, node, &[g.as_bytes()])?).map(|a| a.attr)
    }

    pub fn setattr(&mut self, node: u64, s: &abi::SetattrIn) -> Res<Attr> {
        parse::<abi::AttrOut>(&self.call(op::SETATTR, node, &[s.as_bytes()])?).map(|a| a.attr)
    }

    pub fn chmod(&mut self, node: u64, mode: u32) -> Res<Attr> {
        self.setattr(
            node,
            &abi::SetattrIn {
                valid: abi::fattr::MODE,
                mode,
                ..Default::default()
            },
        )
    }

    pub fn truncate(&mut self, node: u64, size: u64) -> Res<Attr> {
        self.setattr(
            node,
            &abi::SetattrIn {
                valid: abi::fattr::SIZE,
                size,
                ..Default::default()
            },
        )
    }

    pub fn mkdir(&mut self, parent: u64, name: &[u8], mode: u32) -> Res<EntryOut> {
        let m = abi::MkdirIn { mode, umask: 0 };
        parse(&self.call(op::MKDIR, parent, &[m.as_bytes(), &cstr(name)])?)
    }

    pub fn mknod(&mut self, parent: u64, name: &[u8], mode: u32, rdev: u32) -> Res<EntryOut> {
        let m = abi::MknodIn {
            mode,
            rdev,
            umask: 0,
            padding: 0,
        };
        parse(&self.call(op::MKNOD, parent, &[m.as_bytes(), &cstr(name)])?)
    }

    pub fn symlink(&mut self, parent: u64, name: &[u8], target: &[u8]) -> Res<EntryOut> {
        parse(&self.call(op::SYMLINK, parent, &[&cstr(name), &cstr(target)])?)
    }

    pub fn link(&mut self, old: u64, newparent: u64, newname: &[u8]) -> Res<EntryOut> {
        let l = abi::LinkIn { oldnodeid: old };
        parse(&self.call(op::LINK, newparent, &[l.as_bytes(), &cstr(newname)])?)
    }

    pub fn readlink(&mut self, node: u64) -> Res<Vec<u8>> {
        self.call(op::READLINK, node, &[])
    }

    pub fn unlink(&mut self, parent: u64, name: &[u8]) -> Res<()> {
        self.call(op::UNLINK, parent, &[&cstr(name)]).map(|_| ())
    }

    pub fn rmdir(&mut self, parent: u64, name: &[u8]) -> Res<()> {
        self.call(op::RMDIR, parent, &[&cstr(name)]).map(|_| ())
    }

    pub fn rename(
        &mut self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
    ) -> Res<()> {
        let r = abi::Rename2In {
            newdir: newparent,
            flags,
            padding: 0,
        };
        self.call(
            op::RENAME2,
            parent,
            &[r.as_bytes(), &cstr(name), &cstr(newname)],
        )
        .map(|_| ())
    }

    pub fn create(
        &mut self,
        parent: u64,
        name: &[u8],
        flags: u32,
        mode: u32,
    ) -> Res<(EntryOut, u64)> {
        let c = abi::CreateIn {
            flags,
            mode,
            umask: 0,
            open_flags: 0,
        };
        let b = self.call(op::CREATE, parent, &[c.as_bytes(), &cstr(name)])?;
        let e: EntryOut = parse(&b)?;
        let o: abi::OpenOut = parse(b.get(abi::ENTRY_OUT_SIZE..).unwrap_or(&[]))?;
        Ok((e, o.fh))
    }

    pub fn open(&mut self, node: u64, flags: u32) -> Res<u64> {
        let o = abi::OpenIn {
            flags,
            open_flags: 0,
        };
        parse::<abi::OpenOut>(&self.call(op::OPEN, node, &[o.as_bytes()])?).map(|o| o.fh)
    }

    pub fn read(&mut self, fh: u64, offset: u64, size: u32) -> Res<Vec<u8>> {
        let r = abi::ReadIn {
            fh,
            offset,
            size,
            ..Default::default()
        };
        self.call(op::READ, 0, &[r.as_bytes()])
    }

    pub fn write(&mut self, fh: u64, offset: u64, data: &[u8]) -> Res<u32> {
        let w = abi::WriteIn {
            fh,
            offset,
            size: data.len() as u32,
            ..Default::default()
        };
        parse::<abi::WriteOut>(&self.call(op::WRITE, 0, &[w.as_bytes(), data])?).map(|w| w.size)
    }

    pub fn release(&mut self, fh: u64) -> Res<()> {
        let r = abi::ReleaseIn {
            fh,
            ..Default::default()
        };
        self.call(op::RELEASE, 0, &[r.as_bytes()]).map(|_| ())
    }

    pub fn opendir(&mut self, node: u64) -> Res<u64> {
        let o = abi::OpenIn::default();
        parse::<abi::OpenOut>(&self.call(op::OPENDIR, node, &[o.as_bytes()])?).map(|o| o.fh)
    }

    pub fn readdir(&mut self, fh: u64, offset: u64, size: u32, plus: bool) -> Res<Vec<DirItem>> {
        let r = abi::ReadIn {
            fh,
            offset,
            size,
            ..Default::default()
        };
        let opcode = if plus { op::READDIRPLUS } else { op::READDIR };
        parse_dirents(&self.call(opcode, 0, &[r.as_bytes()])?, plus)
    }

    pub fn releasedir(&mut self, fh: u64) -> Res<()> {
        let r = abi::ReleaseIn {
            fh,
            ..Default::default()
        };
        self.call(op::RELEASEDIR, 0, &[r.as_bytes()]).map(|_| ())
    }

    /// All entries of a directory, as the kernel reads them (READDIRPLUS
    /// in 4 KiB chunks, then FORGET for every entry looked up), without
    /// `.` and `..`.
    pub fn list(&mut self, node: u64) -> Res<Vec<DirItem>> {
        let fh = self.opendir(node)?;
        let mut all = Vec::new();
        let mut off = 0;
        loop {
            let batch = self.readdir(fh, off, 4096, true)?;
            let Some(last) = batch.last() else {
                break;
            };
            off = last.off;
            for item in batch {
                if let Some(e) = &item.entry {
                    if e.nodeid != 0 {
                        self.forget(e.nodeid, 1);
                    }
                }
                if item.name != b"." && item.name != b".." {
                    all.push(item);
                }
            }
        }
        self.releasedir(fh)?;
        Ok(all)
    }

    /// Looks up a `/`-separated path from the root (one lookup counted per
    /// component, as the kernel would).
    pub fn resolve(&mut self, path: &str) -> Res<EntryOut> {
        let mut e = EntryOut {
            nodeid: abi::ROOT_ID,
            ..Default::default()
        };
        e.attr = self.getattr(abi::ROOT_ID)?;
        for comp in path.split('/').filter(|c| !c.is_empty()) {
            e = self.lookup(e.nodeid, comp.as_bytes())?;
        }
        Ok(e)
    }

    /// The whole content of the file at `path`.
    pub fn read_file(&mut self, path: &str) -> Res<Vec<u8>> {
        let e = self.resolve(path)?;
        let fh = self.open(e.nodeid, 0)?;
        let mut data = Vec::new();
        loop {
            let chunk = self.read(fh, data.len() as u64, 1 << 20)?;
            if chunk.is_empty() {
                break;
            }
            data.extend_from_slice(&chunk);
        }
        self.release(fh)?;
        Ok(data)
    }

    /// Writes `data` at `offset` of the file at `path` (optionally
    /// truncating it first), as `open(O_WRONLY [|O_TRUNC])` + write would.
    pub fn write_file(&mut self, path: &str, offset: u64, data: &[u8], trunc: bool) -> Res<()> {
        let e = self.resolve(path)?;
        let flags = 1 | if trunc { 0o1000 } else { 0 };
        let fh = self.open(e.nodeid, flags)?;
        let n = self.write(fh, offset, data)?;
        self.release(fh)?;
        if n as usize != data.len() {
            return Err(5);
        }
        Ok(())
    }

    /// A new file `name` in `parent` with `mode` and `data`, as
    /// `open(O_CREAT|O_WRONLY)` + write + close would make it.
    pub fn create_file(&mut self, parent: u64, name: &[u8], mode: u32, data: &[u8]) -> Res<()> {
        let (_, fh) = self.create(parent, name, 1, mode)?;
        self.write(fh, 0, data)?;
        self.release(fh)
    }

    /// Deletes `path` and everything below it, as `rm -r` does.
    pub fn remove_tree(&mut self, path: &str) -> Res<()> {
        let (parent, name) = self.parent_of(path)?;
        let e = self.lookup(parent, name)?;
        if e.attr.mode & 0o170000 == 0o040000 {
            for item in self.list(e.nodeid)? {
                let child = format!("{path}/{}", String::from_utf8_lossy(&item.name));
                self.remove_tree(&child)?;
            }
        }
        self.forget(e.nodeid, 1);
        if e.attr.mode & 0o170000 == 0o040000 {
            self.rmdir(parent, name)
        } else {
            self.unlink(parent, name)
        }
    }

    /// The parent's node and the last component of `path`.
    pub fn parent_of<'p>(&mut self, path: &'p str) -> Res<(u64, &'p [u8])> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let e = self.resolve(dir)?;
        // As the kernel's path walk: the parent must be a directory.
        if e.attr.mode & 0o170000 != 0o040000 {
            return Err(20);
        }
        Ok((e.nodeid, name.as_bytes()))
    }
}
