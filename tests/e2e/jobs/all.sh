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
for job in $(echo "${E2E_ONLY:-boot,fs,lifecycle,net,projects}" | tr , " "); do
    echo "MVM-JOB: === $job"
    sh "$E2E_JOBS/$job.sh" >"$MVM_OUT/job-$job.log" 2>&1
    echo "$?" >"$MVM_OUT/job-$job.status"
    cat "$MVM_OUT/job-$job.log"
done
exit 0
