#!/bin/sh
# The L3 guest's side of the file-system benchmark (mvmtest.run=): mounts
# the three shares and runs /fs-workload.sh on each (fsbench.rounds=N on
# the command line; default 1), the order rotating every round.
shares=$(sed -n 's/.*fsbench\.shares=\([a-z,]*\).*/\1/p' /proc/cmdline | tr , ' ')
shares=${shares:-cow rw vfs}
for t in $shares; do
    mkdir -p "/mnt/$t"
    mount -t virtiofs "$t" "/mnt/$t" || echo "MVM-GUEST: bench_mount_$t=failed"
done
# Touch 70% of guest RAM once (then free it): the host backs guest pages
# on first touch, which under nesting is expensive, and whichever share
# ran first would pay for it (seen: the first share's sequential read
# took 3.5x as long).
kb=$(awk '/MemTotal/ {print int($2 * 0.7 / 1024)}' /proc/meminfo)
dd if=/dev/zero of=/warm bs=1M count="$kb" 2>/dev/null
rm -f /warm
rounds=$(sed -n 's/.*fsbench\.rounds=\([0-9]*\).*/\1/p' /proc/cmdline)
phases=$(sed -n 's/.*fsbench\.phases=\([a-z_,]*\).*/\1/p' /proc/cmdline)
r=1
order=$shares
while [ "$r" -le "${rounds:-1}" ]; do
    for t in $order; do
        echo "MVM-GUEST: bench_round=$r $t"
        sh /fs-workload.sh run "/mnt/$t" "$t" "$r" "${phases:-all}"
    done
    set -- $order
    first=$1
    shift
    order="$* $first"
    r=$((r + 1))
done
for t in $shares; do umount "/mnt/$t"; done
