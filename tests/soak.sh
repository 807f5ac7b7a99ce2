#!/usr/bin/env bash
# The stall soak: tests/e2e/jobs/soak.sh in one L2 boot (see that file).
# Usage: tests/soak.sh [ITERATIONS] (default 50). Results and, for any
# stalled iteration, the VMs' state dumps: target/e2e/soak/soak/.
# Takes about 25-40 minutes under emulation for 50 iterations; not part
# of CI's budget (`tests/run.sh --soak` runs it after the suite).
set -euo pipefail
cd "$(dirname "$0")/.."
ITERS="${1:-50}"
case "$ITERS" in
    '' | *[!0-9]* | 0) echo "tests/soak.sh: ITERATIONS must be a whole number of at least 1, not '$ITERS'" >&2; exit 2 ;;
esac
ROOT="$(pwd)"
TARGET="x86_64-unknown-linux-gnu"
# The static build the quickstart and the nested suite share.
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
STATIC="$TARGET_DIR/static"

echo "== static mvm and mvm-init" >&2
RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$STATIC" \
    cargo build --release --locked -p mvm -p mvm-init --target "$TARGET" >&2
ART="$ROOT/target/e2e/soak-artifacts"
mkdir -p "$ART"
# Private copies: L2 reads L1's files live.
for b in mvm mvm-init; do cp "$STATIC/$TARGET/release/$b" "$ART/$b"; done

echo "== guest kernel (cached)" >&2
KERNEL="$(guest-kernel/build.sh --print-path)"

OUT="$ROOT/target/e2e/soak"
rm -rf "$OUT"
echo "== soak: $ITERS iterations of two VMs in one L2 boot" >&2
status=0
tests/nested/run-l2.sh tests/e2e/jobs/soak.sh "$OUT" --no-retry \
    --timeout $((600 + ITERS * 120)) \
    --env "MVM_BIN=$ART/mvm" --env "MVM_INIT=$ART/mvm-init" --env "KERNEL=$KERNEL" \
    --env "E2E_JOBS=$ROOT/tests/e2e/jobs" --env "SOAK_ITERS=$ITERS" || status=$?
cat "$OUT/soak/summary" 2>/dev/null || echo "soak: no summary (L2 status $status)" >&2
ls -d "$OUT"/soak/stall-* "$OUT"/soak/failure-* 2>/dev/null || true
exit "$status"
