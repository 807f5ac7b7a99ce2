#![no_main]
//! libFuzzer entry point; the target itself is `targets/kernel_loader.rs`,
//! which the main workspace's corpus replay test
//! (`vmm/tests/fuzz_corpus.rs`) also compiles.

#[path = "../targets/kernel_loader.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
