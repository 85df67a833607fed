#!/bin/bash
# Check that every patch of kernel/patches/series builds on its own: build
# the kernel for each prefix 1..k of the series in turn, stopping at the
# first failure, then the whole series once more with CONFIG_CID_PAGECACHE
# off (the stubs in include/linux/cid.h).
#
#   kernel/check-series.sh [FIRST]    start at prefix FIRST (default 1)
#
# The kernel is kernel/config/cid-check.config (tinyconfig plus what
# fs/cid.c calls into), built in a kept tree of its own
# ($CID_CHECK_CACHE, default ~/.cache/cid-check) so that the test kernel's
# tree is left alone.  Each step only recompiles what the next patch
# changed; a patch that touches include/linux/cid.h (fs.h includes it)
# costs a full rebuild of that small kernel.  Not run by CI.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
first=${1:-1}
mapfile -t series < <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^$/d' kernel/patches/series)
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
n=${#series[@]}
cache=${CID_CHECK_CACHE:-$HOME/.cache/cid-check}
config=${CID_CHECK_CONFIG:-$top/kernel/config/cid-check.config}
check_build() {
	CID_CACHE=$cache CID_KERNEL_CONFIG=$config BUILD=${BUILD:-build}/check-series kernel/build.sh
}
for ((k = first; k <= n; k++)); do
	printf '%s\n' "${series[@]:0:k}" >"$tmp"
	echo "=== check-series: $k/$n: ${series[k - 1]}"
	start=$(date +%s)
	if ! CID_SERIES=$tmp check_build >"${TMPDIR:-/tmp}/check-series.$$.log" 2>&1; then
		tail -n 40 "${TMPDIR:-/tmp}/check-series.$$.log"
		echo "check-series: FAILED at patch $k/$n: ${series[k - 1]}" >&2
		echo "  (full log: ${TMPDIR:-/tmp}/check-series.$$.log)" >&2
		exit 1
	fi
	grep -E 'warning:|offset' "${TMPDIR:-/tmp}/check-series.$$.log" | grep -v '^  ' | sed 's/^/  /' || true
	echo "    ok ($(($(date +%s) - start))s)"
done
echo "check-series: all $n prefixes build"

# The whole series with named merging configured out.
grep -v '^CONFIG_CID_PAGECACHE' "$config" >"$tmp"
echo '# CONFIG_CID_PAGECACHE is not set' >>"$tmp"
echo "=== check-series: $n/$n with CONFIG_CID_PAGECACHE off"
start=$(date +%s)
if ! config=$tmp check_build >"${TMPDIR:-/tmp}/check-series.$$.log" 2>&1; then
	tail -n 40 "${TMPDIR:-/tmp}/check-series.$$.log"
	echo "check-series: FAILED with CONFIG_CID_PAGECACHE off" >&2
	exit 1
fi
echo "    ok ($(($(date +%s) - start))s)"
rm -f "${TMPDIR:-/tmp}/check-series.$$.log"
echo "check-series: every prefix builds, and the series builds with named merging off"
