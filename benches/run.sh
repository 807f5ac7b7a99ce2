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
#   nested-fs.txt, nested-fs.json file systems in L2: our cow and rw shares,
#                                 virtiofsd (vhost-user-fs), native L2
#   fs/                           that run's run-l2.sh folder
#   summary.txt                   all tables
#
# Usage: benches/run.sh [options]
#   --runs N        native runs of each measurement (default 20)
#   --boots N       nested boots of each VMM (default 20)
#   --memory MIB    guest memory of the native benchmark (default 128)
#   --only WHICH    startup | nested | fs (default: all three)
#   --fs-rounds N   rounds of the file-system workload per share (default 1)
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

usage() { sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
log() { printf 'bench: %s\n' "$*" >&2; }

RUNS=20 BOOTS=20 MEMORY=128 ONLY='' L2_TIMEOUT=3600 MVM='' FS_ROUNDS=1
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="${2:?}"; shift 2 ;;
        --boots) BOOTS="${2:?}"; shift 2 ;;
        --memory) MEMORY="${2:?}"; shift 2 ;;
        --only) ONLY="${2:?}"; shift 2 ;;
        --fs-rounds) FS_ROUNDS="${2:?}"; shift 2 ;;
        --l2-timeout) L2_TIMEOUT="${2:?}"; shift 2 ;;
        --mvm) MVM="$(realpath "${2:?}")"; shift 2 ;;
        -h|--help) usage ;;
        *) log "unknown argument: $1"; usage ;;
    esac
done
case "$ONLY" in ''|startup|nested|fs) ;; *) log "--only takes startup, nested or fs, not '$ONLY'"; exit 2 ;; esac
for n in "$RUNS" "$BOOTS" "$MEMORY" "$L2_TIMEOUT" "$FS_ROUNDS"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { log "not a positive number: '$n'"; exit 2; }
done
want() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }

mkdir -p "$OUT"

# --- static release builds (mvm as the e2e suite builds it; the benches) ---
pkgs=()
# The file-system benchmark is shell and Python; the others are programs.
[ "$ONLY" = fs ] || pkgs=(mvm-benches)
[ -n "$MVM" ] || pkgs+=(mvm)
[ ${#pkgs[@]} -eq 0 ] || log "building static ${pkgs[*]} in $TARGET_DIR"
for pkg in "${pkgs[@]}"; do
    RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$TARGET_DIR" \
        nice cargo build --release --locked -q -p "$pkg" --target "$TRIPLE"
done
MVM="${MVM:-$BIN/mvm}"
bins=("$MVM")
[ "$ONLY" = fs ] || bins+=("$BIN/startup" "$BIN/nested-boot" "$BIN/noop")
for b in "${bins[@]}"; do
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

# --- 3. file systems: cow, rw, virtiofsd and native L2 in one L2 run ------------------
if want fs; then
    log "file systems: $FS_ROUNDS round(s) of the workload on each share, one L2 run"
    VIRTIOFSD="$(scripts/install-virtiofsd.sh)"
    cp "$VIRTIOFSD" "$OUT/artifacts/virtiofsd"
    FS_INITRD="$OUT/artifacts/fs-bench-initramfs.cpio.gz"
    tests/nested/make-guest-initramfs.sh "$FS_INITRD" --init tests/nested/guest-init.sh \
        --add benches/fs/guest.sh:/fs-bench-guest.sh --add benches/fs/workload.sh:/fs-workload.sh
    l1_load before >"$OUT/fs.load"
    rc=0
    # L2's tmpfs holds the trees (about 0.6 GiB) and the guest's memfd RAM.
    tests/nested/run-l2.sh benches/jobs/nested-fs.sh "$OUT/fs" --timeout "$L2_TIMEOUT" --mem 6144 \
        --env "MVM_BIN=$MVM" --env "KERNEL=$KERNEL" --env "INITRD=$FS_INITRD" \
        --env "VIRTIOFSD=$OUT/artifacts/virtiofsd" --env "WORKLOAD=$ROOT/benches/fs/workload.sh" \
        --env "ROUNDS=$FS_ROUNDS" || rc=$?
    l1_load after >>"$OUT/fs.load"
    if python3 benches/fs/report.py "$OUT/fs" --json "$OUT/nested-fs.json" >"$OUT/nested-fs.txt"; then
        {
            echo "File systems in L2 (median seconds; one guest, three shares; native L2 as the ceiling)"
            cat "$OUT/nested-fs.txt"
            cat "$OUT/fs/fs-bench-env.txt" 2>/dev/null
            echo "L2: $(tr '\n' ' ' <"$OUT/fs/l2-attempts.txt")"
            cat "$OUT/fs.load"
        } >"$OUT/nested-fs.tmp" && mv "$OUT/nested-fs.tmp" "$OUT/nested-fs.txt"
        cat "$OUT/nested-fs.txt"
        { echo; cat "$OUT/nested-fs.txt"; } >>"$OUT/summary.txt"
    fi
    if [ "$rc" != 0 ]; then
        log "the file-system run failed (run-l2.sh status $rc; see $OUT/fs/)"
        status=1
    fi
fi

log "results in $OUT (summary.txt, *.json)"
exit "$status"
