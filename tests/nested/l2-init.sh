#!/bin/sh
# /init of the nested-KVM "L2 host" (runs under busybox sh, PID 1).
#
# Loads the modules listed in /etc/mvm-l2/modules (kvm, kvm-amd, 9p, ...),
# mounts L1's root read-only over virtio 9p (tag l1root) under a tmpfs overlay,
# mounts the results folder (tag out) at /out inside it, chroots in and runs the
# job named by job= in /out/l2-job.conf, then powers off.
#
# /out/l2-job.conf (written by run-l2.sh; key=value lines, so that paths
# may hold spaces, which the kernel command line would split):
#   job=/abs/path          job script (an L1 path; required)
#   path=/a:/b             directories put in front of the job's PATH
#   cwd=/abs/path          job's working directory (default /)
#   kmods=/abs/path        L1 path of the L2 kernel's module tree; bind-mounted
#                          at /lib/modules/$(uname -r) in the chroot so that
#                          `modprobe` works for the job
# Kernel command line read here:
#   mvm.rootcache=MODE     9p cache mode for L1's root (default none: L1 may change
#                          files while L2 runs; loose was only ~10% faster)
#   mvm.debug=shell        on a setup failure, start a shell instead of powering off
# Serial console markers (parsed by run-l2.sh):
#   MVM-L2: job start
#   MVM-L2: job exit N
# /out/job.status gets N, /out/job.log the job's stdout and stderr.

PATH=/bin:/sbin:/usr/bin:/usr/sbin
export PATH

say() { echo "MVM-L2: $*"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

halt_now() {
    sync
    poweroff -f
    # poweroff failed: sysrq, then let init die (panic=-1 + -no-reboot exit QEMU)
    echo o >/proc/sysrq-trigger 2>/dev/null
    sleep 5
    exit 1
}

fatal() {
    say "FATAL: $*"
    if [ "$DEBUG" = shell ]; then
        say "mvm.debug=shell: starting a shell (exit it to power off)"
        setsid cttyhack sh
    fi
    halt_now
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
# What udev would create on a real host (nft -f - opens /dev/stdin).
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp

JOB='' XPATH='' CWD=/ KMODS='' ROOTCACHE=none DEBUG=''
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        mvm.rootcache=*) ROOTCACHE="${arg#mvm.rootcache=}" ;;
        mvm.debug=*) DEBUG="${arg#mvm.debug=}" ;;
    esac
done

KVER="$(uname -r)"
say "init started uptime=$(uptime_s) kernel=$KVER"
hostname mvm-l2
ip link set lo up 2>/dev/null

# Modules, in dependency order (prepare-l2.sh resolved it).
while read -r ko; do
    case "$ko" in ''|'#'*) continue ;; esac
    insmod "/lib/modules/$KVER/$ko" || say "warning: insmod $ko failed"
done </etc/mvm-l2/modules
if [ -e /dev/kvm ]; then
    say "kvm ready uptime=$(uptime_s)"
else
    say "warning: /dev/kvm is missing after loading kvm_amd"
fi

mkdir -p /l1 /rw /newroot
mount -t 9p -o "trans=virtio,version=9p2000.L,msize=512000,ro,cache=$ROOTCACHE" l1root /l1 \
    || fatal "mounting L1's root (9p tag l1root) failed"
mount -t tmpfs -o mode=755 tmpfs /rw || fatal "tmpfs for the overlay failed"
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/l1,upperdir=/rw/upper,workdir=/rw/work /newroot \
    || fatal "overlay over L1's root failed"

for d in proc sys dev; do
    mkdir -p "/newroot/$d"
    mount -o bind "/$d" "/newroot/$d" || fatal "bind-mounting /$d failed"
done
mount -o bind /dev/pts /newroot/dev/pts
mount -o bind /dev/shm /newroot/dev/shm
# The unified cgroup hierarchy, as on NixOS: mvm gives each VM a cgroup.
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup || say "warning: no cgroup2 (VMs run without cgroups)"
# L1's /run describes L1 (its netns, locks, sockets): give L2 a fresh one.
# /tmp stays L1's (through the overlay), so L1 paths under /tmp keep working.
mkdir -p /newroot/run && mount -t tmpfs -o mode=755 tmpfs /newroot/run
mkdir -p /newroot/out
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 out /newroot/out \
    || fatal "mounting the results folder (9p tag out) failed"
: >/newroot/out/job.log || fatal "/out is not writable"
[ -f /newroot/out/l2-job.conf ] || fatal "no l2-job.conf in the results folder"
while IFS= read -r line; do
    case "$line" in
        job=*) JOB="${line#job=}" ;;
        path=*) XPATH="${line#path=}" ;;
        cwd=*) CWD="${line#cwd=}" ;;
        kmods=*) KMODS="${line#kmods=}" ;;
    esac
done </newroot/out/l2-job.conf
[ -n "$JOB" ] || fatal "no job= in l2-job.conf"
[ -n "$CWD" ] || CWD=/

if [ -n "$KMODS" ]; then
    if [ -d "/newroot$KMODS" ]; then
        moddir="$(chroot /newroot sh -c "mkdir -p /lib/modules/$KVER && readlink -f /lib/modules/$KVER")"
        mount -o bind "/newroot$KMODS" "/newroot$moddir" || say "warning: could not bind the module tree"
    else
        say "warning: kmods=$KMODS not found in L1's root"
    fi
fi

[ -e "/newroot$JOB" ] || fatal "job $JOB not found in L1's root"

JOBPATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
[ -n "$XPATH" ] && JOBPATH="$XPATH:$JOBPATH"

# The watch on L2 itself, on the second serial port (run-l2.sh writes it
# to l2-monitor.log): busybox from this initramfs reading /proc, so it
# keeps reporting when 9p (L1's root, /out and with it the console's
# mirror of the job) or the job is stuck. Every 30 s memory, load and the
# tasks in uninterruptible sleep; every 5 minutes every task with its
# state and kernel wait. Sysrq fully on: run-l2.sh asks for the blocked
# tasks' stacks (through QMP) before it stops a stuck L2.
echo 1 >/proc/sys/kernel/sysrq
l2_watch() {
    n=0
    while :; do
        line="up=$(uptime_s)"
        while read -r k v _; do
            case "$k" in MemAvailable: | Shmem: | AnonPages: | Cached:) line="$line ${k%:}=$((v / 1024))M" ;; esac
        done </proc/meminfo
        read -r l1 l5 l15 _ </proc/loadavg
        line="$line load=$l1,$l5,$l15"
        full=''
        for d in /proc/[0-9]*; do
            read -r stat 2>/dev/null <"$d/stat" || continue
            # pid (comm) state ...: comm may hold spaces, the state follows ") "
            st="${stat##*) }" st="${st%% *}" comm="${stat#*(}" comm="${comm%)*}"
            # (wchan has no newline: read sets it and returns non-zero)
            wchan='' && read -r wchan 2>/dev/null <"$d/wchan"
            [ "$st" = D ] && line="$line D:$comm/${d#/proc/}:$wchan"
            [ $((n % 10)) = 0 ] && full="$full
  ${d#/proc/} $st $wchan $comm"
        done
        echo "$line$full"
        n=$((n + 1))
        sleep 30
    done
}
if [ -e /dev/ttyS1 ] && (: >/dev/ttyS1) 2>/dev/null; then
    l2_watch >/dev/ttyS1 2>&1 &
fi

say "job start"
say "job=$JOB uptime=$(uptime_s)"
# Mirror the job's output on the console while it runs.
tail -n +1 -s 1 -f /newroot/out/job.log &
tailpid=$!
env -i HOME=/root USER=root LOGNAME=root TERM=linux LANG=C.UTF-8 PATH="$JOBPATH" \
    MVM_OUT=/out MVM_L2=1 MVM_JOB="$JOB" MVM_CWD="$CWD" \
    chroot /newroot /bin/sh -c '
        if [ -f /out/l2-job.env ]; then set -a; . /out/l2-job.env; set +a; fi
        cd "$MVM_CWD" || exit 125
        if [ -x "$MVM_JOB" ]; then exec "$MVM_JOB"; else exec /bin/sh "$MVM_JOB"; fi' \
    </dev/null >>/newroot/out/job.log 2>&1
rc=$?
sleep 1.2
kill "$tailpid" 2>/dev/null
echo "$rc" >/newroot/out/job.status
sync
say "job exit $rc"
say "job done uptime=$(uptime_s)"
umount /newroot/out 2>/dev/null
halt_now
