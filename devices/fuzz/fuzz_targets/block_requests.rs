#![no_main]
//! libFuzzer entry point; the target itself is `targets/block_requests.rs`,
//! which the main workspace's corpus replay test
//! (`devices/tests/fuzz_corpus.rs`) also compiles.

#[path = "../targets/block_requests.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
