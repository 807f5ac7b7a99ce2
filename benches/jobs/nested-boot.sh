#!/bin/sh
# L2 job of the nested boot benchmark (benches/run.sh runs it through
# tests/nested/run-l2.sh): the static `nested-boot` program boots the guest
# kernel with mvm, QEMU microvm and Firecracker, alternately, and writes
# $MVM_OUT/nested-boot.json and $MVM_OUT/console/.
# Environment (L1 paths, from run-l2.sh --env): BENCH_BIN (nested-boot),
# MVM_BIN, KERNEL, INITRD; optional BOOTS (default 20), FIRECRACKER (the
# reference binary; none without it), QEMU (a path, or `none` to skip it),
# and for diagnostics EXTRA_CMDLINE (appended to every guest's command
# line), MVM_ARGS and L2_THP.
set -eu
: "${MVM_OUT:?run this through tests/nested/run-l2.sh}"
: "${BENCH_BIN:?}" "${MVM_BIN:?}" "${KERNEL:?}" "${INITRD:?}"
[ -c /dev/kvm ] || { echo "nested-boot job: no /dev/kvm in L2"; exit 1; }
thp=/sys/kernel/mm/transparent_hugepage/enabled
# L2_THP=always|madvise|never: L2's transparent huge pages (a diagnostic knob).
if [ -n "${L2_THP:-}" ]; then echo "$L2_THP" >"$thp"; fi
echo "nested-boot job: L2 $(uname -r), uptime $(cut -d' ' -f1 /proc/uptime)s, $(nproc) CPU(s), THP $(cat "$thp" 2>/dev/null)"
set -- --mvm "$MVM_BIN" --kernel "$KERNEL" --initrd "$INITRD" \
    --boots "${BOOTS:-20}" --cmdline "${EXTRA_CMDLINE:-}" --out "$MVM_OUT"
if [ -n "${FIRECRACKER:-}" ]; then set -- "$@" --firecracker "$FIRECRACKER"; fi
if [ -n "${QEMU:-}" ]; then set -- "$@" --qemu "$QEMU"; fi
# MVM_ARGS: extra `mvm run` arguments, space-separated (a diagnostic knob:
# "--no-jail --seccomp=off" boots mvm as bare as the reference Firecracker).
for a in ${MVM_ARGS:-}; do set -- "$@" "--mvm-arg=$a"; done
exec "$BENCH_BIN" "$@"
