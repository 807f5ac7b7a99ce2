#!/bin/sh
# L2 job: every boot scenario of tests/e2e/nested_boot.rs in one L2 boot.
# MVM_BIN, KERNEL and INITRD come from the harness (run-l2.sh --env); each
# scenario leaves $MVM_OUT/<name>/{status,stdout,stderr,console.log,times}.
set -u
: "${MVM_BIN:?}" "${KERNEL:?}" "${INITRD:?}"

uptime_s() { cut -d' ' -f1 /proc/uptime; }

scenario() {
    name=$1
    shift
    d="$MVM_OUT/$name"
    mkdir -p "$d"
    echo "MVM-JOB: scenario $name: mvm run $*"
    start=$(uptime_s)
    timeout 120 "$MVM_BIN" run --kernel "${SCENARIO_KERNEL:-$KERNEL}" --initrd "$INITRD" \
        --console "$d/console.log" "$@" >"$d/stdout" 2>"$d/stderr"
    status=$?
    end=$(uptime_s)
    echo "$status" >"$d/status"
    echo "$start $end" >"$d/times"
    echo "MVM-JOB: scenario $name: exit $status ($start -> $end)"
}

# Two CPUs, 256 MiB, an appended argument; init prints what it sees and
# reboots.
scenario smp --cpus 2 --memory 256 --cmdline "mvmtest.token=e2e-token-42"
# One CPU and the defaults.
scenario single
# Four CPUs and more than 3 GiB: memory above the 32-bit gap.
scenario bigmem --cpus 4 --memory 3584
# No rng device: /dev/hwrng must be missing.
scenario norng --no-rng
# The guest kernel panics (init exits): non-zero status.
scenario panic --cmdline "mvmtest.action=panic"
# The guest triple-faults via reboot=t: non-zero status naming the RIP.
scenario triple --cmdline "reboot=t mvmtest.action=reboot"
# A distribution bzImage (Debian's 6.1, the L2 kernel) through the 64-bit
# boot protocol: it has no PVH note and finds its CPUs in the MP table.
if [ -n "${BZIMAGE:-}" ]; then
    SCENARIO_KERNEL="$BZIMAGE" scenario bzimage --cpus 2 --memory 512
fi
# The console goes to stdout when asked.
d="$MVM_OUT/stdout-console"
mkdir -p "$d"
timeout 120 "$MVM_BIN" run --kernel "$KERNEL" --initrd "$INITRD" >"$d/stdout" 2>"$d/stderr"
echo $? >"$d/status"
exit 0
