#!/bin/sh
# Named-merging functional tests, run inside the QEMU guest by the harness's
# /init (busybox sh; /proc /sys /dev mounted, /tmp a tmpfs, /dev/vda a fresh
# ext4 image, /dev/vdb a fresh xfs image, both unmounted).
#
# Mounts ext4, xfs, overlayfs (lower and upper on the ext4) and a FUSE
# passthrough of an ext4 directory (cid-fuse), runs every case of cidtest
# on each as its own process, and prints one TAP line per case:
#   ok N ext4: twins share frames ...
# Diagnostics are "# " lines.  Exits non-zero if anything failed.
#
# Environment: CID_EXT4_DEV, CID_XFS_DEV (devices), CID_FS (space-separated
# subset of "ext4 xfs ovl fuse"), CID_CASES (subset of case names),
# CID_FORCE=1 (run the cases even if the kernel lacks named merging),
# CID_TEST_SIZE, CID_STRESS_SECS (passed on to cidtest).

here=$(cd "$(dirname "$0")" && pwd)
T=$here/cidtest
A=$here/cidadv
O=$here/cidops
EXT4_DEV=${CID_EXT4_DEV:-/dev/vda}
XFS_DEV=${CID_XFS_DEV:-/dev/vdb}
FSLIST=${CID_FS:-ext4 xfs ovl fuse btrfs}
M=/mnt/cid
OUT=/tmp/cid-case.out

n=0 npass=0 nfail=0 nskip=0
nokernel=
fuse_pid=

echo "TAP version 13"

desc() {
	case $1 in
	share) echo "twins share frames, read() right, Cached grows once" ;;
	tagcache) echo "tagging leaves none of the file's pages cached" ;;
	cow_private) echo "MAP_PRIVATE write COWs off the shared frame" ;;
	cow_mprotect) echo "mprotect+write COWs off the shared frame" ;;
	write) echo "write-open in use ETXTBSY, then write drops the tag, twin unaffected" ;;
	truncate) echo "truncate in use ETXTBSY, then works and drops the tag" ;;
	unlink) echo "unlink of tagged files while mapped" ;;
	rename) echo "rename over and of tagged files" ;;
	hardlink) echo "hardlinks of a tagged file are diverted" ;;
	idle) echo "write denial kept after close, taken back by a writer or an untag" ;;
	changed) echo "file changed between tagging and opening is not shared" ;;
	digest) echo "forged expected digest EBADMSG, right one tags, UNTAG" ;;
	domain) echo "files share only within their domain" ;;
	errors) echo "EPERM unprivileged and in userns, ETXTBSY, EINVAL" ;;
	tmpfs) echo "tagging refused with EOPNOTSUPP" ;;
	evict) echo "tags survive inode eviction" ;;
	lazy) echo "backing file set up at first map or uncached read, shared, gone with the last user" ;;
	iopaths) echo "sendfile, splice, readahead, fadvise+mincore, pread right" ;;
	pressure) echo "memcg pressure, drop_caches, compaction while mapped" ;;
	exec) echo "exec of tagged ELF twins shares text" ;;
	stress) echo "bounded concurrent stress keeps data right" ;;
	umount) echo "unmount with tagged files, plain files after remount" ;;
	ovl_tag) echo "tagging through the overlay path" ;;
	sysfs) echo "sysfs knobs present, enabled validated and restored" ;;
	fuse_change) echo "server changes bytes, mtime and size kept: twin keeps its bytes, fill refused" ;;
	fuse_lie) echo "server answers O_DIRECT and buffered reads differently: no lie reaches the twin" ;;
	fuse_self) echo "FUSE file and its backing file both tagged: cold read and fault finish" ;;
	btrfs_snap) echo "snapshot copy changed in place keeps its own bytes (no key collision)" ;;
	nowait) echo "RWF_NOWAIT never waits for a fill" ;;
	mapcontract) echo "msync, fsync, SEEK_DATA/HOLE, flock; no shared writable mapping" ;;
	forcewrite) echo "/proc/self/mem, ptrace, process_vm_writev copy on write" ;;
	splicepipe) echo "splice to a pipe, then write to the pipe" ;;
	openmodes) echo "O_DIRECT, F_SETFL O_DIRECT, reopen O_RDWR, O_TRUNC" ;;
	verity) echo "content id is the fs-verity measurement; verity file shares with a plain twin" ;;
	unpriv) echo "unprivileged QUERY: own tag and digest, no cross-file figures" ;;
	fuse_mapfail) echo "mapping of a file whose fill fails verification: fault filled from an open twin, else SIGBUS; read() own bytes" ;;
	uring_cold) echo "io_uring buffered READs of cold tagged twins from 4 rings: all bytes right, no hang" ;;
	uring_fixed) echo "io_uring fixed buffer over a MAP_PRIVATE mapping copies; tagged file and twin unchanged" ;;
	remap) echo "FICLONE, FIDEDUPERANGE, copy_file_range, punch hole on an idle tagged file" ;;
	iflags) echo "immutable and append-only before and after the tag" ;;
	layout) echo "FIEMAP is the file's own; SEEK_DATA/SEEK_HOLE of a sparse tagged file" ;;
	detach) echo "lazy unmount with a live diverted mapping: bytes right, gauges back" ;;
	memcg) echo "the first reader's memcg pays for content, a twin's reader does not" ;;
	*) echo "$1" ;;
	esac
}

# Print a case's output as diagnostics (lines not starting with '#' get one).
show() {
	[ -s "$OUT" ] || return 0
	sed -e '/^#/!s/^/# /' "$OUT"
}

# report NAME RC: one TAP line for a case that ran.
report() {
	n=$((n + 1))
	case $2 in
	0) npass=$((npass + 1)); echo "ok $n $1" ;;
	77)
		nskip=$((nskip + 1))
		reason=$(sed -n 's/^# SKIP: //p' "$OUT" | tail -n 1)
		echo "ok $n $1 # SKIP ${reason:-skipped}" ;;
	3) nfail=$((nfail + 1)); echo "not ok $n $1 # kernel lacks named merging" ;;
	*)
		nfail=$((nfail + 1))
		[ "$2" -gt 128 ] && echo "# killed by signal $(($2 - 128))"
		echo "not ok $n $1" ;;
	esac
}

# not_run NAME REASON: a case that could not run is a failure, with a reason.
not_run() {
	n=$((n + 1)); nfail=$((nfail + 1))
	echo "not ok $n $1 # $2"
}

wanted() {
	[ -z "$CID_CASES" ] && return 0
	# Not "w": the filesystem blocks keep their work directory in it.
	for wanted_case in $CID_CASES; do [ "$wanted_case" = "$1" ] && return 0; done
	return 1
}

# run FS CASE WDIR [TDIR [BDIR]]
run() {
	fs=$1 c=$2
	wanted "$c" || return 0
	label="$fs: $(desc "$c")"
	if [ -n "$nokernel" ] && [ -z "$CID_FORCE" ]; then
		not_run "$label" "kernel lacks named merging"
		return
	fi
	shift 2
	"${PROG:-$T}" "$c" "$fs" "$@" >"$OUT" 2>&1
	rc=$?
	show
	report "$label" "$rc"
}

fuse_start() { # BACKING MNT
	"$here/cid-fuse" "$1" "$2" >/tmp/cid-fuse.log 2>&1 &
	fuse_pid=$!
	i=0
	while ! grep -q " $2 fuse" /proc/mounts; do
		i=$((i + 1))
		if [ $i -gt 100 ] || ! kill -0 $fuse_pid 2>/dev/null; then
			sed 's/^/# cid-fuse: /' /tmp/cid-fuse.log
			return 1
		fi
		usleep 100000
	done
}

# The server exits once its mount is gone for good (10 s at most).
fuse_wait() {
	i=0
	while kill -0 "$fuse_pid" 2>/dev/null; do
		i=$((i + 1))
		[ $i -gt 100 ] && return 1
		usleep 100000
	done
	wait "$fuse_pid" 2>/dev/null
	fuse_pid=
}

fuse_stop() { # MNT
	umount "$1" || return 1
	fuse_wait || { echo "# cid-fuse did not exit after unmount"; return 1; }
}

mounted() { grep -q " $1 " /proc/mounts; }

mount_ext4() { mkdir -p $M/ext4 && mount -t ext4 "$EXT4_DEV" $M/ext4; }
mount_xfs() { mkdir -p $M/xfs && mount -t xfs "$XFS_DEV" $M/xfs; }
mount_ovl() {
	mkdir -p $M/ext4/ovl/lower/t $M/ext4/ovl/upper $M/ext4/ovl/work $M/ovl &&
	mount -t overlay overlay \
		-o lowerdir=$M/ext4/ovl/lower,upperdir=$M/ext4/ovl/upper,workdir=$M/ext4/ovl/work \
		$M/ovl
}

# The cases every filesystem runs; the unmount case, ovl_tag and (on ext4
# and xfs, where a write lease probes the file's own inode) idle come on top.
CASES="share tagcache cow_private cow_mprotect write truncate unlink rename hardlink
changed digest domain errors evict lazy iopaths exec pressure stress"
# cidadv's cases for every filesystem (the FUSE and btrfs ones are below).
ADV="nowait mapcontract forcewrite splicepipe openmodes"
adv() { PROG=$A; run "$@"; PROG=; }
# cidops's cases, on every filesystem (FS CASE WDIR [TDIR]); detach is below.
OPS="uring_cold uring_fixed remap iflags layout memcg"
ops() { PROG=$O; run "$@"; PROG=; }

# detach_case FS WDIR TDIR MNT: the case unmounts MNT lazily under a live
# mapping; the caller mounts it again if it needs it.  On FUSE the server
# must exit once the mapping is gone (the connection was released).
detach_case() {
	fs=$1
	wanted detach || return 0
	label="$fs: $(desc detach)"
	if [ -n "$nokernel" ] && [ -z "$CID_FORCE" ]; then
		not_run "$label" "kernel lacks named merging"
		return
	fi
	"$O" detach "$@" >"$OUT" 2>&1
	rc=$?
	show
	if [ "$fs" = fuse ] && ! mounted "$4" && [ -n "$fuse_pid" ]; then
		if ! fuse_wait; then
			echo "# cid-fuse still runs: the detached FUSE mount was not released"
			kill -9 "$fuse_pid" 2>/dev/null
			wait "$fuse_pid" 2>/dev/null
			fuse_pid=
			rc=1
		fi
	fi
	report "$label" "$rc"
}

# umount_case FS WDIR TDIR BDIR REMOUNT-COMMANDS...
umount_case() {
	fs=$1 w=$2 t=$3 b=$4
	shift 4
	wanted umount || return 0
	label="$fs: $(desc umount)"
	if [ -n "$nokernel" ] && [ -z "$CID_FORCE" ]; then
		not_run "$label" "kernel lacks named merging"
		return
	fi
	"$T" umount_prep "$fs" "$w" "$t" "$b" >"$OUT" 2>&1
	rc=$?
	show
	# Unmount and remount even if the preparation failed: unmounting a
	# filesystem with tagged inodes is the point.
	if "$@" >"$OUT" 2>&1; then
		show
		"$T" umount_check "$fs" "$w" "$t" "$b" >"$OUT" 2>&1
		rc2=$?
		show
		[ $rc -eq 0 ] && rc=$rc2
	else
		show
		echo "# unmount/remount failed: $*"
		rc=1
	fi
	report "$label" "$rc"
}

remount_ext4() { umount $M/ext4 && mount_ext4; }
remount_xfs() { umount $M/xfs && mount_xfs; }
remount_ovl() { umount $M/ovl && umount $M/ext4 && mount_ext4 && mount_ovl; }
remount_fuse() { fuse_stop $M/fuse && fuse_start $M/ext4/fback $M/fuse; }

mkdir -p $M
echo "# kernel: $(uname -r); $(grep -c ^processor /proc/cpuinfo) cpus; $(grep MemTotal /proc/meminfo)"

if ! mount_ext4; then
	echo "# cannot mount $EXT4_DEV as ext4: the ext4, overlay and FUSE cases cannot run"
	ext4_ok=
else
	ext4_ok=1
	mkdir -p $M/ext4/t
	"$T" probe ext4 $M/ext4/t >"$OUT" 2>&1
	case $? in
	0) ;;
	3) nokernel=1; echo "# kernel lacks named merging (CID_IOC_QUERY: ENOTTY)" ;;
	*) show; echo "# probe failed" ;;
	esac
fi
[ -d /sys/kernel/mm/cid ] || echo "# /sys/kernel/mm/cid is absent"

for fs in $FSLIST; do
	case $fs in
	ext4)
		[ -n "$ext4_ok" ] || { not_run "ext4: mount" "cannot mount $EXT4_DEV"; continue; }
		run ext4 sysfs $M/ext4/t
		for c in $CASES idle; do run ext4 "$c" $M/ext4/t; done
		for c in $ADV verity unpriv; do adv ext4 "$c" $M/ext4/t; done
		for c in $OPS; do ops ext4 "$c" $M/ext4/t; done
		umount_case ext4 $M/ext4/t $M/ext4/t "" remount_ext4
		detach_case ext4 $M/ext4/t $M/ext4/t $M/ext4
		if ! mounted $M/ext4 && ! mount_ext4; then
			echo "# cannot mount $EXT4_DEV again after the detach case"
			ext4_ok=
		fi
		;;
	xfs)
		if ! mount_xfs; then not_run "xfs: mount" "cannot mount $XFS_DEV as xfs"; continue; fi
		mkdir -p $M/xfs/t
		for c in $CASES idle; do run xfs "$c" $M/xfs/t; done
		for c in $ADV; do adv xfs "$c" $M/xfs/t; done
		for c in $OPS; do ops xfs "$c" $M/xfs/t; done
		umount_case xfs $M/xfs/t $M/xfs/t "" remount_xfs
		detach_case xfs $M/xfs/t $M/xfs/t $M/xfs
		mounted $M/xfs && umount $M/xfs
		;;
	ovl)
		[ -n "$ext4_ok" ] || { not_run "ovl: mount" "no ext4 for the layers"; continue; }
		if ! mount_ovl; then not_run "ovl: mount" "cannot mount overlayfs"; continue; fi
		w=$M/ovl/t t=$M/ext4/ovl/lower/t
		for c in $CASES ovl_tag; do run ovl "$c" $w $t; done
		for c in $OPS; do ops ovl "$c" $w $t; done
		umount_case ovl $w $t "" remount_ovl
		detach_case ovl $w $t $M/ovl
		mounted $M/ovl && umount $M/ovl
		;;
	fuse)
		[ -n "$ext4_ok" ] || { not_run "fuse: mount" "no ext4 for the backing dir"; continue; }
		mkdir -p $M/ext4/fback/t $M/fuse
		if ! fuse_start $M/ext4/fback $M/fuse; then
			not_run "fuse: mount" "cid-fuse did not mount"
			continue
		fi
		w=$M/fuse/t b=$M/ext4/fback/t
		for c in $CASES; do run fuse "$c" $w $w $b; done
		for c in $ADV; do adv fuse "$c" $w; done
		mkdir -p $M/ext4/t
		adv fuse fuse_change $w $b $M/ext4/t
		adv fuse fuse_lie $w $b $M/ext4/t
		adv fuse fuse_self $w $b
		adv fuse fuse_mapfail $w $b $M/ext4/t
		for c in $OPS; do ops fuse "$c" $w $w; done
		umount_case fuse $w $w $b remount_fuse
		detach_case fuse $w $w $M/fuse
		mounted $M/fuse && fuse_stop $M/fuse
		;;
	btrfs)
		[ -n "$ext4_ok" ] || { not_run "btrfs: mount" "no ext4 for the image"; continue; }
		mkdir -p $M/btrfs $M/ext4/t
		rm -f $M/ext4/btrfs.img
		truncate -s 320M $M/ext4/btrfs.img
		if ! mkfs.btrfs -q -f $M/ext4/btrfs.img >/tmp/mkfs.log 2>&1 ||
		   ! mount -o loop -t btrfs $M/ext4/btrfs.img $M/btrfs; then
			sed 's/^/# /' /tmp/mkfs.log
			not_run "btrfs: mount" "cannot make or mount a btrfs image"
			continue
		fi
		mkdir -p $M/btrfs/t
		for c in share cow_private write changed evict lazy; do run btrfs "$c" $M/btrfs/t; done
		for c in $ADV; do adv btrfs "$c" $M/btrfs/t; done
		adv btrfs btrfs_snap $M/btrfs $M/ext4/t
		for c in $OPS; do ops btrfs "$c" $M/btrfs/t; done
		# detach compares the gauges with their values before it: start
		# from a btrfs without tags, as on the others after their umount case.
		if umount $M/btrfs && mount -o loop -t btrfs $M/ext4/btrfs.img $M/btrfs; then
			detach_case btrfs $M/btrfs/t $M/btrfs/t $M/btrfs
		elif wanted detach; then
			not_run "btrfs: $(desc detach)" "cannot mount the btrfs image again"
		fi
		mounted $M/btrfs && umount $M/btrfs
		rm -f $M/ext4/btrfs.img
		;;
	*) echo "# unknown filesystem $fs in CID_FS" ;;
	esac
done

mkdir -p /tmp/cid-tmpfs
run tmpfs tmpfs /tmp/cid-tmpfs

[ -n "$ext4_ok" ] && umount $M/ext4
echo "1..$n"
echo "# $npass passed, $nfail failed, $nskip skipped"
[ $nfail -eq 0 ]
