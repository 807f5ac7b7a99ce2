#!/bin/sh
# /init of the quickstart guest: mounts the basics, runs the project's
# command in /project, prints its exit status and reboots (ending the VM).
PATH=/bin:/sbin:/usr/bin:/usr/sbin
export PATH HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
hostname mvm-quickstart
cd /project || exit 1
CMD="$(cat /etc/mvm-quickstart-cmd)"
echo "mvm-quickstart: running '$CMD' in /project"
sh -c "$CMD"
echo "mvm-quickstart: exit status $?"
reboot -f
