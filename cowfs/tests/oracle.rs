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

/// A private tmpfs with a copy of the standard lower tree.
struct Env {
    // Dropped in reverse order: unmount before the directory goes.
    _tmpfs: Mount,
    base: tempfile::TempDir,
    lower: PathBuf,
}

fn env() -> Option<Env> {
    let base = tempfile::tempdir().unwrap();
    // A tmpfs of our own, so the upper layer supports what overlayfs needs
    // whatever /tmp is.
    let tmpfs = mount(&["-t", "tmpfs", "-o", "size=256m", "tmpfs"], base.path())?;
    let l = layers();
    let lower = base.path().join("lower");
    copy_tree(&l.lower, &lower);
    // copy_tree does not keep hard links; make them again.
    fs::remove_file(lower.join("hard2")).unwrap();
    fs::hard_link(lower.join("hard1"), lower.join("hard2")).unwrap();
    fs::create_dir(lower.join("empty2")).unwrap();
    Some(Env {
        _tmpfs: tmpfs,
        base,
        lower,
    })
}

impl Env {
    fn path(&self, name: &str) -> PathBuf {
        self.base.path().join(name)
    }

    /// An overlayfs mount of the lower tree at `<name>`.
    fn overlay(&self, name: &str) -> Option<(Mount, PathBuf)> {
        for d in ["ov-upper", "ov-work", name] {
            fs::create_dir(self.path(d)).unwrap();
        }
        let opts = |extra: &str| {
            format!(
                "lowerdir={},upperdir={},workdir={}{extra}",
                self.lower.display(),
                self.path("ov-upper").display(),
                self.path("ov-work").display()
            )
        };
        let merged = self.path(name);
        let m = mount(
            &[
                "-t",
                "overlay",
                "overlay",
                "-o",
                &opts(",index=off,redirect_dir=on"),
            ],
            &merged,
        )
        .or_else(|| mount(&["-t", "overlay", "overlay", "-o", &opts("")], &merged))?;
        Some((m, merged))
    }

    fn cow_config(&self, upper: &str) -> cowfs::ShareConfig {
        let upper = self.path(upper);
        fs::create_dir_all(&upper).unwrap();
        cowfs::ShareConfig {
            lower: self.lower.clone(),
            upper: Some(upper),
            mode: cowfs::ShareMode::Cow,
            masked: Vec::new(),
            visible: None,
            hidden: Vec::new(),
        }
    }
}

#[test]
fn same_merged_view_as_overlayfs() {
    let Some(env) = env() else {
        eprintln!("SKIP same_merged_view_as_overlayfs: cannot mount a tmpfs (not root?)");
        return;
    };
    let Some((ov, merged)) = env.overlay("merged") else {
        eprintln!("SKIP same_merged_view_as_overlayfs: cannot mount overlayfs");
        return;
    };
    let lower = env.lower.clone();
    let before = tree_hash(&lower);
    let start = guest_tree(&mut client_with(
        env.cow_config("cow-upper"),
        cowfs::Limits::default(),
    ));
    assert_same("start", &host_tree(&merged), &start);

    let mut host = Host(merged.clone());
    sequence(&mut host);
    let mut guest = Guest(client_with(
        env.cow_config("cow-upper"),
        cowfs::Limits::default(),
    ));
    sequence(&mut guest);

    let want = host_tree(&merged);
    let got = guest_tree(&mut guest.0);
    assert!(want.contains_key("dir-renamed/a-moved.txt"), "{want:?}");
    assert_same("overlayfs (first) vs cowfs (second)", &want, &got);

    // A second server over the same upper sees the same thing (the
    // upper layer is self-describing).
    let mut again = client_with(env.cow_config("cow-upper"), cowfs::Limits::default());
    assert_same("after restart", &want, &guest_tree(&mut again));
    drop(ov);
    assert_eq!(tree_hash(&lower), before, "lower tree untouched");
}

/// cowfs mounted through the host kernel's own FUSE client (`/dev/fuse`):
/// the same protocol a Linux guest speaks over virtio-fs, from the same
/// kernel code, served by a thread. Unmounted (and the thread joined) on
/// drop.
struct FuseMount {
    target: PathBuf,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.target, rustix::mount::UnmountFlags::DETACH);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn fuse_mount(config: cowfs::ShareConfig, target: &Path) -> Option<FuseMount> {
    use std::os::fd::AsRawFd;
    let dev = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .ok()?;
    let opts = format!(
        "fd={},rootmode=40000,user_id=0,group_id=0,default_permissions,allow_other",
        dev.as_raw_fd()
    );
    let opts = std::ffi::CString::new(opts).unwrap();
    rustix::mount::mount(
        "cowfs",
        target,
        "fuse.cowfs",
        rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV,
        opts.as_c_str(),
    )
    .ok()?;
    let mut server = cowfs::Server::new(cowfs::Filesystem::new(&config).unwrap());
    let thread = std::thread::spawn(move || {
        let mut buf = vec![0u8; cowfs::MAX_WRITE as usize + 8192];
        let mut out = Vec::new();
        loop {
            let n = match rustix::io::read(&dev, &mut buf[..]) {
                Ok(n) => n,
                // Interrupted, or a request the kernel already dropped.
                Err(rustix::io::Errno::INTR | rustix::io::Errno::NOENT) => continue,
                // ENODEV: unmounted.
                Err(_) => break,
            };
            out.clear();
            let len = server.handle(&buf[..n], buf.len(), &mut out).unwrap();
            if len > 0 {
                let _ = rustix::io::write(&dev, &out);
            }
        }
    });
    Some(FuseMount {
        target: target.to_path_buf(),
        thread: Some(thread),
    })
}

/// Everyday tools on a mount: copies, moves, deletes, appends, big
/// writes, truncation, deep trees, links, recursive chmod, listings.
const SCRIPT: &str = r#"
set -e
cp -a dir-renamed copy
mv copy copy2
rm -rf copy2/sub-gone
echo appended >> new.txt
seq 1 20000 > big.txt
dd if=/dev/zero of=zero.bin bs=1M count=3 2>/dev/null
truncate -s 10 zero.bin
mkdir -p deep/a/b/c && touch deep/a/b/c/f
ln -s deep/a link-to-deep
ln new.txt new-link
chmod -R go-rwx deep
mv sub-moved deep/a/
rm -r empty2
L=$(find . | sort); printf '%s\n' "$L" > list.out
ls -la > /dev/null
cat big.txt | wc -l > lines.out
tar cf /dev/null .
"#;

#[test]
fn kernel_fuse_client_agrees_with_overlayfs() {
    let Some(env) = env() else {
        eprintln!(
            "SKIP kernel_fuse_client_agrees_with_overlayfs: cannot mount a tmpfs (not root?)"
        );
        return;
    };
    let Some((_ov, merged)) = env.overlay("merged") else {
        eprintln!("SKIP kernel_fuse_client_agrees_with_overlayfs: cannot mount overlayfs");
        return;
    };
    let target = env.path("fuse");
    fs::create_dir(&target).unwrap();
    let Some(fm) = fuse_mount(env.cow_config("fuse-upper"), &target) else {
        eprintln!("SKIP kernel_fuse_client_agrees_with_overlayfs: cannot mount FUSE");
        return;
    };
    let before = tree_hash(&env.lower);
    assert_same("start", &host_tree(&merged), &host_tree(&target));
    sequence(&mut Host(merged.clone()));
    sequence(&mut Host(target.clone()));
    assert_same(
        "after the sequence: overlayfs vs cowfs over /dev/fuse",
        &host_tree(&merged),
        &host_tree(&target),
    );
    for dir in [&merged, &target] {
        let out = Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "script in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let listing = |d: &Path| fs::read_to_string(d.join("list.out")).unwrap();
    assert_eq!(listing(&merged), listing(&target), "find output");
    assert_same(
        "after the script: overlayfs vs cowfs over /dev/fuse",
        &host_tree(&merged),
        &host_tree(&target),
    );
    assert_eq!(
        fs::read_to_string(target.join("lines.out")).unwrap().trim(),
        "20000"
    );
    drop(fm);
    // The server's upper layer, read by a fresh server, is the same tree.
    let mut again = client_with(env.cow_config("fuse-upper"), cowfs::Limits::default());
    assert_same("restart", &host_tree(&merged), &guest_tree(&mut again));
    assert_eq!(tree_hash(&env.lower), before, "lower tree untouched");
}

/// Real tools over a real tree (a copy of /usr/include/linux as the lower
/// layer): git, sed -i, tar, cp -r, mv and rm -r of big directories.
const TOOLS: &str = r#"
set -e
export GIT_CONFIG_NOSYSTEM=1 HOME=/nonexistent
git init -q .
git add -A
git -c user.email=t@t -c user.name=t commit -qm init
sed -i 's/struct/STRUCT/' kvm.h
rm -r netfilter
mv usb usb-moved
cp -r can can-copy
mkdir unpacked && tar cf - tc_act | tar xf - -C unpacked
git status --porcelain | sort > ../status-$1
grep -rl ioctl . --exclude-dir=.git | sort > ../grep-$1
"#;

#[test]
fn kernel_fuse_client_with_real_tools() {
    let src = Path::new("/usr/include/linux");
    let git = Command::new("git")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !src.join("kvm.h").exists() || !git {
        eprintln!("SKIP kernel_fuse_client_with_real_tools: no /usr/include/linux or git");
        return;
    }
    let Some(env) = env() else {
        eprintln!("SKIP kernel_fuse_client_with_real_tools: cannot mount a tmpfs (not root?)");
        return;
    };
    let lower = env.lower.join("linux");
    copy_tree(src, &lower);
    let Some((_ov, merged)) = env.overlay("merged") else {
        eprintln!("SKIP kernel_fuse_client_with_real_tools: cannot mount overlayfs");
        return;
    };
    let target = env.path("fuse");
    fs::create_dir(&target).unwrap();
    let Some(fm) = fuse_mount(env.cow_config("fuse-upper"), &target) else {
        eprintln!("SKIP kernel_fuse_client_with_real_tools: cannot mount FUSE");
        return;
    };
    let before = tree_hash(&env.lower);
    for (dir, tag) in [(&merged, "ov"), (&target, "fuse")] {
        let out = Command::new("sh")
            .arg("-c")
            .arg(TOOLS)
            .arg("sh")
            .arg(tag)
            .current_dir(dir.join("linux"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tools in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let strip =
        |t: std::collections::BTreeMap<String, Obj>| -> std::collections::BTreeMap<String, Obj> {
            // git's own files record inode numbers and times: compare the work tree.
            t.into_iter()
                .filter(|(k, _)| {
                    !k.starts_with("linux/.git/")
                        && !k.starts_with("status-")
                        && !k.starts_with("grep-")
                })
                .collect()
        };
    assert_same(
        "work tree after the tools",
        &strip(host_tree(&merged)),
        &strip(host_tree(&target)),
    );
    let read = |d: &Path, f: &str| fs::read_to_string(d.join(f)).unwrap();
    assert_eq!(read(&merged, "status-ov"), read(&target, "status-fuse"));
    assert!(read(&target, "status-fuse").contains(" M kvm.h"));
    assert_eq!(read(&merged, "grep-ov"), read(&target, "grep-fuse"));
    drop(fm);
    assert_eq!(tree_hash(&env.lower), before, "lower tree untouched");
}

/// A tiny deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[(self.next() % v.len() as u64) as usize]
    }
}

const DIRS: [&str; 7] = ["", "dir", "dir/sub", "empty", "empty2", "n1", "n1/n2"];
const NAMES: [&str; 8] = ["a.txt", "b.txt", "c.txt", "x", "sub", "n1", "n2", "hard1"];

fn errno(r: std::io::Result<()>) -> Result<(), i32> {
    r.map_err(|e| e.raw_os_error().unwrap_or(-1))
}

/// One random operation on the overlayfs mount; None if skipped.
fn host_op(root: &Path, op: &RandomOp) -> Option<Result<(), i32>> {
    let p = |s: &str| root.join(s);
    // The test client resolves paths without following symlinks (the
    // guest kernel would do that itself): skip paths through a symlink.
    let through_symlink = |s: &str| {
        let comps: Vec<&str> = s.split('/').collect();
        (1..comps.len()).any(|i| {
            fs::symlink_metadata(root.join(comps[..i].join("/")))
                .is_ok_and(|m| m.file_type().is_symlink())
        })
    };
    let paths: Vec<&String> = match op {
        RandomOp::Rename(a, b) | RandomOp::Link(a, b) => vec![a, b],
        RandomOp::Create(a)
        | RandomOp::Write(a, ..)
        | RandomOp::Truncate(a, _)
        | RandomOp::Chmod(a, _)
        | RandomOp::Unlink(a)
        | RandomOp::Rmdir(a)
        | RandomOp::Mkdir(a)
        | RandomOp::Symlink(_, a) => vec![a],
    };
    if paths.iter().any(|a| through_symlink(a)) {
        return None;
    }
    let follows = matches!(
        op,
        RandomOp::Write(..) | RandomOp::Truncate(..) | RandomOp::Chmod(..)
    );
    if follows {
        let path = match op {
            RandomOp::Write(a, ..) | RandomOp::Truncate(a, _) | RandomOp::Chmod(a, _) => a,
            _ => unreachable!(),
        };
        // The kernel follows symlinks before asking the filesystem; the
        // test client does not resolve them, so skip those.
        if fs::symlink_metadata(p(path)).is_ok_and(|m| m.file_type().is_symlink()) {
            return None;
        }
    }
    Some(host_op_raw(root, op))
}

fn guest_op(c: &mut Client, op: &RandomOp) -> Result<(), i32> {
    match op {
        RandomOp::Create(a) => {
            let (d, n) = c.parent_of(a)?;
            let (_, fh) = c.create(d, n, O_WRONLY | O_EXCL, 0o644)?;
            c.release(fh)
        }
        RandomOp::Write(a, off, data) => c.write_file(a, *off, data, false),
        RandomOp::Truncate(a, n) => {
            let e = c.resolve(a)?;
            if e.attr.mode & 0o170000 == 0o040000 {
                return Err(EISDIR);
            }
            c.truncate(e.nodeid, *n).map(|_| ())
        }
        RandomOp::Chmod(a, m) => {
            let e = c.resolve(a)?;
            c.chmod(e.nodeid, *m).map(|_| ())
        }
        RandomOp::Unlink(a) => {
            let (d, n) = c.parent_of(a)?;
            c.unlink(d, n)
        }
        RandomOp::Rmdir(a) => {
            let (d, n) = c.parent_of(a)?;
            c.rmdir(d, n)
        }
        RandomOp::Mkdir(a) => {
            let (d, n) = c.parent_of(a)?;
            c.mkdir(d, n, 0o755).map(|_| ())
        }
        RandomOp::Rename(a, b) => {
            let (d1, n1) = c.parent_of(a)?;
            let (d2, n2) = c.parent_of(b)?;
            c.rename(d1, n1, d2, n2, 0)
        }
        RandomOp::Symlink(t, a) => {
            let (d, n) = c.parent_of(a)?;
            c.symlink(d, n, t.as_bytes()).map(|_| ())
        }
        RandomOp::Link(a, b) => {
            let old = c.resolve(a)?;
            let (d, n) = c.parent_of(b)?;
            c.link(old.nodeid, d, n).map(|_| ())
        }
    }
}

#[derive(Debug)]
enum RandomOp {
    Create(String),
    Write(String, u64, Vec<u8>),
    Truncate(String, u64),
    Chmod(String, u32),
    Unlink(String),
    Rmdir(String),
    Mkdir(String),
    Rename(String, String),
    Symlink(String, String),
    Link(String, String),
}

fn random_path(r: &mut Rng) -> String {
    let d = r.pick(&DIRS);
    let n = r.pick(&NAMES);
    if d.is_empty() {
        n.to_string()
    } else {
        format!("{d}/{n}")
    }
}

fn random_op(r: &mut Rng) -> RandomOp {
    let a = random_path(r);
    match r.next() % 12 {
        0 | 1 => RandomOp::Create(a),
        2 => RandomOp::Write(a, r.next() % 64, vec![b'w'; (r.next() % 100) as usize]),
        3 => RandomOp::Truncate(a, r.next() % 20),
        4 => RandomOp::Chmod(a, [0o600, 0o755, 0o700, 0o644][(r.next() % 4) as usize]),
        5 => RandomOp::Unlink(a),
        6 => RandomOp::Rmdir(a),
        7 => RandomOp::Mkdir(a),
        8 | 9 => RandomOp::Rename(a, random_path(r)),
        10 => RandomOp::Symlink(r.pick(&NAMES).to_string(), a),
        _ => RandomOp::Link(a, random_path(r)),
    }
}

#[test]
fn random_operations_agree_with_overlayfs() {
    // More with COWFS_ORACLE_SEEDS=N (12 by default, about 20 s).
    let seeds: u64 = std::env::var("COWFS_ORACLE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    for seed in 1..=seeds {
        let Some(env) = env() else {
            eprintln!("SKIP random_operations_agree_with_overlayfs: cannot mount a tmpfs");
            return;
        };
        let Some((_ov, merged)) = env.overlay("merged") else {
            eprintln!("SKIP random_operations_agree_with_overlayfs: cannot mount overlayfs");
            return;
        };
        let before = tree_hash(&env.lower);
        let mut c = client_with(env.cow_config("cow-upper"), cowfs::Limits::default());
        let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut log = Vec::new();
        for step in 0..150 {
            let op = random_op(&mut r);
            let Some(want) = host_op(&merged, &op) else {
                continue;
            };
            let got = guest_op(&mut c, &op);
            log.push(format!("{op:?}: {want:?}"));
            assert_eq!(
                got,
                want,
                "seed {seed} step {step} {op:?}; ops so far:\n{}",
                log.join("\n")
            );
            if step % 25 == 24 {
                assert_same(
                    &format!("seed {seed} step {step}; ops:\n{}", log.join("\n")),
                    &host_tree(&merged),
                    &guest_tree(&mut c),
                );
            }
        }
        assert_same(
            &format!("seed {seed} at the end"),
            &host_tree(&merged),
            &guest_tree(&mut c),
        );
        assert_eq!(tree_hash(&env.lower), before, "lower tree untouched");
    }
}

#[test]
fn random_operations_through_the_kernel_client() {
    let seeds: u64 = std::env::var("COWFS_ORACLE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    for seed in 1..=seeds {
        let Some(env) = env() else {
            eprintln!("SKIP random_operations_through_the_kernel_client: cannot mount a tmpfs");
            return;
        };
        let Some((_ov, merged)) = env.overlay("merged") else {
            eprintln!("SKIP random_operations_through_the_kernel_client: cannot mount overlayfs");
            return;
        };
        let target = env.path("fuse");
        fs::create_dir(&target).unwrap();
        let Some(fm) = fuse_mount(env.cow_config("fuse-upper"), &target) else {
            eprintln!("SKIP random_operations_through_the_kernel_client: cannot mount FUSE");
            return;
        };
        let before = tree_hash(&env.lower);
        let mut r = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
        let mut log = Vec::new();
        for step in 0..150 {
            let op = random_op(&mut r);
            // Both sides are real mounts here: symlinks are followed by the
            // kernel on both, so nothing needs skipping.
            let want = host_op_raw(&merged, &op);
            let got = host_op_raw(&target, &op);
            log.push(format!("{op:?}: {want:?}"));
            assert_eq!(
                got,
                want,
                "seed {seed} step {step} {op:?}; ops so far:\n{}",
                log.join("\n")
            );
        }
        assert_same(
            &format!("seed {seed} at the end"),
            &host_tree(&merged),
            &host_tree(&target),
        );
        drop(fm);
        assert_eq!(tree_hash(&env.lower), before, "lower tree untouched");
    }
}

/// One operation on a real directory tree (`host_op` after its skips;
/// alone for two real mounts).
fn host_op_raw(root: &Path, op: &RandomOp) -> Result<(), i32> {
    use std::os::unix::fs::FileExt;
    let p = |s: &str| root.join(s);
    match op {
        RandomOp::Create(a) => errno(
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(p(a))
                .map(|_| ()),
        ),
        RandomOp::Write(a, off, data) => errno(
            fs::OpenOptions::new()
                .write(true)
                .open(p(a))
                .and_then(|f| f.write_all_at(data, *off)),
        ),
        RandomOp::Truncate(a, n) => errno(
            fs::OpenOptions::new()
                .write(true)
                .open(p(a))
                .and_then(|f| f.set_len(*n)),
        ),
        RandomOp::Chmod(a, m) => errno(fs::set_permissions(p(a), fs::Permissions::from_mode(*m))),
        RandomOp::Unlink(a) => errno(fs::remove_file(p(a))),
        RandomOp::Rmdir(a) => errno(fs::remove_dir(p(a))),
        RandomOp::Mkdir(a) => errno(fs::create_dir(p(a))),
        RandomOp::Rename(a, b) => errno(fs::rename(p(a), p(b))),
        RandomOp::Symlink(t, a) => errno(symlink(t, p(a))),
        RandomOp::Link(a, b) => errno(fs::hard_link(p(a), p(b))),
    }
}
