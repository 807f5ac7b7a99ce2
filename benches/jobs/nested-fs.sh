#!/bin/sh
# L2 job of the file-system benchmark (benches/run.sh --only fs runs it
# through tests/nested/run-l2.sh). One guest mounts three shares of the
# same tree: our copy-on-write share (tag cow), our read-write passthrough
# (rw) and virtiofsd through mvm's vhost-user-fs front end (vfs), and runs
# benches/fs/workload.sh on each (benches/fs/guest.sh); then the same
# workload runs natively in L2 on the same tree, as the ceiling.
# Environment (L1 paths): MVM_BIN, KERNEL, INITRD (with /fs-bench-guest.sh
# and /fs-workload.sh), VIRTIOFSD, WORKLOAD; optional ROUNDS (default 1),
# GUEST_MEM (MiB, default 1024), PHASES (comma-separated workload phases,
# default all), MVM_LOG (e.g. cowfs::stats=debug: per-opcode counts and
# server time in mvm.stderr), VIRTIOFSD_LOG (virtiofsd's --log-level),
# SHARES (comma-separated, default cow,rw,vfs; also cowel: a second cow
# share of the same tree served on the VMM's event loop thread instead of
# the notifying vCPU's).
# Writes $MVM_OUT/fs-bench-console.log (guest), fs-bench-native.log,
# virtiofsd.log, fs-bench-env.txt.
set -u
: "${MVM_OUT:?run this through tests/nested/run-l2.sh}"
: "${MVM_BIN:?}" "${KERNEL:?}" "${INITRD:?}" "${VIRTIOFSD:?}" "${WORKLOAD:?}"
ROUNDS=${ROUNDS:-1} GUEST_MEM=${GUEST_MEM:-1024} PHASES=${PHASES:-all} SHARES=${SHARES:-cow,rw,vfs}
[ -c /dev/kvm ] || { echo "nested-fs job: no /dev/kvm in L2"; exit 1; }
B=/tmp/fsb
rm -rf "$B" && mkdir -p "$B/bb"
busybox --install -s "$B/bb"
say() { echo "nested-fs: $* (L2 uptime $(cut -d' ' -f1 /proc/uptime)s)"; }

say "preparing the tree: 10,000 files, 256 MiB, $ROUNDS x 1,000 copy-up files"
PATH="$B/bb:$PATH" sh "$WORKLOAD" prepare "$B/lower" "$ROUNDS" || exit 1
# rw and virtiofsd get their own copies of what they write; the
# read-only parts are hard links (same data, no extra RAM in L2's tmpfs).
for v in rw vfs; do
    mkdir "$B/$v"
    cp -al "$B/lower/tree" "$B/$v/tree"
    ln "$B/lower/big.bin" "$B/$v/big.bin"
    cp -a "$B/lower"/cu* "$B/$v/"
done
{
    echo "L2: $(uname -r), $(nproc) CPU(s), $(awk '/MemTotal/ {print $2 / 1024 " MiB"}' /proc/meminfo)"
    echo "virtiofsd: $("$VIRTIOFSD" --version 2>&1)"
    echo "guest memory: $GUEST_MEM MiB, rounds: $ROUNDS"
} >"$MVM_OUT/fs-bench-env.txt"

# Touch 1.5 GiB of L2's memory once (then free it): L1 backs L2's pages
# on first touch, and whichever share first wrote its 256 MiB file would
# pay for it (seen: the first share's sequential write took 1.4x as long
# as the same code on the next share).
dd if=/dev/zero of="$B/warm" bs=1M count=1536 2>/dev/null
rm -f "$B/warm"

say "starting virtiofsd"
"$VIRTIOFSD" --socket-path "$B/vfs.sock" --shared-dir "$B/vfs" --sandbox none \
    --log-level "${VIRTIOFSD_LOG:-info}" \
    >"$MVM_OUT/virtiofsd.log" 2>&1 &
vpid=$!
i=0
while [ ! -S "$B/vfs.sock" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done

say "guest: $SHARES"
set --
for t in $(echo "$SHARES" | tr , ' '); do
    case $t in
    cow) set -- "$@" --share "$B/lower:cow:cow" ;;
    cowel) set -- "$@" --share "$B/lower:cowel:cow" --fs-event-loop cowel ;;
    rw) set -- "$@" --share "$B/rw:rw:rw" ;;
    vfs) set -- "$@" --vhost-user-fs "$B/vfs.sock:vfs" ;;
    *) echo "nested-fs job: unknown share '$t' in SHARES" >&2; exit 2 ;;
    esac
done
"$MVM_BIN" run --kernel "$KERNEL" --initrd "$INITRD" --memory "$GUEST_MEM" "$@" \
    --cmdline "mvmtest.run=/fs-bench-guest.sh fsbench.rounds=$ROUNDS fsbench.phases=$PHASES fsbench.shares=$SHARES" \
    --console "$MVM_OUT/fs-bench-console.log" >"$MVM_OUT/mvm.stdout" 2>"$MVM_OUT/mvm.stderr"
status=$?
echo "$status" >"$MVM_OUT/mvm.status"
kill "$vpid" 2>/dev/null
wait "$vpid" 2>/dev/null

say "native in L2 (the ceiling)"
r=1
while [ "$r" -le "$ROUNDS" ]; do
    PATH="$B/bb:$PATH" sh "$WORKLOAD" run "$B/lower" native "$r" "$PHASES"
    r=$((r + 1))
done >"$MVM_OUT/fs-bench-native.log" 2>&1
say "done (mvm status $status)"
exit "$status"
