#!/bin/sh
# Print a header that a patch in kernel/patches adds as a new file, so
# userspace builds against exactly the UAPI the kernel series defines
# (one source of truth).  Usage: extract-uapi.sh [include/uapi/linux/cid.h]
set -eu
want=${1:-include/uapi/linux/cid.h}
top=$(cd "$(dirname "$0")/.." && pwd)
for p in $(sed -e 's/#.*//' "$top/kernel/patches/series"); do
	awk -v f="b/$want" '
		/^\+\+\+ / { on = ($2 == f); next }
		/^diff --git / { on = 0; next }
		on && /^@@/ { next }
		on && /^\+/ { print substr($0, 2); found = 1 }
		END { exit !found }' "$top/kernel/patches/$p" && exit 0
done
echo "extract-uapi: no patch in kernel/patches/series adds $want" >&2
exit 1
