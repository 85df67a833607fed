#!/bin/bash
# A real tree (a few thousand files of /usr/lib) copied twice; one file
# changed in one copy, another hardlinked.  `cidctl dups` and `report` must
# find exactly the groups and byte counts an independent oracle
# (expected_dups.py: os.walk + hashlib) computes, and the groups we planted.
. "$(dirname "$0")/lib.sh"

NFILES=${CID_TEST_FILES:-3000}
SRC=${CID_TEST_SOURCE:-/usr/lib}
[ -d "$SRC" ] || skip "$SRC not found"

find "$SRC" -xdev -type f -size -4M -readable 2>/dev/null | LC_ALL=C sort | sed -n "1,${NFILES}p" >"$WORK/list"
n=$(wc -l <"$WORK/list")
[ "$n" -ge 500 ] || skip "only $n files under $SRC"
mkdir -p "$WORK/a" "$WORK/b"
tar -cf - -T "$WORK/list" 2>/dev/null | tar -xf - -C "$WORK/a"
cp -a "$WORK/a/." "$WORK/b/"

# Change one file in copy b (it no longer matches its twin in a), and
# hardlink one file of copy a under a new name (one inode: no new copy).
changed=$(cd "$WORK/b" && find . -type f -size +20k | LC_ALL=C sort | sed -n 1p)
linked=$(cd "$WORK/a" && find . -type f -size +20k | LC_ALL=C sort | sed -n 2p)
if [ -z "$changed" ] || [ -z "$linked" ]; then skip "no files over 20k to play with"; fi
printf 'changed' >>"$WORK/b/$changed"
ln "$WORK/a/$linked" "$WORK/a/$linked.hardlink"
# A symlink, a FIFO and an empty file the scan must treat correctly.
ln -s /etc/passwd "$WORK/a/symlink-to-outside"
mkfifo "$WORK/b/fifo"
: >"$WORK/a/empty"

IDX=$WORK/index.db
"$CIDCTL" scan --index "$IDX" --json "$WORK/a" "$WORK/b" >"$WORK/scan.json"
expect_eq "special files skipped" "$(json "$WORK/scan.json" 'j["roots"][1]["special"]')" 1
expect_eq "symlinks not followed" "$(json "$WORK/scan.json" 'j["roots"][0]["symlinks"] >= 1')" True
expect_eq "hardlink counted once" "$(json "$WORK/scan.json" 'j["roots"][0]["files"] - j["roots"][0]["inodes"] >= 1')" True
ok "scanned $n files twice"

python3 "$HERE/expected_dups.py" 1 "$WORK/a" "$WORK/b" >"$WORK/want.json"
"$CIDCTL" dups --index "$IDX" --json >"$WORK/dups.json"
python3 - "$WORK/dups.json" "$WORK/want.json" "$WORK" "$changed" "$linked" <<'PY'
import json, os, sys
got = json.load(open(sys.argv[1])); want = json.load(open(sys.argv[2]))
work, changed, linked = sys.argv[3], sys.argv[4][2:], sys.argv[5][2:]
def norm(groups):
    return [(g["digest"], g["size"], g["copies"], g["duplicated_bytes"],
             sorted(p for i in g["inodes"] for p in i["paths"]) if "inodes" in g else g["paths"]) for g in groups]
assert got["groups_count"] == len(want["groups"]), (got["groups_count"], len(want["groups"]))
assert got["duplicated_bytes"] == want["duplicated_bytes"], (got["duplicated_bytes"], want["duplicated_bytes"])
g, w = norm(got["groups"]), norm(want["groups"])
for a, b in zip(g, w):
    assert a == b, ("group differs", a, b)
# The planted facts, independent of the oracle:
by_path = {p: grp for grp in got["groups"] for i in grp["inodes"] for p in i["paths"]}
a_changed, b_changed = os.path.join(work, "a", changed), os.path.join(work, "b", changed)
if b_changed in by_path:
    assert a_changed not in [p for i in by_path[b_changed]["inodes"] for p in i["paths"]], "changed file still grouped with its twin"
a_l, a_h, b_l = (os.path.join(work, "a", linked), os.path.join(work, "a", linked + ".hardlink"), os.path.join(work, "b", linked))
grp = by_path[b_l]
inode_of = {p: (i["dev"], i["ino"]) for i in grp["inodes"] for p in i["paths"]}
assert inode_of[a_l] == inode_of[a_h], "hardlink not reported as the same inode"
assert inode_of[a_l] != inode_of[b_l]
print("dups: %d groups, %d duplicated bytes: match" % (len(g), got["duplicated_bytes"]))
PY
ok "dups --json matches the oracle exactly; planted change and hardlink seen"

"$CIDCTL" report --index "$IDX" --json >"$WORK/report.json"
python3 - "$WORK/report.json" "$WORK/want.json" <<'PY'
import json, sys
got = json.load(open(sys.argv[1])); want = json.load(open(sys.argv[2]))
for k, v in want["total"].items():
    assert got["total"][k] == v, (k, got["total"][k], v)
assert len(got["trees"]) == 2
print("report totals match:", got["total"])
PY
ok "report --json totals match the oracle"

# --min-size filters, the text output agrees with JSON.
python3 "$HERE/expected_dups.py" 65536 "$WORK/a" "$WORK/b" >"$WORK/want64k.json"
"$CIDCTL" dups --index "$IDX" --min-size 64k --json >"$WORK/dups64k.json"
expect_eq "--min-size 64k groups" "$(json "$WORK/dups64k.json" 'j["groups_count"]')" \
	"$(json "$WORK/want64k.json" 'len(j["groups"])')"
"$CIDCTL" dups --index "$IDX" >"$WORK/dups.txt" 2>"$WORK/dups.err"
expect_eq "text groups" "$(grep -c '^fsverity-sha256:' "$WORK/dups.txt")" "$(json "$WORK/dups.json" 'j["groups_count"]')"
ok "--min-size and text output"

# The pread fallback indexes the same content.
CID_NO_URING=1 "$CIDCTL" scan --index "$WORK/pread.db" "$WORK/a" "$WORK/b" >/dev/null
"$CIDCTL" dups --index "$WORK/pread.db" --json >"$WORK/dups-pread.json"
cmp -s <(json "$WORK/dups.json" 'j["groups"]') <(json "$WORK/dups-pread.json" 'j["groups"]') ||
	fail "pread and io_uring scans disagree"
ok "pread fallback gives identical groups"

# Deleting a copy and rescanning drops its rows.
rm -rf "$WORK/b"
mkdir "$WORK/b"
"$CIDCTL" scan --index "$IDX" --json "$WORK/a" "$WORK/b" >"$WORK/rescan.json"
expect_eq "rows of deleted files removed" "$(json "$WORK/rescan.json" 'j["roots"][1]["removed"] > 0')" True
python3 "$HERE/expected_dups.py" 1 "$WORK/a" >"$WORK/want-a.json"
"$CIDCTL" dups --index "$IDX" --json >"$WORK/dups-a.json"
expect_eq "groups after deletion" "$(json "$WORK/dups-a.json" 'j["groups_count"]')" \
	"$(json "$WORK/want-a.json" 'len(j["groups"])')"
ok "rescan after deleting a copy"

echo "$PASSED passed, 0 failed"
