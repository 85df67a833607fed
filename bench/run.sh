#!/bin/bash
# Every benchmark: runs each bench/<section>/run.sh in name order (add a
# section by adding a directory with a run.sh), collects their summaries
# from bench/results/, and fails if any section failed.
#   BENCH_ONLY="hash vm"   run only these sections
# Sections write bench/results/<section>.txt and print a short summary.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export BUILD=${BUILD:-build}
failed=()
for script in "$here"/*/run.sh; do
	section=$(basename "$(dirname "$script")")
	if [ -n "${BENCH_ONLY:-}" ] && [[ " $BENCH_ONLY " != *" $section "* ]]; then
		continue
	fi
	echo "== bench: $section =="
	if ! bash "$script"; then
		echo "bench: $section FAILED" >&2
		failed+=("$section")
	fi
done
if [ "${#failed[@]}" -gt 0 ]; then
	echo "bench: failed sections: ${failed[*]}" >&2
	exit 1
fi
echo "bench: results in bench/results/"
