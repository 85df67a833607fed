#!/bin/sh
# Build the in-guest named-merging tests into STAGING:
#   tests/vm/guest/build.sh STAGING
# Static binaries only (the guest is a busybox initramfs).  The UAPI header
# comes from the kernel series itself (scripts/extract-uapi.sh), generated
# into a temporary include directory, never copied into the tree.
set -eu
staging=${1:?usage: build.sh STAGING}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../../.." && pwd)
CC=${CC:-gcc}
CFLAGS=${CFLAGS:--O2 -g0 -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare}

inc=$(mktemp -d)
trap 'rm -rf "$inc"' EXIT
mkdir -p "$inc/linux" "$staging"
"$top/scripts/extract-uapi.sh" include/uapi/linux/cid.h >"$inc/linux/cid.h"

$CC -static $CFLAGS -I"$inc" -o "$staging/cidtest" \
	"$here/cidtest.c" "$here/common.c"
$CC -static $CFLAGS -I"$inc" -o "$staging/cidadv" \
	"$here/cidadv.c" "$here/common.c"
# io_uring through Debian's static liburing.a (liburing-dev).
$CC -static $CFLAGS -I"$inc" -pthread -o "$staging/cidops" \
	"$here/cidops.c" "$here/common.c" -luring

# The FUSE server: static libfuse3 (Debian's libfuse3-dev ships libfuse3.a).
fuse_cflags=$(pkg-config --cflags fuse3 2>/dev/null || echo -I/usr/include/fuse3)
fuse_libs=$(pkg-config --static --libs fuse3 2>/dev/null || echo "-lfuse3 -lpthread -ldl")
# shellcheck disable=SC2086
$CC -static $CFLAGS $fuse_cflags -o "$staging/cid-fuse" "$here/cid-fuse.c" $fuse_libs

install -m 0755 "$here/run-suite.sh" "$staging/run-suite.sh"
