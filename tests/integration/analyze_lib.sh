# shellcheck shell=bash
# Shared by the analyze_*_test.sh scripts (sourced after lib.sh): the
# cid-analyze binary, the synthetic helper, and helpers started in the
# background whose pids are killed at exit.
: "${CID_ANALYZE:?set CID_ANALYZE to the cid-analyze binary (ctest does this)}"
: "${ANALYZE_HELPER:?set ANALYZE_HELPER to tests/helpers/analyze_helper (ctest does this)}"
RANGE=600000000000-610000000000   # where analyze_helper puts its regions
HELPER_PIDS=()

[ "$(id -u)" = 0 ] && [ -r /proc/kpageflags ] || skip "needs root (/proc/kpageflags, frame numbers)"

analyze_cleanup() {
	local rc=$1
	[ ${#HELPER_PIDS[@]} -eq 0 ] || kill -9 "${HELPER_PIDS[@]}" 2>/dev/null || true
	if declare -F extra_cleanup >/dev/null; then extra_cleanup || true; fi
	(exit "$rc")
	cleanup
}
trap 'analyze_cleanup $?' EXIT

# helper NAME ARGS...: start analyze_helper, wait for "ready"; sets NAME to
# its pid list ("pid child...").
helper() {
	local name=$1 out line
	shift
	out=$WORK/helper.$name
	: >"$out"  # exists before the background job gets to open it
	"$ANALYZE_HELPER" "$@" >"$out" 2>&1 &
	disown
	for _ in $(seq 500); do
		line=$(head -1 "$out")
		case $line in ready*) break ;; esac
		sleep 0.01
	done
	case $line in ready*) ;; *) cat "$out" >&2; fail "helper $* did not start" ;; esac
	line=${line#ready }
	# shellcheck disable=SC2206
	HELPER_PIDS+=($line)
	printf -v "$name" '%s' "$line"
}

# state PID: the process's state letter (t = stopped by a tracer).
state() { awk '{sub(/.*\) /, ""); print substr($0, 1, 1)}' "/proc/$1/stat" 2>/dev/null || echo gone; }
