#!/bin/sh
# The file-system benchmark's workload (benches/README.md, section 3). The
# same script runs in the L3 guest on each share (busybox) and natively in
# L2 (with busybox's applets first in PATH), so only the file system
# differs.
#   workload.sh prepare DIR ROUNDS   make the tree (in L2, before the VM)
#   workload.sh run DIR LABEL ROUND [PHASES]  time each phase on DIR (or
#       only those in PHASES, comma-separated; create always runs before
#       delete); prints MVM-GUEST: bench_<LABEL>_<phase>=<seconds>
# Every phase starts with cold caches (sync; drop_caches): with a FUSE
# share that means real LOOKUPs, READDIRs and READs reach the server.
set -u
DIRS=100 PER_DIR=100 SMALL=5000 COPYUP=1000 BIG_MIB=256

prepare() {
    d=$1 rounds=$2
    mkdir -p "$d/tree"
    i=0
    while [ $i -lt $DIRS ]; do
        mkdir "$d/tree/d$i"
        j=0
        while [ $j -lt $PER_DIR ]; do echo "$i $j" >"$d/tree/d$i/f$j"; j=$((j + 1)); done
        i=$((i + 1))
    done
    dd if=/dev/urandom of="$d/big.bin" bs=1M count=$BIG_MIB 2>/dev/null
    r=1
    while [ $r -le "$rounds" ]; do
        mkdir "$d/cu$r"
        i=0
        while [ $i -lt $COPYUP ]; do echo "lower $i" >"$d/cu$r/f$i"; i=$((i + 1)); done
        r=$((r + 1))
    done
}

now() { read -r up _ </proc/uptime; echo "$up"; }
cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# phase NAME CMD...: runs CMD with cold caches and prints its time.
phase() {
    name=$1; shift
    case ",$PHASES," in *",$name,"*|,all,) ;; *) return 0 ;; esac
    cold
    t0=$(now)
    "$@"
    t1=$(now)
    echo "MVM-GUEST: bench_${LABEL}_$name=$(echo "$t0 $t1" | awk '{printf "%.2f", $2 - $1}')"
}

stat_all() { xargs stat -c %s <"$LIST" >/dev/null; }
find_all() { find "$D/tree" | wc -l >/dev/null; }
du_all() { du -s "$D/tree" >/dev/null; }
seq_read() { dd if="$D/big.bin" of=/dev/null bs=1M 2>/dev/null; }
seq_write() { dd if=/dev/zero of="$D/out.bin" bs=1M count=$BIG_MIB conv=fsync 2>/dev/null; }
create_small() {
    mkdir "$D/many"
    i=0
    while [ $i -lt $SMALL ]; do echo "$i" >"$D/many/f$i"; i=$((i + 1)); done
    sync
}
# rm -r until the folder is gone (at most 64 passes), and how many passes
# it took: a server whose READDIR offsets shift when entries are deleted
# (virtiofsd over L2's tmpfs: positions, not cookies) makes one `rm -r`
# skip about half of the files and fail; repeating it does the same work
# (every file unlinked once) plus a re-read of what is left.
delete_small() {
    passes=0
    while [ -e "$D/many" ] && [ $passes -lt 64 ]; do
        rm -r "$D/many" 2>/dev/null
        passes=$((passes + 1))
    done
    sync
    DELETE_PASSES=$passes
}
# Appends to 1,000 existing lower files: copy-up on a cow share, an
# in-place write elsewhere.
write_existing() {
    for f in "$D/cu$ROUND"/*; do echo x >>"$f"; done
    sync
}

run() {
    D=$1 LABEL=$2 ROUND=$3 PHASES=${4:-all}
    LIST=/tmp/bench-list-$LABEL
    i=0
    : >"$LIST"
    while [ $i -lt $DIRS ]; do
        j=0
        while [ $j -lt $PER_DIR ]; do echo "$D/tree/d$i/f$j"; j=$((j + 1)); done >>"$LIST"
        i=$((i + 1))
    done
    phase stat stat_all
    phase find find_all
    phase du du_all
    phase seq_read seq_read
    phase seq_write seq_write
    rm -f "$D/out.bin"
    phase create create_small
    [ -d "$D/many" ] || create_small
    DELETE_PASSES=
    phase delete delete_small
    [ -z "$DELETE_PASSES" ] || echo "MVM-GUEST: bench_${LABEL}_delete_passes=$DELETE_PASSES"
    [ ! -e "$D/many" ] || echo "MVM-GUEST: bench_${LABEL}_delete_failed=1"
    phase write_existing write_existing
    rm -f "$LIST"
}

case "${1:-}" in
prepare) prepare "$2" "$3" ;;
run) run "$2" "$3" "$4" "${5:-all}" ;;
*) echo "usage: workload.sh prepare DIR ROUNDS | run DIR LABEL ROUND [PHASES]" >&2; exit 2 ;;
esac
