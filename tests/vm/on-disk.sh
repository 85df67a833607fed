#!/bin/sh
# In the guest: run a command with the current directory on a freshly
# mounted scratch filesystem (the selftests' own disks /dev/vdc ext4 and
# /dev/vdd xfs; /dev/vda and /dev/vdb stay untouched for the project suite).
#   on-disk.sh DEV FSTYPE COMMAND...
dev=$1 fstype=$2
shift 2
mnt=/mnt/selftest.$$
mkdir -p "$mnt"
mount -t "$fstype" "$dev" "$mnt" || { echo "Bail out! cannot mount $dev ($fstype)"; exit 1; }
cd "$mnt" || exit 1
"$@"
rc=$?
cd /
umount "$mnt" || { echo "Bail out! cannot unmount $dev: still busy"; rc=1; }
rmdir "$mnt"
exit $rc
