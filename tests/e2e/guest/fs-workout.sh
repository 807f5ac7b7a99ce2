#!/bin/sh
# Runs in the L3 guest (busybox): mounts the shares mvm gave it and works
# on them like a developer would. Every check prints
#   MVM-GUEST: fs_<check>=<value>
# for the host-side test to compare.
say() { echo "MVM-GUEST: fs_$1=$2"; }

mkdir -p /project /ro /rw
mount -t virtiofs project /project && say mount ok || { say mount failed; exit 1; }
mount -t virtiofs ro /ro || say mount_ro failed
mount -t virtiofs rw /rw || say mount_rw failed
cd /project || exit 1

# Reads fall through to the host.
say read "$(cat README.txt)"
say big_md5 "$(md5sum big.bin | cut -d' ' -f1)"
say deep "$(cat sub/a/b/c.txt)"

# Writes of every kind.
echo "new file" > new.txt
echo "appended" >> README.txt
rm delete-me.txt
mv rename-me.txt renamed.txt
chmod 600 mode.txt
ln -s README.txt link-to-readme
ln renamed.txt hardlink.txt
mkdir -p made/deeper && echo leaf > made/deeper/leaf.txt
mv dir1 dir2
rm -r gone-dir && mkdir gone-dir && echo fresh > gone-dir/fresh.txt
: > truncate-me.txt
dd if=/dev/zero of=zeros.bin bs=1024 count=2048 2>/dev/null
mkdir many && i=0 && while [ $i -lt 300 ]; do echo $i > many/f$i; i=$((i+1)); done
sync

# What the guest now sees.
say readme "$(tr '\n' '|' < README.txt)"
say new "$(cat new.txt)"
say deleted "$([ -e delete-me.txt ] && echo present || echo gone)"
say renamed "$(cat renamed.txt)"
say old_name "$([ -e rename-me.txt ] && echo present || echo gone)"
say mode "$(stat -c %a mode.txt)"
say symlink "$(readlink link-to-readme):$(head -n1 link-to-readme)"
say links "$(stat -c %h renamed.txt)"
say leaf "$(cat made/deeper/leaf.txt)"
say moved_dir "$(cat dir2/inner.txt 2>&1):$([ -e dir1 ] && echo present || echo gone)"
say opaque "$(ls gone-dir | tr '\n' ' ')"
say truncated "$(stat -c %s truncate-me.txt)"
say zeros "$(stat -c %s zeros.bin)"
say many "$(ls many | wc -l)"
say listing "$(ls | tr '\n' ' ')"
# Inode numbers stay stable across copy-up.
before=$(stat -c %i stable.txt); echo more >> stable.txt; after=$(stat -c %i stable.txt)
say inode_stable "$([ "$before" = "$after" ] && echo yes || echo "no:$before:$after")"

# Read-only share: writes fail.
touch /ro/new 2>/tmp/ro.err; say ro_write "$(sed "s/.*: //" /tmp/ro.err)"
say ro_read "$(cat /ro/ro.txt)"
# Read-write share: writes reach the host.
echo "from the guest" > /rw/from-guest.txt && say rw_write ok
sync
cd /
umount /project /ro /rw && say umount ok
