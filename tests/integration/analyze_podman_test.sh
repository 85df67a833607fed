#!/bin/bash
# cid-analyze on two running podman containers, by name (real podman and
# runc, a private --root/--runroot under the work dir, the vfs storage
# driver: each container gets its own copy of the image, so the two
# busybox binaries are identical files on different inodes).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/analyze_lib.sh"
command -v podman >/dev/null || skip "podman not installed (scripts/deps.d/analyze.txt)"
command -v runc >/dev/null || skip "runc not installed"
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || skip "needs busybox-static"

PODMAN_ARGS=(--root "$WORK/podman" --runroot "$WORK/podman-run" --storage-driver vfs
	--cgroup-manager cgroupfs --runtime runc --events-backend file)
pm() { podman "${PODMAN_ARGS[@]}" "$@"; }
extra_cleanup() {
	pm rm -f -t 0 analyze-c1 analyze-c2 >/dev/null 2>&1 || true
	# conmon outlives its container briefly, writing under the work dir.
	for _ in $(seq 50); do pgrep -f "conmon.*$WORK" >/dev/null || break; sleep 0.1; done
	# Anything podman left mounted under the work dir (its shm mounts).
	findmnt -rn -o TARGET | grep "^$WORK/" | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
}

mkdir -p "$WORK/rootfs/bin"
cp /bin/busybox "$WORK/rootfs/bin/busybox"
tar -C "$WORK/rootfs" -cf "$WORK/rootfs.tar" .
pm import "$WORK/rootfs.tar" localhost/cid-analyze-test:1 >/dev/null 2>"$WORK/import.err" ||
	{ cat "$WORK/import.err" >&2; fail "podman import failed"; }
for c in analyze-c1 analyze-c2; do
	pm run -d --net none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --name $c \
		localhost/cid-analyze-test:1 /bin/busybox sleep 600 >/dev/null ||
		fail "podman run $c failed"
done
ok "two containers running"

ARGS=()
for a in "${PODMAN_ARGS[@]:0:6}"; do ARGS+=("--podman-arg=$a"); done
"$CID_ANALYZE" --container analyze-c1 --container analyze-c2 "${ARGS[@]}" --json >"$WORK/out.json"
eval "$(python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
f = j["figures"]
c = {g["name"]: g["figures"] for g in j["groups"] if g["kind"] == "container"}
print("procs=%d achieved=%d sharings=%d named=%d" % (f["processes"], f["nm_achieved"], f["nm_oracle_sharings"], f["by_type"]["named"]["mmap_fork"]))
print("c1=%d c2=%d" % (c.get("analyze-c1", {}).get("processes", 0), c.get("analyze-c2", {}).get("processes", 0)))
print("c1_named=%d" % (c.get("analyze-c1", {}).get("named_frames", 0)))
' "$WORK/out.json")"
expect_eq "processes" "$procs" 2
expect_eq "container analyze-c1 reported with its process" "$c1" 1
expect_eq "container analyze-c2 reported with its process" "$c2" 1
expect_eq "no frame shared across inodes on this kernel" "$achieved" 0
[ "$sharings" -gt 0 ] && [ "$sharings" -le "$c1_named" ] ||
	fail "oracle should share the containers' identical busybox pages: sharings $sharings, c1 named $c1_named"
ok "two containers by name: per-container figures; the copies' identical pages in the oracle ($sharings pages)"

set +e
"$CID_ANALYZE" --container analyze-nope "${ARGS[@]}" >/dev/null 2>"$WORK/err"
rc=$?
set -e
expect_eq "missing container" "$rc" 5
expect_grep "missing container message" "container analyze-nope: no such container" "$WORK/err"
pm stop -t 0 analyze-c2 >/dev/null
set +e
"$CID_ANALYZE" --container analyze-c2 "${ARGS[@]}" >/dev/null 2>"$WORK/err"
rc=$?
set -e
expect_eq "stopped container" "$rc" 5
expect_grep "stopped container message" "container analyze-c2: not running" "$WORK/err"
ok "a missing and a stopped container: exit 5 with the name"
