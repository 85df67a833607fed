#!/bin/busybox sh
# shellcheck shell=dash
# /init of the test initramfs (see tests/vm/lib.sh for the protocol).
# Runs every suite of /suites.list in order with a time limit, copies its
# output to the console (ttyS0) and the results port (ttyS1), then powers
# off with reboot -f (QEMU runs with -no-reboot).
/bin/busybox mkdir -p /proc /sys /dev /tmp /run
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s
export PATH=/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin
export HOME=/root TMPDIR=/tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /dev/shm /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null
[ -d /sys/kernel/debug ] && mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
[ -d /sys/fs/cgroup ] && mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
hostname cid-vm
ulimit -c 0

res=/dev/ttyS1
[ -c "$res" ] || res=/dev/null
stty -F "$res" raw -echo 2>/dev/null
say() { echo "$*"; echo "$*" >"$res"; }

say "# cid-vm: kernel $(uname -r) $(cat /proc/cmdline)"
while read -r name tmo cmd; do
	case $name in "" | \#*) continue ;; esac
	say "# cid-suite: $name"
	mkdir -p "/tmp/run/$name"
	start=$(date +%s)
	(
		cd "/tmp/run/$name" || exit 1
		# The suite runs in its own session, so its time limit kills all of
		# it: a leftover child would otherwise hold the pipe to tee open.
		setsid sh -c "$cmd" </dev/null 2>&1 &
		pid=$!
		(sleep "$tmo"; kill -KILL -- "-$pid" 2>/dev/null; kill -KILL "$pid" 2>/dev/null) \
			</dev/null >/dev/null 2>&1 &
		watchdog=$!
		wait "$pid"
		rc=$?
		kill "$watchdog" 2>/dev/null
		# Children the suite left behind.
		kill -KILL -- "-$pid" 2>/dev/null
		echo "# cid-suite-rc: $name $rc"
	) | tee "$res"
	say "# cid-suite-time: $name $(($(date +%s) - start))s"
	sync
	rm -rf "/tmp/run/$name"
done </suites.list
say "# cid-vm: done"
sync
# Give the serial ports a moment to drain.
sleep 1
reboot -f
