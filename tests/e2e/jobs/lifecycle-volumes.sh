#!/bin/sh
# L2 job, part of lifecycle.sh (which runs it before its last checks) and
# runnable alone (MVM_E2E_ONLY=lifecycle-volumes): volumes and persistence.
# Each step leaves $MVM_OUT/life/<step>.{out,err,status}.
set -u
: "${MVM_BIN:?}" "${KERNEL:?}" "${MVM_INIT:?}" "${E2E_JOBS:?}"
OUT="$MVM_OUT/life"
mkdir -p "$OUT"
export MVM_HOME="${MVM_HOME:-/tmp/mvm-home}" MVM_KERNEL="$KERNEL" MVM_INIT="$MVM_INIT"
rec() {
    step=$1
    shift
    echo "MVM-JOB: life $step: $*"
    "$@" >"$OUT/$step.out" 2>"$OUT/$step.err"
    echo $? >"$OUT/$step.status"
}
m() { timeout -k 30 120 "$MVM_BIN" "$@"; }

# Volumes: a volume declared in mvm.toml is created on first start,
# formatted by the guest and mounted; what the guest writes there survives
# a restart, the VM's removal and a new VM (given it with --volume); a
# running VM's volume is refused to another; `rm --volumes` removes it.
PV=/tmp/vol-project
rm -rf "$PV" && mkdir -p "$PV"
printf 'volumes = [{ name = "vdata", guest = "/data", size = "256M" }]\n' >"$PV/mvm.toml"
rec vol-create-v1 m create v1 --project "$PV" --memory 256M --no-net
rec vol-start-v1 m start v1
rec vol-write m exec v1 -- sh -c 'echo volume-bytes-42 >/data/f.txt && sync && awk '"'"'$2 == "/data" {print $1, $3}'"'"' /proc/mounts && cat /sys/block/vda/serial'
ls -ls "$MVM_HOME/volumes" >"$OUT/vol-ls" 2>&1
rec vol-restart m restart v1
rec vol-read1 m exec v1 -- cat /data/f.txt
rec vol-create-v2 m create v2 --memory 256M --no-net --volume vdata:/data
rec vol-start-v2-refused m start v2
rec vol-rm-refused m volume rm vdata
rec vol-rm-v1 m rm --force v1
rec vol-list m volume list --json
rec vol-start-v2 m start v2
rec vol-read2 m exec v2 -- cat /data/f.txt
rec vol-rm-v2 m rm --force --volumes v2
ls "$MVM_HOME/volumes" >"$OUT/vol-left" 2>&1

# Persistence: with --persistent, a file in the guest root and one in the
# project survive `mvm restart`; without it, both are gone.
SHOW='for f in /etc/mvm-persist.txt /project/p.txt; do if test -e "$f"; then echo "$f: $(cat "$f")"; else echo "$f: absent"; fi; done'
for vm in p1 p2; do
    rm -rf "/tmp/persist-$vm" && mkdir -p "/tmp/persist-$vm"
done
rec per-create-p1 m create p1 --project /tmp/persist-p1 --memory 256M --no-net --persistent
rec per-create-p2 m create p2 --project /tmp/persist-p2 --memory 256M --no-net
for vm in p1 p2; do
    rec "per-start-$vm" m start "$vm"
    rec "per-write-$vm" m exec "$vm" -- sh -c "echo root-$vm >/etc/mvm-persist.txt && echo proj-$vm >/project/p.txt && sync && $SHOW"
    rec "per-restart-$vm" m restart "$vm"
    rec "per-read-$vm" m exec "$vm" -- sh -c "$SHOW"
    ls "/tmp/persist-$vm" >"$OUT/per-host-$vm" 2>&1
    rec "per-rm-$vm" m rm --force "$vm"
done
exit 0
