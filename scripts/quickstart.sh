#!/usr/bin/env bash
# The main job: build everything, boot a VM for a project and run a command
# in it, the way a user does: `mvm run --project DIR -- COMMAND` (a
# throw-away VM: the host's root read-only under a copy-on-write layer, the
# project at /project under its own copy-on-write layer, the guest agent,
# a network on the mvm bridge; torn down at exit).
#
#   scripts/quickstart.sh [PROJECT_DIR] [-- COMMAND...]
#
# PROJECT_DIR defaults to examples/hello, COMMAND to `sh ./run.sh` (run in
# /project). Where this host's /dev/kvm cannot boot a Linux guest
# (PVM-backed KVM, as on the project's build machines), mvm says so and the
# same `mvm run` runs nested: inside a QEMU-emulated L2 host with a real KVM
# (tests/nested), which sees this host's files.
#
# The checkout may live anywhere (/tmp, ~/src, a path with spaces): the
# guest sees only the project (at /project) and the host's system view,
# never this folder. Binaries: ${CARGO_TARGET_DIR:-target}/static/ (shared
# with the nested e2e suite).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

PROJECT="$ROOT/examples/hello"
CMD="sh ./run.sh"
if [ $# -gt 0 ] && [ "$1" != "--" ]; then PROJECT="$(cd "$1" && pwd)"; shift; fi
if [ $# -gt 0 ] && [ "$1" = "--" ]; then shift; [ $# -gt 0 ] && CMD="$*"; fi

step() { echo "quickstart: $*" >&2; }

step "installing packages (apt) when missing"
scripts/install-deps.sh

step "building mvm and its guest agent (static release binaries)"
TARGET=x86_64-unknown-linux-gnu
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
TARGET_DIR="$TARGET_DIR/static"
RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$TARGET_DIR" \
    cargo build -q --release --locked -p mvm -p mvm-init --target "$TARGET"
MVM="$TARGET_DIR/$TARGET/release/mvm"

step "building the guest kernel (cached by config hash)"
KERNEL="$(guest-kernel/build.sh --print-path)"

WORK="$ROOT/target/quickstart"
rm -rf "$WORK" && mkdir -p "$WORK"
# A state folder of its own, so the demo touches none of the user's VMs.
export MVM_HOME="$WORK/home" MVM_KERNEL="$KERNEL"
RUN=("$MVM" run --project "$PROJECT" --cpus 2 --memory 1G -- sh -c "$CMD")
step "booting: mvm run --project $PROJECT -- sh -c '$CMD'"
set +e
"${RUN[@]}" 2>"$WORK/stderr"
rc=$?
set -e
if [ $rc -ne 0 ] && grep -q "PVM-backed" "$WORK/stderr"; then
    cat "$WORK/stderr" >&2
    step "this host's /dev/kvm cannot boot a Linux guest: using the nested route (QEMU L2 host with real KVM; a few minutes)"
    # Every path quoted for the job's shell (bash: printf %q's quoting).
    {
        echo '#!/bin/bash'
        echo '# L2 cannot autoload modules: the bridge, taps and nftables need these.'
        printf 'sh %q\n' "$ROOT/tests/nested/load-net-modules.sh"
        printf 'export MVM_HOME=/tmp/mvm-quickstart MVM_KERNEL=%q\n' "$KERNEL"
        printf 'cd %q && ' "$PROJECT"
        printf '%q ' "${RUN[@]}"
        echo
    } >"$WORK/job.sh"
    chmod +x "$WORK/job.sh"
    set +e
    tests/nested/run-l2.sh "$WORK/job.sh" "$WORK/l2" >&2
    rc=$?
    set -e
    # The job's output: the command's stdout and stderr, from the guest.
    cat "$WORK/l2/job.log" 2>/dev/null || true
else
    cat "$WORK/stderr" >&2
fi
step "mvm exited with status $rc"
exit $rc
