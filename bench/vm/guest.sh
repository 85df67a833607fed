#!/bin/sh
# In-guest half of bench/vm/run.sh: /dev/vda is an ext4 image holding
# tree/1..8 (identical copies of a real tree) and, for K = 1..4,
# perf/{untagged,tagged-a,tagged-b}-K.bin (three copies of random file K).
# Prints "RESULT key value" lines; the host turns them into
# bench/results/vm.txt.
set -u
mnt=/mnt/bench
mkdir -p $mnt
mount -t ext4 /dev/vda $mnt || { echo "not ok 1 mount /dev/vda"; exit 1; }
r() { echo "RESULT $*"; }
cached() { awk '/^Cached:/ {print $2}' /proc/meminfo; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; sleep 1; }
copies() { i=$1; while [ $i -le "$2" ]; do echo $mnt/tree/$i; i=$((i + 1)); done; }
# Cached growth with N = 1, 2, 4, 8 copies read: one clean start, then read
# copy 1, copy 2, copies 3-4, copies 5-8, measuring after each step.
mem() {
	drop; c0=$(cached); prev=0
	for n in 1 2 4 8; do
		# shellcheck disable=SC2046 # one argument per copy
		cidbench read $(copies $((prev + 1)) $n) | sed 's/^/# /'
		r mem_$1_$n $(($(cached) - c0))
		[ "$1" = tagged ] && sysfs tagged_$n
		prev=$n
	done
}
sysfs() { for k in contents tagged_inodes pages_shared pages_sharing general_profit; do
	[ -r /sys/kernel/mm/cid/$k ] && r "$1_$k $(cat /sys/kernel/mm/cid/$k)"; done; }

r kernel "$(uname -r)"
r mem_total_kB "$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
if cidbench probe; then have=1; r named_merging present; else have=0; r named_merging absent; fi

# Performance first, while the guest's memory is fresh: after the memory
# runs below (2 GiB read, 30,000 files tagged) reads of both files slow
# down by a quarter under TCG, untagged as much as tagged.
# Before any file is tagged: named merging's hooks are static branches that
# stay off, so this is the kernel as if unpatched.
# Four files of each kind, of four distinct contents: under TCG where a
# file's frames fall moves its figures by several percent (see cidbench.c).
p=$mnt/perf
untagged="untagged $p/untagged-1.bin untagged $p/untagged-2.bin untagged $p/untagged-3.bin untagged $p/untagged-4.bin"
cidbench read $p/untagged-1.bin $p/untagged-2.bin $p/untagged-3.bin $p/untagged-4.bin >/dev/null
# shellcheck disable=SC2086 # NAME FILE pairs
cidbench perf $untagged | sed 's/^untagged_/RESULT notags_/'
if [ $have = 1 ]; then
	echo 1 >/sys/kernel/mm/cid/enabled 2>/dev/null
	cidbench tag $p/tagged-a-*.bin $p/tagged-b-*.bin >/dev/null
	cidbench read $p/tagged-a-*.bin >/dev/null
	# Tagged files against untagged ones, alternately in one run.
	# shellcheck disable=SC2086
	cidbench perf $untagged tagged $p/tagged-b-1.bin tagged $p/tagged-b-2.bin \
		tagged $p/tagged-b-3.bin tagged $p/tagged-b-4.bin | sed 's/^/RESULT /'
	cidbench query $p/tagged-b-1.bin | sed 's/^/RESULT query_/'
	# What the page cache holds behind each kind: a tagged file's content
	# is in large folios whatever ext4 uses.
	cidbench frames untagged $p/untagged-*.bin | sed 's/^/RESULT /'
	cidbench frames tagged $p/tagged-b-*.bin | sed 's/^/RESULT /'
	# Cold reads: a tagged file's fill reads its own file, copies and
	# verifies every block; its twin tagged-a is never read here, so every
	# round fills from tagged-b.
	# shellcheck disable=SC2086
	cidbench cold $untagged tagged $p/tagged-b-1.bin tagged $p/tagged-b-2.bin \
		tagged $p/tagged-b-3.bin tagged $p/tagged-b-4.bin | sed 's/^/RESULT /'
	# The same from storage slower than this guest's hashing: from a cgroup
	# whose reads of /dev/vda blk-throttle caps at 8 MiB/s.  A fill that
	# runs the next window's source I/O while it verifies this one keeps
	# pace with such a disk; one that waited for the I/O and then hashed
	# would take the sum of the two (run.sh prints what that would give).
	cg=/sys/fs/cgroup/cidbench-slow
	if grep -qw io /sys/fs/cgroup/cgroup.controllers 2>/dev/null &&
		echo +io >/sys/fs/cgroup/cgroup.subtree_control && mkdir -p $cg &&
		echo "$(cat /sys/block/vda/dev) rbps=8388608" >$cg/io.max; then
		r slow_rbps 8388608
		sh -c "echo \$\$ >$cg/cgroup.procs && exec cidbench cold slowuntagged $p/untagged-1.bin \
			slowtagged $p/tagged-b-1.bin" | sed 's/^/RESULT /'
		rmdir $cg
	else
		echo "# no blk-throttle in this kernel: no slow-storage cold read"
	fi
fi
# What a locked read-modify-write costs here: a tagged open and close add two.
cidbench atomic | sed 's/^/RESULT /'

# Memory, untagged: Cached growth for N copies read in full.
mem untagged
drop

if [ $have = 1 ]; then
	# The tree's share of the metadata: the figures before and after
	# (the 32 MiB files above are still tagged).
	meta() { for k in tagged_inodes digest_bytes metadata_bytes; do
		[ -r /sys/kernel/mm/cid/$k ] && r "$1_$k $(cat /sys/kernel/mm/cid/$k)"; done; }
	meta before_tag
	cidbench tag $mnt/tree | sed 's/^/RESULT /'
	sysfs after_tag
	meta after_tag
	mem tagged
	drop
fi
umount $mnt
echo "1..1"
echo "ok 1 bench"
