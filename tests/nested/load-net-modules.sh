#!/bin/sh
# Inside L2: load what bridges, taps, veths, vhost-net, nftables and NAT
# need. L2's kernel cannot autoload modules from inside the job's chroot
# (its request_module runs L2's own initramfs modprobe), so jobs load them
# up front, as a normal host would have them.
for ko in $(find "/lib/modules/$(uname -r)/kernel/net" -name 'nft_*.ko*' -o -name 'nf_nat*.ko*' -o -name 'nf_conntrack*.ko*' -o -name 'nf_reject*.ko*' -o -name 'nf_tables*.ko*' -o -name 'nf_defrag*.ko*'); do
    m=$(basename "$ko"); modprobe "${m%%.ko*}" 2>/dev/null
done
for m in bridge veth tun nf_tables; do modprobe "$m" 2>/dev/null; done
exit 0
