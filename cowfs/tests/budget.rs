//! The upper-layer byte budget: a guest that writes past it gets ENOSPC
//! and the host folder holds no more than the budget; deleting gives the
//! room back; what a persistent layer already holds counts; `df` shows it.

mod common;

use common::*;
use cowfs::abi::{op, ROOT_ID};
use cowfs::client::Client;
use cowfs::{Filesystem, Limits, Server, UpperBudget};
use zerocopy::FromBytes;

const MIB: u64 = 1 << 20;
const NOSPC: i32 = 28;

fn budgeted(l: &Layers, budget: &UpperBudget) -> Client {
    let mut fs = Filesystem::with_limits(&cow_config(l), Limits::default()).unwrap();
    fs.set_budget(budget.clone()).unwrap();
    let mut c = Client::new(Server::new(fs));
    c.init().unwrap();
    c
}

/// Bytes the host folder holds (blocks, as `du` counts them).
fn host_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let md = e.as_ref().unwrap().path().symlink_metadata().unwrap();
            total += md.blocks() * 512;
            if md.is_dir() {
                stack.push(e.unwrap().path());
            }
        }
    }
    total
}

/// Writes 1 MiB chunks to a new file until the first error.
fn fill(c: &mut Client, name: &[u8], chunks: u64) -> (u64, Result<(), i32>) {
    let (_, fh) = c.create(ROOT_ID, name, 1, 0o100644).unwrap();
    let chunk = vec![0xabu8; MIB as usize];
    let mut written = 0;
    for i in 0..chunks {
        match c.write(fh, i * MIB, &chunk) {
            Ok(n) => written += u64::from(n),
            Err(e) => {
                c.release(fh).unwrap();
                return (written, Err(e));
            }
        }
    }
    c.release(fh).unwrap();
    (written, Ok(()))
}

#[test]
fn writes_past_the_budget_get_enospc_and_deleting_gives_room_back() {
    let l = layers();
    let budget = UpperBudget::new(8 * MIB);
    let mut c = budgeted(&l, &budget);
    let (written, r) = fill(&mut c, b"big", 64);
    assert_eq!(r, Err(NOSPC), "wrote {written} bytes");
    assert!((6 * MIB..=8 * MIB).contains(&written), "{written}");
    let held = host_bytes(&l.upper);
    assert!(held <= 9 * MIB, "the host holds {held} bytes");
    // A new name fails too once full, and a copy-up of a lower file.
    c.unlink(ROOT_ID, b"big").unwrap();
    assert!(
        budget.used() < MIB,
        "{} used after the delete",
        budget.used()
    );
    let (again, r) = fill(&mut c, b"again", 4);
    assert_eq!(r, Ok(()));
    assert_eq!(again, 4 * MIB);
}

#[test]
fn an_open_unlinked_file_holds_its_bytes_until_closed() {
    let l = layers();
    let budget = UpperBudget::new(8 * MIB);
    let mut c = budgeted(&l, &budget);
    let (_, fh) = c.create(ROOT_ID, b"held", 2, 0o100644).unwrap();
    let chunk = vec![1u8; MIB as usize];
    for i in 0..6 {
        c.write(fh, i * MIB, &chunk).unwrap();
    }
    c.unlink(ROOT_ID, b"held").unwrap();
    // Still open: its 6 MiB still count (the host still stores them).
    let (_, r) = fill(&mut c, b"next", 4);
    assert_eq!(r, Err(NOSPC));
    c.unlink(ROOT_ID, b"next").unwrap();
    c.release(fh).unwrap();
    let (_, r) = fill(&mut c, b"after", 6);
    assert_eq!(r, Ok(()));
}

#[test]
fn many_empty_files_are_bounded_too() {
    let l = layers();
    let budget = UpperBudget::new(64 * 1024);
    let mut c = budgeted(&l, &budget);
    let mut made = 0;
    let err = loop {
        match c.mknod(ROOT_ID, format!("f{made}").as_bytes(), 0o100644, 0) {
            Ok(_) => made += 1,
            Err(e) => break e,
        }
        assert!(made < 10_000, "no bound on names");
    };
    assert_eq!(err, NOSPC);
    assert!(made > 10, "{made}");
}

#[test]
fn an_existing_upper_counts_and_statfs_shows_the_budget() {
    let l = layers();
    std::fs::write(l.upper.join("kept"), vec![7u8; 3 * MIB as usize]).unwrap();
    let budget = UpperBudget::new(4 * MIB);
    let mut c = budgeted(&l, &budget);
    assert!(budget.used() >= 3 * MIB);
    let (_, r) = fill(&mut c, b"more", 2);
    assert_eq!(r, Err(NOSPC));
    let s = c.call(op::STATFS, ROOT_ID, &[]).unwrap();
    let (st, _) = cowfs::abi::Kstatfs::read_from_prefix(&s).unwrap();
    let frsize = u64::from(st.frsize);
    assert_eq!(st.blocks * frsize, 4 * MIB);
    assert!(st.bavail * frsize <= MIB, "bavail {}", st.bavail);
}

#[test]
fn copy_up_of_a_lower_file_is_checked_against_the_budget() {
    let l = layers();
    std::fs::write(l.lower.join("huge"), vec![9u8; 2 * MIB as usize]).unwrap();
    let budget = UpperBudget::new(MIB);
    let mut c = budgeted(&l, &budget);
    let e = c.write_file("huge", 0, b"x", false).unwrap_err();
    assert_eq!(e, NOSPC);
    assert!(host_bytes(&l.upper) < MIB);
    // The lower file is untouched and still reads through.
    assert_eq!(c.read_file("huge").unwrap().len(), 2 * MIB as usize);
}
