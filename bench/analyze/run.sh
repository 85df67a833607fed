#!/bin/bash
# cid-analyze speed (issue 11): a snapshot of more than 1 GiB of resident
# memory across synthetic processes (tests/helpers/analyze_helper): pages
# per second, how long the targets stay stopped, against smem (Debian) on
# the same processes in the same run, whose PSS and USS totals must agree
# with cid-analyze's within rounding (smem sums the kernel's per-mapping kB
# figures from /proc/PID/smaps, each rounded down).
#
# The processes: 4 x 128 MiB of distinct anonymous pages, 2 x 128 MiB
# written separately with identical contents, one process of 96 MiB forked
# twice (shared by fork), 2 identical 128 MiB files on different inodes each
# mapped by one process; about 1.2 GiB resident, 1.6 GiB of mappings.
# The floor in the same run: bench/analyze/read_floor.c (built here with
# cc) reads the same frames' contents the cheapest way cid-analyze may,
# with and without XXH3, and nothing else; and how long python3 takes to
# start, which is most of smem's time.
# CID_ANALYZE_BASELINE=<an older cid-analyze> times that binary too, each
# of its runs right after one of this one's (build one from an older commit
# as bench/hash/run.sh describes, target cid-analyze).
# Results: bench/results/analyze.txt (earlier runs kept below the new one).
# Knob: CID_BENCH_REPS (3; best of).  Needs root.
# shellcheck disable=SC2154 # t_KEY and c_KEY are set by try() through eval
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$top/$BUILD ;; esac
ANALYZE=${CID_ANALYZE:-$BUILD/userspace/cid-analyze/cid-analyze}
HELPER=${ANALYZE_HELPER:-$BUILD/tests/analyze_helper}
REPS=${CID_BENCH_REPS:-3}
BASELINE=${CID_ANALYZE_BASELINE:-}
RESULTS=$top/bench/results
for f in "$ANALYZE" "$HELPER" ${BASELINE:+"$BASELINE"}; do [ -x "$f" ] || { echo "bench/analyze: build first (make): no $f" >&2; exit 1; }; done
command -v smem >/dev/null || { echo "bench/analyze: smem not installed (make deps)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "bench/analyze: needs root" >&2; exit 1; }
mkdir -p "$RESULTS"
work=$(mktemp -d /var/tmp/cid-bench-analyze.XXXXXX)
pids=()
cleanup() {
	[ ${#pids[@]} -eq 0 ] || kill -9 "${pids[@]}" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

MiB=256  # pages per MiB
start() {
	local out=$work/helper.${#pids[@]} line
	: >"$out"  # exists before the background job gets to open it
	"$HELPER" "$@" >"$out" 2>&1 &
	disown
	for _ in $(seq 3000); do
		line=$(head -1 "$out")
		case $line in ready*) break ;; esac
		sleep 0.01
	done
	case $line in ready*) ;; *) cat "$out" >&2; echo "bench/analyze: helper $* did not start" >&2; exit 1 ;; esac
	# shellcheck disable=SC2206
	pids+=(${line#ready })
}
head -c $((128 << 20)) /dev/urandom >"$work/file1"
cp "$work/file1" "$work/file2"
for s in 1 2 3 4; do start anon $((128 * MiB)) $s; done
start anon $((128 * MiB)) 9
start anon $((128 * MiB)) 9
start anon $((96 * MiB)) 5 fork 2
start map "$work/file1"
start map "$work/file2"
avx2=
grep -qw avx2 /proc/cpuinfo && avx2=-mavx2
${CC:-cc} -O2 $avx2 -o "$work/read_floor" "$top/bench/analyze/read_floor.c"
pattern="^($(IFS='|'; echo "${pids[*]}"))$"

# try KEY OUT CMD...: runs CMD once; if that is KEY's fastest run so far
# (wall time), OUT keeps its output and t_KEY, c_KEY its wall and CPU time
# (user + system).  The commands take turns, REPS rounds: this machine's
# other load moves wall times a lot, and it moves them alike for runs close
# together.
try() {
	local key=$1 out=$2 wall u sy prev
	shift 2
	/usr/bin/time -f '%e %U %S' -o "$out.time" "$@" >"$out.try"
	read -r wall u sy <"$out.time"
	eval "prev=\${t_$key:-}"
	if [ -z "$prev" ] || [ "$(echo "$wall < $prev" | bc -l)" = 1 ]; then
		eval "t_$key=$wall c_$key=$(echo "$u + $sy" | bc -l)"
		mv "$out.try" "$out"
	fi
	rm -f "$out.try" "$out.time"
}
# The interpreter smem runs on (its #! line), to time its start alone.
read -r -a python <<<"$(sed -n '1s/^#! *//p' "$(command -v smem)")"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
floor=
for ((i = 0; i < REPS; i++)); do
	try stop "$work/stop.json" "$ANALYZE" --json "${pids[@]}"
	[ -z "$BASELINE" ] || try base "$work/base.json" "$BASELINE" --json "${pids[@]}"
	# smem reads /proc/PID/smaps of the processes its -P regex selects; the
	# regex is matched against the command line, so select by pid afterwards.
	try smem "$work/smem.txt" smem -H -c "pid uss pss rss" -P analyze_helper
	try python "$work/python.txt" "${python[@]}" -c pass
	# The floor: best of REPS by its read + hash time.
	line=$("$work/read_floor" "${pids[@]}")
	h=$(echo "$line" | awk '{ for (i = 1; i < NF; i++) if ($i == "hash") print $(i + 1) }')
	if [ -z "$floor" ] || [ "$(echo "$h < $floor_hash" | bc -l)" = 1 ]; then floor=$line floor_hash=$h; fi
	try stop1 "$work/stop1.json" "$ANALYZE" --json --threads 1 "${pids[@]}"
	try live "$work/live.json" "$ANALYZE" --json --no-stop "${pids[@]}"
	try verify "$work/verify.json" "$ANALYZE" --json --verify "${pids[@]}"
done
field() { echo "$floor" | awk -v k="$1" '{ for (i = 1; i < NF; i++) if ($i == k) print $(i + 1) }'; }

read -r hashed scan stopped pss_kib uss_kib rss frames <<<"$(python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
s, f = j["snapshot"], j["figures"]
print(s["pages_hashed"], s["scan_seconds"], s["stopped_seconds"], f["pss_kib"], f["uss_kib"], f["rss_pages"], f["mmap_fork"])
' "$work/stop.json")"
read -r smem_uss smem_pss smem_rss smem_n <<<"$(awk -v re="$pattern" '$1 ~ re { u += $2; p += $3; r += $4; n++ } END { print u, p, r, n }' "$work/smem.txt")"
maps=0
for p in "${pids[@]}"; do maps=$((maps + $(wc -l <"/proc/$p/maps"))); done

{
	echo "cid-analyze snapshot benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(uname -r), $(nproc) cores, best of $REPS"
	echo "load average before/after: $load_before / $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "targets: ${#pids[@]} processes, $((rss / MiB)) MiB resident (RSS), $frames distinct frames ($((frames / MiB)) MiB), $maps mappings"
	printf '%-34s %8s %8s %10s %12s %10s\n' "" "wall s" "CPU s" "pages" "pages/s" "stopped s"
	for k in stop ${BASELINE:+base} stop1 live verify; do
		eval "t=\$t_$k c=\$c_$k"
		read -r h sc st <<<"$(python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))["snapshot"]
print(s["pages_hashed"], s["scan_seconds"], s["stopped_seconds"])' "$work/$k.json")"
		case $k in stop) what="cid-analyze (targets stopped)" ;; base) what="baseline cid-analyze (stopped)" ;; stop1) what="cid-analyze --threads 1 (stopped)" ;; live) what="cid-analyze --no-stop" ;; verify) what="cid-analyze --verify (stopped)" ;; esac
		printf '%-34s %8.3f %8.2f %10d %12.0f %10.3f\n' "$what" "$t" "$c" "$h" "$(echo "$h / $sc" | bc -l)" "$st"
	done
	printf '%-34s %8.3f %8.2f %10s %12s %10s\n' "smem -c 'pid uss pss rss'" "$t_smem" "$c_smem" "-" "-" "-"
	python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))["snapshot"]
p = s["phases"]
print("stopped run, %d threads: stop %.3f s, page tables %.3f s, frame flags + contents %.3f s, resume %.3f s; after resuming %.3f s" % (s["threads"], p["stop"], p["pagemap"], p["contents"], p["resume"], p["after"]))
' "$work/stop.json"
	if [ -n "$BASELINE" ]; then
		st_base=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["snapshot"]["stopped_seconds"])' "$work/base.json")
		echo "against the baseline (CID_ANALYZE_BASELINE), same rounds: wall $(printf '%.2f' "$(echo "$t_stop / $t_base" | bc -l)")x, CPU $(printf '%.2f' "$(echo "$c_stop / $c_base" | bc -l)")x, stopped $(printf '%.2f' "$(echo "$stopped / $st_base" | bc -l)")x"
	fi
	echo "stopped per GiB of frames: $(printf '%.3f' "$(echo "$stopped * 262144 / $frames" | bc -l)") s (target: well under 1 s)"
	echo "CPU time per GiB of frames, stopped snapshot: $(printf '%.3f' "$(echo "$c_stop * 262144 / $frames" | bc -l)") s (the whole run, process start to exit)"
	echo "floor, one thread (bench/analyze/read_floor.c, the same $(field frames) frames, $(field pinned) by process_vm_readv):"
	echo "  pagemap of every mapping $(field pagemap) s; contents read $(field read) s; read + XXH3-128 $(field hash) s ($(printf '%.3f' "$(echo "$(field hash) * 262144 / $(field frames)" | bc -l)") s per GiB)"
	echo "  smaps of every target (the kernel's part of smem) $(field smaps) s; ${python[*]} -c pass $(printf '%.3f' "$t_python") s (best of $REPS)"
	floor_min=$(echo "$(field pagemap) + $(field hash) / $(nproc)" | bc -l)
	echo "  so: smem's $(printf '%.3f' "$t_smem") s are $(printf '%.0f' "$(echo "100 * $t_python / $t_smem" | bc -l)")% interpreter start; anything that hashes every frame needs at least the pagemap walk + read + XXH3 spread over $(nproc) idle cores, $(printf '%.3f' "$floor_min") s ($(printf '%.2f' "$(echo "$floor_min / $t_smem" | bc -l)")x smem), before frame flags, its own start and the figures"
	echo "cid-analyze (stopped) took $(printf "%.2f" "$(echo "$t_stop / $t_smem" | bc -l)")x the wall time of smem and $(printf "%.2f" "$(echo "$c_stop / $c_smem" | bc -l)")x its CPU time; smem reads smaps and hashes nothing"
	echo "totals over the ${#pids[@]} processes ($smem_n in smem's output), KiB:"
	printf '  %-6s cid-analyze %12.1f   smem %10d   difference %8.1f\n' PSS "$pss_kib" "$smem_pss" "$(echo "$pss_kib - $smem_pss" | bc -l)"
	printf '  %-6s cid-analyze %12d   smem %10d   difference %8d\n' USS "$uss_kib" "$smem_uss" "$((uss_kib - smem_uss))"
	printf '  %-6s cid-analyze %12d   smem %10d   difference %8d\n' RSS "$((rss * 4))" "$smem_rss" "$((rss * 4 - smem_rss))"
	echo "  (smem rounds each mapping's Pss down to a kB: up to $maps KiB below the exact sum)"
	python3 -c '
import json, sys
f = json.load(open(sys.argv[1]))["figures"]
mf = f["mmap_fork"]
for k, name in (("no_sharing", "no sharing"), ("mmap_fork", "mmap/fork"), ("ksm_shared", "KSM hint all"), ("cbps_shared", "full CBPS"), ("nm_oracle", "named merging oracle")):
    print("  %-22s %8d pages  %.2f" % (name, f[k], f[k] / mf))
' "$work/stop.json"
} >"$work/result.txt"
# The new run on top, the earlier ones kept below it.
{
	cat "$work/result.txt"
	if [ -f "$RESULTS/analyze.txt" ]; then
		echo
		echo "---- earlier runs"
		echo
		sed '/^---- earlier runs$/,+1d' "$RESULTS/analyze.txt"
	fi
} >"$work/all.txt"
cp "$work/all.txt" "$RESULTS/analyze.txt"
cat "$work/result.txt"

# Agreement: PSS within smem's rounding (at most 1 KiB per mapping), USS and RSS exact.
ok=1
[ "$(echo "d = $pss_kib - $smem_pss; d >= 0 && d <= $maps" | bc -l)" = 1 ] || { echo "bench/analyze: PSS disagrees with smem" >&2; ok=0; }
[ "$uss_kib" = "$smem_uss" ] || { echo "bench/analyze: USS disagrees with smem" >&2; ok=0; }
[ "$((rss * 4))" = "$smem_rss" ] || { echo "bench/analyze: RSS disagrees with smem" >&2; ok=0; }
[ "$ok" = 1 ]
