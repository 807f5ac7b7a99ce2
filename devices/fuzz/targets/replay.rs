//! Replays a fuzz target's committed corpus as a plain test (no nightly, no
//! libFuzzer), so CI (`cargo test --workspace`) runs every seed.
//!
//! Layout: `devices/fuzz/corpus/<target>/`, one input per file. The path is
//! built from the including crate's manifest directory, and every crate that
//! replays a corpus (devices, vmm) sits next to `devices/`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

/// Runs every file of `corpus/<target>/` through `run`; fails naming each
/// input that panicked (a panic is the fuzz target's failure).
pub fn corpus(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../devices/fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: empty corpus", dir.display());
    let mut failed = Vec::new();
    for f in &files {
        let data = std::fs::read(f).unwrap();
        if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            failed.push(f.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target}: inputs panicked: {failed:#?}");
}
