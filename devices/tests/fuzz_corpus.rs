//! The fuzz targets of `devices/fuzz` replayed over their committed corpora
//! (`devices/fuzz/corpus/<target>/`): the same `run` the libFuzzer binaries
//! call, built here by path so no nightly toolchain is needed.

// Each target includes its helpers (`input.rs`, `scratch.rs`) itself, so
// that it builds alone as a libFuzzer binary: here they load more than once.
#![allow(clippy::duplicate_mod)]

#[path = "../fuzz/targets/replay.rs"]
mod replay;

#[path = "../fuzz/targets/block_requests.rs"]
mod block_requests;
#[path = "../fuzz/targets/commit_upper.rs"]
mod commit_upper;
#[path = "../fuzz/targets/fuse_requests.rs"]
mod fuse_requests;
#[path = "../fuzz/targets/mmio_fs.rs"]
mod mmio_fs;
#[path = "../fuzz/targets/mmio_rng.rs"]
mod mmio_rng;
#[path = "../fuzz/targets/net_tx.rs"]
mod net_tx;
#[path = "../fuzz/targets/origin_log.rs"]
mod origin_log;
#[path = "../fuzz/targets/port_io.rs"]
mod port_io;
#[path = "../fuzz/targets/vhost_user.rs"]
mod vhost_user;
#[path = "../fuzz/targets/vsock_packets.rs"]
mod vsock_packets;

#[test]
fn block_requests_corpus() {
    replay::corpus("block_requests", block_requests::run);
}

#[test]
fn commit_upper_corpus() {
    replay::corpus("commit_upper", commit_upper::run);
}

#[test]
fn fuse_requests_corpus() {
    replay::corpus("fuse_requests", fuse_requests::run);
}

#[test]
fn mmio_fs_corpus() {
    replay::corpus("mmio_fs", mmio_fs::run);
}

#[test]
fn mmio_rng_corpus() {
    replay::corpus("mmio_rng", mmio_rng::run);
}

#[test]
fn net_tx_corpus() {
    replay::corpus("net_tx", net_tx::run);
}

#[test]
fn origin_log_corpus() {
    replay::corpus("origin_log", origin_log::run);
}

#[test]
fn port_io_corpus() {
    replay::corpus("port_io", port_io::run);
}

#[test]
fn vhost_user_corpus() {
    replay::corpus("vhost_user", vhost_user::run);
}

#[test]
fn vsock_packets_corpus() {
    replay::corpus("vsock_packets", vsock_packets::run);
}
