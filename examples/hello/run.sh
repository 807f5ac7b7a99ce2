#!/bin/sh
# The example project's "job": what `scripts/quickstart.sh` runs in the VM.
echo "hello from $(uname -n): $(uname -sr), $(nproc) CPU(s), $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo)"
echo "project files:"; ls -l /project
echo "sum of 1..100 computed in the guest: $(seq 1 100 | awk '{s+=$1} END {print s}')"
