//! The `config_files` fuzz target of `devices/fuzz` (mvm.toml and vm.toml)
//! replayed over its committed corpus (`devices/fuzz/corpus/config_files/`);
//! here because it needs this crate (see `devices/tests/fuzz_corpus.rs`).

#[path = "../../devices/fuzz/targets/replay.rs"]
mod replay;

#[path = "../../devices/fuzz/targets/config_files.rs"]
mod config_files;

#[test]
fn config_files_corpus() {
    replay::corpus("config_files", config_files::run);
}
