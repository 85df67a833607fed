#!/bin/sh
# cid-analyze against the patched kernel, inside the QEMU guest (busybox sh):
# two tagged identical files mapped by two processes share their frames, so
# named merging achieved equals the oracle's saving; two untagged identical
# files share nothing (achieved 0) while the oracle still finds them.
# Not a host test: the VM harness runs it as a suite, e.g.
#   vm_add_suite "$root" cid-analyze 300 sh /analyze_named.sh /mnt/ext4
# with cidctl, cid-analyze and analyze_helper (static) in /usr/bin, and DIR on
# a real filesystem (ext4, xfs).  Needs PROC_PAGE_MONITOR (pagemap, kpageflags).
# Prints TAP; exits 1 if any check failed, 77 (skip) without named merging.
dir=${1:-/mnt/ext4}
analyze=${CID_ANALYZE:-cid-analyze}
helper=${ANALYZE_HELPER:-analyze_helper}
range=600000000000-610000000000   # where analyze_helper maps its regions
pages=64
n=0 failed=0 pids=
ok() { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $*"; }
# field NAME FILE: the first (top-level "figures") value of a JSON key.
field() { grep -o "\"$1\":[0-9]*" "$2" | head -1 | cut -d: -f2; }
# start FILE: a helper mapping FILE (every page touched); its pid in $pid.
start() {
	out=/tmp/analyze-helper.$$.$n.$(basename "$1")
	"$helper" map "$1" >"$out" 2>&1 &
	i=0
	while [ $i -lt 500 ] && ! grep -q ready "$out"; do sleep 0.01 2>/dev/null || sleep 1; i=$((i + 1)); done
	pid=$(cut -d' ' -f2 "$out")
	pids="$pids $pid"
}
stop_all() { [ -z "$pids" ] || kill -9 $pids 2>/dev/null; pids=; }
trap stop_all EXIT

if ! cidctl status | grep -q 'named merging: available'; then
	echo "1..0 # SKIP no /sys/kernel/mm/cid"
	exit 77
fi
[ -r /proc/kpageflags ] || { echo "1..0 # SKIP no /proc/kpageflags (CONFIG_PROC_PAGE_MONITOR)"; exit 77; }
work=$dir/analyze-guest.$$
mkdir -p "$work" || { echo "1..0 # SKIP cannot write $dir"; exit 77; }
dd if=/dev/urandom of="$work/a" bs=4096 count=$pages 2>/dev/null
cp "$work/a" "$work/b"
dd if=/dev/urandom of="$work/c" bs=4096 count=$pages 2>/dev/null
cp "$work/c" "$work/d"

# Tagged: a and b share one content inode's frames.
if cidctl tag "$work/a" "$work/b" >/tmp/analyze.out 2>&1; then ok "tag a and b"; else not_ok "tag a and b"; sed 's/^/# /' /tmp/analyze.out; fi
echo 3 >/proc/sys/vm/drop_caches
start "$work/a"
start "$work/b"
"$analyze" --range $range --verify --json $pids >/tmp/analyze.json 2>/tmp/analyze.err
rc=$?
mf=$(field mmap_fork /tmp/analyze.json)
ach=$(field nm_achieved /tmp/analyze.json)
sav=$(field nm_oracle_sharings /tmp/analyze.json)
ora=$(field nm_oracle /tmp/analyze.json)
echo "# tagged: exit $rc, mmap/fork $mf, oracle $ora, oracle sharings $sav, achieved $ach"
if [ "$rc" = 0 ] && [ "$mf" = $pages ] && [ "$ora" = $pages ]; then
	ok "tagged twins mapped by two processes: $pages frames for 2x$pages pages"
else
	not_ok "tagged twins: frames"; sed 's/^/# /' /tmp/analyze.err
fi
if [ "$ach" = $pages ] && [ "$ach" = "$sav" ]; then
	ok "tagged: named merging achieved ($ach) equals the oracle ($sav)"
else
	not_ok "tagged: achieved $ach, oracle sharings $sav, want both $pages"
fi
stop_all

# Untagged: c and d are two inodes with two sets of frames.
start "$work/c"
start "$work/d"
"$analyze" --range $range --json $pids >/tmp/analyze.json 2>/tmp/analyze.err
rc=$?
mf=$(field mmap_fork /tmp/analyze.json)
ach=$(field nm_achieved /tmp/analyze.json)
sav=$(field nm_oracle_sharings /tmp/analyze.json)
echo "# untagged: exit $rc, mmap/fork $mf, oracle sharings $sav, achieved $ach"
if [ "$rc" = 0 ] && [ "$mf" = $((2 * pages)) ] && [ "$ach" = 0 ] && [ "$sav" = $pages ]; then
	ok "untagged twins: achieved 0, the oracle would save $pages"
else
	not_ok "untagged twins: mmap/fork $mf achieved $ach oracle sharings $sav"; sed 's/^/# /' /tmp/analyze.err
fi
stop_all
cidctl untag "$work/a" "$work/b" >/dev/null 2>&1
rm -rf "$work"
echo "1..$n"
[ "$failed" = 0 ] || exit 1
