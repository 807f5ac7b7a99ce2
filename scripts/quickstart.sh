#!/usr/bin/env bash
# The main job: build everything, boot a VM with a project and run a
# command in it.
#
#   scripts/quickstart.sh [PROJECT_DIR] [-- COMMAND...]
#
# PROJECT_DIR defaults to examples/hello, COMMAND to `sh ./run.sh`. The
# project is copied into the guest's initramfs at /project (virtio-fs
# sharing replaces the copy once it lands). Where this host's /dev/kvm cannot
# boot a Linux guest (PVM-backed KVM, as on the project's build machines),
# mvm says so and the same `mvm run` runs nested: inside a QEMU-emulated L2
# host with a real KVM (tests/nested).
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

step "building mvm (static release binary)"
TARGET=x86_64-unknown-linux-gnu
RUSTFLAGS="-C target-feature=+crt-static" cargo build -q --release --locked -p mvm --target "$TARGET"
MVM="$ROOT/target/$TARGET/release/mvm"

step "building the guest kernel (cached by config hash)"
KERNEL="$(guest-kernel/build.sh --print-path)"

WORK="$ROOT/target/quickstart"
rm -rf "$WORK" && mkdir -p "$WORK"
printf '%s\n' "$CMD" >"$WORK/cmd"
step "building the initramfs with $PROJECT at /project"
tests/nested/make-guest-initramfs.sh "$WORK/initramfs.cpio.gz" \
    --init scripts/quickstart-init.sh \
    --add "$PROJECT:/project" --add "$WORK/cmd:/etc/mvm-quickstart-cmd" >&2

RUN=("$MVM" run --kernel "$KERNEL" --initrd "$WORK/initramfs.cpio.gz" --cpus 2 --memory 512M)
step "booting: ${RUN[*]}"
set +e
"${RUN[@]}" 2>"$WORK/stderr"
rc=$?
set -e
if [ $rc -ne 0 ] && grep -q "PVM-backed" "$WORK/stderr"; then
    cat "$WORK/stderr" >&2
    step "this host's /dev/kvm cannot boot a Linux guest: using the nested route (QEMU L2 host with real KVM; ~1 minute)"
    cat >"$WORK/job.sh" <<JOB
#!/bin/sh
${RUN[*]} --console "\$MVM_OUT/console.log"
JOB
    chmod +x "$WORK/job.sh"
    set +e
    tests/nested/run-l2.sh "$WORK/job.sh" "$WORK/l2" >&2
    rc=$?
    set -e
    cat "$WORK/l2/console.log" 2>/dev/null || true
    [ -s "$WORK/l2/job.log" ] && cat "$WORK/l2/job.log" >&2
else
    cat "$WORK/stderr" >&2
fi
step "mvm exited with status $rc"
exit $rc
