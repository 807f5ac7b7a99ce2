#![no_main]
//! libFuzzer entry point; the target itself is `targets/mmio_fs.rs`, which the
//! main workspace's corpus replay test (`devices/tests/fuzz_corpus.rs`)
//! also compiles.

#[path = "../targets/mmio_fs.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
