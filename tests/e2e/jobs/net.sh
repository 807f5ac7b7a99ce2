#!/bin/sh
# L2 job: two networked VMs on the mvm bridge. A namespace plays "the
# internet" (192.0.2.2, behind the host's default route); the VMs get
# leases from our DHCP server, resolve each other through our DNS, reach
# the internet through NAT, cannot reach each other, and serve a port
# forwarded while running. The host's resolver is a stub in that namespace:
# the VMs resolve an upstream name through our DNS forwarder. Then
# kernel+initramfs runs with --net (tap, then vhost-net): busybox udhcpc in
# the guest gets a lease, pings the gateway, resolves the upstream name, and
# the run leaves nothing behind. Steps leave
# $MVM_OUT/net/<step>.{out,err,status}.
set -u
: "${MVM_BIN:?}" "${KERNEL:?}" "${MVM_INIT:?}" "${INITRD:?}" "${E2E_JOBS:?}"
OUT="$MVM_OUT/net"
mkdir -p "$OUT"
export MVM_HOME=/tmp/mvm-net-home MVM_KERNEL="$KERNEL" MVM_INIT="$MVM_INIT"
rm -rf "$MVM_HOME"
rec() {
    step=$1
    shift
    echo "MVM-JOB: net $step: $*"
    "$@" >"$OUT/$step.out" 2>"$OUT/$step.err"
    echo $? >"$OUT/$step.status"
}
m() { timeout 120 "$MVM_BIN" "$@"; }
bb() { busybox "$@"; }
. "$E2E_JOBS/lib.sh"

sh "$E2E_JOBS/../../nested/load-net-modules.sh"
lsmod | awk '{print $1}' | sort >"$OUT/modules"

# The internet: a namespace with a web server, reached via the default route.
ip netns add inet
ip link add veth-up type veth peer name veth-in
ip link set veth-in netns inet
ip addr add 192.0.2.1/24 dev veth-up
ip link set veth-up up
ip netns exec inet ip addr add 192.0.2.2/24 dev veth-in
ip netns exec inet ip link set veth-in up
ip netns exec inet ip link set lo up
ip route add default via 192.0.2.2
mkdir -p /tmp/www && echo "hello from the internet" >/tmp/www/index.html
ip netns exec inet busybox httpd -p 80 -h /tmp/www
# The host's resolver: a stub DNS server in the internet namespace that
# knows one name (read by our DNS forwarder when the network daemon starts).
echo "nameserver 192.0.2.2" >/etc/resolv.conf
ip netns exec inet python3 "$E2E_JOBS/dns-stub.py" 192.0.2.2 upstream.example 198.51.100.7 \
    "$OUT/dns-stub.log" >"$OUT/dns-stub.out" 2>&1 &
for _ in $(seq 100); do grep -q ready "$OUT/dns-stub.out" 2>/dev/null && break; sleep 0.2; done
ip -o link show | sed 's/^[0-9]*: //' | cut -d: -f1 | sort >"$OUT/links-before"

rec create-a m create a --memory 384M
rec create-b m create b --memory 384M
rec start-a m start a
rec start-b m start b
rec list m list --json
rec addr-a m exec a -- sh -c "ip -4 -o addr show | grep -v ' lo '"
rec resolv-a m exec a -- cat /etc/resolv.conf
rec ping-gw m exec a -- busybox ping -c 1 -W 5 10.77.0.1
rec dns-b m exec a -- busybox nslookup b.mvm 10.77.0.1
rec dns-upstream m exec a -- busybox nslookup upstream.example
rec nat m exec a -- curl -s --max-time 15 http://192.0.2.2/index.html
m exec b -- busybox httpd -p 8080 -h /etc
B_IP=$(m exec b -- sh -c "ip -4 -o addr show | grep -v ' lo ' | awk '{print \$4}' | cut -d/ -f1")
echo "$B_IP" >"$OUT/b-ip"
m exec b -- cat /etc/hostname >"$OUT/b-hostname-file"
rec isolation m exec a -- curl -s --max-time 5 "http://$B_IP:8080/hostname"
rec port-add m port b 18080:8080
rec fwd-loopback curl -s --max-time 15 http://127.0.0.1:18080/hostname
rec fwd-other ip netns exec inet curl -s --max-time 15 http://192.0.2.1:18080/hostname
rec port-list m port b
rec port-dup m port a 18080:80
rec port-bad m port b 0:80
rec port-rm m port b --rm 18080:8080
rec fwd-after-rm curl -s --max-time 5 http://127.0.0.1:18080/hostname

rec stop-a m stop a
pid=$(cat "$MVM_HOME/vms/b/pid")
kill -9 "$pid"
until_ok 60 gone "$pid"
rec start-a2 m start a
rec stop-a2 m stop a
rec rm-a m rm --force a
rec rm-b m rm --force b
ip -o link show | sed 's/^[0-9]*: //' | cut -d: -f1 | sort >"$OUT/links-after"
nft list ruleset >"$OUT/ruleset-after" 2>&1

# Kernel+initramfs runs with --net: the tap path, then vhost-net.
raw() {
    step=$1
    shift
    rec "$step" timeout 300 "$MVM_BIN" run --kernel "$KERNEL" --initrd "$INITRD" --memory 256M \
        --console "$OUT/$step.console" --cmdline "mvmtest.run=/net-dhcp.sh" "$@"
    ip -o link show | sed 's/^[0-9]*: //' | cut -d: -f1 | sort >"$OUT/$step.links-after"
    ls "$MVM_HOME/net/leases" >"$OUT/$step.leases-after" 2>&1
}
raw raw-tap --net
modprobe vhost_net
ls -l /dev/vhost-net >"$OUT/vhost-dev" 2>&1
export MVM_LOG=devices::virtio::net=debug # says which data path it took
raw raw-vhost --net vhost
unset MVM_LOG
kill "$(cat "$MVM_HOME/net/netd.pid" 2>/dev/null)" 2>/dev/null
cp "$MVM_HOME/net/netd.log" "$OUT/netd.log" 2>/dev/null
exit 0
