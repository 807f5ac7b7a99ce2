#!/usr/bin/env bash
# The native suite under load: builds the tests once, then runs
# `cargo test --workspace --locked --no-fail-fast` ROUNDS times (default 5)
# while stress-ng keeps every core busy. A test that depends on timing
# shows up here. Prints pass/fail and duration per round and the failed
# tests' names; exits non-zero if any round failed.
#
#   tests/stress.sh            # 5 rounds, stress-ng --cpu 2
#   ROUNDS=2 STRESS_CPUS=4 tests/stress.sh
#
# Round logs are kept in target/stress/round-N.log.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
STRESS_CPUS=${STRESS_CPUS:-2}
LOGS=target/stress

command -v stress-ng >/dev/null 2>&1 || scripts/install-deps.sh

echo "== building the native tests once" >&2
cargo test --workspace --locked --no-run

mkdir -p "$LOGS"
# Own process group (setsid), so the trap ends stress-ng and its workers
# and nothing else.
setsid stress-ng --cpu "$STRESS_CPUS" --quiet &
stress_pid=$!
stop_stress() {
    kill -TERM -- "-$stress_pid" 2>/dev/null || true
    wait "$stress_pid" 2>/dev/null || true
}
trap stop_stress EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
echo "== stress-ng --cpu $STRESS_CPUS running (pid $stress_pid)" >&2

passed=0
summary=()
for round in $(seq 1 "$ROUNDS"); do
    log="$LOGS/round-$round.log"
    echo "== round $round of $ROUNDS (log: $log)" >&2
    start=$(date +%s)
    if cargo test --workspace --locked --no-fail-fast >"$log" 2>&1; then
        result=pass
        passed=$((passed + 1))
    else
        result=FAIL
    fi
    secs=$(($(date +%s) - start))
    line="round $round: $result in ${secs}s"
    if [ "$result" = FAIL ]; then
        # libtest prints "test NAME ... FAILED"; a crate that did not build
        # or crashed shows only in cargo's own error lines.
        failed=$(grep -E '^test .* \.\.\. FAILED$' "$log" | sed -e 's/^test //' -e 's/ \.\.\. FAILED$//' | sort -u | tr '\n' ' ')
        [ -n "$failed" ] || failed=$(grep -E '^error' "$log" | head -5 | tr '\n' ' ')
        line="$line: $failed"
    fi
    echo "$line" >&2
    summary+=("$line")
done

echo "== stress summary: $passed of $ROUNDS rounds passed under stress-ng --cpu $STRESS_CPUS"
printf '%s\n' "${summary[@]}"
[ "$passed" -eq "$ROUNDS" ]
