#!/bin/sh
# Default /init of the L3 test guest (busybox sh, PID 1), for boot tests.
# Built into an initramfs by make-guest-initramfs.sh.
#
# Prints lines the host-side test parses (on the serial console):
#   MVM-GUEST: init started
#   MVM-GUEST: cpus=<online CPUs>
#   MVM-GUEST: memtotal_kb=<MemTotal>
#   MVM-GUEST: cmdline=<contents of /proc/cmdline>
#   MVM-GUEST: hwrng=<32 hex digits read from /dev/hwrng, or 'missing'>
#   MVM-GUEST: uptime=<first field of /proc/uptime>
#   MVM-GUEST: action=<what it does next>
# Kernel command line:
#   mvmtest.run=/path     run this program from the initramfs first
#                         (prints MVM-GUEST: run exit N)
#   mvmtest.action=reboot (default) reboot -f
#                  panic  make the kernel panic (sysrq c, else init exits)
#                  poweroff  poweroff -f
#                  hang   sleep forever
PATH=/bin:/sbin:/usr/bin:/usr/sbin
export PATH

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
[ -c /dev/console ] && exec </dev/console >/dev/console 2>&1

say() { echo "MVM-GUEST: $*"; }

say "init started"

# shellcheck disable=SC3043 # busybox sh has local
count_cpus() {
    local n=0 r a b
    if [ -r /sys/devices/system/cpu/online ]; then
        for r in $(tr ',' ' ' </sys/devices/system/cpu/online); do
            case "$r" in
                *-*) a="${r%-*}"; b="${r#*-}"; n=$((n + b - a + 1)) ;;
                *) n=$((n + 1)) ;;
            esac
        done
        echo "$n"
    else
        nproc
    fi
}
say "cpus=$(count_cpus)"
say "memtotal_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
CMDLINE="$(cat /proc/cmdline)"
say "cmdline=$CMDLINE"

hwrng=missing
if [ -c /dev/hwrng ]; then
    # a device that never delivers must not hang the test
    hex="$(timeout 10 head -c 16 /dev/hwrng 2>/tmp/hwrng.err | od -An -tx1 | tr -d ' \n')"
    if [ "${#hex}" -eq 32 ]; then
        hwrng="$hex"
    else
        say "hwrng_error=read ${#hex} hex digits: $(cat /tmp/hwrng.err 2>/dev/null)"
    fi
fi
say "hwrng=$hwrng"
say "uptime=$(cut -d' ' -f1 /proc/uptime)"

ACTION=reboot RUN=
for arg in $CMDLINE; do
    case "$arg" in
        mvmtest.action=*) ACTION="${arg#mvmtest.action=}" ;;
        mvmtest.run=*) RUN="${arg#mvmtest.run=}" ;;
    esac
done

if [ -n "$RUN" ]; then
    if [ -x "$RUN" ]; then "$RUN"; rc=$?; else sh "$RUN"; rc=$?; fi
    say "run exit $rc"
fi

case "$ACTION" in
    reboot|panic|poweroff|hang) ;;
    *) say "unknown mvmtest.action=$ACTION, rebooting"; ACTION=reboot ;;
esac
say "action=$ACTION"
case "$ACTION" in
    reboot) reboot -f ;;
    poweroff) poweroff -f ;;
    panic)
        if [ -w /proc/sysrq-trigger ]; then echo c >/proc/sysrq-trigger; fi
        # no sysrq in this kernel: PID 1 exiting panics it ("Attempted to kill init")
        exit 1
        ;;
    hang) while :; do sleep 3600; done ;;
esac
# reboot/poweroff returned: fall back to a panic so the VM still ends
sleep 2
exit 1
