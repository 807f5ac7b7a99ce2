#!/bin/sh
# Never finishes: exercises run-l2.sh's timeout and retry path.
#   tests/nested/run-l2.sh tests/nested/jobs/hang.sh /tmp/l2-hang --timeout 40   # exits 124
echo "hang: sleeping forever"
echo started >"$MVM_OUT/hang.started"
while :; do sleep 3600; done
