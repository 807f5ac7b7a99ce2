#!/usr/bin/env bash
# Runs the boot-path benchmarks (see benches/README.md) and writes the
# results to target/bench/:
#   startup.txt, startup.json     native start-up: exec -> first KVM_RUN, RSS
#                                 beyond guest memory; references: a static
#                                 no-op binary, QEMU microvm (tiny guest)
#   nested-boot.txt, nested-boot.json
#                                 nested boot in L2: mvm vs QEMU microvm and
#                                 Firecracker, same kernel and initramfs
#   nested/                       the whole run-l2.sh output folder (job.log,
#                                 console/ of every boot, L2 console, attempts)
#   nested-net.txt, nested-net.json
#                                 nested network: TCP throughput and latency,
#                                 L2 host <-> guest on the tap and vhost-net
#                                 paths vs L2 loopback; port-forward readiness
#   net/                          its run-l2.sh output folder
#   nested-fs.txt, nested-fs.json file systems in L2: our cow and rw shares,
#                                 virtiofsd (vhost-user-fs), native L2
#   fs/                           that run's run-l2.sh folder
#   nested-lifecycle.txt, nested-lifecycle.json
#                                 in L2: `mvm run -- true`, `mvm start` -> first
#                                 exec, idle VMM RSS; reference: the bare boot
#   nested-lifecycle/             its run-l2.sh output folder
#   project-up.txt, project-up/   in L2: `mvm up` of examples/node-web to its
#                                 first HTTP 200 and VMM RSS; reference: the
#                                 same node server started directly on L2
#   summary.txt                   all tables
#
# Usage: benches/run.sh [options]
#   --runs N        native runs of each measurement (default 20)
#   --boots N       nested boots of each VMM (default 20)
#   --memory MIB    guest memory of the native benchmark (default 128)
#   --only WHICH    startup | nested | net | fs | lifecycle | projects (default: all)
#   --rounds N      rounds of the lifecycle benchmark (default 10)
#   --secs N        seconds of each iperf3 run of the network bench (default 5)
#   --reps N        rounds of the network bench over its three paths (default 3)
#   --fs-rounds N   rounds of the file-system workload per share (default 1)
#   --fs-phases P   only these workload phases (comma-separated: stat, find, du,
#                   seq_read, seq_write, create, delete, write_existing)
#   --fs-shares S   shares to measure (default cow,rw,vfs; also cowel: cow served
#                   on the event loop instead of the vCPU thread)
#   (env) MVM_LOG=cowfs::stats=debug logs our server's per-opcode counts and
#   times into fs/mvm.stderr; VIRTIOFSD_LOG=debug makes virtiofsd log requests
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

usage() { sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' >&2; exit 2; }
log() { printf 'bench: %s\n' "$*" >&2; }

RUNS=20 BOOTS=20 ROUNDS=10 MEMORY=128 ONLY='' L2_TIMEOUT=3600 MVM='' SECS=5 REPS=3 FS_ROUNDS=1
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="${2:?}"; shift 2 ;;
        --boots) BOOTS="${2:?}"; shift 2 ;;
        --rounds) ROUNDS="${2:?}"; shift 2 ;;
        --memory) MEMORY="${2:?}"; shift 2 ;;
        --only) ONLY="${2:?}"; shift 2 ;;
        --secs) SECS="${2:?}"; shift 2 ;;
        --reps) REPS="${2:?}"; shift 2 ;;
        --fs-rounds) FS_ROUNDS="${2:?}"; shift 2 ;;
        --fs-phases) FS_PHASES="${2:?}"; shift 2 ;;
        --fs-shares) FS_SHARES="${2:?}"; shift 2 ;;
        --l2-timeout) L2_TIMEOUT="${2:?}"; shift 2 ;;
        --mvm) MVM="$(realpath "${2:?}")"; shift 2 ;;
        -h|--help) usage ;;
        *) log "unknown argument: $1"; usage ;;
    esac
done
case "$ONLY" in ''|startup|nested|net|fs|lifecycle|projects) ;; *) log "--only takes startup, nested, net, fs, lifecycle or projects, not '$ONLY'"; exit 2 ;; esac
for n in "$RUNS" "$BOOTS" "$ROUNDS" "$MEMORY" "$L2_TIMEOUT" "$SECS" "$REPS" "$FS_ROUNDS"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { log "not a positive number: '$n'"; exit 2; }
done
want() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }

mkdir -p "$OUT"

# --- static release builds (mvm as the e2e suite builds it; the benches) ---
pkgs=()
# The file-system benchmark is shell and Python; the others are programs.
[ "$ONLY" = fs ] || pkgs=(mvm-benches mvm-init)
[ -n "$MVM" ] || pkgs+=(mvm)
[ ${#pkgs[@]} -eq 0 ] || log "building static ${pkgs[*]} in $TARGET_DIR"
for pkg in "${pkgs[@]}"; do
    RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$TARGET_DIR" \
        nice cargo build --release --locked -q -p "$pkg" --target "$TRIPLE"
done
MVM="${MVM:-$BIN/mvm}"
bins=("$MVM")
[ "$ONLY" = fs ] || bins+=("$BIN/startup" "$BIN/nested-boot" "$BIN/noop" "$BIN/nested-net" "$BIN/nested-lifecycle" "$BIN/mvm-init")
for b in "${bins[@]}"; do
    [ -x "$b" ] || { log "missing: $b"; exit 1; }
done
log "mvm under test: $MVM"

status=0
: >"$OUT/summary.txt"
l1_load() { echo "L1 load average ($1): $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"; }

# l2_bench NAME JOB DIR RANGE [run-l2.sh options]: runs an L2 bench job into
# $OUT/DIR; keeps its NAME.json and, as NAME.txt, the table (the job.log
# lines sed selects with RANGE, without the program's progress lines).
l2_bench() {
    local name=$1 job=$2 dir=$3 range=$4 rc=0
    shift 4
    l1_load before >"$OUT/$name.load"
    tests/nested/run-l2.sh "$job" "$OUT/$dir" --timeout "$L2_TIMEOUT" "$@" || rc=$?
    l1_load after >>"$OUT/$name.load"
    if [ -f "$OUT/$dir/$name.json" ]; then
        cp "$OUT/$dir/$name.json" "$OUT/$name.json"
        {
            sed -n "$range" "$OUT/$dir/job.log" | grep -v "^$name: "
            echo "L2: $(tr '\n' ' ' <"$OUT/$dir/l2-attempts.txt")"
            cat "$OUT/$name.load"
        } >"$OUT/$name.txt"
        cat "$OUT/$name.txt"
        { echo; cat "$OUT/$name.txt"; } >>"$OUT/summary.txt"
    fi
    if [ "$rc" != 0 ]; then
        log "the $name run failed (run-l2.sh status $rc; see $OUT/$dir/)"
        status=1
    fi
}

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
    # Firecracker, the second reference: MVM_FIRECRACKER, else the
    # machines' shared copy beside the checkout.
    FC="${MVM_FIRECRACKER:-$ROOT/../shared/ref/firecracker}"
    [ -x "$FC" ] || FC=/work/shared/ref/firecracker
    ref_env=()
    if [ -x "$FC" ]; then
        mkdir -p "$OUT/artifacts"
        cp "$FC" "$OUT/artifacts/firecracker"
        ref_env+=(--env "FIRECRACKER=$OUT/artifacts/firecracker")
    fi
    # NESTED_QEMU=none leaves QEMU out (its boots take a minute each in L2).
    if [ -n "${NESTED_QEMU:-}" ]; then ref_env+=(--env "QEMU=$NESTED_QEMU"); fi
    log "nested boot: $BOOTS boots of mvm, QEMU microvm and (when found) Firecracker in one L2 run"
    l2_bench nested-boot benches/jobs/nested-boot.sh nested '/^Nested boot/,/^exec floors/p' \
        --env "BENCH_BIN=$BIN/nested-boot" --env "MVM_BIN=$MVM" \
        --env "KERNEL=$KERNEL" --env "INITRD=$INITRD" --env "BOOTS=$BOOTS" \
        "${ref_env[@]}"
fi

# --- 3. nested network -----------------------------------------------------------------
if want net; then
    command -v iperf3 >/dev/null || { log "iperf3 is missing: scripts/install-deps.sh installs it"; exit 1; }
    log "nested network: tap vs vhost-net vs L2 loopback, port forwards, in one L2 run"
    NET_INITRD="$OUT/artifacts/net-bench-initramfs.cpio.gz"
    tests/nested/make-guest-initramfs.sh "$NET_INITRD" --init tests/nested/guest-init.sh \
        --add "$(command -v iperf3):/bin/iperf3" --add "$BIN/nested-net:/nested-net" \
        --add tests/e2e/guest/net-dhcp.sh:/net-dhcp.sh \
        --add benches/jobs/net-bench-guest.sh:/net-bench-guest.sh --libs
    # L2 reads L1's files live: private copies, so a rebuild cannot crash it.
    SNAP="$OUT/artifacts/net-bin"
    mkdir -p "$SNAP"
    cp "$MVM" "$SNAP/mvm" && cp "$BIN/mvm-init" "$BIN/nested-net" "$SNAP/"
    l2_bench nested-net benches/jobs/nested-net.sh net '/^Nested network/,$p' \
        --env "BENCH_BIN=$SNAP/nested-net" --env "MVM_BIN=$SNAP/mvm" \
        --env "MVM_INIT=$SNAP/mvm-init" --env "KERNEL=$KERNEL" --env "INITRD=$NET_INITRD" \
        --env "NESTED_DIR=$ROOT/tests/nested" --env "SECS=$SECS" --env "REPS=$REPS"
fi

# --- 4. nested lifecycle ---------------------------------------------------------------
if want lifecycle; then
    log "nested lifecycle: $ROUNDS rounds in one L2 run"
    l2_bench nested-lifecycle benches/jobs/nested-lifecycle.sh nested-lifecycle '/^Nested lifecycle/,/^failed steps/p' \
        --env "BENCH_BIN=$BIN/nested-lifecycle" --env "MVM_BIN=$MVM" --env "MVM_INIT=$BIN/mvm-init" \
        --env "KERNEL=$KERNEL" --env "INITRD=$INITRD" --env "ROUNDS=$ROUNDS"
fi

# --- 5. file systems: cow, rw, virtiofsd and native L2 in one L2 run ------------------
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
        --env "ROUNDS=$FS_ROUNDS" --env "PHASES=${FS_PHASES:-all}" --env "SHARES=${FS_SHARES:-cow,rw,vfs}" \
        --env "MVM_LOG=${MVM_LOG:-warn}" --env "VIRTIOFSD_LOG=${VIRTIOFSD_LOG:-info}" || rc=$?
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

# --- 6. project up --------------------------------------------------------------------
if want projects; then
    log "project up: examples/node-web, $ROUNDS rounds against node on L2, one L2 run"
    rc=0
    tests/nested/run-l2.sh benches/jobs/nested-project-up.sh "$OUT/project-up" --timeout "$L2_TIMEOUT" \
        --env "MVM_BIN=$MVM" --env "MVM_INIT=$BIN/mvm-init" --env "KERNEL=$KERNEL" \
        --env "EXAMPLES=$ROOT/examples" --env "RUNS=$ROUNDS" || rc=$?
    if [ -f "$OUT/project-up/project-up.txt" ]; then
        {
            echo "Project up (examples/node-web; samples: name value)"
            cat "$OUT/project-up/project-up.txt"
            echo "L2: $(tr '\n' ' ' <"$OUT/project-up/l2-attempts.txt")"
        } >"$OUT/project-up.txt"
        cat "$OUT/project-up.txt"
        { echo; cat "$OUT/project-up.txt"; } >>"$OUT/summary.txt"
    fi
    [ "$rc" = 0 ] || { log "the project-up run failed (see $OUT/project-up/)"; status=1; }
fi

log "results in $OUT (summary.txt, *.json)"
exit "$status"
