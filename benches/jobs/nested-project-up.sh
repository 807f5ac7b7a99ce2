#!/bin/sh
# L2 job of the project-up benchmark (benches/run.sh --only projects):
# `mvm up` in examples/node-web to the first HTTP 200 through the forwarded
# port, and the VMM's VmRSS then, RUNS times (run 1 creates the VM, later
# runs reuse it); the reference in the same run: the same `node server.js`
# started directly on L2, to its first HTTP 200, and its VmRSS. Then the
# memory of copies: three copies of the folder up at once (`mvm up --name`,
# each through its own moved port), the sum of their VMMs' VmRSS once each
# answered, against three such node processes started directly. Writes
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

# Three copies at once, and three node processes as the reference.
total=0
ok=1
for c in bench-1 bench-2 bench-3; do
    "$MVM_BIN" up --name "$c" >/dev/null 2>>"$MVM_OUT/up.err" || ok=0
    port=$("$MVM_BIN" port "$c" 2>/dev/null | sed -n 's/^127\.0\.0\.1:\([0-9]*\)->3000\/tcp$/\1/p')
    answers "http://127.0.0.1:${port:-1}/" 300 || ok=0
done
if [ "$ok" = 1 ]; then
    for c in bench-1 bench-2 bench-3; do
        total=$((total + $(rss_kib "$(cat "$MVM_HOME/vms/$c/pid")")))
    done
    echo "copies3_vmm_rss_kib $total" >>"$out"
fi
for c in bench-1 bench-2 bench-3; do
    "$MVM_BIN" down --name "$c" --rm >/dev/null 2>&1
done
total=0
pids=
for p in 3991 3992 3993; do
    PORT=$p node server.js >/dev/null 2>&1 &
    pids="$pids $!"
    answers "http://127.0.0.1:$p/" 120 || ok=0
done
for p in $pids; do
    total=$((total + $(rss_kib "$p")))
done
[ "$ok" = 1 ] && echo "copies3_native_rss_kib $total" >>"$out"
kill $pids
wait 2>/dev/null
awk '$1 == "copies3_vmm_rss_kib" {v = $2} $1 == "copies3_native_rss_kib" {n = $2}
     END {if (v && n) printf "copies3_ratio %.2f\n", v / n}' "$out" >>"$out"
cat "$out"
