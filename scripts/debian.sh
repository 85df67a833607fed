# shellcheck shell=bash
# Debian trees for the demo and the study.  Source it; it defines functions
# only.
#
#   debian_mirror             the mirror to debootstrap from: CID_DEMO_MIRROR,
#                             else the first Debian archive of apt's own
#                             sources (deb822 .sources, then sources.list)
#   debian_tree DEST LOG ARG...
#                             debootstrap ARG... bookworm DEST once; kept
#                             while the arguments stay the same (DEST.args),
#                             built in DEST.tmp and renamed when complete

debian_mirror() {
	if [ -n "${CID_DEMO_MIRROR:-}" ]; then echo "$CID_DEMO_MIRROR"; return; fi
	local m
	m=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)[[:space:]]*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 1p)
	[ -n "$m" ] || m=$(awk '$1 == "deb" && $2 ~ /\/debian\/?$/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null)
	[ -n "$m" ] || return 1
	echo "$m"
}

debian_tree() {
	local dest=$1 log=$2 mirror
	shift 2
	if [ -d "$dest" ] && [ "$(cat "$dest.args" 2>/dev/null)" = "$*" ]; then return 0; fi
	[ "$(id -u)" = 0 ] || { echo "debootstrap needs root" >"$log"; return 1; }
	command -v debootstrap >/dev/null || { echo "debootstrap not installed (make deps)" >"$log"; return 1; }
	mirror=$(debian_mirror) || { echo "no Debian mirror in apt's sources (set CID_DEMO_MIRROR)" >"$log"; return 1; }
	rm -rf "$dest" "$dest.tmp" "$dest.args"
	if ! debootstrap "$@" bookworm "$dest.tmp" "$mirror" >"$log" 2>&1; then
		rm -rf "$dest.tmp"
		return 1
	fi
	mv "$dest.tmp" "$dest"
	echo "$*" >"$dest.args"
}
