#!/bin/bash
# make demo: the short form of the study (bench/study/run.sh --demo).
#
# Builds the patched benchmark kernel (kept tree: later runs rebuild
# nothing), a Debian 12 tree with python3, perl, redis-server and nginx
# (debootstrap once, cached), boots it in QEMU once and runs three
# zero-install users, each from their own copy of the tree: started on the
# stock kernel and measured, measured again after ksmd's scans (KSM), and
# started again on copies whose mapped files are tagged (named merging);
# prints the frames each needs against one user, what that means, and
# where the chart was written, with the guest's progress as it goes.
#
# Where the kernel cannot be built or booted, or no Debian tree can be made,
# it says so and runs the host-side demo instead (scripts/demo-host.sh:
# cidctl report on three copies of a tree, cid-analyze of live processes).
#   CID_DEMO_HOST=1   the host-side demo only
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$top/$BUILD ;; esac
export BUILD
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
fallback() {
	say "$1: running the host-side demo instead (no kernel needed)"
	exec "$top/scripts/demo-host.sh"
}
[ "${CID_DEMO_HOST:-0}" = 1 ] && fallback "CID_DEMO_HOST=1"
[ "$(id -u)" = 0 ] || fallback "not root (debootstrap and cid-analyze need root)"

start=$(date +%s)
"$top/bench/study/run.sh" --demo
rc=$?
case $rc in
0)
	out=${CID_STUDY_OUT:-$BUILD/study/demo}
	say "make demo took $(($(date +%s) - start)) s"
	echo "table: $out.txt   figures: $out.json   chart: $out.svg"
	;;
10) fallback "the patched kernel could not be built (log: $BUILD/study/kernel-build.log)" ;;
11) fallback "the patched kernel did not boot under QEMU, or it lacks named merging (console: $BUILD/study/console.1.log)" ;;
12) fallback "no Debian tree could be built (log: ${CID_STUDY_CACHE:-${CID_CACHE:-$HOME/.cache/cid}/study}/debootstrap.log)" ;;
*) exit "$rc" ;;
esac
