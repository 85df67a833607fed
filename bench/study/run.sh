#!/bin/bash
# The study (issue 11): the thesis's Table 5.1 measured in real frames, on
# real Debian trees, in a QEMU guest running the patched benchmark kernel.
#
#   bench/study/run.sh           the whole study: terminal server and
#                                zero-install (and containers with
#                                CID_STUDY_SCENARIOS), N = 1..3 users, stock /
#                                named merging / KSM / both; writes
#                                bench/results/study.{txt,json,svg}
#   bench/study/run.sh --prepare the host side only (tree, image, initramfs)
#   bench/study/run.sh --demo    its short form (make demo): zero-install,
#                                3 users started once on the stock kernel
#                                (measured, then again after ksmd's scans:
#                                KSM) and once more on tagged copies (named
#                                merging), against one user (user 1's
#                                processes in the stock snapshot); a smaller
#                                workload, only the files the users map
#                                tagged, one boot; prints the table, writes
#                                $BUILD/study/demo.{txt,json,svg}
#
# Host side: a Debian 12 tree (debootstrap --variant=minbase with python3,
# perl, redis-server and nginx-light) built once into $CID_STUDY_CACHE
# (default ~/.cache/cid/study), and an ext4 image holding it twice over:
# shared/ (the terminal server's one install) and copy/1..N (each
# zero-install user's own copy: the same files, other inodes), rebuilt only
# when the tree or the layout changes.  Guest side: bench/study/guest.sh.
#
# Exit status: 0 done; 1 error; 10 the benchmark kernel could not be built;
# 11 the guest did not boot or the kernel lacks named merging; 12 no Debian
# tree (not root, no mirror, debootstrap failed).  make demo falls back to
# the host-side demo on 10-12.
#
# Environment: BUILD; CID_STUDY_KERNEL (a bzImage to boot instead of
# building the benchmark kernel; CID_BENCH_CACHE for that build);
# CID_STUDY_CACHE; CID_STUDY_USERS (largest N, default 3); CID_STUDY_RUNS
# (boots, each measuring everything once; figures are their medians;
# default 3, --demo 1); CID_STUDY_SCENARIOS (default "ts zi"; add ct for
# containers on overlayfs); CID_STUDY_CONFIGS (default "stock nm ksm
# nmksm"); CID_STUDY_PLAN (a file of "SCENARIO N CONFIG[+CONFIG...]" lines
# to run instead, without tags first; see guest.sh); CID_STUDY_KSM_SCANS
# (ksmd full scans after the workload is ready, default 2),
# CID_STUDY_KSM_PAGES and CID_STUDY_KSM_SLEEP (ksmd's pages_to_scan and
# sleep_millisecs while it runs; default 4000 and 10, --demo 10000 and 0);
# CID_STUDY_TAG (dups or mapped, --demo mapped) and CID_STUDY_WORK (full or
# small, --demo small), see guest.sh; CID_VM_MEM (default 4096, --demo
# 2048), CID_VM_CPUS; CID_STUDY_OUT (the results' path without extension).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$top/$BUILD ;; esac
export BUILD
. tests/vm/lib.sh
. scripts/debian.sh
demo=0 prepare=0
case ${1:-} in
--demo) demo=1 ;;
--prepare) prepare=1 ;;
"") ;;
*) echo "usage: bench/study/run.sh [--demo | --prepare]" >&2; exit 2 ;;
esac
users=${CID_STUDY_USERS:-3}
[ "$users" -ge 1 ] 2>/dev/null || vm_die "CID_STUDY_USERS=$users: want a number >= 1"
if [ $demo = 1 ]; then
	export CID_VM_MEM=${CID_VM_MEM:-2048}
	guest_env="CID_STUDY_TAG=${CID_STUDY_TAG:-mapped} CID_STUDY_WORK=${CID_STUDY_WORK:-small}"
	guest_env+=" CID_STUDY_KSM_PAGES=${CID_STUDY_KSM_PAGES:-10000} CID_STUDY_KSM_SLEEP=${CID_STUDY_KSM_SLEEP:-0}"
else
	export CID_VM_MEM=${CID_VM_MEM:-4096}
	guest_env="CID_STUDY_TAG=${CID_STUDY_TAG:-dups} CID_STUDY_WORK=${CID_STUDY_WORK:-full}"
	guest_env+=" CID_STUDY_KSM_PAGES=${CID_STUDY_KSM_PAGES:-4000} CID_STUDY_KSM_SLEEP=${CID_STUDY_KSM_SLEEP:-10}"
fi
guest_env+=" CID_STUDY_KSM_SCANS=${CID_STUDY_KSM_SCANS:-2}"
cache=${CID_STUDY_CACHE:-${CID_CACHE:-$HOME/.cache/cid}/study}
work=$BUILD/study
mkdir -p "$work" "$cache"
if [ $demo = 1 ]; then
	out=${CID_STUDY_OUT:-$work/demo}
	runs=${CID_STUDY_RUNS:-1}
else
	out=${CID_STUDY_OUT:-$top/bench/results/study}
	runs=${CID_STUDY_RUNS:-3}
fi
mkdir -p "$(dirname "$out")"
t_start=$(date +%s)
step() { vm_log "[$(($(date +%s) - t_start))s] $*"; }

# 1. The kernel.
if [ $prepare = 1 ]; then
	kernel= series=
elif [ -n "${CID_STUDY_KERNEL:-}" ]; then
	kernel=$CID_STUDY_KERNEL
	[ -f "$kernel" ] || { echo "study: CID_STUDY_KERNEL=$kernel: no such file" >&2; exit 10; }
	series="given: $kernel"
else
	step "building the benchmark kernel (log: $work/kernel-build.log)"
	if ! vm_bench_kernel "$work/kernel-build.log"; then
		tail -n 20 "$work/kernel-build.log" >&2
		echo "study: building the benchmark kernel failed (log: $work/kernel-build.log)" >&2
		exit 10
	fi
	kernel=$BUILD/bench-kernel/kernel/bzImage
	series="patches $(cut -c1-4 "$BUILD/bench-kernel/kernel/series" 2>/dev/null | tr '\n' ' ')"
fi

# 2. The userspace tools the guest runs (cidctl, cid-analyze: make).
cidctl=$BUILD/userspace/cidctl
analyze=$BUILD/userspace/cid-analyze/cid-analyze
[ -x "$analyze" ] || analyze=$(find "$BUILD/userspace" -type f -name cid-analyze -perm -u+x -print -quit 2>/dev/null)
[ -x "$cidctl" ] && [ -n "$analyze" ] || vm_die "build first (make): no cidctl or cid-analyze under $BUILD/userspace"
for h in launch unshared; do
	[ "$work/study-$h" -nt bench/study/$h.c ] || gcc -O2 -Wall -static -o "$work/study-$h" bench/study/$h.c
done

# 3. The tree, once.
tree=$cache/tree
step "Debian 12 tree: $tree"
debian_tree "$tree" "$cache/debootstrap.log" --variant=minbase --include=python3,perl,redis-server,nginx-light ||
	{ tail -n 5 "$cache/debootstrap.log" >&2; echo "study: debootstrap failed (log: $cache/debootstrap.log)" >&2; exit 12; }

# What images built from such a tree remove: downloaded packages and lists.
rm -rf "$tree"/var/cache/apt/archives/*.deb "$tree"/var/lib/apt/lists/*
tree_mib=$(($(du -sk "$tree" | cut -f1) / 1024))
tree_files=$(find "$tree" -type f | wc -l)

# 4. The image: shared/ + copy/1..N, rebuilt when the tree or the layout
# changes (the key: every file's path, size and mtime, the copy count and
# this layout's version).
layout=1
img=$cache/study-$users.img
key=$( (echo "layout $layout users $users"; cat "$tree.args"; find "$tree" -printf '%P %s %T@ %m\n' | LC_ALL=C sort) |
	sha256sum | cut -c1-64)
if [ -f "$img" ] && [ "$(cat "$img.key" 2>/dev/null)" = "$key" ]; then
	step "image unchanged: $img"
else
	step "building the image $img (the tree and $users copies)"
	rm -f "$img" "$img.key"
	stage=$cache/stage
	rm -rf "$stage"
	mkdir -p "$stage/copy"
	cp -a "$tree" "$stage/shared"
	for u in $(seq 1 "$users"); do cp -a "$tree" "$stage/copy/$u"; done
	kib=$(du -sk "$stage" | cut -f1)
	files=$(find "$stage" | wc -l)
	truncate -s $((kib * 5 / 4 / 1024 + 256))M "$img.tmp"
	mkfs.ext4 -q -F -L cid-study -N $((files * 3 / 2 + 10000)) -d "$stage" "$img.tmp" ||
		vm_die "mkfs.ext4 -d $stage failed"
	rm -rf "$stage"
	mv "$img.tmp" "$img"
	echo "$key" >"$img.key"
fi

# 5. The plan: measurements without tags first (the guest tags the copies
# before the first measurement that wants them).
scenarios=${CID_STUDY_SCENARIOS:-ts zi}
configs=${CID_STUDY_CONFIGS:-stock nm ksm nmksm}
plan=$work/plan
if [ -n "${CID_STUDY_PLAN:-}" ]; then
	cp "$CID_STUDY_PLAN" "$plan"
elif [ $demo = 1 ]; then
	# One start on the stock kernel measured twice (stock, then KSM after
	# ksmd's scans), one on the tagged copies; one user is user 1's share
	# of the stock snapshot (report.py).
	printf '%s\n' "zi $users stock+ksm" "zi $users nm" >"$plan"
else
	# The one-user base first, then the largest N first, so that a run cut
	# short still has the figures the targets need.  One user of one tree
	# is the same in every scenario (measured as ts 1).
	want() { case " $configs " in *" $1 "*) return 0 ;; esac; return 1; }
	{
		echo "ts 1 stock"
		for n in $(seq "$users" -1 2); do
			for c in stock ksm; do
				want $c || continue
				for sc in $scenarios; do echo "$sc $n $c"; done
			done
		done
		want ksm && echo "ts 1 ksm"
		for n in $(seq "$users" -1 2); do
			for c in nm nmksm; do
				want $c || continue
				# The terminal server's one tree is never tagged.
				for sc in $scenarios; do [ "$sc" = ts ] || echo "$sc $n $c"; done
			done
		done
	} >"$plan"
fi

# 6. The initramfs.
root=$work/root
vm_base_root "$root"
vm_add_binary "$root" "$cidctl" /usr/bin/cidctl
vm_add_binary "$root" "$analyze" /usr/bin/cid-analyze
vm_add_binary "$root" "$work/study-launch" /usr/bin/study-launch
vm_add_binary "$root" "$work/study-unshared" /usr/bin/study-unshared
# Without their debugging information (cidctl is 15 MB with it): less for
# the guest to unpack under TCG at every boot.
strip --strip-debug "$root/usr/bin/cidctl" "$root/usr/bin/cid-analyze"
mkdir -p "$root/study"
cp bench/study/guest.sh bench/study/work.py bench/study/work.pl "$plan" "$root/study/"
count=$(wc -l <"$plan")
tmo=${CID_STUDY_TIMEOUT:-$((600 + count * 900))}
vm_add_suite "$root" study "$tmo" "$guest_env sh /study/guest.sh"
vm_pack "$root" "$work/initrd.gz"

if [ $prepare = 1 ]; then
	step "prepared: $img, $work/initrd.gz"
	exit 0
fi

# 7. Boot, once per run.
export CID_VM_ACCEL=${CID_VM_ACCEL:-$(vm_accel "$kernel")}
results=()
booted=0
for b in $(seq 1 "$runs"); do
	step "run $b of $runs: $count measurements ($(tr '\n' ',' <"$plan" | sed 's/,$//'))"
	set +e
	# The guest's progress (its PHASE lines, seconds since it booted) as it
	# goes, while QEMU runs in the background.
	: >"$work/results.$b.log"
	vm_boot "$kernel" "$work/initrd.gz" "$work/console.$b.log" "$work/results.$b.log" $((tmo + 120)) "$img" &
	qemu=$!
	tail -n +1 -F --pid=$qemu "$work/results.$b.log" 2>/dev/null |
		sed -u -n 's/\r$//; s/^PHASE \([0-9.]*\) \(.*\)$/vm:   guest [\1 s] \2/p'
	wait $qemu
	rc=$?
	set -e
	tr -d '\r' <"$work/results.$b.log" >"$work/results.$b.txt"
	if grep -q '^RESULT setup kernel' "$work/results.$b.txt"; then booted=1; fi
	grep -q '^ok 1 study' "$work/results.$b.txt" || vm_log "run $b did not finish (qemu exit $rc; console: $work/console.$b.log)"
	grep '^STUDY-ERROR' "$work/results.$b.txt" | sed 's/^/  /' || true
	if problems=$(vm_console_problems "$work/console.$b.log"); then
		echo "study: the kernel reported problems in run $b:" >&2
		echo "$problems" | sed -n '1,20s/^/  | /p' >&2
	fi
	results+=("$work/results.$b.txt")
done
if [ $booted = 0 ]; then
	echo "study: the guest did not boot (console: $work/console.1.log)" >&2
	tail -n 15 "$work/console.1.log" | tr -d '\r' | sed 's/^/  | /' >&2
	exit 11
fi
if grep -q '^RESULT setup named_merging absent' "${results[0]}"; then
	echo "study: the kernel $kernel lacks named merging (no /sys/kernel/mm/cid)" >&2
	exit 11
fi

# 8. Report.
step "report"
python3 bench/study/report.py --analyze "$analyze" --out "$out" --series "$series" \
	--tree "$tree_files files, $tree_mib MiB ($(cat "$tree.args"))" --accel "$CID_VM_ACCEL" \
	--mode "$([ $demo = 1 ] && echo demo || echo study)" \
	"${results[@]}"
step "done"
