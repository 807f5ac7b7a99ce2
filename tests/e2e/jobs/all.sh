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
# Each area's output also goes to the console as it comes: run-l2.sh
# tells a slow job from a stuck one by the console growing.
# An area that finished in an earlier L2 boot (run-l2.sh retried a stuck
# run, keeping what l2-keep names) is not run again.
for job in $(echo "${E2E_ONLY:-boot,fs,lifecycle,net,projects}" | tr , " "); do
    if [ -f "$MVM_OUT/job-$job.status" ]; then
        echo "MVM-JOB: === $job: finished in an earlier L2 boot, kept"
        continue
    fi
    echo "MVM-JOB: === $job"
    ls -A "$MVM_OUT" >/tmp/e2e-before
    # (To a file, not a pipe: a daemon an area starts must not hold
    # this loop up by keeping the pipe open.)
    sh "$E2E_JOBS/$job.sh" >"$MVM_OUT/job-$job.log" 2>&1 </dev/null &
    pid=$!
    tail -n +1 -s 1 -f --pid="$pid" "$MVM_OUT/job-$job.log"
    wait "$pid"
    echo "$?" >"$MVM_OUT/job-$job.status"
    # What this area wrote (its results, log and status) outlives a retry.
    ls -A "$MVM_OUT" | grep -vxF -f /tmp/e2e-before >>"$MVM_OUT/l2-keep"
done
exit 0
