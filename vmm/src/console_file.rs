//! The console file: capped and rotated, so a guest printing without end
//! (a hostile one, or a kernel looping on a warning) cannot fill the
//! host's disk. Past [`CONSOLE_FILE_MAX`] bytes the file moves to
//! `NAME.1` (replacing the previous one) and a new file starts: at most
//! twice the cap is kept, the newest output always.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Bytes one console file holds before it rotates.
pub const CONSOLE_FILE_MAX: u64 = 16 << 20;

/// A console file that rotates at a size.
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    written: u64,
    cap: u64,
}

impl RotatingFile {
    /// Creates (truncates) `path`; rotates past `cap` bytes.
    pub fn create(path: &Path, cap: u64) -> std::io::Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            file: File::create(path)?,
            written: 0,
            cap: cap.max(1),
        })
    }

    /// The rotated file's name: `console.log` -> `console.log.1`.
    pub fn rotated_path(path: &Path) -> PathBuf {
        let mut p = path.as_os_str().to_owned();
        p.push(".1");
        PathBuf::from(p)
    }

    /// The current file becomes `.1`; where the folder is not ours to
    /// rename in (a VMM jailed as a user, in a root-owned VM folder), the
    /// file starts over instead: bounded either way.
    fn rotate(&mut self) -> std::io::Result<()> {
        use std::io::Seek;
        match std::fs::rename(&self.path, Self::rotated_path(&self.path)) {
            Ok(()) => self.file = File::create(&self.path)?,
            Err(_) => {
                self.file.set_len(0)?;
                self.file.seek(std::io::SeekFrom::Start(0))?;
            }
        }
        self.written = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written > 0 && self.written.saturating_add(buf.len() as u64) > self.cap {
            self.rotate()?;
        }
        // One write never exceeds the cap by more than itself (the serial
        // port hands over a byte at a time).
        let n = self.file.write(buf)?;
        self.written = self.written.saturating_add(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_past_the_cap_and_keeps_one_old_file() {
        let dir = std::env::temp_dir().join(format!("mvm-console-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("console.log");
        let mut f = RotatingFile::create(&path, 1000).unwrap();
        for i in 0..5000u32 {
            f.write_all(format!("{}\n", i % 10).as_bytes()).unwrap();
        }
        let now = std::fs::metadata(&path).unwrap().len();
        let old = std::fs::metadata(RotatingFile::rotated_path(&path))
            .unwrap()
            .len();
        assert!(now <= 1000 && old <= 1000, "{now} {old}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
        // The newest output is in the current file.
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("9\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
