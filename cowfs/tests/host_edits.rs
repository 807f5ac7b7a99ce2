//! The host edits the lower layer while the guest uses it: the guest sees
//! the new content and times (the dev-server reload case).

mod common;

use std::fs;

use common::*;

#[test]
fn a_file_replaced_on_the_host_shows_its_new_times_and_content() {
    let l = layers();
    let mut c = cow_client(&l);
    let before = c.resolve("a.txt").unwrap();
    assert_eq!(c.read_file("a.txt").unwrap(), b"hello lower\n");
    // What `sed -i` does: write a new file, rename it over the old one.
    next_mtime_tick(l.dir.path());
    fs::write(l.lower.join(".a.txt.tmp"), b"edited on the host\n").unwrap();
    fs::rename(l.lower.join(".a.txt.tmp"), l.lower.join("a.txt")).unwrap();
    // The guest's kernel looks the name up again once its entry expires.
    let after = c.resolve("a.txt").unwrap();
    assert!(
        (after.attr.mtime, after.attr.mtimensec) > (before.attr.mtime, before.attr.mtimensec),
        "mtime did not move: {:?} -> {:?}",
        before.attr,
        after.attr
    );
    assert_eq!(c.read_file("a.txt").unwrap(), b"edited on the host\n");
    // And a GETATTR on the node the guest already had (its attributes
    // expire before its entry does) says the old file is gone from here.
    let old = c.getattr(before.nodeid).unwrap();
    eprintln!("old node after replace: {old:?}");
}

#[test]
fn a_file_edited_in_place_on_the_host_shows_its_new_times() {
    let l = layers();
    let mut c = cow_client(&l);
    let before = c.resolve("a.txt").unwrap();
    next_mtime_tick(l.dir.path());
    fs::write(l.lower.join("a.txt"), b"rewritten\n").unwrap();
    let a = c.getattr(before.nodeid).unwrap();
    assert!(
        (a.mtime, a.mtimensec) > (before.attr.mtime, before.attr.mtimensec),
        "{a:?}"
    );
    assert_eq!(a.size, 10);
}
