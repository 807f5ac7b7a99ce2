#!/bin/bash
# Self-test of the nested harness, run inside L2 by run-l2.sh:
#   tests/nested/run-l2.sh tests/nested/jobs/selftest.sh /tmp/l2-selftest
# Checks /dev/kvm (exists, kvm_amd loaded, runs a tiny guest), L1's tools in
# the chroot, module loading, the network plumbing later tests need, and that
# /out is writable. Writes $MVM_OUT/selftest.txt; exits 1 if a required check fails.
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
out="${MVM_OUT:?MVM_OUT is not set: run this through run-l2.sh}"
summary="$out/selftest.txt"
: >"$summary"
failures=0

record() {   # record ok|FAIL|skip NAME DETAIL
    printf '%-4s %-18s %s\n' "$1" "$2" "$3" | tee -a "$summary"
    [ "$1" = FAIL ] && failures=$((failures + 1))
    return 0
}
check() {    # check NAME COMMAND... : ok when the command succeeds
    local name="$1" res
    shift
    if res="$("$@" 2>&1)"; then
        record ok "$name" "$(echo "$res" | head -n1)"
    else
        record FAIL "$name" "$(echo "$res" | tail -n1)"
    fi
}

echo "selftest: uptime=$(cut -d' ' -f1 /proc/uptime) kernel=$(uname -r) host=$(hostname)"

# /dev/kvm
check dev-kvm ls -l /dev/kvm
check dev-kvm-chardev test -c /dev/kvm
check kvm_amd-loaded grep -qw '^kvm_amd' /proc/modules
svm_lines="$(dmesg 2>/dev/null | grep -iE 'svm|kvm' | head -n 5)"
echo "$svm_lines" | sed 's/^/    dmesg: /'
if grep -qw svm /proc/cpuinfo; then record ok cpu-svm "svm in /proc/cpuinfo"; else record FAIL cpu-svm "no svm flag"; fi
if [ -x /usr/bin/python3 ]; then
    check kvm-run /usr/bin/python3 "$here/kvm-smoke.py"
else
    record skip kvm-run "no /usr/bin/python3 in L1"
fi

# L1's tools, seen through the read-only 9p root
check busybox sh -c 'command -v busybox && busybox true'
check ip ip -V
if command -v nft >/dev/null; then check nft nft --version; else record skip nft "nft is not installed in L1"; fi
check modprobe-dummy sh -c 'modprobe dummy && grep -w "^dummy" /proc/modules'
check l1-root-ro sh -c "[ -r '$here/selftest.sh' ] && echo 'L1 files visible at their L1 paths'"
check overlay-write sh -c 'echo x >/etc/mvm-l2-selftest && rm /etc/mvm-l2-selftest && echo "writes land in the tmpfs overlay"'
check home sh -c 'test "$HOME" = /root && echo HOME=$HOME'
echo "PATH=$PATH"

# modules the network tests need
for m in tun vhost_net vhost_vsock bridge nf_tables; do
    check "mod-$m" grep -qw "^$m" /proc/modules
done
check dev-net-tun test -c /dev/net/tun
check dev-vhost-net test -c /dev/vhost-net
check dev-vhost-vsock test -c /dev/vhost-vsock
check bridge+tap sh -c 'ip link add st-br0 type bridge && ip tuntap add st-tap0 mode tap &&
    ip link set st-tap0 master st-br0 && ip link set st-br0 up && ip link del st-tap0 && ip link del st-br0 && echo ok'
if command -v nft >/dev/null; then
    check nft-table sh -c 'nft add table inet mvm_selftest && nft delete table inet mvm_selftest && echo ok'
fi

# results folder
check out-writable sh -c "echo hello >'$out/.probe' && [ \"\$(cat '$out/.probe')\" = hello ] && rm '$out/.probe' && echo '$out writable'"

echo "selftest: $failures failure(s)" | tee -a "$summary"
echo "selftest: done uptime=$(cut -d' ' -f1 /proc/uptime)"
[ "$failures" -eq 0 ]
