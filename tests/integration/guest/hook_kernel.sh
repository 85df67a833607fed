#!/bin/sh
# cid-oci-hook and cidd against the patched kernel, inside the QEMU guest
# (busybox sh).  Not a host test: the VM harness runs it as a suite, e.g.
#   vm_add_suite "$root" hooks 120 sh /hook_kernel.sh /mnt/ext4 /hook_state.json
# (tests/vm/run.sh adds it as the suite "hooks") with cidctl, cid-oci-hook(-standalone) and cidd in /usr/bin, overlayfs in the kernel,
# DIR on a real filesystem and STATE the fixture hook_state.json beside this
# script (@BUNDLE@ is replaced).  An overlay over two lower layers holding
# the same files, a state JSON as a runtime passes it: after the hook (and
# again after cidd) the layers' duplicates are tagged, reads through the
# overlay are served from the shared content (query: shared; sysfs
# pages_sharing grows), and cidctl top shows the container.
# With analyze_helper (tests/helpers, static) in the guest, the frames are
# compared too: the copy read through the overlay's merged view and its
# twin in the other layer map the same page frames (/proc/PID/pagemap).
# Prints TAP; exits 1 if any check failed, 77 (skip) without named merging.
dir=${1:-/mnt/ext4}
state_fixture=${2:-$(dirname "$0")/hook_state.json}
n=0 failed=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $*"; }
show() { sed 's/^/# /' "$1"; }
# pfns PID ADDR PAGES: the frame of each page of a mapping (the low 52 bits
# of its pagemap entry, as hex), or 0 for a page not present.
pfns() {
	dd if="/proc/$1/pagemap" bs=8 skip=$(($2 / 4096)) count="$3" 2>/dev/null | od -A n -v -t x8 |
		awk '{ for (i = 1; i <= NF; i++) print (substr($i, 1, 1) ~ /[89a-f]/) ? substr($i, 4) : 0 }'
}

if ! cidctl status | grep -q 'named merging: available'; then
	echo "1..0 # SKIP no /sys/kernel/mm/cid"
	exit 77
fi
for b in cid-oci-hook cid-oci-hook-standalone cidd; do
	command -v $b >/dev/null || { echo "1..0 # SKIP $b not in the guest"; exit 77; }
done
w=$dir/hook-guest.$$
o=$w/storage/overlay
mkdir -p "$o/l" "$o/L1/diff/usr/lib" "$o/L2/diff/usr/lib" "$o/U/diff" "$o/U/work" "$o/U/merged" "$w/bundle" ||
	{ echo "1..0 # SKIP cannot write $dir"; exit 77; }
ln -s ../L1/diff "$o/l/AAA"
ln -s ../L2/diff "$o/l/BBB"
dd if=/dev/urandom of="$o/L1/diff/usr/lib/big.bin" bs=1024 count=2048 2>/dev/null
cp "$o/L1/diff/usr/lib/big.bin" "$o/L2/diff/usr/lib/big.bin"
cp /bin/busybox "$o/L1/diff/usr/lib/busybox.copy"
cp /bin/busybox "$o/L2/diff/usr/lib/busybox.copy"
if ! mount -t overlay overlay -o "lowerdir=$o/l/AAA:$o/l/BBB,upperdir=$o/U/diff,workdir=$o/U/work" "$o/U/merged"; then
	echo "1..0 # SKIP no overlayfs in this kernel"
	exit 77
fi
echo "{\"ociVersion\": \"1.0.2\", \"root\": {\"path\": \"$o/U/merged\"}}" >"$w/bundle/config.json"
sed "s|@BUNDLE@|$w/bundle|" "$state_fixture" >"$w/state.json"
idx=$w/index.db
sock=$w/cidd.sock

before=$(cat /sys/kernel/mm/cid/pages_sharing 2>/dev/null || echo 0)
if cid-oci-hook --fail-closed --budget-ms 60000 --index "$idx" --socket "$sock" --log "$w/hook.log" \
	<"$w/state.json" >"$w/hook.out" 2>&1; then
	ok "hook ran on the overlay (state from $state_fixture)"
else
	not_ok "hook"; show "$w/hook.out"
fi
if grep -q '"mode":"tag"' "$w/hook.log" && grep -q '"tagged":4' "$w/hook.log" && grep -q '"duplicated_files":4' "$w/hook.log"; then
	ok "hook tagged the 4 duplicated inodes of both lower layers"
else
	not_ok "hook summary"; show "$w/hook.log"
fi
cat "$o/U/merged/usr/lib/big.bin" >/dev/null
cat "$o/L2/diff/usr/lib/big.bin" >/dev/null
cidctl query "$o/L1/diff/usr/lib/big.bin" "$o/L2/diff/usr/lib/big.bin" >"$w/q.out" 2>&1
if [ "$(grep -c 'tagged fsverity-sha256:' "$w/q.out")" = 2 ] && ! grep -q ' 0 pages cached' "$w/q.out"; then
	ok "both copies tagged, content cached once"
else
	not_ok "query"; show "$w/q.out"
fi
cmp "$o/U/merged/usr/lib/big.bin" "$o/L2/diff/usr/lib/big.bin" && ok "bytes through the overlay are right" || not_ok "bytes"
after=$(cat /sys/kernel/mm/cid/pages_sharing 2>/dev/null || echo 0)
[ "$after" -gt "$before" ] && ok "pages_sharing grew ($before -> $after)" || not_ok "pages_sharing $before -> $after"
if command -v analyze_helper >/dev/null; then
	# Two mappings in one process, 1 GiB apart from 0x600000000000 (every
	# page touched): the merged view's copy (L1's) and L2's twin.
	analyze_helper map "$o/U/merged/usr/lib/big.bin" map "$o/L2/diff/usr/lib/big.bin" >"$w/helper.out" 2>&1 &
	i=0
	while ! grep -q ready "$w/helper.out" && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	hpid=$(cut -d' ' -f2 "$w/helper.out")
	pfns "$hpid" $((0x600000000000)) 512 >"$w/pfn.merged"
	pfns "$hpid" $((0x600040000000)) 512 >"$w/pfn.twin"
	kill "$hpid" 2>/dev/null
	wait "$hpid" 2>/dev/null
	same=$(awk 'NR == FNR { a[FNR] = $0; next } $0 != "0" && $0 == a[FNR] { n++ } END { print n + 0 }' "$w/pfn.merged" "$w/pfn.twin")
	if [ "$same" = 512 ]; then
		ok "the overlay's copy and its twin in the other layer map the same 512 frames"
	else
		not_ok "frames shared: $same of 512"; head -3 "$w/pfn.merged" "$w/pfn.twin" | sed 's/^/# /'
	fi
else
	echo "# analyze_helper not in the guest: frames not compared"
fi

# cidd finishes what the hook hands over (a zero budget leaves it all).
for f in "$o/L1/diff/usr/lib/big.bin" "$o/L2/diff/usr/lib/big.bin"; do cidctl untag "$f" >/dev/null 2>&1; done
mkdir -p "$w/metrics"
cidd --index "$idx" --socket "$sock" --metrics-dir "$w/metrics" --metrics-interval 1 --no-idle 2>"$w/cidd.log" &
cidd_pid=$!
i=0
while [ ! -S "$sock" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
cid-oci-hook --budget-ms 0 --cidd-timeout-ms 10000 --index "$idx" --socket "$sock" --log "$w/hook.log" <"$w/state.json" >"$w/hook2.out" 2>&1
if tail -n 1 "$w/hook.log" | grep -q '"ran_in":"cidd"' && head -n 1 "$w/hook.log" | grep -q '"ran_in":"standalone"'; then
	ok "with cidd running the hook ran in cidd, without it standalone"
else
	not_ok "where the hook ran"; show "$w/hook.log"; show "$w/hook2.out"
fi
i=0
until cidctl query "$o/L2/diff/usr/lib/big.bin" 2>/dev/null | grep -q 'tagged fsverity-sha256:'; do
	[ $i -lt 300 ] || break
	sleep 0.1
	i=$((i + 1))
done
if cidctl query "$o/L1/diff/usr/lib/big.bin" "$o/L2/diff/usr/lib/big.bin" 2>&1 | grep -c 'tagged fsverity-sha256:' | grep -q 2; then
	ok "cidd tagged what the hook handed over"
else
	not_ok "cidd tagging"; show "$w/cidd.log"
fi
CID_SOCKET=$sock cidctl top --once >"$w/top.out" 2>&1
grep -q 'guest-ctr-1 .*guest-web' "$w/top.out" && ok "cidctl top shows the container" || { not_ok "top"; show "$w/top.out"; }
i=0
while ! grep -q 'cid_kernel_stat{name="pages_sharing"}' "$w/metrics/cid.prom" 2>/dev/null && [ $i -lt 50 ]; do
	sleep 0.1
	i=$((i + 1))
done
grep -q 'cid_kernel_stat{name="pages_sharing"}' "$w/metrics/cid.prom" && ok "metrics carry /sys/kernel/mm/cid figures" ||
	not_ok "kernel figures in metrics"
kill "$cidd_pid"
wait "$cidd_pid"

# Tags are per boot.  As after a reboot (tags gone, index kept), a new
# cidd re-tags what the index says is duplicated; a file changed in place
# since it was indexed (size and mtime kept) is refused by the kernel's
# own hash and queued for a rescan, never tagged.
umount "$o/U/merged"
for f in "$o"/L[12]/diff/usr/lib/big.bin "$o"/L[12]/diff/usr/lib/busybox.copy; do cidctl untag "$f" >/dev/null 2>&1; done
changed=$o/L2/diff/usr/lib/busybox.copy
touch -r "$changed" "$w/mtime.ref"
printf 'X' | dd of="$changed" bs=1 seek=4096 conv=notrunc 2>/dev/null
touch -r "$w/mtime.ref" "$changed"
cidd --index "$idx" --socket "$sock" --metrics-dir "$w/metrics" --metrics-interval 1 --no-idle 2>"$w/cidd2.log" &
cidd_pid=$!
i=0
while ! grep -q 'changed since indexed' "$w/cidd2.log" && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
if [ "$(cidctl query "$o/L1/diff/usr/lib/big.bin" "$o/L2/diff/usr/lib/big.bin" 2>&1 | grep -c 'tagged fsverity-sha256:')" = 2 ]; then
	ok "a new cidd re-tagged the duplicates the index knows"
else
	not_ok "re-tag at start"; show "$w/cidd2.log"
fi
if ! cidctl query "$changed" 2>&1 | grep -q 'tagged fsverity-sha256:' &&
	grep -q 're-tag: .* 1 changed since indexed (1 trees queued for a rescan)' "$w/cidd2.log"; then
	ok "the file changed since it was indexed was not tagged, and its layer was queued for a rescan"
else
	not_ok "changed file at re-tag"; cidctl query "$changed" 2>&1 | sed 's/^/# /'; show "$w/cidd2.log"
fi
kill "$cidd_pid"
wait "$cidd_pid"
rm -rf "$w"
echo "1..$n"
[ "$failed" = 0 ]
