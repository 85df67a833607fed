#!/bin/bash
# cid-oci-hook under real podman + runc: two images of the same tree
# (`podman import` of tarballs that differ in a few files' mtimes and one
# extra file, so their layer digests differ), containers from both with the
# hook in --hooks-dir.  Checks that the hook ran, both layers are indexed,
# the duplicates are found and reported (stock kernel), hard-linked with
# --hardlink only where mode, owner, mtime and xattrs match, undone with
# `cidctl unlink-dups --undo`, that containers see the right bytes
# throughout, and that `podman rm` and `rmi` still work.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/hooks_lib.sh"
[ "$(id -u)" = 0 ] || skip "needs root (rootful podman with overlay storage)"
command -v podman >/dev/null || skip "podman not installed (scripts/deps.d/container-hooks.txt)"
command -v runc >/dev/null || skip "runc not installed"
BUSYBOX=$(command -v busybox) || skip "no busybox for the image"
ldd "$BUSYBOX" >/dev/null 2>&1 && skip "busybox is dynamically linked (need busybox-static)"
[ -x "$CID_OCI_HOOK" ] || fail "no hook binary at $CID_OCI_HOOK"

P=$WORK/podman
mkdir -p "$P/hooks-report" "$P/hooks-link"
PODMAN=(podman --root "$P/root" --runroot "$P/run" --runtime runc --cgroup-manager cgroupfs
	--storage-driver overlay --events-backend none --log-level error)
RUN=(run --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
teardown() {
	local rc=$?
	set +e
	"${PODMAN[@]}" rm -af >/dev/null 2>&1 || true
	"${PODMAN[@]}" rmi -af >/dev/null 2>&1 || true
	grep -o " $P/[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
	(exit "$rc")  # lib.sh's cleanup reads the status from $?
	cleanup
	exit "$rc"
}
trap teardown EXIT

# The tree: a static busybox and real shared objects.
T=$WORK/tree
mkdir -p "$T/bin" "$T/usr/lib"
cp "$BUSYBOX" "$T/bin/busybox"
for t in sh cat sha256sum stat; do ln -s busybox "$T/bin/$t"; done
mapfile -t libs < <(find /usr/lib/x86_64-linux-gnu /usr/lib -maxdepth 1 -type f -name '*.so*' -size -400k 2>/dev/null | sort)
cp "${libs[@]:0:40}" "$T/usr/lib/"
find "$T" -type f -exec touch -h -d '2024-01-01 00:00:00' {} +
files=$(find "$T" -type f | wc -l)
[ "$files" -ge 10 ] || skip "too few shared objects to build an image from ($files)"
# Image B: the same files, three of them with another mtime, and one more.
B=$WORK/treeB
cp -a "$T" "$B"
mapfile -t touched < <(cd "$B" && find usr/lib -type f | sort)
touched=("${touched[@]:0:3}")
for f in "${touched[@]}"; do touch -d '2025-06-01 12:00:00' "$B/$f"; done
echo "only in image B" >"$B/extra.txt"
tar -C "$T" -cf "$WORK/a.tar" .
tar -C "$B" -cf "$WORK/b.tar" .
"${PODMAN[@]}" import -q "$WORK/a.tar" localhost/cid-test-a:1 >/dev/null
"${PODMAN[@]}" import -q "$WORK/b.tar" localhost/cid-test-b:1 >/dev/null
ok "two images imported ($files files each, B with 3 other mtimes and 1 extra file)"

hooks_json() {  # DIR SHIPPED-FILE EXTRA-ARGS...: the shipped hooks.d file, pointed at this build and $P
	local dir=$1 shipped=$2
	shift 2
	python3 - "$CID_SOURCE_DIR/container-hooks/oci/hooks.d/$shipped" "$dir/50-cid.json" "$CID_OCI_HOOK" \
		"$P/index.db" "$P/hook.log" "$P/no-cidd.sock" "$@" <<'PY'
import json, sys
src, out, hook, index, log, sock, *extra = sys.argv[1:]
h = json.load(open(src))
h["hook"]["path"] = hook
h["hook"]["args"] += ["--fail-closed", "--budget-ms", "30000", "--index", index, "--log", log, "--socket", sock] + extra
h["hook"]["timeout"] = 60
json.dump(h, open(out, "w"))
PY
}
hooks_json "$P/hooks-report" 50-cid.json
hooks_json "$P/hooks-link" 50-cid.json --hardlink
mkdir -p "$P/hooks-prestart"
hooks_json "$P/hooks-prestart" 50-cid-prestart.json.example

# in IMAGE HOOKSDIR: sha256 of every file of the tree as the container sees it
in_container() {
	"${PODMAN[@]}" --hooks-dir "$2" "${RUN[@]}" --rm "localhost/$1:1" /bin/sh -c \
		'cd / && for f in bin/busybox usr/lib/*; do sha256sum "$f"; done'
}
expected_sums=$(cd "$T" && for f in bin/busybox usr/lib/*; do sha256sum "$f"; done)

got=$(in_container cid-test-a "$P/hooks-report") || fail "container from image A did not run"
expect_eq "bytes in container A" "$got" "$expected_sums"
got=$(in_container cid-test-b "$P/hooks-report") || fail "container from image B did not run"
expect_eq "bytes in container B" "$got" "$expected_sums"
expect_eq "hook runs" "$(wc -l <"$P/hook.log")" 2
tail -1 "$P/hook.log" >"$P/last.json"
layer_a=$(head -1 "$P/hook.log" | python3 -c 'import json,sys; print(json.load(sys.stdin)["layers"][0])')
layer_b=$(json "$P/last.json" 'j["layers"][0]')
[ "$layer_a" != "$layer_b" ] || fail "both images have the same layer $layer_a"
expect_eq "mode" "$(json "$P/last.json" 'j["mode"]')" report
expect_eq "duplicated files of B" "$(json "$P/last.json" 'j["duplicated_files"]')" "$files"
"$CIDCTL" dups --index "$P/index.db" --json >"$P/dups.json"
python3 "$HERE/expected_dups.py" 1 "$layer_a" "$layer_b" >"$P/oracle.json"
expect_eq "duplicate groups (cidctl vs oracle)" "$(json "$P/dups.json" 'j["groups_count"]')" \
	"$(json "$P/oracle.json" 'len(j["groups"])')"
expect_eq "duplicate groups" "$(json "$P/dups.json" 'j["groups_count"]')" "$files"
ok "report-only: hook ran in both containers, both layers indexed, $files duplicated contents found, bytes right"

# The prestart example runs only for containers annotated io.cid.merge=true.
"${PODMAN[@]}" --hooks-dir "$P/hooks-prestart" "${RUN[@]}" --rm localhost/cid-test-a:1 /bin/sh -c : ||
	fail "container without the annotation (prestart hooks dir)"
expect_eq "hook runs without io.cid.merge=true" "$(wc -l <"$P/hook.log")" 2
"${PODMAN[@]}" --hooks-dir "$P/hooks-prestart" "${RUN[@]}" --rm --annotation io.cid.merge=true \
	localhost/cid-test-a:1 /bin/sh -c : || fail "container with io.cid.merge=true (prestart hooks dir)"
expect_eq "hook runs with io.cid.merge=true" "$(wc -l <"$P/hook.log")" 3
expect_eq "prestart run's layer" "$(tail -1 "$P/hook.log" | python3 -c 'import json,sys; print(json.load(sys.stdin)["layers"][0])')" "$layer_a"
ok "the shipped hooks.d files as podman loads them: 50-cid.json (createRuntime, always), and the prestart example only with io.cid.merge=true"

ino() { stat -c %i "$1"; }
mapfile -t all < <(cd "$T" && find usr/lib -type f | sort)
same=${all[3]}
[ "$(ino "$layer_a/$same")" != "$(ino "$layer_b/$same")" ] || fail "report-only mode linked files"
got=$(in_container cid-test-a "$P/hooks-link") || fail "container A with --hardlink did not run"
expect_eq "bytes in container A after linking" "$got" "$expected_sums"
tail -1 "$P/hook.log" >"$P/last.json"
expect_eq "mode" "$(json "$P/last.json" 'j["mode"]')" hardlink
expect_eq "hard-linked names" "$(json "$P/last.json" 'j["hardlinked"]')" "$((files - 3))"
expect_eq "copies left alone (mtime differs; 3 contents x 2)" "$(json "$P/last.json" 'j["hardlink_differ"]')" 6
expect_eq "equal metadata: one inode" "$(ino "$layer_a/$same")" "$(ino "$layer_b/$same")"
for f in "${touched[@]}"; do
	[ "$(ino "$layer_a/$f")" != "$(ino "$layer_b/$f")" ] || fail "$f linked although its mtime differs"
done
got=$(in_container cid-test-b "$P/hooks-link") || fail "container B after linking did not run"
expect_eq "bytes in container B after linking" "$got" "$expected_sums"
expect_eq "B still has its extra file" "$("${PODMAN[@]}" "${RUN[@]}" --rm localhost/cid-test-b:1 /bin/cat /extra.txt)" "only in image B"
"$CIDCTL" unlink-dups --index "$P/index.db" --json >"$P/journal.json"
expect_eq "journal" "$(json "$P/journal.json" 'j["linked"]')" "$((files - 3))"
ok "--hardlink: $((files - 3)) names linked across the two images' layers, the 3 with another mtime left alone, bytes right"

"$CIDCTL" unlink-dups --undo --index "$P/index.db" --json >"$P/undo.json"
expect_eq "restored" "$(json "$P/undo.json" 'j["restored"]')" "$((files - 3))"
[ "$(ino "$layer_a/$same")" != "$(ino "$layer_b/$same")" ] || fail "undo left $same linked"
expect_eq "mtime after undo" "$(stat -c %Y "$layer_b/$same")" "$(stat -c %Y "$T/$same")"
expect_eq "mode after undo" "$(stat -c %a "$layer_b/$same")" "$(stat -c %a "$T/$same")"
cmp "$layer_b/$same" "$T/$same" || fail "content after undo"
got=$(in_container cid-test-b "$P/hooks-report") || fail "container B after undo did not run"
expect_eq "bytes in container B after undo" "$got" "$expected_sums"
ok "cidctl unlink-dups --undo gave every linked name its own inode back (same bytes, mode, mtime)"

"${PODMAN[@]}" --hooks-dir "$P/hooks-link" "${RUN[@]}" --name cid-keep localhost/cid-test-a:1 /bin/sh -c : ||
	fail "podman run without --rm"
"${PODMAN[@]}" rm cid-keep >/dev/null || fail "podman rm after the hook"
"${PODMAN[@]}" rmi localhost/cid-test-a:1 localhost/cid-test-b:1 >/dev/null || fail "podman rmi after the hook"
[ ! -d "$layer_a" ] || fail "rmi left layer $layer_a behind"
ok "podman rm and rmi still work after the hook (and its hard links)"
echo "$PASSED passed"
