#!/bin/sh
# L2 job of the nested boot benchmark (benches/run.sh runs it through
# tests/nested/run-l2.sh): the static `nested-boot` program boots the guest
# kernel with mvm and with QEMU microvm, alternately, and writes
# $MVM_OUT/nested-boot.json and $MVM_OUT/console/.
# Environment (L1 paths, from run-l2.sh --env): BENCH_BIN (nested-boot),
# MVM_BIN, KERNEL, INITRD; optional BOOTS (default 20) and EXTRA_CMDLINE
# (appended to both guests' command lines, for diagnostics).
set -eu
: "${MVM_OUT:?run this through tests/nested/run-l2.sh}"
: "${BENCH_BIN:?}" "${MVM_BIN:?}" "${KERNEL:?}" "${INITRD:?}"
[ -c /dev/kvm ] || { echo "nested-boot job: no /dev/kvm in L2"; exit 1; }
echo "nested-boot job: L2 $(uname -r), uptime $(cut -d' ' -f1 /proc/uptime)s, $(nproc) CPU(s)"
exec "$BENCH_BIN" --mvm "$MVM_BIN" --kernel "$KERNEL" --initrd "$INITRD" \
    --boots "${BOOTS:-20}" --cmdline "${EXTRA_CMDLINE:-}" --out "$MVM_OUT"
