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
RUSTFLAGS="-C target-feature=+crt-static" cargo build -q --release --locked -p mvm -p mvm-init --target "$TARGET"
MVM="$ROOT/target/$TARGET/release/mvm"

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
    {
        echo '#!/bin/sh'
        echo '# L2 cannot autoload modules: the bridge, taps and nftables need these.'
        echo "sh '$ROOT/tests/nested/load-net-modules.sh'"
        echo "export MVM_HOME=/tmp/mvm-quickstart MVM_KERNEL='$KERNEL'"
        printf "cd '%s' && " "$PROJECT"
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
