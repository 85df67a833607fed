#!/bin/bash
# cidd --watch against a real dockerd (Debian's docker.io, private
# --data-root/--exec-root/socket, no networking): two images imported from
# the same tree (different mtimes, one extra file, so different layers);
# cidd notices their overlay2 layers by itself, indexes them and finds the
# duplicates; containers from both run and read the right bytes; Docker's
# -init layers are never indexed.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/hooks_lib.sh"
[ "$(id -u)" = 0 ] || skip "needs root (dockerd)"
command -v dockerd >/dev/null || skip "dockerd not installed (docker.io, scripts/deps.d/container-hooks.txt)"
BUSYBOX=$(command -v busybox) || fail "busybox missing"
[ -x "$CIDD" ] || fail "no cidd at $CIDD"
D=$WORK/docker
mkdir -p "$D/data" "$D/exec"
SOCK=unix://$D/docker.sock
DOCKER=(docker -H "$SOCK")
PIDS=()
teardown() {
	local rc=$?
	set +e
	"${DOCKER[@]}" rm -f $("${DOCKER[@]}" ps -aq 2>/dev/null) >/dev/null 2>&1
	"${DOCKER[@]}" rmi -f cid-test-a:1 cid-test-b:1 >/dev/null 2>&1
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do
		for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
		kill -9 "$p" 2>/dev/null
	done
	grep -o " $D/[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m"; done
	(exit "$rc")
	cleanup
	exit "$rc"
}
trap teardown EXIT

dockerd --data-root "$D/data" --exec-root "$D/exec" -H "$SOCK" --pidfile "$D/docker.pid" --iptables=false \
	--ip-masq=false --bridge=none --storage-driver overlay2 >"$D/dockerd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 150); do "${DOCKER[@]}" info >/dev/null 2>&1 && break; sleep 0.2; done
if ! "${DOCKER[@]}" info >/dev/null 2>&1; then
	tail -20 "$D/dockerd.log" >&2
	skip "dockerd did not start here (see its log above)"
fi
[ -d "$D/data/overlay2" ] || { tail -20 "$D/dockerd.log" >&2; fail "dockerd is not using overlay2"; }

"$CIDD" --index "$D/index.db" --socket "$D/cidd.sock" --watch "$D/data/overlay2" --rescan-interval 2 \
	--no-idle --cpu-percent 0 2>"$D/cidd.log" &
PIDS+=($!)

T=$WORK/tree
mkdir -p "$T/bin" "$T/usr/lib"
cp "$BUSYBOX" "$T/bin/busybox"
for t in sh sha256sum; do ln -s busybox "$T/bin/$t"; done
mapfile -t libs < <(find /usr/lib/x86_64-linux-gnu -maxdepth 1 -type f -name '*.so*' -size -300k | sort)
cp "${libs[@]:0:25}" "$T/usr/lib/"
find "$T" -type f -exec touch -h -d '2024-01-01' {} +
cp -a "$T" "$WORK/treeB"
touch -d '2025-01-01' "$WORK/treeB/bin/busybox"
echo extra >"$WORK/treeB/extra.txt"
files=$(find "$T" -type f | wc -l)
tar -C "$T" -cf "$WORK/a.tar" .
tar -C "$WORK/treeB" -cf "$WORK/b.tar" .
"${DOCKER[@]}" import "$WORK/a.tar" cid-test-a:1 >/dev/null
"${DOCKER[@]}" import "$WORK/b.tar" cid-test-b:1 >/dev/null
ok "dockerd up (overlay2) and two images imported ($files files each)"

roots() { sqlite3 "$D/index.db" "SELECT path FROM roots" 2>/dev/null; }
for _ in $(seq 1 150); do
	[ "$(roots | grep -c '/overlay2/.*/diff$')" -ge 2 ] &&
		[ "$(sqlite3 "$D/cidd.db" 'SELECT COUNT(*) FROM queue' 2>/dev/null)" = 0 ] && break
	sleep 0.2
done
expect_eq "layers cidd indexed by itself" "$(roots | grep -c '/overlay2/.*/diff$')" 2
# A layer is announced once its directory has been quiet for the settle
# time; one that dockerd was still extracting then is scanned in part and
# completed by the next rescan (every 2 s here), so wait for that too.
groups() { "$CIDCTL" dups --index "$D/index.db" --json >"$D/dups.json" && json "$D/dups.json" 'j["groups_count"]'; }
for _ in $(seq 1 100); do
	[ "$(groups)" = "$files" ] && [ "$(sqlite3 "$D/cidd.db" 'SELECT COUNT(*) FROM queue' 2>/dev/null)" = 0 ] && break
	sleep 0.2
done
expect_eq "duplicated contents across the two layers" "$(json "$D/dups.json" 'j["groups_count"]')" "$files"
ok "cidd --watch indexed both images' overlay2 layers without a hook; $files duplicated contents"

expected=$(cd "$T" && for f in bin/busybox usr/lib/*; do sha256sum "$f"; done)
for img in cid-test-a cid-test-b; do
	got=$("${DOCKER[@]}" run --rm --network none "$img:1" /bin/sh -c 'cd / && for f in bin/busybox usr/lib/*; do sha256sum "$f"; done') ||
		fail "docker run $img"
	expect_eq "bytes in $img" "$got" "$expected"
done
sleep 3  # a rescan sees the containers' layers come and go
roots | grep -- '-init/diff$' >/dev/null && fail "a Docker -init layer was indexed"
ok "containers from both images run and read the right bytes; no -init layer indexed"
echo "$PASSED passed"
