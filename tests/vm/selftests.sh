#!/bin/bash
# Build the upstream mm selftests named in tests/vm/selftests.list from the
# patched source tree, statically linked, into OUTDIR.
#
#   tests/vm/selftests.sh SRCTREE OBJTREE OUTDIR
#
# CID_SELFTESTS, if set: the programs to build (space-separated), a subset
# of the list; unset builds them all.
# Installs the UAPI headers of the patched tree (make headers) into OBJTREE
# and compiles each test with vm_util.c/thp_settings.c the way
# tools/testing/selftests/mm/Makefile does, without writing into SRCTREE.
# A test that fails to compile is reported and left out (the harness then
# reports it as a failed suite), never skipped silently.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$1 obj=$2 out=$3
mm=$src/tools/testing/selftests/mm
[ -d "$mm" ] || { echo "selftests: $mm missing" >&2; exit 1; }
mkdir -p "$out"
out=$(cd "$out" && pwd)

# Under kernel/build.sh's lock: another make kernel may be using OBJTREE.
lock=$(dirname "$obj")/.lock
if [ -e "$lock" ]; then
	flock "$lock" make -s -C "$src" O="$obj" headers >/dev/null
else
	make -s -C "$src" O="$obj" headers >/dev/null
fi

# local_config.h as check_config.sh would write it, but in OUTDIR.
cfg=$out/.cfg
mkdir -p "$cfg"
uring=""
if echo '#include <liburing.h>' | gcc -x c -c -o /dev/null - 2>/dev/null &&
	[ -e /usr/lib/x86_64-linux-gnu/liburing.a ]; then
	echo "#define LOCAL_CONFIG_HAVE_LIBURING 1" >"$cfg/local_config.h.new"
	uring=-luring
else
	echo "// No liburing support found" >"$cfg/local_config.h.new"
fi
if cmp -s "$cfg/local_config.h.new" "$cfg/local_config.h"; then rm "$cfg/local_config.h.new"
else mv "$cfg/local_config.h.new" "$cfg/local_config.h"; fi

CC=${SELFTEST_CC:-ccache gcc}
cflags=(-Wall -O2 -U_FORTIFY_SOURCE -I "$cfg" -I "$mm" -I "$src/tools/testing/selftests"
	-I "$src" -isystem "$obj/usr/include" -isystem "$src/tools/include/uapi")
ldlibs=(-lrt -lpthread -lm)
failed=0
for t in $(awk '!/^#/ && NF {sub(/:.*/, "", $1); print $1}' "$here/selftests.list" | sort -u); do
	[ -f "$mm/$t.c" ] || continue	# e.g. a test of a patch not in the series
	# CID_SELFTESTS: build only these programs (unset: all of the list).
	if [ -n "${CID_SELFTESTS+set}" ] && [[ " $CID_SELFTESTS " != *" $t "* ]]; then continue; fi
	extra=()
	libs=()
	case $t in
	uffd-*) extra=(uffd-common.c) ;;
	mlock-random-test | memfd_secret) libs=(-lcap) ;;
	esac
	dst=$out/$t
	# Rebuild when a source, the headers or this script changed.
	if [ -x "$dst" ] && [ -z "$(find "$mm/$t.c" "$mm"/vm_util.[ch] "$mm"/thp_settings.[ch] \
		"$mm"/uffd-common.[ch] "$src/tools/testing/selftests/kselftest.h" "$0" \
		"$obj/usr/include/linux" -newer "$dst" -print -quit 2>/dev/null)" ]; then
		continue
	fi
	# Compile in the test's directory with relative names, as its Makefile
	# does: gup_longterm builds file names from __FILE__.
	if ! (cd "$mm" && $CC "${cflags[@]}" -static -o "$dst.tmp" "$t.c" vm_util.c thp_settings.c \
		"${extra[@]}" "${ldlibs[@]}" "${libs[@]}" $uring) >"$out/$t.log" 2>&1; then
		echo "selftests: $t does not build (log: $out/$t.log):" >&2
		grep -m5 'error' "$out/$t.log" >&2 || true
		rm -f "$dst" "$dst.tmp"
		failed=$((failed + 1))
		continue
	fi
	mv "$dst.tmp" "$dst"
done
echo "selftests: built in $out ($failed failed to build)"
