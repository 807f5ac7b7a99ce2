#![no_main]
//! libFuzzer entry point; the target itself is `targets/config_files.rs`,
//! which the main workspace's corpus replay test
//! (`manager/tests/fuzz_corpus.rs`) also compiles.

#[path = "../targets/config_files.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
