#!/bin/sh
# The L3 guest of the network benchmark (busybox initramfs, run by
# guest-init.sh through mvmtest.run): a lease from mvm's DHCP server
# (/net-dhcp.sh, shared with the e2e suite), then iperf3's server and our
# echo server, then one line the bench waits for.
/net-dhcp.sh || exit 1
iperf3 -s -D -p 5201 || { echo "MVM-GUEST: iperf3 failed"; exit 1; }
/nested-net --serve-echo 7001 &
sleep 1
echo "MVM-GUEST: netbench_ready ip=$(cat /tmp/lease-ip)"
