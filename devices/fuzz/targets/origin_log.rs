//! The copy-up log parser (`cowfs::origin`): a hostile
//! `.wh..wh..mvm-origins` in an upper directory, loaded (and compacted) by
//! `OriginLog::open` as a share starts.
//!
//! Input: byte 0 picks what sits at the log's name (bits 0-1: a file with
//! the rest of the input, a symlink to a file outside, a directory, a FIFO)
//! and at the compaction's temporary name (bits 2-3: nothing, a symlink
//! outside, a directory, a file). The rest is the log's text.
//!
//! Checks: no panic; a log that loads compacts to one that loads to the
//! same records (appends after it included); nothing outside the upper
//! directory changes.

use std::os::fd::AsFd;
use std::path::Path;

use devices::virtio::fs::cowfs::name::{ORIGIN_LOG, TMP_PREFIX};
use devices::virtio::fs::cowfs::origin::{read_records, OriginLog, Records};

#[path = "scratch.rs"]
mod scratch;

fn os(name: &[u8]) -> &std::ffi::OsStr {
    std::os::unix::ffi::OsStrExt::from_bytes(name)
}

fn place(at: &Path, kind: u8, content: &[u8], outside: &Path) {
    let _ = match kind & 3 {
        0 => std::fs::write(at, content),
        1 => std::os::unix::fs::symlink(outside, at),
        2 => std::fs::create_dir(at),
        _ => rustix::fs::mknodat(
            rustix::fs::CWD,
            at,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .map_err(Into::into),
    };
}

fn same(a: &Records, b: &Records) -> bool {
    a.snapshots == b.snapshots && a.identities == b.identities
}

pub fn run(data: &[u8]) {
    let Some((&kinds, text)) = data.split_first() else {
        return;
    };
    let base = scratch::dir("origin-log-fuzz");
    let (upper, outside) = (base.path().join("upper"), base.path().join("outside"));
    std::fs::create_dir(&upper).unwrap();
    std::fs::write(&outside, b"not the log").unwrap();
    let before = scratch::state(base.path(), &[&upper]);

    place(&upper.join(os(ORIGIN_LOG)), kinds, text, &outside);
    let tmp = [TMP_PREFIX, b"origins"].concat();
    if kinds >> 2 & 3 != 0 {
        place(&upper.join(os(&tmp)), (kinds >> 2) - 1, b"old", &outside);
    }
    // Parsing alone, as commit reads the log.
    let _ = Records::parse(&String::from_utf8_lossy(text));

    let root = std::fs::File::open(&upper).unwrap();
    if let Ok(mut log) = OriginLog::open(root.as_fd()) {
        log.set_identity(1, (2, 3));
        log.drop_identity(1);
        let loaded = read_records(root.as_fd()).expect("the compacted log reads back");
        assert!(
            same(&loaded, &log.records),
            "compaction changed the records"
        );
        let again = OriginLog::open(root.as_fd()).expect("the compacted log loads");
        assert!(
            same(&again.records, &log.records),
            "reloading changed the records"
        );
    }
    assert!(
        scratch::state(base.path(), &[&upper]) == before,
        "something outside the upper changed"
    );
}
