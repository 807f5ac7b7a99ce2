#![no_main]
//! libFuzzer entry point; the target itself is `targets/vhost_user.rs`,
//! which the main workspace's corpus replay test
//! (`devices/tests/fuzz_corpus.rs`) also compiles.

#[path = "../targets/vhost_user.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
