#!/bin/bash
# Indexing side by side with the duplicate finders a user would otherwise
# run (Debian's rmlint, jdupes, rdfind, fdupes) on the same trees, in one
# run, cold (page cache dropped before each run) and warm:
#   dist:  three copies of a debootstrapped Debian 12 minbase tree
#          (cached in $CID_CACHE/bench, default ~/.cache/cid/bench; copies of
#          /usr/lib where no mirror is reachable)
#   usr:   /usr, a tree of mostly distinct files ($BENCH_USR overrides; empty: skipped)
# For cidctl the time is `cidctl scan` into a fresh index plus `cidctl dups
# --json`: what it takes to go from nothing to the list of duplicates.
# Warm runs are repeated ($BENCH_ROUNDS, default 3, every tool in turn) and
# their medians compared; "again" is cidctl's scan of the same, unchanged
# trees into the index a warm run left, plus dups: a host's next run, which
# the other tools, keeping no state, pay in full (their warm medians).
# Every tool's duplicate groups are mapped to inodes and compared with
# cidctl's (files of 1 byte or more; hardlinks are one inode).
# Results: bench/results/index.txt (and index.json).
# Needs root (drop_caches), rmlint jdupes rdfind fdupes debootstrap
# (scripts/deps.d/bench.txt).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CIDCTL=${CIDCTL:-$ROOT/build/userspace/cidctl}
CACHE=${CID_CACHE:-$HOME/.cache/cid}/bench
OUT=${BENCH_OUT:-$ROOT/bench/results/index.txt}
RUN_TIMEOUT=${BENCH_TIMEOUT:-600}
USR=${BENCH_USR-/usr}

for t in rmlint jdupes rdfind fdupes; do
	command -v "$t" >/dev/null || { echo "bench/index: $t missing (make deps)" >&2; exit 1; }
done
[ -x "$CIDCTL" ] || { echo "bench/index: no cidctl at $CIDCTL (make)" >&2; exit 1; }

mkdir -p "$CACHE"
if [ ! -d "$CACHE/bookworm" ]; then
	if command -v debootstrap >/dev/null &&
		debootstrap --variant=minbase bookworm "$CACHE/bookworm.tmp" >"$CACHE/debootstrap.log" 2>&1; then
		mv "$CACHE/bookworm.tmp" "$CACHE/bookworm"
	else
		echo "bench/index: debootstrap failed (see $CACHE/debootstrap.log); using /usr/lib" >&2
		rm -rf "$CACHE/bookworm.tmp"
	fi
fi
SRC="$CACHE/bookworm"
[ -d "$SRC" ] || SRC=/usr/lib
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/cid-bench-index.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
for i in 1 2 3; do cp -a "$SRC" "$WORK/copy$i"; done

TREES=(--tree "dist=$WORK/copy1:$WORK/copy2:$WORK/copy3")
[ -n "$USR" ] && TREES+=(--tree "usr=$USR")
python3 "$HERE/compare.py" --cidctl "$CIDCTL" --timeout "$RUN_TIMEOUT" --work "$WORK" --out "$OUT" \
	--rounds "${BENCH_ROUNDS:-3}" \
	"${TREES[@]}" --source "$SRC"
