#!/bin/bash
# cidctl tag opens only what the index describes: an indexed path that
# changed since its scan is refused (never tagged without its expected
# digest), and `tag --dups` never opens a file outside the scanned roots,
# even when a directory of the tree was swapped for a symlink after the scan.
# Works on any kernel: the files are opened (or not) before the ioctl.
. "$(dirname "$0")/lib.sh"

mkdir -p "$WORK/tree/a" "$WORK/tree/b" "$WORK/outside/b"
echo "a alone" >"$WORK/tree/a/x"
echo "same content" >"$WORK/tree/b/x"
echo "same content" >"$WORK/tree/b/y"
"$CIDCTL" scan --quiet --hash-all --index "$WORK/i.db" "$WORK/tree"

# A stale row: the path is indexed, the file changed since.
echo "other content" >"$WORK/tree/a/x"
set +e
"$CIDCTL" tag --index "$WORK/i.db" "$WORK/tree/a/x" >"$WORK/out" 2>"$WORK/err"
rc=$?
set -e
expect_eq "exit status of a stale tag" "$rc" 1
expect_grep "stale row refused" "tree/a/x: changed since the index recorded it" "$WORK/err"
grep -q "lacks named merging\|tagged" "$WORK/err" "$WORK/out" && fail "the stale file reached the ioctl: $(cat "$WORK/err")"
ok "an indexed file that changed since its scan is not tagged"

# b is swapped for a symlink to a tree with files of the same names.
echo "same content" >"$WORK/outside/b/x"
mkfifo "$WORK/outside/b/y"
mv "$WORK/tree/b" "$WORK/tree/b.old"
ln -s "$WORK/outside/b" "$WORK/tree/b"
set +e
python3 "$HERE/watch_opens.py" "$WORK/opened" "$WORK/outside/b" \
	timeout 60 "$CIDCTL" tag --dups --json --index "$WORK/i.db" >"$WORK/out" 2>"$WORK/err"
set -e
[ -s "$WORK/opened" ] && fail "tag --dups opened files outside the scanned tree: $(tr '\n' ' ' <"$WORK/opened")"
expect_grep "the swapped names are reported" "2 indexed names no longer exist" "$WORK/err"
ok "tag --dups does not follow a directory swapped for a symlink"

echo "$PASSED passed, 0 failed"
