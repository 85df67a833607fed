#!/bin/bash
# Check that every patch of kernel/patches/series builds on its own: build
# the kernel for each prefix 1..k of the series in turn (incrementally, in
# the same kept trees as make kernel), stopping at the first failure.
#
#   kernel/check-series.sh [FIRST]    start at prefix FIRST (default 1)
#
# Each step only recompiles what the next patch changed, but a patch that
# touches a widely included header costs a near-full rebuild.  Not run by CI.
# The kept trees end up at the full series again.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
first=${1:-1}
mapfile -t series < <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^$/d' kernel/patches/series)
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
n=${#series[@]}
for ((k = first; k <= n; k++)); do
	printf '%s\n' "${series[@]:0:k}" >"$tmp"
	echo "=== check-series: $k/$n: ${series[k - 1]}"
	start=$(date +%s)
	if ! CID_SERIES=$tmp BUILD=${BUILD:-build}/check-series kernel/build.sh >"${TMPDIR:-/tmp}/check-series.$$.log" 2>&1; then
		tail -n 40 "${TMPDIR:-/tmp}/check-series.$$.log"
		echo "check-series: FAILED at patch $k/$n: ${series[k - 1]}" >&2
		echo "  (full log: ${TMPDIR:-/tmp}/check-series.$$.log)" >&2
		exit 1
	fi
	grep -E 'warning:|offset' "${TMPDIR:-/tmp}/check-series.$$.log" | grep -v '^  ' | sed 's/^/  /' || true
	echo "    ok ($(($(date +%s) - start))s)"
done
rm -f "${TMPDIR:-/tmp}/check-series.$$.log"
echo "check-series: all $n prefixes build"
