#!/usr/bin/env bash
# Runs the boot-path benchmarks (see benches/README.md) and writes the
# results to target/bench/:
#   startup.txt, startup.json     native start-up: exec -> first KVM_RUN, RSS
#                                 beyond guest memory; references: a static
#                                 no-op binary, QEMU microvm (tiny guest)
#   nested-boot.txt, nested-boot.json
#                                 nested boot in L2: mvm vs QEMU microvm, same
#                                 kernel and initramfs
#   nested/                       the whole run-l2.sh output folder (job.log,
#                                 console/ of every boot, L2 console, attempts)
#   nested-lifecycle.txt, nested-lifecycle.json
#                                 in L2: `mvm run -- true`, `mvm start` -> first
#                                 exec, idle VMM RSS; reference: the bare boot
#   nested-lifecycle/             its run-l2.sh output folder
#   summary.txt                   all tables
#
# Usage: benches/run.sh [options]
#   --runs N        native runs of each measurement (default 20)
#   --boots N       nested boots of each VMM (default 20)
#   --memory MIB    guest memory of the native benchmark (default 128)
#   --rounds N      rounds of the lifecycle benchmark (default 10)
#   --only WHICH    startup | nested | lifecycle (default: all)
#   --l2-timeout S  limit for the L2 run (default 3600)
#   --mvm PATH      benchmark this mvm binary (static, or L2 cannot run it)
#                   instead of building one from this checkout
# Environment: MVM_BENCH_TARGET_DIR (cargo target dir of the static builds,
# default target/bench-static), MVM_L2_VERBOSE=1 (L2 console on stderr).
#
# Nothing here asserts a time: each benchmark measures its reference in the
# same run and prints ratios. Exit status: non-zero if a benchmark could not
# measure mvm at all.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
OUT="$ROOT/target/bench"
TARGET_DIR="${MVM_BENCH_TARGET_DIR:-$ROOT/target/bench-static}"
TRIPLE=x86_64-unknown-linux-gnu
BIN="$TARGET_DIR/$TRIPLE/release"

usage() { sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
log() { printf 'bench: %s\n' "$*" >&2; }

RUNS=20 BOOTS=20 ROUNDS=10 MEMORY=128 ONLY='' L2_TIMEOUT=3600 MVM=''
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="${2:?}"; shift 2 ;;
        --boots) BOOTS="${2:?}"; shift 2 ;;
        --rounds) ROUNDS="${2:?}"; shift 2 ;;
        --memory) MEMORY="${2:?}"; shift 2 ;;
        --only) ONLY="${2:?}"; shift 2 ;;
        --l2-timeout) L2_TIMEOUT="${2:?}"; shift 2 ;;
        --mvm) MVM="$(realpath "${2:?}")"; shift 2 ;;
        -h|--help) usage ;;
        *) log "unknown argument: $1"; usage ;;
    esac
done
case "$ONLY" in ''|startup|nested|lifecycle) ;; *) log "--only takes startup, nested or lifecycle, not '$ONLY'"; exit 2 ;; esac
for n in "$RUNS" "$BOOTS" "$ROUNDS" "$MEMORY" "$L2_TIMEOUT"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { log "not a positive number: '$n'"; exit 2; }
done
want() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }

mkdir -p "$OUT"

# --- static release builds (mvm as the e2e suite builds it; the benches) ---
pkgs=(mvm-benches mvm-init)
[ -n "$MVM" ] || pkgs=(mvm mvm-benches mvm-init)
log "building static ${pkgs[*]} in $TARGET_DIR"
for pkg in "${pkgs[@]}"; do
    RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$TARGET_DIR" \
        nice cargo build --release --locked -q -p "$pkg" --target "$TRIPLE"
done
MVM="${MVM:-$BIN/mvm}"
for b in "$MVM" "$BIN/startup" "$BIN/nested-boot" "$BIN/nested-lifecycle" "$BIN/noop" "$BIN/mvm-init"; do
    [ -x "$b" ] || { log "missing: $b"; exit 1; }
done
log "mvm under test: $MVM"

status=0
: >"$OUT/summary.txt"
l1_load() { echo "L1 load average ($1): $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"; }

# --- the real guest: our kernel and the busybox test initramfs ---------------------------
log "guest kernel (guest-kernel/build.sh; cached) and initramfs"
KERNEL="$(guest-kernel/build.sh --print-path)"
mkdir -p "$OUT/artifacts"
INITRD="$OUT/artifacts/guest-initramfs.cpio.gz"
tests/nested/make-guest-initramfs.sh "$INITRD" --init tests/nested/guest-init.sh

# --- 1. native start-up ---------------------------------------------------------------
if want startup; then
    log "native start-up: $RUNS runs of each"
    l1_load before >"$OUT/startup.load"
    rc=0
    "$BIN/startup" --mvm "$MVM" --noop "$BIN/noop" --runs "$RUNS" --memory "$MEMORY" \
        --kernel "$KERNEL" --initrd "$INITRD" --json "$OUT/startup.json" >"$OUT/startup.txt" || rc=$?
    l1_load after >>"$OUT/startup.load"
    cat "$OUT/startup.load" >>"$OUT/startup.txt"
    cat "$OUT/startup.txt"
    [ "$rc" = 0 ] || { log "the start-up benchmark failed (status $rc)"; status=1; }
    cat "$OUT/startup.txt" >>"$OUT/summary.txt"
fi

# --- 2. nested boot -------------------------------------------------------------------
if want nested; then
    log "nested boot: $BOOTS boots of mvm and of QEMU microvm in one L2 run"
    l1_load before >"$OUT/nested.load"
    rc=0
    tests/nested/run-l2.sh benches/jobs/nested-boot.sh "$OUT/nested" --timeout "$L2_TIMEOUT" \
        --env "BENCH_BIN=$BIN/nested-boot" --env "MVM_BIN=$MVM" \
        --env "KERNEL=$KERNEL" --env "INITRD=$INITRD" --env "BOOTS=$BOOTS" || rc=$?
    l1_load after >>"$OUT/nested.load"
    if [ -f "$OUT/nested/nested-boot.json" ]; then
        cp "$OUT/nested/nested-boot.json" "$OUT/nested-boot.json"
        {
            # The table the program printed (job.log also has its progress).
            sed -n '/^Nested boot/,/^exec floors/p' "$OUT/nested/job.log"
            echo "L2: $(tr '\n' ' ' <"$OUT/nested/l2-attempts.txt")"
            cat "$OUT/nested.load"
        } >"$OUT/nested-boot.txt"
        cat "$OUT/nested-boot.txt"
        { echo; cat "$OUT/nested-boot.txt"; } >>"$OUT/summary.txt"
    fi
    if [ "$rc" != 0 ]; then
        log "the nested run failed (run-l2.sh status $rc; see $OUT/nested/)"
        status=1
    fi
fi

# --- 3. nested lifecycle -------------------------------------------------------------
if want lifecycle; then
    log "nested lifecycle: $ROUNDS rounds in one L2 run"
    l1_load before >"$OUT/lifecycle.load"
    rc=0
    tests/nested/run-l2.sh benches/jobs/nested-lifecycle.sh "$OUT/nested-lifecycle" --timeout "$L2_TIMEOUT" \
        --env "BENCH_BIN=$BIN/nested-lifecycle" --env "MVM_BIN=$MVM" --env "MVM_INIT=$BIN/mvm-init" \
        --env "KERNEL=$KERNEL" --env "INITRD=$INITRD" --env "ROUNDS=$ROUNDS" || rc=$?
    l1_load after >>"$OUT/lifecycle.load"
    if [ -f "$OUT/nested-lifecycle/nested-lifecycle.json" ]; then
        cp "$OUT/nested-lifecycle/nested-lifecycle.json" "$OUT/nested-lifecycle.json"
        {
            sed -n '/^Nested lifecycle/,/^failed steps/p' "$OUT/nested-lifecycle/job.log"
            echo "L2: $(tr '\n' ' ' <"$OUT/nested-lifecycle/l2-attempts.txt")"
            cat "$OUT/lifecycle.load"
        } >"$OUT/nested-lifecycle.txt"
        cat "$OUT/nested-lifecycle.txt"
        { echo; cat "$OUT/nested-lifecycle.txt"; } >>"$OUT/summary.txt"
    fi
    if [ "$rc" != 0 ]; then
        log "the nested lifecycle run failed (run-l2.sh status $rc; see $OUT/nested-lifecycle/)"
        status=1
    fi
fi

log "results in $OUT (summary.txt, *.json)"
exit "$status"
