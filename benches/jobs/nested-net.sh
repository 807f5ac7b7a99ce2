#!/bin/sh
# L2 job of the nested network benchmark (benches/run.sh --only net runs it
# through tests/nested/run-l2.sh): the static `nested-net` program measures
# TCP throughput and latency to guests on the tap and vhost-net paths
# against L2's loopback, and port-forward readiness, and writes
# $MVM_OUT/nested-net.json.
# Environment (L1 paths, from run-l2.sh --env): BENCH_BIN (nested-net),
# MVM_BIN, MVM_INIT, KERNEL, INITRD (the bench initramfs); optional SECS,
# REPS, FORWARDS.
set -eu
: "${MVM_OUT:?run this through tests/nested/run-l2.sh}"
: "${BENCH_BIN:?}" "${MVM_BIN:?}" "${MVM_INIT:?}" "${KERNEL:?}" "${INITRD:?}" "${NESTED_DIR:?}"
[ -c /dev/kvm ] || { echo "nested-net job: no /dev/kvm in L2"; exit 1; }
sh "$NESTED_DIR/load-net-modules.sh"
modprobe vhost_net
ls -l /dev/vhost-net
export MVM_HOME=/tmp/mvm-bench-net MVM_KERNEL="$KERNEL" MVM_INIT="$MVM_INIT"
rm -rf "$MVM_HOME"
echo "nested-net job: L2 $(uname -r), $(nproc) CPU(s), iperf3 $(iperf3 --version | head -1)"
status=0
"$BENCH_BIN" --mvm "$MVM_BIN" --kernel "$KERNEL" --initrd "$INITRD" --out "$MVM_OUT" \
    --secs "${SECS:-5}" --reps "${REPS:-3}" --forwards "${FORWARDS:-10}" || status=$?
kill "$(cat "$MVM_HOME/net/netd.pid" 2>/dev/null)" 2>/dev/null || true
exit "$status"
