#!/bin/bash
# L2 job: boots an L3 guest with QEMU on L2's real /dev/kvm (QEMU microvm,
# PVH entry, virtio-mmio rng), as a reference for our own VMM and to prove the
# whole nested chain without it.
#
#   tests/nested/make-guest-initramfs.sh /tmp/l3/guest.cpio.gz
#   tests/nested/run-l2.sh tests/nested/jobs/qemu-l3-boot.sh /tmp/l3-out \
#       --env MVM_GUEST_KERNEL=$HOME/.cache/mvm/guest-kernel/vmlinux \
#       --env MVM_GUEST_INITRD=/tmp/l3/guest.cpio.gz [--env MVM_GUEST_BOOTS=3]
#
# Each boot's console goes to $MVM_OUT/l3-console.N.log; $MVM_OUT/l3-boots.txt
# gets one line per boot (exit status, wall seconds from L2's /proc/uptime).
# Exits 0 when every boot printed "MVM-GUEST: action=reboot" and QEMU ended.
set -euo pipefail
: "${MVM_OUT:?run this through run-l2.sh}"
kernel="${MVM_GUEST_KERNEL:?set MVM_GUEST_KERNEL (an L1 path) with --env}"
initrd="${MVM_GUEST_INITRD:?set MVM_GUEST_INITRD (an L1 path) with --env}"
boots="${MVM_GUEST_BOOTS:-1}"
[ -c /dev/kvm ] || { echo "qemu-l3-boot: no /dev/kvm in L2"; exit 1; }

up() { cut -d' ' -f1 /proc/uptime; }
failures=0
: >"$MVM_OUT/l3-boots.txt"
for i in $(seq 1 "$boots"); do
    log="$MVM_OUT/l3-console.$i.log"
    t0="$(up)"
    rc=0
    timeout 120 qemu-system-x86_64 -M microvm,acpi=off,rtc=on -accel kvm -cpu host \
        -smp 1 -m 256 -nodefaults -no-user-config -nographic -serial stdio -no-reboot \
        -kernel "$kernel" -initrd "$initrd" -device virtio-rng-device \
        -append "console=ttyS0 reboot=t panic=-1 mvmtest.action=reboot" \
        </dev/null >"$log" 2>&1 || rc=$?
    t1="$(up)"
    secs="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')"
    if grep -aq 'MVM-GUEST: action=reboot' "$log" && [ "$rc" = 0 ]; then res=ok; else res=FAIL; failures=$((failures + 1)); fi
    echo "boot $i: $res qemu_exit=$rc wall_s=$secs $(grep -ao 'MVM-GUEST: uptime=[0-9.]*' "$log" | tr -d '\r' | sed 's/MVM-GUEST: /guest_/')" \
        | tee -a "$MVM_OUT/l3-boots.txt"
done
grep -a 'MVM-GUEST' "$MVM_OUT/l3-console.1.log" | tr -d '\r'
echo "qemu-l3-boot: $failures of $boots boot(s) failed"
[ "$failures" -eq 0 ]
