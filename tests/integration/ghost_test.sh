#!/bin/bash
# A renamed scanned root leaves no ghost paths in dups or tag --dups; forget
# removes a root and what it recorded; --json keeps names that are not
# UTF-8 as valid JSON, losslessly.
. "$(dirname "$0")/lib.sh"

IDX="$WORK/i.db"
mkdir -p "$WORK/tree/a" "$WORK/tree/b" "$WORK/other"
echo "shared content" >"$WORK/tree/a/x"
echo "shared content" >"$WORK/tree/b/x"
echo "also in other" >"$WORK/tree/a/y"
echo "also in other" >"$WORK/other/y"
"$CIDCTL" scan --quiet --index "$IDX" "$WORK/tree" "$WORK/other"
"$CIDCTL" dups --index "$IDX" --json >"$WORK/d1.json"
expect_eq "groups before the rename" "$(json "$WORK/d1.json" 'j["groups_count"]')" 2

mv "$WORK/tree" "$WORK/tree.renamed"
"$CIDCTL" dups --index "$IDX" --json >"$WORK/d2.json" 2>"$WORK/err"
expect_eq "groups after the rename" "$(json "$WORK/d2.json" 'j["groups_count"]')" 0
expect_eq "stale names counted" "$(json "$WORK/d2.json" 'j["stale_paths"]')" 3
expect_grep "stale note" "3 indexed names no longer exist" "$WORK/err"
set +e
"$CIDCTL" tag --dups --index "$IDX" >"$WORK/out" 2>"$WORK/err"
set -e
grep -q "tree/a/x\|tree/b/x" "$WORK/out" "$WORK/err" && ! grep -q "no longer exist" "$WORK/err" &&
	fail "tag --dups tried a ghost path: $(cat "$WORK/err")"
grep -q "lacks named merging" "$WORK/err" && fail "tag --dups reached the kernel with ghost paths"
ok "a renamed root leaves no ghost paths in dups and tag --dups"

"$CIDCTL" forget --index "$IDX" --json "$WORK/tree" >"$WORK/f.json"
expect_eq "paths forgotten" "$(json "$WORK/f.json" 'j["roots"][0]["paths_removed"]')" 3
"$CIDCTL" report --index "$IDX" --json >"$WORK/r.json"
expect_eq "roots left" "$(json "$WORK/r.json" '[t["root"] for t in j["trees"]]')" "['$WORK/other']"
expect_eq "inodes left" "$(json "$WORK/r.json" 'j["total"]["files"]')" 1
set +e
"$CIDCTL" forget --index "$IDX" "$WORK/never-scanned" 2>"$WORK/err"
rc=$?
set -e
expect_eq "exit status for an unknown root" "$rc" 1
expect_grep "unknown root" "never-scanned: not a scanned root" "$WORK/err"
"$CIDCTL" scan --quiet --index "$IDX" "$WORK/tree.renamed"
"$CIDCTL" dups --index "$IDX" --json >"$WORK/d3.json"
expect_eq "groups after scanning the new name" "$(json "$WORK/d3.json" 'j["groups_count"]')" 2
ok "forget removes a root, its paths and orphaned inodes"

# Names that are not UTF-8: valid JSON, and the bytes come back exactly.
python3 - "$WORK/raw" <<'PY'
import os, sys
d = os.fsencode(sys.argv[1])
os.makedirs(d)
for name in (b"caf\xe9", b"\xff\xfe-twin", b"ok-\xc3\xa9"):
    with open(os.path.join(d, name), "wb") as f:
        f.write(b"same bytes under odd names\n")
PY
"$CIDCTL" scan --quiet --index "$WORK/raw.db" "$WORK/raw"
"$CIDCTL" dups --index "$WORK/raw.db" --json >"$WORK/raw.json"
python3 - "$WORK/raw.json" "$WORK/raw" <<'PY' || fail "dups --json is not valid JSON or lost bytes of non-UTF-8 names"
import json, os, sys
raw = open(sys.argv[1], "rb").read()
j = json.loads(raw.decode("utf-8"))  # strict: the text itself must be UTF-8
got = sorted(os.fsencode(p) for g in j["groups"] for i in g["inodes"] for p in i["paths"])
d = os.fsencode(sys.argv[2])
want = sorted(os.path.join(d, n) for n in os.listdir(d))
assert got == want, (got, want)
PY
ok "--json encodes names that are not UTF-8 losslessly"

echo "$PASSED passed, 0 failed"
