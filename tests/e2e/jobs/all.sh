#!/bin/sh
# The nested e2e job: runs every area's job in this one L2 boot. Each job
# writes under $MVM_OUT; a job's failure to run is recorded, not fatal, so
# the other areas still report.
set -u
: "${E2E_JOBS:?}"
# The L2 kernel's log, all of it (KVM, OOM and seccomp audit type=1326
# messages): streamed, so the ring buffer cannot drop the start, and not
# rate-limited.
echo 0 >/proc/sys/kernel/printk_ratelimit 2>/dev/null
dmesg -w >"$MVM_OUT/l2-dmesg.log" 2>&1 &
# L2's state every 30 s, to l2-monitor.log (not the console: its growth
# means progress): memory (tmpfs holds every file the areas write), load,
# processes in uninterruptible sleep; and, once an area's log has not
# grown for 5 minutes, every process with its state and kernel wait.
monitor() {
    quiet_since=$(date +%s) last='' dumped=''
    while :; do
        {
            printf 'up=%s ' "$(cut -d' ' -f1 /proc/uptime)"
            awk '/^(MemTotal|MemAvailable|Shmem|Cached|AnonPages|AnonHugePages):/ {printf "%s%dM ", $1, $2 / 1024}' /proc/meminfo
            printf 'load=%s ' "$(cut -d' ' -f1-3 /proc/loadavg)"
            ps -eo stat=,pid=,comm= | awk '$1 ~ /^D/ {printf "D:%s/%s ", $3, $2}'
            echo
        } >>"$MVM_OUT/l2-monitor.log" 2>&1
        now=$(date +%s)
        size=$(cat "$MVM_OUT"/job-*.log 2>/dev/null | wc -c)
        if [ "$size" != "$last" ]; then last=$size quiet_since=$now dumped=''; fi
        if [ -z "$dumped" ] && [ $((now - quiet_since)) -ge 300 ]; then
            dumped=1
            {
                echo "== no area output for $((now - quiet_since))s: every process"
                ps -eo pid,ppid,stat,wchan:32,time,rss,args
                cat /proc/meminfo
            } >>"$MVM_OUT/l2-monitor.log" 2>&1
        fi
        sleep 30
    done
}
monitor &
# Each area's output also goes to the console as it comes: run-l2.sh
# tells a slow job from a stuck one by the console growing.
for job in $(echo "${E2E_ONLY:-boot,fs,lifecycle,net,projects}" | tr , " "); do
    echo "MVM-JOB: === $job"
    # (To a file, not a pipe: a daemon an area starts must not hold
    # this loop up by keeping the pipe open.)
    sh "$E2E_JOBS/$job.sh" >"$MVM_OUT/job-$job.log" 2>&1 </dev/null &
    pid=$!
    tail -n +1 -s 1 -f --pid="$pid" "$MVM_OUT/job-$job.log"
    wait "$pid"
    echo "$?" >"$MVM_OUT/job-$job.status"
done
exit 0
