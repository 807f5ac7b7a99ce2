#!/bin/sh
# L2 job: the guest works on a copy-on-write project share, a read-only
# share and a read-write share (tests/e2e/guest/fs-workout.sh); the host
# side checks the project folder is byte-for-byte unchanged.
set -u
: "${MVM_BIN:?}" "${KERNEL:?}" "${INITRD:?}"
OUT="$MVM_OUT/fs"
mkdir -p "$OUT"
P=/tmp/fs-project RO=/tmp/fs-ro RW=/tmp/fs-rw
rm -rf "$P" "$RO" "$RW"
mkdir -p "$P/dir1" "$P/sub/a/b" "$P/gone-dir" "$RO" "$RW"
echo "hello project" >"$P/README.txt"
echo "delete me" >"$P/delete-me.txt"
echo "rename me" >"$P/rename-me.txt"
echo "mode" >"$P/mode.txt" && chmod 644 "$P/mode.txt"
echo "inner" >"$P/dir1/inner.txt"
echo "deep" >"$P/sub/a/b/c.txt"
echo "old" >"$P/gone-dir/old.txt"
echo "truncate me" >"$P/truncate-me.txt"
echo "stable" >"$P/stable.txt"
head -c 1048576 /dev/urandom >"$P/big.bin"
echo "read only" >"$RO/ro.txt"
md5sum "$P/big.bin" | cut -d' ' -f1 >"$OUT/big.md5"

snapshot() {
    (cd "$1" && find . -printf '%p %y %m %s %n %T@ %l\n' | sort && find . -type f -exec sha256sum {} + | sort)
}
snapshot "$P" >"$OUT/before"
snapshot "$RO" >"$OUT/ro-before"

# A private scratch base: whatever the run leaves there is a leak.
SCRATCH=/tmp/fs-scratch
rm -rf "$SCRATCH" && mkdir -p "$SCRATCH"
XDG_RUNTIME_DIR="$SCRATCH" timeout 180 "$MVM_BIN" run --kernel "$KERNEL" --initrd "$INITRD" --memory 256 \
    --project "$P" --share "$RO:ro:ro" --share "$RW:rw:rw" \
    --cmdline "mvmtest.run=/fs-workout.sh" \
    --console "$OUT/console.log" >"$OUT/stdout" 2>"$OUT/stderr"
echo $? >"$OUT/status"

snapshot "$P" >"$OUT/after"
snapshot "$RO" >"$OUT/ro-after"
if cmp -s "$OUT/before" "$OUT/after" && cmp -s "$OUT/ro-before" "$OUT/ro-after"; then
    echo yes >"$OUT/lower-unchanged"
else
    echo no >"$OUT/lower-unchanged"
    diff "$OUT/before" "$OUT/after" >"$OUT/lower-diff" 2>&1
fi
cat "$RW/from-guest.txt" >"$OUT/rw-content" 2>&1
# Nothing of the run's scratch upper layers may remain.
ls -A "$SCRATCH" >"$OUT/scratch-left" 2>&1
exit 0
