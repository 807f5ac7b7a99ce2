#!/bin/sh
# L2 job: two networked VMs on the mvm bridge. A namespace plays "the
# internet" (192.0.2.2, behind the host's default route), another the
# host's LAN (10.1.0.2 on a second host interface), and the internet
# namespace also holds the cloud metadata address 169.254.169.254; the VMs
# get leases from our DHCP server, resolve each other through our DNS,
# reach the internet through NAT but not the LAN or the metadata address,
# cannot reach each other, and serve a port forwarded while running: on
# loopback only, then on every interface when asked. Two more VMs that
# allow each other (and one the LAN) then talk. The host's resolver is a stub in that namespace:
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
m() { timeout -k 30 120 "$MVM_BIN" "$@"; }
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
# The metadata address, in the internet namespace, and the host's LAN: a
# namespace on a second interface, with a backup default route there (so
# setup turns forwarding on for it, as on a host whose LAN is an uplink).
ip netns exec inet ip addr add 169.254.169.254/32 dev lo
ip route add 169.254.169.254/32 via 192.0.2.2
mkdir -p /tmp/meta && echo "metadata secrets" >/tmp/meta/index.html
ip netns exec inet busybox httpd -p 169.254.169.254:80 -h /tmp/meta
ip netns add lan
ip link add veth-lan type veth peer name veth-lan-in
ip link set veth-lan-in netns lan
ip addr add 10.1.0.1/24 dev veth-lan
ip link set veth-lan up
ip netns exec lan ip addr add 10.1.0.2/24 dev veth-lan-in
ip netns exec lan ip link set veth-lan-in up
ip netns exec lan ip link set lo up
ip netns exec lan ip route add default via 10.1.0.1
ip route add default via 10.1.0.2 metric 100
mkdir -p /tmp/lanwww && echo "hello from the lan" >/tmp/lanwww/index.html
ip netns exec lan busybox httpd -p 80 -h /tmp/lanwww
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
rec lan-refused m exec a -- curl -sS --max-time 10 http://10.1.0.2/index.html
rec metadata-refused m exec a -- curl -sS --max-time 10 http://169.254.169.254/index.html
m exec b -- busybox httpd -p 8080 -h /etc
B_IP=$(m exec b -- sh -c "ip -4 -o addr show | grep -v ' lo ' | awk '{print \$4}' | cut -d/ -f1")
echo "$B_IP" >"$OUT/b-ip"
m exec b -- cat /etc/hostname >"$OUT/b-hostname-file"
rec isolation m exec a -- curl -s --max-time 5 "http://$B_IP:8080/hostname"
rec port-add m port b 18080:8080
rec fwd-loopback curl -s --max-time 15 http://127.0.0.1:18080/hostname
rec fwd-loopback6 curl -s --max-time 15 "http://[::1]:18080/hostname"
rec fwd-other ip netns exec inet curl -sS --max-time 10 http://192.0.2.1:18080/hostname
rec port-add-any m port b 0.0.0.0:18081:8080
rec fwd-any-other ip netns exec inet curl -s --max-time 15 http://192.0.2.1:18081/hostname
rec fwd-any-lan ip netns exec lan curl -s --max-time 15 http://10.1.0.1:18081/hostname
rec port-add-at m port b 192.0.2.1:18082:8080
rec fwd-at-other ip netns exec inet curl -s --max-time 15 http://192.0.2.1:18082/hostname
rec fwd-at-lan ip netns exec lan curl -sS --max-time 10 http://10.1.0.1:18082/hostname
rec port-list m port b
rec list-ports m list
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
# VM to VM: c and d each allow the VMs' subnet, so they talk; c also
# allows the LAN.
rec create-c m create c --memory 384M --allow-net 10.77.0.0/24 --allow-net 10.1.0.0/16
rec create-d m create d --memory 384M --allow-net 10.77.0.0/24
rec create-bad m create e --allow-net 10.1.2.3/16
rec start-c m start c
rec start-d m start d
m exec d -- busybox httpd -p 8080 -h /etc
D_IP=$(m exec d -- sh -c "ip -4 -o addr show | grep -v ' lo ' | awk '{print \$4}' | cut -d/ -f1")
m exec d -- cat /etc/hostname >"$OUT/d-hostname-file"
rec vm2vm m exec c -- curl -s --max-time 15 "http://$D_IP:8080/hostname"
rec lan-allowed m exec c -- curl -s --max-time 15 http://10.1.0.2/index.html
rec metadata-still-refused m exec c -- curl -sS --max-time 10 http://169.254.169.254/index.html
rec rm-c m rm --force c
rec rm-d m rm --force d
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
