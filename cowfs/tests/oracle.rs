//! The host kernel's overlayfs as an oracle: the same operations through an
//! overlay mount and through cowfs must give the same merged view (names,
//! types, sizes, modes, contents, link counts of non-directories), and
//! neither may touch the lower tree. Needs root and overlayfs; skipped
//! (with a message) otherwise.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use cowfs::client::Client;

/// The operations of the sequence, on either side.
trait Ops {
    fn create(&mut self, path: &str, data: &[u8]);
    fn write_at(&mut self, path: &str, off: u64, data: &[u8]);
    fn append(&mut self, path: &str, data: &[u8]);
    fn truncate(&mut self, path: &str, len: u64);
    fn chmod(&mut self, path: &str, mode: u32);
    fn unlink(&mut self, path: &str);
    fn rmdir(&mut self, path: &str);
    fn mkdir(&mut self, path: &str, mode: u32);
    fn rename(&mut self, from: &str, to: &str);
    fn symlink(&mut self, target: &str, path: &str);
    fn link(&mut self, existing: &str, new: &str);
}

struct Host(PathBuf);

/// What `mv` does when rename(2) says EXDEV: copy, then delete.
fn copy_tree(from: &Path, to: &Path) {
    let m = fs::symlink_metadata(from).unwrap();
    if m.file_type().is_symlink() {
        symlink(fs::read_link(from).unwrap(), to).unwrap();
    } else if m.is_dir() {
        fs::create_dir(to).unwrap();
        for e in fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            copy_tree(&e.path(), &to.join(e.file_name()));
        }
        fs::set_permissions(to, m.permissions()).unwrap();
    } else {
        fs::copy(from, to).unwrap();
    }
}

impl Ops for Host {
    fn create(&mut self, p: &str, data: &[u8]) {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.0.join(p))
            .unwrap();
        f.write_all(data).unwrap();
        fs::set_permissions(self.0.join(p), fs::Permissions::from_mode(0o644)).unwrap();
    }
    fn write_at(&mut self, p: &str, off: u64, data: &[u8]) {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new()
            .write(true)
            .open(self.0.join(p))
            .unwrap();
        f.write_all_at(data, off).unwrap();
    }
    fn append(&mut self, p: &str, data: &[u8]) {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(self.0.join(p))
            .unwrap();
        f.write_all(data).unwrap();
    }
    fn truncate(&mut self, p: &str, len: u64) {
        fs::OpenOptions::new()
            .write(true)
            .open(self.0.join(p))
            .unwrap()
            .set_len(len)
            .unwrap();
    }
    fn chmod(&mut self, p: &str, mode: u32) {
        fs::set_permissions(self.0.join(p), fs::Permissions::from_mode(mode)).unwrap();
    }
    fn unlink(&mut self, p: &str) {
        fs::remove_file(self.0.join(p)).unwrap();
    }
    fn rmdir(&mut self, p: &str) {
        fs::remove_dir(self.0.join(p)).unwrap();
    }
    fn mkdir(&mut self, p: &str, mode: u32) {
        fs::create_dir(self.0.join(p)).unwrap();
        fs::set_permissions(self.0.join(p), fs::Permissions::from_mode(mode)).unwrap();
    }
    fn rename(&mut self, from: &str, to: &str) {
        let (a, b) = (self.0.join(from), self.0.join(to));
        match fs::rename(&a, &b) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(EXDEV) => {
                if b.is_dir() {
                    fs::remove_dir(&b).unwrap();
                }
                copy_tree(&a, &b);
                fs::remove_dir_all(&a).unwrap();
            }
            Err(e) => panic!("rename {from} {to}: {e}"),
        }
    }
    fn symlink(&mut self, target: &str, p: &str) {
        symlink(target, self.0.join(p)).unwrap();
    }
    fn link(&mut self, existing: &str, new: &str) {
        fs::hard_link(self.0.join(existing), self.0.join(new)).unwrap();
    }
}

struct Guest(Client);

impl Ops for Guest {
    fn create(&mut self, p: &str, data: &[u8]) {
        let (dir, name) = self.0.parent_of(p).unwrap();
        let (_, fh) = self.0.create(dir, name, O_WRONLY | O_EXCL, 0o644).unwrap();
        self.0.write(fh, 0, data).unwrap();
        self.0.release(fh).unwrap();
    }
    fn write_at(&mut self, p: &str, off: u64, data: &[u8]) {
        self.0.write_file(p, off, data, false).unwrap();
    }
    fn append(&mut self, p: &str, data: &[u8]) {
        let size = self.0.resolve(p).unwrap().attr.size;
        self.0.write_file(p, size, data, false).unwrap();
    }
    fn truncate(&mut self, p: &str, len: u64) {
        let n = self.0.resolve(p).unwrap().nodeid;
        self.0.truncate(n, len).unwrap();
    }
    fn chmod(&mut self, p: &str, mode: u32) {
        let n = self.0.resolve(p).unwrap().nodeid;
        self.0.chmod(n, mode).unwrap();
    }
    fn unlink(&mut self, p: &str) {
        let (dir, name) = self.0.parent_of(p).unwrap();
        self.0.unlink(dir, name).unwrap();
    }
    fn rmdir(&mut self, p: &str) {
        let (dir, name) = self.0.parent_of(p).unwrap();
        self.0.rmdir(dir, name).unwrap();
    }
    fn mkdir(&mut self, p: &str, mode: u32) {
        let (dir, name) = self.0.parent_of(p).unwrap();
        self.0.mkdir(dir, name, mode).unwrap();
    }
    fn rename(&mut self, from: &str, to: &str) {
        let (d1, n1) = self.0.parent_of(from).unwrap();
        let (d2, n2) = self.0.parent_of(to).unwrap();
        self.0.rename(d1, n1, d2, n2, 0).unwrap();
    }
    fn symlink(&mut self, target: &str, p: &str) {
        let (dir, name) = self.0.parent_of(p).unwrap();
        self.0.symlink(dir, name, target.as_bytes()).unwrap();
    }
    fn link(&mut self, existing: &str, new: &str) {
        let old = self.0.resolve(existing).unwrap().nodeid;
        let (dir, name) = self.0.parent_of(new).unwrap();
        self.0.link(old, dir, name).unwrap();
    }
}

fn sequence(o: &mut dyn Ops) {
    o.create("new.txt", b"hello");
    o.write_at("a.txt", 0, b"HE");
    o.append("dir/b.txt", b"++");
    o.truncate("dir/sub/c.txt", 1);
    o.chmod("exec.sh", 0o700);
    o.unlink("hard2");
    o.unlink("link");
    o.rmdir("empty");
    o.mkdir("empty", 0o750);
    o.create("empty/inside.txt", b"in");
    o.rename("a.txt", "dir/a-moved.txt");
    o.rename("dir/sub", "sub-moved");
    o.rename("dir", "dir-renamed");
    o.symlink("dir-renamed/b.txt", "sym");
    o.link("new.txt", "new-hard");
    o.link("hard1", "hard3");
    o.mkdir("fresh", 0o700);
    o.create("fresh/f", b"f");
    o.rename("fresh", "empty2");
    o.create("tmp.txt", b"gone soon");
    o.unlink("tmp.txt");
    o.rename("new-hard", "exec.sh");
    o.truncate("sub-moved/c.txt", 0);
    o.append("sub-moved/c.txt", b"appended");
    o.chmod("dir-renamed", 0o711);
}

/// Mounts on drop-guarded directories; unmounts when dropped.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount(args: &[&str], target: &Path) -> Option<Mount> {
    let ok = Command::new("mount")
        .args(args)
        .arg(target)
        .status()
        .ok()?
        .success();
    ok.then(|| Mount(target.to_path_buf()))
}

#[test]
fn same_merged_view_as_overlayfs() {
    let base = tempfile::tempdir().unwrap();
    // A tmpfs of our own, so the upper layer supports what overlayfs needs
    // whatever /tmp is.
    let Some(_tmpfs) = mount(&["-t", "tmpfs", "-o", "size=64m", "tmpfs"], base.path()) else {
        eprintln!("SKIP same_merged_view_as_overlayfs: cannot mount a tmpfs (not root?)");
        return;
    };
    let l = layers();
    let b = base.path();
    let lower = b.join("lower");
    copy_tree(&l.lower, &lower);
    // copy_tree does not keep hard links; make them again.
    fs::remove_file(lower.join("hard2")).unwrap();
    fs::hard_link(lower.join("hard1"), lower.join("hard2")).unwrap();
    fs::create_dir(lower.join("empty2")).unwrap();
    for d in ["ov-upper", "ov-work", "merged", "cow-upper"] {
        fs::create_dir(b.join(d)).unwrap();
    }
    let opts = |extra: &str| {
        format!(
            "lowerdir={},upperdir={},workdir={}{extra}",
            lower.display(),
            b.join("ov-upper").display(),
            b.join("ov-work").display()
        )
    };
    let merged = b.join("merged");
    let ov = mount(
        &[
            "-t",
            "overlay",
            "overlay",
            "-o",
            &opts(",index=off,redirect_dir=on"),
        ],
        &merged,
    )
    .or_else(|| mount(&["-t", "overlay", "overlay", "-o", &opts("")], &merged));
    let Some(ov) = ov else {
        eprintln!("SKIP same_merged_view_as_overlayfs: cannot mount overlayfs");
        return;
    };
    let before = tree_hash(&lower);
    assert_same("start", &host_tree(&merged), &{
        let mut c = client_with(
            cowfs::ShareConfig {
                lower: lower.clone(),
                upper: Some(b.join("cow-upper")),
                mode: cowfs::ShareMode::Cow,
            },
            cowfs::Limits::default(),
        );
        guest_tree(&mut c)
    });

    let mut host = Host(merged.clone());
    sequence(&mut host);
    let mut guest = Guest(client_with(
        cowfs::ShareConfig {
            lower: lower.clone(),
            upper: Some(b.join("cow-upper")),
            mode: cowfs::ShareMode::Cow,
        },
        cowfs::Limits::default(),
    ));
    sequence(&mut guest);

    let want = host_tree(&merged);
    let got = guest_tree(&mut guest.0);
    assert!(want.contains_key("dir-renamed/a-moved.txt"), "{want:?}");
    assert_same("overlayfs (first) vs cowfs (second)", &want, &got);

    // A second server over the same upper sees the same thing (the
    // upper layer is self-describing).
    let mut again = client_with(
        cowfs::ShareConfig {
            lower: lower.clone(),
            upper: Some(b.join("cow-upper")),
            mode: cowfs::ShareMode::Cow,
        },
        cowfs::Limits::default(),
    );
    assert_same("after restart", &want, &guest_tree(&mut again));
    drop(ov);
    assert_eq!(tree_hash(&lower), before, "lower tree untouched");
}
