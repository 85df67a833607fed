#!/bin/bash
# Build the patched test kernel (make kernel).
#
#   kernel/build.sh            configure + build bzImage
#   kernel/build.sh --prepare  only extract, patch and sync the source tree
#
# Layout under ${CID_CACHE:-$HOME/.cache/cid}/linux/ (kept between runs):
#   base/   pristine Debian linux-source-6.12, extracted once
#   src/    base + kernel/patches/series
#   obj/    the O= object tree, built with CC="ccache gcc"
#   touched.list  files of src/ that differ from base/ (last successful sync)
#
# The series is applied to a scratch copy of only the files it touches, and
# a file in src/ is rewritten only when its content changes, so make sees
# new mtimes only where something really changed: a one-line patch edit
# rebuilds in seconds.  Any reject or fuzz fails the build, naming the patch.
#
# The feature's Kconfig entries have one source of truth, the top-level
# Kconfig; patch 0001 adds them to the tree as mm/Kconfig.cid (and later
# patches change them there).  After the whole series is applied, the tree's
# mm/Kconfig.cid must be byte-identical to it, or the build fails: edit both.
#
# Outputs: ${BUILD:-build}/kernel/{bzImage,config,series,srctree,objtree}
# (series: the patches applied to the tree the bzImage was built from).
# Environment: CID_CACHE, BUILD, JOBS, LINUX_TARBALL, CID_KERNEL_CONFIG
# (config fragments, space-separated, later ones overriding earlier ones;
# default kernel/config/cid-test.config), CID_PATCHES (patch
# directory, default kernel/patches), CID_SERIES (a series
# file naming patches of kernel/patches; default kernel/patches/series).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
CID_CACHE=${CID_CACHE:-$HOME/.cache/cid}
BUILD=${BUILD:-build}
JOBS=${JOBS:-$(nproc)}
LINUX_TARBALL=${LINUX_TARBALL:-/usr/src/linux-source-6.12.tar.xz}
fragments=${CID_KERNEL_CONFIG:-$top/kernel/config/cid-test.config}
patches=${CID_PATCHES:-$top/kernel/patches}
prepare_only=0
[ "${1:-}" = --prepare ] && prepare_only=1

die() { echo "kernel/build.sh: error: $*" >&2; exit 1; }
warn() { echo "kernel/build.sh: warning: $*" >&2; }
log() { echo "kernel/build.sh: $*"; }

linux=$CID_CACHE/linux
base=$linux/base
src=$linux/src
obj=$linux/obj
mkdir -p "$linux" "$BUILD/kernel"
out=$(cd "$BUILD/kernel" && pwd)

# One build at a time per cache (several engineers/CI jobs share it).
exec 9>"$linux/.lock"
flock 9

[ -r "$LINUX_TARBALL" ] || die "$LINUX_TARBALL not found; run 'make deps' (package linux-source-6.12)"
stamp=$(stat -c '%s %Y' "$LINUX_TARBALL")

# 1. Pristine base, extracted once (again only if the tarball changes).
if [ ! -f "$base/.cid-stamp" ] || [ "$(cat "$base/.cid-stamp")" != "$stamp" ]; then
	log "extracting $LINUX_TARBALL into $base"
	rm -rf "$base" "$src" "$obj" "$linux/touched.list" "$linux/extract.tmp"
	mkdir -p "$linux/extract.tmp"
	tar -xf "$LINUX_TARBALL" -C "$linux/extract.tmp"
	mv "$linux/extract.tmp"/linux-source-* "$base"
	rmdir "$linux/extract.tmp"
	echo "$stamp" >"$base/.cid-stamp"
fi
if [ ! -f "$src/.cid-stamp" ] || [ "$(cat "$src/.cid-stamp")" != "$stamp" ]; then
	log "copying base to $src"
	rm -rf "$src" "$linux/touched.list"
	cp -a "$base" "$src.tmp"
	mv "$src.tmp" "$src"
fi
touch "$linux/touched.list"

# 2. The series, in order.
series_file=${CID_SERIES:-$patches/series}
[ -f "$series_file" ] || die "$series_file missing"
mapfile -t series < <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^$/d' "$series_file")
for p in "${series[@]}"; do
	[ -f "$patches/$p" ] || die "patch '$p' listed in series but missing"
done

# Paths a patch touches (old and new names, git renames/copies included).
patch_paths() {
	awk '
		/^(---|\+\+\+) / {
			sub(/^(---|\+\+\+) /, ""); sub(/\t.*/, "")
			if ($0 != "/dev/null") { sub(/^[^\/]*\//, ""); print }
			next
		}
		/^(rename|copy) (from|to) / { sub(/^(rename|copy) (from|to) /, ""); print }
	' "$1"
}

scratch=$(mktemp -d "$linux/scratch.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

# The configuration fragments, merged: the last setting of a symbol wins.
fragment=$scratch/fragment.config
for f in $fragments; do
	[ -f "$f" ] || die "config fragment $f not found (CID_KERNEL_CONFIG)"
done
# shellcheck disable=SC2086 # one argument per fragment
awk '
	/^CONFIG_[A-Za-z0-9_]+=/ { sym = $0; sub(/=.*/, "", sym) }
	/^# CONFIG_[A-Za-z0-9_]+ is not set/ { sym = $2 }
	sym != "" { if (!(sym in val)) order[n++] = sym; val[sym] = $0; sym = "" }
	END { for (i = 0; i < n; i++) print val[order[i]] }
' $fragments >"$fragment"
list=$scratch/.list
{
	cat "$linux/touched.list"
	for p in "${series[@]}"; do patch_paths "$patches/$p"; done
} | sort -u >"$list"

tree=$scratch/tree
mkdir -p "$tree"
while IFS= read -r f; do
	if [ -e "$base/$f" ]; then
		mkdir -p "$tree/$(dirname "$f")"
		cp -p "$base/$f" "$tree/$f"
	fi
done <"$list"

for p in "${series[@]}"; do
	# --fuzz=0: a hunk that would need fuzz is a reject.
	if ! plog=$(cd "$tree" && patch -p1 --fuzz=0 --no-backup-if-mismatch -r - -f <"$patches/$p" 2>&1); then
		echo "$plog" | grep -v '^patching file' >&2
		die "patch $p does not apply to the base without fuzz (see the rejected hunks above)"
	fi
	plog=$(grep -v '^patching file' <<<"$plog" || true)
	if [ -n "$plog" ]; then
		echo "$plog" | sed "s/^/  $p: /"
		if grep -qi 'fuzz' <<<"$plog"; then die "patch $p applies only with fuzz"; fi
		if grep -qi 'offset' <<<"$plog"; then warn "patch $p applies with an offset; refresh it"; fi
	fi
done

# The top-level Kconfig is the source of truth for what the whole series
# puts in mm/Kconfig.cid.  A prefix of the series (check-series.sh) may
# still carry an earlier version of the entries.
if cmp -s <(printf '%s\n' "${series[@]}") <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^$/d' "$patches/series"); then
	if [ ! -f "$tree/mm/Kconfig.cid" ]; then
		die "the series does not add mm/Kconfig.cid, but $top/Kconfig holds the feature's Kconfig entries (patch 0001 must add it)"
	fi
	if ! cmp -s "$top/Kconfig" "$tree/mm/Kconfig.cid"; then
		diff -u "$top/Kconfig" "$tree/mm/Kconfig.cid" | sed 's/^/  /' >&2 || true
		die "mm/Kconfig.cid as the series leaves it differs from $top/Kconfig (the source of truth): make the patch that adds or changes mm/Kconfig.cid produce it byte for byte"
	fi
fi

# 3. Sync the scratch result into src/, touching only changed files.
changed=0
: >"$scratch/.touched"
while IFS= read -r f; do
	if [ -e "$tree/$f" ]; then
		if ! cmp -s "$tree/$f" "$base/$f" 2>/dev/null; then echo "$f" >>"$scratch/.touched"; fi
		if ! cmp -s "$tree/$f" "$src/$f" 2>/dev/null; then
			mkdir -p "$src/$(dirname "$f")"
			rm -f "$src/$f"
			cp "$tree/$f" "$src/$f"
			chmod --reference="$tree/$f" "$src/$f"
			changed=$((changed + 1))
		fi
	elif [ -e "$src/$f" ]; then
		rm -f "$src/$f"
		changed=$((changed + 1))
	fi
done <"$list"
mv "$scratch/.touched" "$linux/touched.list"
log "series: ${#series[@]} patch(es) applied, $changed file(s) changed in $src"
printf '%s\n' "${series[@]}" >"$out/series"
echo "$src" >"$out/srctree"
echo "$obj" >"$out/objtree"
[ "$prepare_only" = 1 ] && exit 0

# 4. Configure: tinyconfig + the fragment, then check every option stuck.
# ccache in depend mode: kbuild passes -Wp,-MMD, so ccache takes the header
# list from the compiler's own dependency output instead of running the
# preprocessor a second time.  A miss (every file of a cold build, and of a
# config change) then costs what a plain gcc run costs; in ccache's default
# mode a cold kernel build took 1.7x as long as with plain gcc here (fs/ext4
# and mm/: 79 s plain gcc, 144 s default mode, 78 s depend mode).
kmake() { CCACHE_DEPEND=true make -C "$src" O="$obj" CC="ccache gcc" HOSTCC="ccache gcc" -j"$JOBS" "$@"; }
mkdir -p "$obj"
export KBUILD_BUILD_USER=cid KBUILD_BUILD_HOST=cid
# Reconfigure only when the fragment or a Kconfig file the series touches
# changed (saves ~15 s per incremental build).
config_key=$( (cat "$fragment"; grep -E '(^|/)Kconfig[^/]*$' "$linux/touched.list" |
	while IFS= read -r f; do echo "== $f"; cat "$src/$f" 2>/dev/null; done) | sha256sum | cut -c1-64)
if [ -f "$obj/.config" ] && [ "$(cat "$obj/.cid-config-key" 2>/dev/null)" = "$config_key" ]; then
	log "configuration unchanged"
else
	rm -f "$obj/.cid-config-key"
	kmake -s tinyconfig >/dev/null
	"$src/scripts/kconfig/merge_config.sh" -m -O "$obj" "$obj/.config" "$fragment" >/dev/null
	kmake -s olddefconfig
fi

# Kconfig files of the tree (mm/Kconfig.cid only once a patch added it).
kconfig_files() {
	find "$src" -name 'Kconfig*'
}
symbols() {
	[ -f "$scratch/symbols" ] || kconfig_files |
		xargs grep -hoE '^[[:space:]]*(menu)?config[[:space:]]+[A-Za-z0-9_]+' |
		awk '{print $2}' | sort -u >"$scratch/symbols"
	cat "$scratch/symbols"
}

bad=0
while IFS= read -r line; do
	case "$line" in
	CONFIG_*=*) sym=${line%%=*}; want=$line ;;
	"# CONFIG_"*" is not set") sym=${line#\# }; sym=${sym%% *}; want=$line ;;
	*) continue ;;
	esac
	have=$(grep -E "^($sym=|# $sym is not set)" "$obj/.config" || true)
	[ "$have" = "$want" ] && continue
	# "is not set" is also satisfied by absence.
	[ -z "$have" ] && [ "${want#\# }" != "$want" ] && continue
	# (grep without -q reads to the end: symbols must not die of SIGPIPE,
	# which pipefail would report as a missing symbol.)
	if ! symbols | grep -x "${sym#CONFIG_}" >/dev/null; then
		case "$sym" in
		CONFIG_CID_*) warn "$sym: no Kconfig symbol in this tree yet (no patch provides it); ignored" ;;
		*) echo "kernel/build.sh: $want: no such Kconfig symbol in this tree" >&2; bad=1 ;;
		esac
		continue
	fi
	echo "kernel/build.sh: fragment wants '$want', .config has '${have:-<absent: unmet dependency>}'" >&2
	bad=1
done <"$fragment"
[ "$bad" = 0 ] || die "config fragments ($fragments) did not stick (fix dependencies in the fragment)"
echo "$config_key" >"$obj/.cid-config-key"

# 5. Build.
log "building bzImage in $obj (-j$JOBS)"
start=$(date +%s)
kmake bzImage
log "bzImage built in $(( $(date +%s) - start ))s"
cp "$obj/arch/x86/boot/bzImage" "$out/bzImage.tmp"
mv "$out/bzImage.tmp" "$out/bzImage"
cp "$obj/.config" "$out/config"
log "$out/bzImage ($(make -s -C "$src" O="$obj" kernelrelease 2>/dev/null))"
