//! The `kernel_loader` fuzz target of `devices/fuzz` replayed over its
//! committed corpus (`devices/fuzz/corpus/kernel_loader/`); here because it
//! needs the vmm crate (see `devices/tests/fuzz_corpus.rs` for the rest).

#[path = "../../devices/fuzz/targets/replay.rs"]
mod replay;

#[path = "../../devices/fuzz/targets/kernel_loader.rs"]
mod kernel_loader;

#[test]
fn kernel_loader_corpus() {
    replay::corpus("kernel_loader", kernel_loader::run);
}
