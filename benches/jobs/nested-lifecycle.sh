#!/bin/sh
# L2 job of the nested lifecycle benchmark (benches/run.sh runs it through
# tests/nested/run-l2.sh): the static `nested-lifecycle` program times
# `mvm run -- true`, `mvm start` -> first exec and `mvm stop` next to the
# bare boot of the same kernel, and writes $MVM_OUT/nested-lifecycle.json.
# Environment (L1 paths, from run-l2.sh --env): BENCH_BIN, MVM_BIN, KERNEL,
# INITRD, MVM_INIT; optional ROUNDS (default 10), NET (on|off, default on).
set -eu
: "${MVM_OUT:?run this through tests/nested/run-l2.sh}"
: "${BENCH_BIN:?}" "${MVM_BIN:?}" "${KERNEL:?}" "${INITRD:?}" "${MVM_INIT:?}"
[ -c /dev/kvm ] || { echo "nested-lifecycle job: no /dev/kvm in L2"; exit 1; }
# L2's chroot cannot autoload modules: the bridge, taps and nftables need these.
sh "$(dirname "$0")/../../tests/nested/load-net-modules.sh"
echo "nested-lifecycle job: L2 $(uname -r), uptime $(cut -d' ' -f1 /proc/uptime)s, $(nproc) CPU(s)"
exec "$BENCH_BIN" --mvm "$MVM_BIN" --kernel "$KERNEL" --initrd "$INITRD" --mvm-init "$MVM_INIT" \
    --rounds "${ROUNDS:-10}" --net "${NET:-on}" --out "$MVM_OUT"
