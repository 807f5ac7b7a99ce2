#!/bin/sh
# Runs in the L3 guest of a kernel+initramfs `mvm run --net` (busybox, no
# mvm-init): gets a lease with udhcpc, pings the gateway, resolves a VM-less
# upstream name through the gateway's DNS forwarder. Prints
#   MVM-GUEST: net_<check>=<value>
# for the host-side test.
say() { echo "MVM-GUEST: net_$1=$2"; }

cat >/tmp/udhcpc.sh <<'S'
#!/bin/sh
# udhcpc's event script: configure what the lease says.
case "$1" in
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/$mask" dev "$interface"
        [ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"
        for d in $dns; do echo "nameserver $d"; done >/etc/resolv.conf
        echo "$ip" >/tmp/lease-ip
        echo "${router%% *}" >/tmp/lease-router
        ;;
esac
exit 0
S
chmod +x /tmp/udhcpc.sh
mkdir -p /etc
ip link set lo up
ip link set eth0 up || { say link missing; exit 1; }
say mac "$(cat /sys/class/net/eth0/address)"
if udhcpc -i eth0 -n -q -t 10 -T 2 -s /tmp/udhcpc.sh >/tmp/udhcpc.log 2>&1; then
    say lease "$(cat /tmp/lease-ip)"
    say router "$(cat /tmp/lease-router)"
    say dns "$(awk '/nameserver/ {print $2; exit}' /etc/resolv.conf)"
else
    say lease none
    cat /tmp/udhcpc.log
    exit 1
fi
gw=$(cat /tmp/lease-router)
if ping -c 2 -W 5 "$gw" >/tmp/ping.log 2>&1; then say ping ok; else say ping failed; cat /tmp/ping.log; fi
# An upstream name: our forwarder passes it to the host's resolver.
addr=$(nslookup upstream.example "$gw" 2>&1 | awk '/^Address/ {a=$NF} END {print a}')
say upstream "${addr:-none}"
