#!/bin/sh
# L2 job: the stall soak (issue: "No VM ever stalls"). Repeats, SOAK_ITERS
# times: start two project VMs (2 vCPUs, 256 MiB, network), exec in each,
# a burst of vsock traffic (4 MiB through exec's stdin and back) and of
# virtio-fs traffic (files written, listed, read and removed in the
# project), stop both. Every mvm call has a bound; when one runs out the
# iteration counts as a stall and the VMs' state dumps (`mvm debug`, and
# SIGUSR1 into the VMM log), consoles and logs are kept under
# $MVM_OUT/soak/stall-N/. Writes $MVM_OUT/soak/summary.
set -u
: "${MVM_BIN:?}" "${KERNEL:?}" "${MVM_INIT:?}" "${E2E_JOBS:?}"
ITERS="${SOAK_ITERS:-50}"
OUT="$MVM_OUT/soak"
mkdir -p "$OUT"
export MVM_HOME=/tmp/mvm-soak-home MVM_KERNEL="$KERNEL" MVM_INIT="$MVM_INIT"
rm -rf "$MVM_HOME"
sh "$E2E_JOBS/../../nested/load-net-modules.sh"

m() { timeout "${T:-120}" "$MVM_BIN" "$@"; }
for vm in a b; do
    mkdir -p "/tmp/soak-$vm"
    echo "project $vm" >"/tmp/soak-$vm/hello.txt"
    m create "$vm" --project "/tmp/soak-$vm" --cpus 2 --memory 256M >"$OUT/create-$vm.log" 2>&1 ||
        { echo "create $vm failed" >>"$OUT/summary"; cat "$OUT/create-$vm.log"; exit 1; }
done
head -c 4194304 /dev/urandom >/tmp/soak-4m
want=$(sha256sum </tmp/soak-4m | cut -d' ' -f1)

# What an iteration does in one VM once it runs; any failed step fails it.
workout() {
    vm=$1
    m exec "$vm" -- sh -c "ip -4 -o addr show | grep -v ' lo '" >/dev/null || return 1
    got=$(m exec "$vm" -- cat </tmp/soak-4m | sha256sum | cut -d' ' -f1)
    [ "$got" = "$want" ] || { echo "vsock stream of $vm: $got != $want"; return 1; }
    m exec "$vm" -- sh -c '
        mkdir -p /project/burst && cd /project/burst &&
        i=0; while [ $i -lt 200 ]; do echo "$i" >"f$i"; i=$((i+1)); done &&
        [ "$(ls | wc -l)" = 200 ] && cat f* | wc -l | grep -qx 200 &&
        cd / && rm -r /project/burst && ls /usr/bin | wc -l' >/dev/null || return 1
}

dump() {
    dir=$1
    mkdir -p "$dir"
    for vm in a b; do
        T=30 m debug "$vm" >"$dir/debug-$vm.txt" 2>&1
        pid=$(cat "$MVM_HOME/vms/$vm/pid" 2>/dev/null) && kill -USR1 "$pid" 2>/dev/null
    done
    sleep 3
    for vm in a b; do
        for f in "$MVM_HOME/vms/$vm/"*.log; do
            [ -f "$f" ] && cp "$f" "$dir/$vm-$(basename "$f")"
        done
    done
    ps -eLo pid,tid,stat,wchan:32,comm >"$dir/threads.txt" 2>&1
}

stalls=0 failures=0 done_iters=0
i=1
while [ "$i" -le "$ITERS" ]; do
    t0=$(date +%s)
    status=ok
    for vm in a b; do
        m start "$vm" >"$OUT/last-start-$vm.log" 2>&1 || { status="start $vm: $?"; break; }
    done
    if [ "$status" = ok ]; then
        workout a >"$OUT/last-a.log" 2>&1 & pa=$!
        workout b >"$OUT/last-b.log" 2>&1 & pb=$!
        wait "$pa" || status="workout a"
        wait "$pb" || status="${status#ok}${status:+ }workout b"
    fi
    if [ "$status" != ok ]; then
        # A bound ran out (124) or a step failed: keep the evidence.
        if grep -q "did not answer\|stopped answering\|timed out" "$OUT"/last-*.log 2>/dev/null ||
            [ "$(date +%s)" -ge $((t0 + 110)) ]; then
            stalls=$((stalls + 1))
            kind=stall
        else
            failures=$((failures + 1))
            kind=failure
        fi
        echo "MVM-JOB: soak iteration $i: $kind ($status)"
        dump "$OUT/$kind-$i"
        cp "$OUT"/last-*.log "$OUT/$kind-$i/" 2>/dev/null
    fi
    for vm in a b; do T=60 m stop "$vm" >/dev/null 2>&1 || T=30 m stop "$vm" --timeout 1 >/dev/null 2>&1; done
    t1=$(date +%s)
    echo "$i $status $((t1 - t0))" >>"$OUT/iterations"
    echo "MVM-JOB: soak iteration $i: $status in $((t1 - t0)) s"
    done_iters=$i
    i=$((i + 1))
done
{
    echo "iterations=$done_iters"
    echo "stalls=$stalls"
    echo "failures=$failures"
} >"$OUT/summary"
cat "$OUT/summary"
[ "$stalls" -eq 0 ] && [ "$failures" -eq 0 ]
