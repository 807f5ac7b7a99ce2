#!/usr/bin/env bash
# The test command: unit and integration tests (native KVM) here, then the
# README's main job (scripts/quickstart.sh) and the nested end-to-end suite
# (one QEMU L2 boot) from a copy of this checkout under /tmp in a folder
# whose name has a space ("/tmp/mvm checkout.XXXXXX/mvm"). A guest never
# sees the host's checkout (its root is the host's system view; /tmp is
# masked), so this proves, in the one nested run, that both commands work
# from wherever someone cloned the repository. Exits non-zero on any
# failure.
#
# The copy holds this checkout's files as they are now (tracked and
# untracked, not ignored; uncommitted edits included) with their times, and
# builds into this checkout's cargo target dir (CARGO_TARGET_DIR, default
# target/): nothing is rebuilt for it. That is safe because what it reuses
# names no checkout path: mvm and mvm-init have none built in, and the e2e
# harness reads its checkout at run time (tests/src/lib.rs, workspace_root);
# the suite's results then land in the copy, which this script checks.
#
# `--soak` also runs the stall soak (tests/soak.sh, over an hour) at the end.
#
# Environment: MVM_TESTS_IN_PLACE=1 runs the quickstart and the nested
# suite here instead (quicker to debug; proves nothing about other paths).
# The copy is deleted after a pass and kept (its path printed) after a
# failure or a pass that needed an L2 retry: the results are in its
# target/e2e/nested/ (a stuck attempt's logs as l2-*.attempt1.*) and
# target/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
SOAK=0
case "${1:-}" in
    "") ;;
    --soak) SOAK=1 ;;
    *) echo "usage: tests/run.sh [--soak]   (--soak: then the stall soak, tests/soak.sh)" >&2; exit 2 ;;
esac

scripts/install-deps.sh

echo "== virtiofsd (the reference vhost-user-fs backend; cached)" >&2
scripts/install-virtiofsd.sh >/dev/null

echo "== native tests (cargo test --workspace)" >&2
# --no-fail-fast: a failing crate must not hide the others' results.
cargo test --workspace --locked --no-fail-fast

echo "== guest kernel (cached by config hash)" >&2
guest-kernel/build.sh --print-path >/dev/null

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
export CARGO_TARGET_DIR="$TARGET_DIR"

# copy_checkout DEST: this checkout's files, modes and times (not target/).
copy_checkout() {
    (
        cd "$ROOT"
        if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
            # Tracked files deleted in the work tree are skipped.
            git ls-files -z --cached --others --exclude-standard \
                | while IFS= read -r -d '' f; do
                    if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
                done
        else
            find . \( -path ./target -o -path ./.git \) -prune -o \( -type f -o -type l \) -print0
        fi | tar --null --no-recursion -T - -cf -
    ) | tar -xf - -C "$1"
}

if [ "${MVM_TESTS_IN_PLACE:-0}" = 1 ]; then
    CHECKOUT="$ROOT"
else
    BASE="$(mktemp -d "/tmp/mvm checkout.XXXXXX")"
    CHECKOUT="$BASE/mvm"
    mkdir "$CHECKOUT"
    # Copies keep their files' times, and every copy builds into the same
    # target dir. A file changed after the previous copy was taken but
    # before that copy's build ran (an edit during a run) would look older
    # than what was built from its old content: cargo would call the
    # build fresh. Such files get a new time in this copy.
    STAMP="$TARGET_DIR/e2e-copy.stamp"
    NEXT_STAMP="$(mktemp "$TARGET_DIR/e2e-copy.stamp.XXXXXX")"
    copy_checkout "$CHECKOUT"
    if [ -e "$STAMP" ]; then
        (cd "$ROOT" && find . \( -path ./target -o -path ./.git \) -prune -o -type f -newer "$STAMP" -print0) \
            | (cd "$CHECKOUT" && xargs -0 -r touch -c --)
    fi
    mv "$NEXT_STAMP" "$STAMP"
    PASSED=0
    on_exit() {
        if [ "$PASSED" = 1 ] && grep -qx 'attempts=1' "$CHECKOUT/target/e2e/nested/l2-result" 2>/dev/null; then
            rm -rf "$BASE"
        elif [ "$PASSED" = 1 ]; then
            # A pass that took a retry keeps the stuck attempt's logs.
            echo "== passed after an L2 retry: the copy is kept for the stuck attempt's logs: $CHECKOUT/target/e2e/nested (l2-*.attempt1.*)" >&2
        else
            echo "== the copy is kept for its results: $CHECKOUT/target/{e2e/nested,quickstart}" >&2
        fi
    }
    trap on_exit EXIT
    trap 'exit 130' INT TERM
fi
cd "$CHECKOUT"
echo "== from $CHECKOUT (cargo target dir $CARGO_TARGET_DIR)" >&2

echo "== the main job (scripts/quickstart.sh)" >&2
mkdir -p target
scripts/quickstart.sh | tee target/quickstart.out
# examples/hello/run.sh ran in the guest, from the project share.
grep -q '^sum of 1..100 computed in the guest: 5050$' target/quickstart.out || {
    echo "tests/run.sh: the quickstart's guest did not run examples/hello/run.sh (see above)" >&2
    exit 1
}

echo "== nested end-to-end tests" >&2
rm -rf target/e2e/nested
cargo test --locked -p mvm-e2e -- --ignored --test-threads 4
# The suite ran from this checkout, not from the one that built the harness.
[ -f target/e2e/nested/l2-result ] || {
    echo "tests/run.sh: no $CHECKOUT/target/e2e/nested/l2-result: the nested suite did not run from $CHECKOUT" >&2
    exit 1
}
PASSED=1

if [ "$SOAK" = 1 ]; then
    echo "== the stall soak (tests/soak.sh)" >&2
    "$CHECKOUT/tests/soak.sh"
fi
