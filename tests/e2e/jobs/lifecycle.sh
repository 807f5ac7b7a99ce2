#!/bin/sh
# L2 job: managed VMs end to end. Two VMs (one on the host's root under a
# copy-on-write layer with a project, one on the minimal busybox root);
# exec, shell through a real PTY, streams, diff/commit, crash and recovery,
# stop/restart/rm. Each step leaves $MVM_OUT/life/<step>.{out,err,status}.
set -u
: "${MVM_BIN:?}" "${KERNEL:?}" "${INITRD:?}" "${MVM_INIT:?}" "${E2E_DIR:?}" "${E2E_JOBS:?}"
OUT="$MVM_OUT/life"
mkdir -p "$OUT"
export MVM_HOME=/tmp/mvm-home MVM_KERNEL="$KERNEL" MVM_INIT="$MVM_INIT"
rm -rf "$MVM_HOME"
P=/tmp/life-project
rm -rf "$P" && mkdir -p "$P"
echo "project file" >"$P/hello.txt"
echo "keep" >"$P/keep.txt"

rec() {
    step=$1
    shift
    echo "MVM-JOB: life $step: $*"
    "$@" >"$OUT/$step.out" 2>"$OUT/$step.err"
    echo $? >"$OUT/$step.status"
}
m() { timeout -k 30 120 "$MVM_BIN" "$@"; }
. "$E2E_JOBS/lib.sh"
# The service's line in `mvm service b`: name, state, pid, restarts.
ticker_running() { m service b | awk -v not="${1:--}" '$1 == "ticker" && $2 == "running" && $3 != "-" && $3 != not {f = 1} END {exit !f}'; }

rec create-a m create a --project "$P" --cpus 2 --memory 512M --no-net
rec create-b m create b --memory 256M --no-host-root --no-net \
    --service "ticker=while true; do echo tick; sleep 1; done"
rec start-a m start a
rec start-b m start b
rec list m list --json
# The VMM: its own cgroup with the VM's bounds, seccomp on every thread,
# an open-file limit for its shares.
pid_a=$(cat "$MVM_HOME/vms/a/pid")
cat "/proc/$pid_a/cgroup" >"$OUT/a-cgroup"
cg_a="/sys/fs/cgroup$(sed -n 's/^0:://p' "/proc/$pid_a/cgroup")"
for f in cpu.max memory.max pids.max; do cat "$cg_a/$f" >"$OUT/a-$f" 2>&1; done
for t in /proc/"$pid_a"/task/*; do
    awk -v t="$(cat "$t/comm")" '/^(Seccomp|NoNewPrivs|CapEff|CapBnd|Uid):/ {print t, $1, $2}' "$t/status"
done >"$OUT/a-seccomp"
# Its jail: the root it sees holds its own folder and its /proc only.
ls -A "/proc/$pid_a/root" >"$OUT/a-root" 2>&1
test -e "/proc/$pid_a/root/etc/shadow" && echo present >"$OUT/a-shadow" || echo gone >"$OUT/a-shadow"
grep "Max open files" "/proc/$pid_a/limits" >"$OUT/a-nofile"
# A guest that takes more memory than its cgroup allows is contained: its
# VMM alone is killed, the host and the other VMs go on.
rec create-c m create c --memory 256M --no-host-root --no-net
rec start-c m start c
pid_c=$(cat "$MVM_HOME/vms/c/pid")
cg_c="/sys/fs/cgroup$(sed -n 's/^0:://p' "/proc/$pid_c/cgroup")"
echo "$cg_c" >"$OUT/c-cgroup"
echo $((160 << 20)) >"$cg_c/memory.max"
rec fill-c m exec c -- sh -c 'mkdir -p /run/fill && mount -t tmpfs -o size=240m tmpfs /run/fill && dd if=/dev/zero of=/run/fill/f bs=1M count=230'
until_ok 60 gone "$pid_c"
cat "$cg_c/memory.events" >"$OUT/c-memory.events" 2>&1
rec list-c m list --json
rec exec-a-after-oom m exec a -- echo alive
rec rm-c m rm c
test -e "$cg_c" && echo present >"$OUT/c-cgroup-after-rm" || echo gone >"$OUT/c-cgroup-after-rm"
# The copy-on-write layers' budget: past --disk the guest gets ENOSPC,
# its df shows the budget, and the host holds no more than that.
P2=/tmp/disk-project
rm -rf "$P2" && mkdir -p "$P2"
rec create-d m create d --project "$P2" --disk 100M --memory 256M --no-net
rec start-d m start d
rec fill-d m exec d -- sh -c 'dd if=/dev/zero of=/project/big bs=1M count=200 2>&1; echo "dd=$?"; df -m /project | tail -n 1'
du -sm "$MVM_HOME/vms/d" >"$OUT/d-du"
ls "$P2" >"$OUT/d-host-project"
rec rm-d m rm -f d
rec exec-status m exec a -- sh -c 'echo out; echo err >&2; exit 3'
rec exec-project m exec a -- cat /project/hello.txt
rec exec-hostname m exec b -- hostname
rec exec-root m exec a -- sh -c 'test -x /usr/bin/python3 && echo host-root'
rec exec-env m exec a --env FOO=bar -- sh -c 'echo "$FOO"'
rec exec-cwd m exec a -- pwd
# The declared service runs, is restarted after being killed, and logs.
until_ok 120 ticker_running
rec svc-status m service b
pid=$(m service b | awk '$1 == "ticker" {print $3}')
echo "$pid" >"$OUT/svc-pid"
rec svc-kill m exec b -- kill -9 "$pid"
until_ok 120 ticker_running "$pid"
rec svc-status2 m service b
rec svc-logs m logs b --service ticker
rec pipeline sh -c 'echo hello pipeline | timeout 60 "$1" exec b -- tr a-z A-Z' sh "$MVM_BIN"

head -c 10485760 /dev/urandom >/tmp/10m
sha256sum </tmp/10m | cut -d' ' -f1 >"$OUT/10m.sent"
rec stream sh -c 'timeout 120 "$1" exec a -- cat </tmp/10m | sha256sum | cut -d" " -f1' sh "$MVM_BIN"

# The busybox VM: a login shell on the host root reads the host's dotfiles,
# which can be slow under emulation.
rec shell timeout 300 python3 "$E2E_DIR/guest/pty_driver.py" "$MVM_BIN" b

# The guest changes the project; the host folder stays as it was until commit.
rec guest-edit m exec a -- sh -c 'echo changed >> /project/hello.txt && echo new > /project/new.txt && rm /project/keep.txt'
cp "$P/hello.txt" "$OUT/host-hello-before-commit"
rec diff m diff a
rec commit-dry m commit a --dry-run
cp "$P/hello.txt" "$OUT/host-hello-after-dry-run"
rec commit m commit a
cp "$P/hello.txt" "$OUT/host-hello-after-commit"
ls "$P" >"$OUT/host-ls-after-commit"
# A real guest replaces a folder with a file while the host edits a file
# deep inside it: commit refuses and the host edit stays.
mkdir -p "$P/deep/sub" && echo original >"$P/deep/sub/file.txt"
rec guest-folder-to-file m exec a -- sh -c 'test -f /project/deep/sub/file.txt && rm -rf /project/deep && echo now-a-file >/project/deep'
echo "host edit" >>"$P/deep/sub/file.txt"
rec commit-deep m commit a --yes
cp "$P/deep/sub/file.txt" "$OUT/host-deep-after-commit"
# A conflict: the guest changes a file, the host changes it too.
rec guest-edit2 m exec a -- sh -c 'echo guest2 >> /project/new.txt'
echo "host edit" >>"$P/new.txt"
rec commit-conflict m commit a

# A VMM killed with SIGKILL shows as crashed; start recovers it.
pid=$(cat "$MVM_HOME/vms/b/pid")
kill -9 "$pid"
until_ok 60 gone "$pid"
rec list-crashed m list --json
rec start-b2 m start b
rec exec-b2 m exec b -- echo back

# Two starts of the same stopped VM at once: one VMM.
rec stop-b m stop b
(m start b >"$OUT/race1.out" 2>&1; echo $? >"$OUT/race1.status") &
(m start b >"$OUT/race2.out" 2>&1; echo $? >"$OUT/race2.status") &
wait
ps -eo args | grep -c "[_]vmm $MVM_HOME/vms/b\$" >"$OUT/race-vmms"

# A running VM's state dump, over the API and by SIGUSR1 into its log.
rec debug-a m debug a
rec debug-a-json m debug a --json
kill -USR1 "$(cat "$MVM_HOME/vms/a/pid")"
until_ok 30 grep -q "state dump (SIGUSR1)" "$MVM_HOME/vms/a/vmm.log"
cp "$MVM_HOME/vms/a/vmm.log" "$OUT/a-vmm.log"
rec debug-stopped m debug b-missing

# A user's project: its VMM runs as that user with no capabilities (a
# root supervisor waits for it); the guest still sees and gives its own
# owners, the host files it makes are the user's; a restart keeps both.
PU=/tmp/user-project
rm -rf "$PU" && mkdir -p "$PU" && echo "user file" >"$PU/u.txt"
chmod 600 "$PU/u.txt" && chown -R 1000:1000 "$PU"
rec create-u m create u --project "$PU" --memory 256M --no-net --persistent
rec start-u m start u
pu=$(cat "$MVM_HOME/vms/u/pid")
vu=$(cut -d' ' -f1 "/proc/$pu/task/$pu/children")
grep -E '^(Uid|Gid|CapEff|Seccomp|NoNewPrivs):' "/proc/$vu/status" >"$OUT/u-status" 2>&1
rec exec-u m exec u -- sh -c 'cat /project/u.txt; stat -c "%u %g" /project/u.txt; echo made >/project/made.txt; chown 123:456 /project/made.txt; stat -c "%u %g" /project/made.txt; mkdir /project/owned && chown 7:8 /project/owned && stat -c "%u %g" /project/owned'
find "$MVM_HOME/vms/u/state/upper" -name made.txt -exec stat -c '%u %g' {} \; >"$OUT/u-host-owner" 2>&1
rec restart-u m restart u
rec exec-u2 m exec u -- sh -c 'stat -c "%u %g" /project/made.txt /project/owned'
rec rm-u m rm --force u

# A VMM started by a user: jailed too, in a user namespace of its own.
UH=/tmp/user-home
rm -rf "$UH" && mkdir -p "$UH"
cp "$KERNEL" "$UH/vmlinux" && cp "$MVM_INIT" "$UH/mvm-init" && cp "$MVM_BIN" "$UH/mvm-bin"
cp "$INITRD" "$UH/initrd"
chown -R 1000:1000 "$UH"
kvm_mode=$(stat -c %a /dev/kvm)
chmod 666 /dev/kvm
# This job runs chrooted, and a chrooted process may not make a user
# namespace (unshare(2): EPERM): here a user's VMM must say it runs
# without its jail, and work. (cli/tests/lifecycle.rs proves the jail
# itself where / is a real root.)
asuser() {
    setpriv --reuid 1000 --regid 1000 --clear-groups env HOME="$UH" MVM_HOME="$UH/mvm" \
        MVM_KERNEL="$UH/vmlinux" MVM_INIT="$UH/mvm-init" timeout 120 "$UH/mvm-bin" "$@"
}
rec create-n asuser create n --memory 256M --no-net
rec start-n asuser start n
pn=$(cat "$UH/mvm/vms/n/pid")
grep -E '^(Uid|CapEff|NoNewPrivs|Seccomp):' "/proc/$pn/status" >"$OUT/n-status" 2>&1
cp "$UH/mvm/vms/n/vmm.log" "$OUT/n-vmm.log" 2>/dev/null
rec exec-n asuser exec n -- echo jailed
rec rm-n asuser rm --force n
# ... and a user's raw run: it says so too, its init reports and the VM
# ends cleanly.
rec raw-n asuser run --kernel "$UH/vmlinux" --initrd "$UH/initrd" --memory 256M --console "$UH/raw.console"
cp "$UH/raw.console" "$OUT/raw-n.console" 2>/dev/null
chmod "$kvm_mode" /dev/kvm

rec stop-a m stop a
rec restart-b m restart b
rec exec-b3 m exec b -- echo restarted
rec rm-running m rm b
rec rm-force m rm --force b
rec rm-a m rm a

# Volumes and persistence (their own job, also runnable alone:
# MVM_E2E_ONLY=lifecycle-volumes).
sh "$E2E_JOBS/lifecycle-volumes.sh"
rec list-end m list --json
ps -eo args | grep -c "[_]vmm " >"$OUT/vmms-left"
ls -A "$MVM_HOME/vms" >"$OUT/vms-left" 2>&1
exit 0
