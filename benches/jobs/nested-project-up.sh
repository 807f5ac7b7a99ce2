#!/bin/sh
# L2 job of the project-up benchmark (benches/run.sh --only projects):
# `mvm up` in examples/node-web to the first HTTP 200 through the forwarded
# port, and the VMM's VmRSS then, RUNS times (run 1 creates the VM, later
# runs reuse it); the reference in the same run: the same `node server.js`
# started directly on L2, to its first HTTP 200, and its VmRSS. Writes
# $MVM_OUT/project-up.txt (one "name value" line per sample).
set -u
: "${MVM_OUT:?run this through tests/nested/run-l2.sh}"
: "${MVM_BIN:?}" "${KERNEL:?}" "${MVM_INIT:?}" "${EXAMPLES:?}"
RUNS=${RUNS:-3}
export MVM_HOME=/tmp/mvm-bench-proj MVM_KERNEL="$KERNEL" MVM_INIT="$MVM_INIT"
rm -rf "$MVM_HOME" /tmp/bench-node-web
cp -r "$EXAMPLES/node-web" /tmp/bench-node-web
cd /tmp/bench-node-web
sh "$(dirname "$0")/../../tests/nested/load-net-modules.sh"
now_ms() { echo $(($(date +%s%N) / 1000000)); }
answers() { # URL SECS
    end=$(($(date +%s) + $2))
    while [ "$(date +%s)" -lt "$end" ]; do
        curl -sf --max-time 5 "$1" >/dev/null && return 0
        sleep 0.2
    done
    return 1
}
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
out="$MVM_OUT/project-up.txt"
: >"$out"
i=1
while [ "$i" -le "$RUNS" ]; do
    t0=$(now_ms)
    "$MVM_BIN" up >/dev/null 2>>"$MVM_OUT/up.err" \
        && answers http://127.0.0.1:3000/ 300 \
        && echo "mvm_up_http_ms $(($(now_ms) - t0))" >>"$out" \
        && echo "mvm_vmm_rss_kib $(rss_kib "$(cat "$MVM_HOME/vms/bench-node-web/pid")")" >>"$out"
    "$MVM_BIN" down >/dev/null 2>&1
    t0=$(now_ms)
    PORT=3999 node server.js >/dev/null 2>&1 &
    npid=$!
    answers http://127.0.0.1:3999/ 120 && echo "native_http_ms $(($(now_ms) - t0))" >>"$out" \
        && echo "native_rss_kib $(rss_kib "$npid")" >>"$out"
    kill "$npid"
    wait "$npid" 2>/dev/null
    i=$((i + 1))
done
"$MVM_BIN" down --rm >/dev/null 2>&1
cat "$out"
