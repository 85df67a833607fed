#!/bin/bash
# Issue-3 benchmark: named merging measured inside a QEMU guest running the
# patched kernel, tagged against untagged in the same boot.
#
#   memory       Cached growth (/proc/meminfo) after reading N = 1, 2, 4, 8
#                identical copies of a real tree (regular files of host
#                /usr/lib, CID_BENCH_TREE_MB MiB, default 112) in full,
#                without tags and after CID_IOC_TAG on every file
#   performance  warm-cache sequential read() MiB/s, mmap read-fault cost per
#                page, open+close and open+4 KiB pread+close latency, on
#                four 32 MiB files of each kind (distinct contents), untagged
#                vs tagged measured alternately; the guest boots
#                CID_BENCH_BOOTS times (default 3) and each boot's ratios
#                are reported with their median
#   instructions a locked read-modify-write, a call and return, in the guest
#                and on the host (cidbench atomic), for scale
#
# Writes bench/results/vm.txt.  On a kernel without named merging it runs
# the untagged half and says so.  Boots a benchmark kernel: the series built
# with kernel/config/cid-test.config + cid-bench.config (no lockdep,
# DEBUG_VM or DEBUG_LIST), kept in $CID_BENCH_CACHE (default
# ~/.cache/cid-bench) and $BUILD/bench-kernel.
# Environment: BUILD, CID_BENCH_CACHE, CID_BENCH_TREE_SRC (default /usr/lib),
# CID_BENCH_TREE_MB, CID_BENCH_BOOTS, CID_VM_ACCEL, CID_VM_MEM (default 3072),
# CID_BENCH_OUT.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
BUILD=${BUILD:-build}
export BUILD
. tests/vm/lib.sh
out=${CID_BENCH_OUT:-bench/results/vm.txt}
tree_src=${CID_BENCH_TREE_SRC:-/usr/lib}
tree_mb=${CID_BENCH_TREE_MB:-112}
export CID_VM_MEM=${CID_VM_MEM:-3072}
work=$BUILD/bench-vm
mkdir -p "$work" "$(dirname "$out")"
work=$(cd "$work" && pwd)

# The benchmark kernel (tests/vm/lib.sh: the test kernel without its
# debugging options, in a kept tree of its own).
kbuild=$BUILD/bench-kernel
vm_log "building the benchmark kernel (log: $work/kernel-build.log)"
vm_bench_kernel "$work/kernel-build.log" ||
	{ tail -n 30 "$work/kernel-build.log" >&2; vm_die "building the benchmark kernel failed (log: $work/kernel-build.log)"; }
kernel=$kbuild/kernel/bzImage
# The patches the bzImage was built with (written by kernel/build.sh).
series=$(cut -c1-4 "$kbuild/kernel/series" 2>/dev/null | tr '\n' ' ')
series=${series:-unknown}

# 1. The guest program, against the series' UAPI header.
mkdir -p "$work/include/linux"
scripts/extract-uapi.sh >"$work/include/linux/cid.h"
gcc -O2 -Wall -static -I "$work/include" -o "$work/cidbench" bench/vm/cidbench.c

# 2. The data disk: 8 real copies of the tree, 3 copies of a random file.
stage=$work/stage
rm -rf "$stage"
mkdir -p "$stage/tree/1" "$stage/perf"
find "$tree_src" -xdev -type f -readable -printf '%s %P\n' 2>/dev/null | LC_ALL=C sort -k2 |
	awk -v max=$((tree_mb << 20)) '{ if (sum + $1 > max) next; sum += $1; sub(/^[0-9]+ /, ""); print }' \
	>"$work/tree.list"
(cd "$tree_src" && tar -cf - --no-recursion -T "$work/tree.list") | tar -xf - -C "$stage/tree/1"
tree_files=$(wc -l <"$work/tree.list")
tree_kib=$(du -sk --apparent-size "$stage/tree/1" | cut -f1)
[ "$tree_kib" -ge $((100 << 10)) ] || vm_die "tree from $tree_src is only ${tree_kib} KiB; need >= 100 MiB (CID_BENCH_TREE_SRC)"
for i in 2 3 4 5 6 7 8; do cp -a "$stage/tree/1" "$stage/tree/$i"; done
for k in 1 2 3 4; do
	head -c $((32 << 20)) /dev/urandom >"$stage/perf/untagged-$k.bin"
	cp "$stage/perf/untagged-$k.bin" "$stage/perf/tagged-a-$k.bin"
	cp "$stage/perf/untagged-$k.bin" "$stage/perf/tagged-b-$k.bin"
done
img=$work/bench-ext4.img
rm -f "$img"
truncate -s $(((tree_kib * 8 / 1024 + 384 + 512) * 5 / 4))M "$img"
mkfs.ext4 -q -F -L cid-bench -d "$stage" "$img"
rm -rf "$stage"

# 3. Boot.
root=$work/root
vm_base_root "$root"
vm_add_binary "$root" "$work/cidbench" /usr/bin/cidbench
cp bench/vm/guest.sh "$root/bench.sh"
vm_add_suite "$root" bench "${CID_BENCH_TIMEOUT:-3000}" sh /bench.sh
vm_pack "$root" "$work/initrd.gz"
accel=$(vm_accel "$kernel")
export CID_VM_ACCEL=$accel
# Where a file's page-cache frames fall moves TCG's figures by a few percent
# from boot to boot (cidbench.c), so the guest runs several times: memory
# and tagging are reported from the first boot, performance from each.
boots=${CID_BENCH_BOOTS:-3}
rc=0
for b in $(seq 1 "$boots"); do
	set +e
	vm_boot "$kernel" "$work/initrd.gz" "$work/console.$b.log" "$work/results.$b.log" \
		$((${CID_BENCH_TIMEOUT:-3000} + 120)) "$img"
	r=$?
	set -e
	[ "$rc" = 0 ] && rc=$r
	tr -d '\r' <"$work/results.$b.log" >"$work/results.$b.txt"
done
cat "$work"/console.[0-9]*.log >"$work/console.log"
rm -f "$img"

# The same measurement on the host's CPU, for scale.
host_atomic=$("$work/cidbench" atomic 2>/dev/null | awk '{ v[$1] = $2 } END { printf "%s, %s, %s and %s ns", v["atomic_rmw_ns"], v["plain_rmw_ns"], v["call_ret_ns"], v["indirect_call_ret_ns"] }')

# 4. Report.
# val KEY [BOOT]
val() { awk -v k="$1" '$1 == "RESULT" && $2 == k { $1 = $2 = ""; sub(/^ +/, ""); v = $0 } END { print v }' "$work/results.${2:-1}.txt"; }
problems=$(vm_console_problems "$work/console.log" || true)
ok=1
for b in $(seq 1 "$boots"); do
	grep -q '^ok 1 bench' "$work/results.$b.txt" || ok=0
done
{
	echo "# bench/vm: named merging inside a QEMU guest (issue 3)"
	echo "date:     $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "kernel:   $(val kernel), patches applied: $series"
	echo "config:   kernel/config/cid-test.config + cid-bench.config (-O2; no lockdep, DEBUG_VM, DEBUG_LIST)"
	echo "guest:    $accel, ${CID_VM_CPUS:-2} vCPUs, $(( $(val mem_total_kB | sed 's/^$/0/') / 1024 )) MiB RAM, ext4 on virtio-blk"
	[ "$accel" = tcg ] && echo "          (TCG emulates the CPU: absolute times are far below host speed; compare the columns)"
	echo "tree:     $tree_files regular files, $((tree_kib / 1024)) MiB, from host $tree_src; 8 copies"
	if [ "$ok" = 0 ]; then
		echo
		echo "RESULT: the guest benchmark did not complete (qemu exit $rc); console: $work/console.log"
		tail -n 20 "$work/console.log" | tr -d '\r' | sed 's/^/  | /'
	fi
	if [ -n "$problems" ]; then
		echo
		echo "KERNEL PROBLEMS on the console:"
		echo "$problems" | sed -n '1,30s/^/  | /p'
	fi
	have=$(val named_merging)
	echo
	echo "Memory: Cached growth after reading N copies of the tree in full (MiB)"
	printf '  %-3s %10s %10s %10s %s\n' N untagged tagged saved "cid pages_shared/pages_sharing"
	for n in 1 2 4 8; do
		u=$(val mem_untagged_$n) t=$(val mem_tagged_$n)
		if [ -n "$t" ] && [ -n "$u" ]; then
			printf '  %-3s %10.1f %10.1f %9.0f%% %s/%s\n' "$n" "$(echo "$u/1024" | bc -l)" "$(echo "$t/1024" | bc -l)" \
				"$(echo "if ($u > 0) 100*($u-$t)/$u else 0" | bc -l)" "$(val tagged_${n}_pages_shared)" "$(val tagged_${n}_pages_sharing)"
		elif [ -n "$u" ]; then
			printf '  %-3s %10.1f %10s\n' "$n" "$(echo "$u/1024" | bc -l)" "-"
		fi
	done
	echo
	echo "Performance, warm cache, 32 MiB files: 4 untagged and 4 tagged, each of its own"
	echo "random contents (each file's best of 16 rounds over 8 buffer and mapping placements,"
	echo "averaged over the 4; untagged and tagged measured alternately in one run; 'no tags'"
	echo "measured the untagged files earlier, before any file was tagged); one row per boot,"
	echo "then the median of the boots' ratios"
	printf '  %-24s %6s %10s %10s %10s %8s %8s\n' "" boot "no tags" untagged tagged "t/u" "t/n"
	ratio() { [ -n "$1" ] && [ -n "$2" ] && printf '%.2f' "$(echo "$1/$2" | bc -l)" || echo -; }
	median() { tr ' ' '\n' | grep -v '^-*$' | sort -n | awk '{ v[NR] = $1 } END { if (NR) printf "%.2f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; else print "-" }'; }
	for m in read_MiBps mmap_fault_ns_per_page open_close_ns open_read4k_close_ns; do
		rus= rns= label=$m
		for b in $(seq 1 "$boots"); do
			n=$(val notags_$m "$b") u=$(val untagged_$m "$b") t=$(val tagged_$m "$b")
			ru=$(ratio "$t" "$u") rn=$(ratio "$t" "$n")
			rus="$rus $ru" rns="$rns $rn"
			printf '  %-24s %6s %10s %10s %10s %8s %8s\n' "$label" "$b" "${n:--}" "${u:--}" "${t:--}" "$ru" "$rn"
			label=
		done
		[ "$boots" -gt 1 ] && printf '  %-24s %6s %10s %10s %10s %8s %8s\n' "" median "" "" "" \
			"$(echo $rus | median)" "$(echo $rns | median)"
	done
	if [ -n "$(val tagged_large_folio_pages_pct)" ]; then
		echo
		echo "Page cache behind the 32 MiB files (cidbench frames, boot 1): untagged (ext4)" \
			"$(val untagged_large_folio_pages_pct)% of pages in large folios, $(val untagged_frame_runs_per_1000_pages) runs of"
		echo "contiguous frames per 1000 pages; tagged (the shared content)" \
			"$(val tagged_large_folio_pages_pct)% in large folios, $(val tagged_frame_runs_per_1000_pages) runs per 1000 pages"
	fi
	if [ -n "$(val atomic_rmw_ns)" ]; then
		echo
		echo "Instruction costs in this guest (cidbench atomic, 1M in a loop, best of 16): a locked read-modify-write"
		echo "(lock xadd, as in spin_lock()) $(val atomic_rmw_ns) ns, a plain one $(val plain_rmw_ns) ns, a call and return of a"
		echo "function not inlined $(val call_ret_ns) ns, through a pointer $(val indirect_call_ret_ns) ns; on the host: $host_atomic"
	fi
	if [ -n "$(val untagged_cold_read_MiBps)" ]; then
		echo
		echo "Cold sequential read of the 32 MiB files (caches dropped before each read; median of 5"
		echo "rounds per file, mean of 4 files); a tagged file's read fills the content from its own"
		echo "file, verifying every 4 KiB block against the tag's digests"
		printf '  %-6s %10s %10s %8s\n' boot untagged tagged "t/u"
		for b in $(seq 1 "$boots"); do
			u=$(val untagged_cold_read_MiBps "$b") t=$(val tagged_cold_read_MiBps "$b")
			printf '  %-6s %10s %10s %8s\n' "$b" "${u:--}" "${t:--}" "$(ratio "$t" "$u")"
		done
	fi
	if [ -n "$(val slowuntagged_cold_read_MiBps)" ]; then
		echo
		echo "The same from storage slower than the guest's SHA-256: one untagged and one tagged file read"
		echo "from a cgroup whose reads of the disk blk-throttle caps at $(($(val slow_rbps) / 1048576)) MiB/s.  'serial' is what a"
		echo "fill that waited for its source and then hashed it would reach, 1/(1/slow untagged + 1/H), with"
		echo "H = 1/(1/tagged - 1/untagged) from the unthrottled reads above (an over-estimate of the hashing"
		echo "rate if fills overlap, so 'serial' is a generous bound)"
		printf '  %-6s %10s %10s %8s %10s %8s\n' boot untagged tagged "t/u" serial "s/u"
		for b in $(seq 1 "$boots"); do
			u=$(val slowuntagged_cold_read_MiBps "$b") t=$(val slowtagged_cold_read_MiBps "$b")
			u0=$(val untagged_cold_read_MiBps "$b") t0=$(val tagged_cold_read_MiBps "$b") s=
			if [ -n "$u" ] && [ -n "$u0" ] && [ -n "$t0" ]; then
				s=$(printf '%.1f' "$(echo "h = 1 / (1 / $t0 - 1 / $u0); 1 / (1 / $u + 1 / h)" | bc -l)")
			fi
			printf '  %-6s %10s %10s %8s %10s %8s\n' "$b" "${u:--}" "${t:--}" "$(ratio "$t" "$u")" "${s:--}" "$(ratio "$s" "$u")"
		done
	fi
	if [ -n "$(val tagged)" ]; then
		echo
		echo "Tagging: $(val tagged) of $(val tag_files) files tagged ($(val tag_errors) errors) in $(val tag_seconds)s," \
			"$(val tag_MBps) MB/s of the kernel's reading and hashing;" \
			"query of a tagged twin: $(val query_flags), content_pages $(val query_content_pages), tagged_inodes $(val query_tagged_inodes)"
		# What tagging the 8 copies added (the 32 MiB files were tagged before).
		db=$(val after_tag_digest_bytes) mb=$(val after_tag_metadata_bytes) ti=$(val after_tag_tagged_inodes)
		db0=$(val before_tag_digest_bytes) mb0=$(val before_tag_metadata_bytes) ti0=$(val before_tag_tagged_inodes)
		if [ -n "$db" ] && [ -n "$mb" ] && [ -n "$db0" ] && [ -n "$mb0" ] && [ "${tree_kib:-0}" -gt 0 ]; then
			db=$((db - db0)) mb=$((mb - mb0)) ti=$((ti - ${ti0:-0}))
			echo "Metadata of tagging 8 copies: digests $db bytes for their $((tree_kib / 1024)) MiB of distinct content" \
				"($(printf '%.2f' "$(echo "$db * 100 / ($tree_kib * 1024)" | bc -l)")% of it, $(echo "$db * 1048576 / $tree_kib / 1024" | bc) KiB per GiB);" \
				"all of named merging's metadata $mb bytes: $(( (mb - db) / (ti > 0 ? ti : 1) )) bytes per tagged file besides the digests"
		fi
	fi
	echo
	if [ "$have" = present ] && [ -n "$(val mem_tagged_8)" ]; then
		u=$(val mem_untagged_8) t=$(val mem_tagged_8) u1=$(val mem_untagged_1)
		echo "Summary: 8 copies cost $((u / 1024)) MiB of page cache untagged and $((t / 1024)) MiB tagged" \
			"($(printf '%.2f' "$(echo "$t/$u1" | bc -l)")x one copy, untagged $(printf '%.2f' "$(echo "$u/$u1" | bc -l)")x)."
	elif [ "$have" = absent ]; then
		echo "Summary: kernel lacks named merging (no /sys/kernel/mm/cid, CID_IOC_QUERY gives ENOTTY):" \
			"only the untagged half ran (patches applied: $series)."
	else
		echo "Summary: no result (see above)."
	fi
} >"$out.tmp"
mv "$out.tmp" "$out"
cat "$out"
[ "$ok" = 1 ] && [ -z "$problems" ]
