#!/bin/sh
# Runs in the L3 guest (busybox): mounts the share virtiofsd serves through
# mvm's vhost-user-fs front end, reads the host's file, writes one back.
#   MVM-GUEST: vfs_<check>=<value>
say() { echo "MVM-GUEST: vfs_$1=$2"; }
mkdir -p /vfs
mount -t virtiofs vfs /vfs && say mount ok || { say mount failed; exit 1; }
say read "$(cat /vfs/from-host.txt)"
say big_md5 "$(md5sum /vfs/big.bin | cut -d' ' -f1)"
echo "written through virtiofsd" >/vfs/from-guest.txt && say write ok
mkdir /vfs/made && echo leaf >/vfs/made/leaf.txt && mv /vfs/made /vfs/renamed && say tree ok
rm /vfs/delete-me.txt && say delete ok
say listing "$(ls /vfs | tr '\n' ' ')"
sync
umount /vfs && say umount ok
