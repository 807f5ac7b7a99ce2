#!/bin/sh
# The L3 guest's side of the file-system benchmark (mvmtest.run=): mounts
# the three shares and runs /fs-workload.sh on each, interleaved per round
# (fsbench.rounds=N on the command line; default 1).
mkdir -p /mnt/cow /mnt/rw /mnt/vfs
for t in cow rw vfs; do
    mount -t virtiofs "$t" "/mnt/$t" || echo "MVM-GUEST: bench_mount_$t=failed"
done
rounds=$(sed -n 's/.*fsbench\.rounds=\([0-9]*\).*/\1/p' /proc/cmdline)
r=1
while [ "$r" -le "${rounds:-1}" ]; do
    for t in cow rw vfs; do
        echo "MVM-GUEST: bench_round=$r $t"
        sh /fs-workload.sh run "/mnt/$t" "$t" "$r"
    done
    r=$((r + 1))
done
umount /mnt/cow /mnt/rw /mnt/vfs
