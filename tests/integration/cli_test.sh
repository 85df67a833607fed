#!/bin/bash
# cidctl end to end: help texts, digests against `fsverity digest`, error messages
# that name the path and reason, exit codes, JSON, the pread fallback, and
# the plain "no named merging" answers on a kernel without it.
. "$(dirname "$0")/lib.sh"

IDX=$WORK/index.db

# --help everywhere.
"$CIDCTL" --help >"$WORK/out"
for c in scan dups report status tag untag query hash; do
	expect_grep "top-level help lists $c" "  $c " "$WORK/out"
	"$CIDCTL" "$c" --help >"$WORK/help" || fail "cidctl $c --help failed"
	expect_grep "$c --help" "usage: cidctl $c" "$WORK/help"
done
ok "--help for every command"

set +e
"$CIDCTL" frobnicate 2>"$WORK/err"; rc=$?
set -e
expect_eq "unknown command exit" "$rc" 2
expect_grep "unknown command message" "unknown command 'frobnicate'" "$WORK/err"
ok "unknown command is a usage error"

# Content ids agree with `fsverity digest`, through io_uring and through pread.
mkdir -p "$WORK/h"
: >"$WORK/h/empty"
printf abc >"$WORK/h/abc"
head -c 3000000 /dev/urandom >"$WORK/h/random"
for f in empty abc random; do
	want=$(verity_digest "$WORK/h/$f")
	got=$("$CIDCTL" hash "$WORK/h/$f" | cut -d' ' -f1)
	expect_eq "digest of $f" "$got" "$want"
	got=$(CID_NO_URING=1 "$CIDCTL" hash "$WORK/h/$f" | cut -d' ' -f1)
	expect_eq "digest of $f (pread)" "$got" "$want"
done
expect_eq "KAT abc" "$("$CIDCTL" hash "$WORK/h/abc" | cut -d' ' -f1)" \
	"fsverity-sha256:700b6bd8510f0b4f9bac8b9cf0459151a1c4a99f467892bb4bd289a67df8e19c"
ok "content ids match fsverity digest (io_uring and pread)"

# Scan JSON, engine choice and the fallback switch.
"$CIDCTL" scan --hash-all --index "$IDX" --json "$WORK/h" >"$WORK/scan.json"
expect_eq "files scanned" "$(json "$WORK/scan.json" 'j["roots"][0]["files"]')" 3
expect_eq "hashed" "$(json "$WORK/scan.json" 'j["roots"][0]["hashed"]')" 3
expect_eq "hashed_bytes" "$(json "$WORK/scan.json" 'j["roots"][0]["hashed_bytes"]')" 3000003
# Read, not mapped, by default; with --map the 3 MB file, in the page cache,
# is hashed from a mapping (0 without cachestat(2)).
expect_eq "mapped_bytes" "$(json "$WORK/scan.json" 'j["roots"][0]["mapped_bytes"]')" 0
"$CIDCTL" scan --hash-all --map --index "$WORK/map.db" --json "$WORK/h" >"$WORK/scan-map.json"
expect_eq "mapped_bytes with --map" "$(json "$WORK/scan-map.json" 'j["roots"][0]["mapped_bytes"] in (0, 3000000)')" True
expect_eq "digests with --map" "$(sqlite3 "$WORK/map.db" 'SELECT count(*), group_concat(hex(digest)) FROM (SELECT digest FROM inodes ORDER BY size)')" \
	"$(sqlite3 "$IDX" 'SELECT count(*), group_concat(hex(digest)) FROM (SELECT digest FROM inodes ORDER BY size)')"
touch "$WORK/h/new"
CID_NO_URING=1 "$CIDCTL" scan --hash-all --index "$IDX" --json "$WORK/h" >"$WORK/scan2.json"
expect_eq "fallback engine" "$(json "$WORK/scan2.json" 'j["roots"][0]["engine"]')" pread
expect_eq "rescan hashes only the new file" "$(json "$WORK/scan2.json" 'j["roots"][0]["hashed"]')" 1
expect_eq "rescan skips unchanged" "$(json "$WORK/scan2.json" 'j["roots"][0]["unchanged"]')" 3
ok "scan --json, incremental rescan, CID_NO_URING"
"$CIDCTL" scan --hash-all --index "$IDX" --rehash --json "$WORK/h" >"$WORK/scan3.json"
expect_eq "--rehash hashes everything" "$(json "$WORK/scan3.json" 'j["roots"][0]["hashed"]')" 4
ok "scan --rehash"

# Quiet when piped: stderr carries no progress line.
"$CIDCTL" scan --index "$IDX" "$WORK/h" >"$WORK/out" 2>"$WORK/err"
[ ! -s "$WORK/err" ] || { cat "$WORK/err"; fail "scan wrote to stderr when piped"; }
expect_grep "summary line" "4 files (4 inodes)" "$WORK/out"
ok "no progress output when not on a terminal"

# On a terminal: one progress line on stderr, rewritten in place.
if command -v script >/dev/null; then
	script -qec "$CIDCTL scan --index $WORK/tty.db $WORK/h" /dev/null >"$WORK/tty.out"
	expect_grep "progress line on a terminal" "scanning $WORK/h: " "$WORK/tty.out"
	grep -q $'\r' "$WORK/tty.out" || fail "progress line is not rewritten in place"
	ok "progress on a terminal"
fi

# Errors name the path and the reason.
set +e
"$CIDCTL" scan --index "$IDX" "$WORK/missing" 2>"$WORK/err"; rc=$?
set -e
expect_eq "missing root exit" "$rc" 1
expect_grep "missing root message" "$WORK/missing: No such file or directory" "$WORK/err"
ln -s "$WORK/h" "$WORK/link"
set +e
"$CIDCTL" scan --index "$IDX" "$WORK/link" 2>"$WORK/err"; rc=$?
set -e
expect_eq "symlink root exit" "$rc" 1
expect_grep "symlink root message" "symlinks are never followed" "$WORK/err"
ok "bad roots: path and reason"

printf 'this is not an sqlite database at all%.0s' $(seq 200) >"$WORK/bad.db"
cp "$WORK/bad.db" "$WORK/bad.orig"
for cmd in "scan $WORK/h" "dups" "report"; do
	set +e
	# shellcheck disable=SC2086
	"$CIDCTL" $cmd --index "$WORK/bad.db" >/dev/null 2>"$WORK/err"; rc=$?
	set -e
	expect_eq "corrupt index exit ($cmd)" "$rc" 1
	expect_grep "corrupt index names the file ($cmd)" "index $WORK/bad.db" "$WORK/err"
	expect_grep "corrupt index reason ($cmd)" "damaged" "$WORK/err"
done
cmp -s "$WORK/bad.db" "$WORK/bad.orig" || fail "a corrupt index was modified"
ok "corrupt index: named, reason given, left untouched"

# An index of the cidctl before the fs-verity id (schema 1, plain SHA-256):
# read-only commands refuse it and say to scan; a scan upgrades it and
# hashes every file again.
mkdir -p "$WORK/o"
printf abc >"$WORK/o/a"
printf abc >"$WORK/o/b"
printf xyz >"$WORK/o/c"
"$CIDCTL" scan --index "$WORK/old.db" "$WORK/o" >/dev/null
python3 - "$WORK/old.db" <<'PY'
import hashlib, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
for path, dev, ino in c.execute("SELECT path, dev, ino FROM paths").fetchall():
    d = hashlib.sha256(open(path, "rb").read()).digest()
    c.execute("UPDATE inodes SET digest=? WHERE dev=? AND ino=?", (d, dev, ino))
c.execute("PRAGMA user_version=1")
PY
for cmd in dups report; do
	set +e
	"$CIDCTL" $cmd --index "$WORK/old.db" >"$WORK/out" 2>"$WORK/err"; rc=$?
	set -e
	expect_eq "old index exit ($cmd)" "$rc" 1
	expect_grep "old index named ($cmd)" "index $WORK/old.db: made by an older cidctl" "$WORK/err"
	expect_grep "old index hint ($cmd)" "run 'cidctl scan'" "$WORK/err"
done
"$CIDCTL" scan --index "$WORK/old.db" --json "$WORK/o" >"$WORK/old.json"
# Every file read again: a and b hashed, c (its size, not its bytes)
# recorded by its fingerprint alone.
expect_eq "old index rehashed" "$(json "$WORK/old.json" 'j["roots"][0]["hashed"], j["roots"][0]["unchanged"]')" "(2, 0)"
"$CIDCTL" dups --index "$WORK/old.db" --json >"$WORK/old-dups.json"
expect_eq "upgraded index: fs-verity ids" \
	"$(json "$WORK/old-dups.json" '[g["digest"] for g in j["groups"]]')" "['$(verity_digest "$WORK/o/a")']"
ok "index of plain SHA-256 ids: refused read-only, rehashed by the next scan"

set +e
"$CIDCTL" report --index "$WORK/none.db" 2>"$WORK/err"; rc=$?
set -e
expect_eq "missing index exit" "$rc" 1
expect_grep "missing index hint" "run 'cidctl scan PATH' first" "$WORK/err"
ok "missing index suggests a scan"

# Locked index: another writer holds it for longer than the busy timeout.
python3 - "$IDX" <<'PY' &
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN EXCLUSIVE")
open(sys.argv[1] + ".held", "w").close()
time.sleep(8)
PY
holder=$!
for _ in $(seq 400); do [ -e "$IDX.held" ] && break; sleep 0.05; done
[ -e "$IDX.held" ] || fail "the lock holder did not start within 20 s"
set +e
"$CIDCTL" scan --index "$IDX" "$WORK/h" >/dev/null 2>"$WORK/err"; rc=$?
"$CIDCTL" scan --busy-timeout 100 --index "$IDX" "$WORK/h" >/dev/null 2>/dev/null; brc=$?
"$CIDCTL" dups --busy-timeout 100 --index "$IDX" >/dev/null 2>"$WORK/err2"; rrc=$?
set -e
kill "$holder" 2>/dev/null || true
wait "$holder" 2>/dev/null || true
expect_eq "locked index exit (busy)" "$rc" 4
expect_eq "locked index exit with --busy-timeout" "$brc" 4
expect_eq "a reader is not held up by a writer's lock" "$rrc" 0
expect_grep "locked index message" "index $IDX.*locked" "$WORK/err"
ok "locked index: named and explained"

# Unreadable files: reported with path and errno; the rest is indexed.
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
	mkdir -p "$WORK/u/open" "$WORK/u/closed"
	echo a >"$WORK/u/open/a"
	echo b >"$WORK/u/closed/b"
	echo c >"$WORK/u/secret"
	chmod 000 "$WORK/u/closed" "$WORK/u/secret"
	chmod 777 "$WORK"
	set +e
	setpriv --reuid=65534 --regid=65534 --clear-groups "$CIDCTL" scan --hash-all --index "$WORK/nobody.db" --json "$WORK/u" \
		>"$WORK/u.json" 2>"$WORK/err"; rc=$?
	set -e
	expect_eq "partial scan exit" "$rc" 3
	expect_grep "unreadable dir named" "$WORK/u/closed: Permission denied" "$WORK/err"
	expect_grep "unreadable file named" "$WORK/u/secret: Permission denied" "$WORK/err"
	expect_eq "readable file indexed" "$(json "$WORK/u.json" 'j["roots"][0]["hashed"]')" 1
	ok "unreadable files and dirs: path and errno, scan goes on (exit 3)"
fi

# Status and tagging on this kernel.
CID_SYSFS_DIR=$WORK/no-such-dir "$CIDCTL" status >"$WORK/out"
expect_grep "status without the feature" "not available" "$WORK/out"
mkdir -p "$WORK/sys"
echo 1 >"$WORK/sys/enabled"
echo 7 >"$WORK/sys/pages_sharing"
CID_SYSFS_DIR=$WORK/sys "$CIDCTL" status --json >"$WORK/st.json"
expect_eq "status json" "$(json "$WORK/st.json" 'j["named_merging"], j["stats"]["pages_sharing"]')" "(True, '7')"
ok "status reads whatever statistics exist"

if [ ! -d /sys/kernel/mm/cid ]; then
	"$CIDCTL" status >"$WORK/out"
	expect_grep "plain status" "the running kernel lacks named merging" "$WORK/out"
	set +e
	"$CIDCTL" tag --index "$IDX" "$WORK/h/abc" 2>"$WORK/err"; rc=$?
	set -e
	expect_eq "tag exit" "$rc" 1
	expect_grep "tag message" "$WORK/h/abc: tag: the running kernel lacks named merging" "$WORK/err"
	set +e
	"$CIDCTL" query "$WORK/h/abc" 2>"$WORK/err"; rc=$?
	set -e
	expect_grep "query message" "lacks named merging" "$WORK/err"
	# No index anywhere: tag must still get as far as the kernel.
	set +e
	HOME=$WORK/nohome XDG_STATE_HOME='' "$CIDCTL" tag "$WORK/h/abc" 2>"$WORK/err"; rc=$?
	set -e
	expect_grep "tag without an index" "lacks named merging" "$WORK/err"
	ok "tag/query say plainly that the kernel lacks named merging"
fi

echo "$PASSED passed, 0 failed"
