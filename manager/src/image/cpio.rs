//! A newc cpio writer: enough to build the guest's initramfs (files,
//! directories, symlinks, device nodes) without external tools.

use std::io::Write;

const TRAILER: &str = "TRAILER!!!";

pub struct CpioWriter<W: Write> {
    out: W,
    ino: u32,
    written: u64,
}

pub enum Entry<'a> {
    Dir,
    File { data: &'a [u8], executable: bool },
    Symlink { target: &'a str },
    CharDevice { major: u32, minor: u32 },
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            ino: 1,
            written: 0,
        }
    }

    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad4(&mut self) -> std::io::Result<()> {
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.write_all(&[0u8; 3][..pad])
    }

    fn header(
        &mut self,
        name: &str,
        mode: u32,
        size: usize,
        rdev: (u32, u32),
    ) -> std::io::Result<()> {
        let ino = self.ino;
        self.ino += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0, // uid
            0, // gid
            0, // mtime: reproducible images
            0,
            0, // dev major/minor
            rdev.0,
            rdev.1,
            name.len() + 1,
            0, // check
        );
        self.write_all(header.as_bytes())?;
        self.write_all(name.as_bytes())?;
        self.write_all(&[0])?;
        self.pad4()
    }

    /// Adds `path` (relative, no leading '/').
    pub fn add(&mut self, path: &str, entry: Entry<'_>) -> std::io::Result<()> {
        match entry {
            Entry::Dir => self.header(path, 0o040755, 0, (0, 0)),
            Entry::File { data, executable } => {
                let mode = if executable { 0o100755 } else { 0o100644 };
                self.header(path, mode, data.len(), (0, 0))?;
                self.write_all(data)?;
                self.pad4()
            }
            Entry::Symlink { target } => {
                self.header(path, 0o120777, target.len(), (0, 0))?;
                self.write_all(target.as_bytes())?;
                self.pad4()
            }
            Entry::CharDevice { major, minor } => self.header(path, 0o020600, 0, (major, minor)),
        }
    }

    pub fn finish(mut self) -> std::io::Result<W> {
        self.header(TRAILER, 0, 0, (0, 0))?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unpacks with the system's cpio (installed by scripts/install-deps.sh):
    /// the format must be what real tools read.
    #[test]
    fn cpio_tool_reads_it() {
        let mut w = CpioWriter::new(Vec::new());
        w.add("bin", Entry::Dir).unwrap();
        w.add(
            "bin/hello",
            Entry::File {
                data: b"#!/bin/sh\necho hi\n",
                executable: true,
            },
        )
        .unwrap();
        w.add("bin/sh", Entry::Symlink { target: "busybox" })
            .unwrap();
        w.add(
            "odd",
            Entry::File {
                data: b"x",
                executable: false,
            },
        )
        .unwrap();
        let image = w.finish().unwrap();
        assert_eq!(image.len() % 4, 0);
        assert!(image
            .windows(TRAILER.len())
            .any(|x| x == TRAILER.as_bytes()));
        {
            let dir = std::env::temp_dir().join(format!("mvm-cpio-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let mut child = std::process::Command::new("cpio")
                .args(["-idm", "--quiet"])
                .current_dir(&dir)
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(&image).unwrap();
            assert!(child.wait().unwrap().success());
            assert_eq!(
                std::fs::read(dir.join("bin/hello")).unwrap(),
                b"#!/bin/sh\necho hi\n"
            );
            assert_eq!(
                std::fs::read_link(dir.join("bin/sh")).unwrap().to_str(),
                Some("busybox")
            );
            assert_eq!(std::fs::read(dir.join("odd")).unwrap(), b"x");
            std::fs::remove_dir_all(dir).unwrap();
        }
    }
}
