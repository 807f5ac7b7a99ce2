#!/bin/sh
# L2 job: the guest works on a copy-on-write project share, a read-only
# share and a read-write share (tests/e2e/guest/fs-workout.sh); the host
# side checks the project folder is byte-for-byte unchanged. Then a
# managed VM on the host's root runs git and a C build in its project
# (tests/e2e/guest/dev-workout.sh), and a guest mounts a share served by
# virtiofsd through the vhost-user-fs front end (guest/vfs-workout.sh).
set -u
: "${MVM_BIN:?}" "${KERNEL:?}" "${INITRD:?}" "${MVM_INIT:?}" "${E2E_DIR:?}"
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

# --- git and a build in a managed VM (the host's tools are the guest's).
# The workout script travels in the project: the guest's root is the
# host's system view, never the checkout (it may live under /tmp, /home...).
D=/tmp/fs-dev
rm -rf "$D" && mkdir -p "$D"
cp "$E2E_DIR/guest/dev-workout.sh" "$D/dev-workout.sh"
printf '#include <stdio.h>\nint main(void) { puts("hello from a build"); return 0; }\n' >"$D/hello.c"
printf 'hello: hello.o\n\tcc -o hello hello.o\nhello.o: hello.c\n\tcc -c -o hello.o hello.c\n' >"$D/Makefile"
printf 'hello\n*.o\n' >"$D/.gitignore"
echo "first line" >"$D/notes.txt"
snapshot "$D" >"$OUT/dev-before"
(
    export MVM_HOME=/tmp/fs-mvm-home MVM_KERNEL="$KERNEL" MVM_INIT="$MVM_INIT"
    rm -rf "$MVM_HOME"
    m() { timeout -k 30 300 "$MVM_BIN" "$@"; }
    m create dev --project "$D" --memory 1G --no-net >"$OUT/dev-create.log" 2>&1
    m start dev >"$OUT/dev-start.log" 2>&1
    # The guest sees none of L1's ~/.gitconfig: the committer comes from
    # the environment.
    m exec dev -e GIT_AUTHOR_NAME=dev -e GIT_AUTHOR_EMAIL=dev@example.com \
        -e GIT_COMMITTER_NAME=dev -e GIT_COMMITTER_EMAIL=dev@example.com \
        -- sh /project/dev-workout.sh >"$OUT/dev-workout.out" 2>"$OUT/dev-workout.err"
    echo $? >"$OUT/dev-workout.status"
    m diff dev >"$OUT/dev-diff" 2>&1
    m stop dev >"$OUT/dev-stop.log" 2>&1
    m rm dev >>"$OUT/dev-stop.log" 2>&1
)
snapshot "$D" >"$OUT/dev-after"
cmp -s "$OUT/dev-before" "$OUT/dev-after" && echo yes >"$OUT/dev-lower-unchanged" || echo no >"$OUT/dev-lower-unchanged"

# --- virtiofsd (the reference backend) through the vhost-user-fs front end.
V=/tmp/fs-vfs
rm -rf "$V" "$V.sock" && mkdir -p "$V"
echo "served by virtiofsd" >"$V/from-host.txt"
echo "delete me" >"$V/delete-me.txt"
cp "$P/big.bin" "$V/big.bin"
if [ -x "${VIRTIOFSD:-}" ]; then
    "$VIRTIOFSD" --socket-path "$V.sock" --shared-dir "$V" --sandbox none >"$OUT/virtiofsd.log" 2>&1 &
    vpid=$!
    i=0; while [ ! -S "$V.sock" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
    timeout 180 "$MVM_BIN" run --kernel "$KERNEL" --initrd "$INITRD" --memory 256 \
        --vhost-user-fs "$V.sock:vfs" --cmdline "mvmtest.run=/vfs-workout.sh" \
        --console "$OUT/vfs-console.log" >"$OUT/vfs-stdout" 2>"$OUT/vfs-stderr"
    echo $? >"$OUT/vfs-status"
    kill "$vpid" 2>/dev/null
    wait "$vpid" 2>/dev/null
else
    echo "virtiofsd missing: VIRTIOFSD='${VIRTIOFSD:-}'" >"$OUT/vfs-stderr"
    echo 127 >"$OUT/vfs-status"
fi
cat "$V/from-guest.txt" >"$OUT/vfs-from-guest" 2>&1
cat "$V/renamed/leaf.txt" >"$OUT/vfs-leaf" 2>&1
ls -A "$V" >"$OUT/vfs-host-ls" 2>&1
exit 0
