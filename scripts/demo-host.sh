#!/bin/bash
# The host-side demo (make demo's fallback where the patched kernel cannot
# be built or booted; CID_DEMO_HOST=1): index real duplicated trees the way
# a container host holds them, report what named merging would save, and
# measure it on live processes with cid-analyze.
#
# Builds a minimal Debian (debootstrap --variant=minbase bookworm) once into
# $CID_CACHE/demo (default ~/.cache/cid/demo), copies it three times as if
# each were another container's full-distro rootfs or image layer (distinct
# inodes, identical content, a few files of each changed), scans them with a
# private index, and prints `cidctl report`, the largest duplicates and
# `cidctl status`; then runs perl and bash from each copy (chroot) and shows
# cid-analyze's figures for them: what the frames cost now and what named
# merging would keep.  Without root or debootstrap it uses copies of
# /usr/lib instead (and skips the processes).
#
#   CID_DEMO_MIRROR   Debian mirror (default: the first of apt's sources)
#   KEEP=1            keep the container copies and the index afterwards
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$top/$BUILD ;; esac
CIDCTL=${CIDCTL:-$BUILD/userspace/cidctl}
[ -x "$CIDCTL" ] || { echo "demo: build first (make): no $CIDCTL" >&2; exit 1; }
CACHE=${CID_CACHE:-$HOME/.cache/cid}/demo
mkdir -p "$CACHE"
. "$top/scripts/debian.sh"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

base=$CACHE/bookworm-minbase
kind="Debian 12 minbase rootfs (debootstrap)"
if [ ! -d "$base" ] && [ "$(id -u)" = 0 ] && command -v debootstrap >/dev/null; then
	say "building a Debian 12 minbase tree once (debootstrap, $(debian_mirror || echo 'no mirror')) into $base"
	debian_tree "$base" "$CACHE/debootstrap.log" --variant=minbase ||
		echo "demo: debootstrap failed (see $CACHE/debootstrap.log); using copies of /usr/lib instead" >&2
fi
if [ ! -d "$base" ]; then
	base=$CACHE/usr-lib-sample
	kind="a sample of /usr/lib"
	if [ ! -d "$base" ]; then
		say "copying a sample of /usr/lib into $base"
		mkdir -p "$base.tmp"
		find /usr/lib -xdev -type f -size -8M -readable 2>/dev/null | LC_ALL=C sort | sed -n '1,8000p' >"$CACHE/list"
		tar -cf - -T "$CACHE/list" 2>/dev/null | tar -xf - -C "$base.tmp"
		mv "$base.tmp" "$base"
	fi
fi

work=$CACHE/run
rm -rf "$work"
mkdir -p "$work/containers"
cleanup() { if [ "${KEEP:-0}" = 1 ]; then echo "kept: $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT

say "three containers, each a full copy of $kind"
for c in web db ci; do
	cp -a "$base" "$work/containers/$c"
	# Each container changes a little: its own hostname and config.
	mkdir -p "$work/containers/$c/etc"
	echo "$c" >"$work/containers/$c/etc/hostname"
	echo "# $c configuration" >>"$work/containers/$c/etc/environment" 2>/dev/null || true
	du -sh "$work/containers/$c" | sed 's/^/  /'
done

IDX=$work/index.db
say "cidctl scan --index $IDX containers/*"
"$CIDCTL" scan --index "$IDX" "$work/containers/"*

say "cidctl report"
"$CIDCTL" report --index "$IDX"

say "cidctl dups --min-size 1M | head -20"
"$CIDCTL" dups --index "$IDX" --min-size 1M 2>/dev/null | sed -n '1,20p'

say "rescan (nothing changed: nothing is read again)"
"$CIDCTL" scan --index "$IDX" "$work/containers/"*

say "cidctl status"
"$CIDCTL" status

# Live processes: the same programs from each copy, as three containers
# would run them.  Their frames now, and what named merging would keep.
ANALYZE=${ANALYZE:-$BUILD/userspace/cid-analyze/cid-analyze}
if [ "$(id -u)" = 0 ] && [ -x "$ANALYZE" ] && [ -x "$base/usr/bin/perl" ] && [ -x "$base/bin/bash" ]; then
	say "cid-analyze: perl and bash running from each container's own copy"
	pids=()
	for c in web db ci; do
		chroot "$work/containers/$c" /usr/bin/perl -e 'sleep 600' &
		pids+=($!)
		chroot "$work/containers/$c" /bin/bash -c 'sleep 600; :' &
		pids+=($!)
	done
	sleep 1
	"$ANALYZE" "${pids[@]}" || true
	kill "${pids[@]}" 2>/dev/null || true
	wait 2>/dev/null
	echo "(named merging oracle: what these processes would need with identical files sharing frames;"
	echo " achieved is 0 here: this kernel does not share page cache between different inodes)"
fi
