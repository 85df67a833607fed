#!/bin/bash
# Interrupted scans lose nothing: kill -9 and Ctrl-C (SIGINT) in the middle
# of a scan leave a valid index holding every committed batch, and the next
# scan continues from there (hashes only the rest) to the right result.
. "$(dirname "$0")/lib.sh"
command -v sqlite3 >/dev/null || skip "sqlite3 CLI missing (make deps)"

N=1200
# N files of 512 KiB; every 12th is a copy of its predecessor: 100 groups.
python3 - "$WORK/t" "$N" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
prev = None
for i in range(n):
    d = os.path.join(root, "d%02d" % (i % 20))
    os.makedirs(d, exist_ok=True)
    data = prev if (i % 12 == 11) else os.urandom(512 << 10)
    with open(os.path.join(d, "f%04d" % i), "wb") as f:
        f.write(data)
    prev = data
PY
sync

# Make the scan read from disk, so it lasts long enough to interrupt.
drop_cache() { python3 "$HERE/evict_cache.py" "$WORK/t"; }
count() { sqlite3 "$1" 'SELECT count(*) FROM inodes' 2>/dev/null || echo 0; }

# interrupt SIGNAL INDEX: start a scan, signal it after some batches landed.
# Sets SCAN_RC and COMMITTED (rows in the index after the signal).
interrupt() {
	local sig=$1 idx=$2
	drop_cache
	"$CIDCTL" scan --index "$idx" --workers 1 --batch 20 "$WORK/t" >"$WORK/out" 2>"$WORK/err" &
	local pid=$!
	for _ in $(seq 1500); do
		[ "$(count "$idx")" -ge 40 ] && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.02
	done
	kill "-$sig" "$pid" 2>/dev/null || true
	set +e
	wait "$pid"
	SCAN_RC=$?
	set -e
	COMMITTED=$(count "$idx")
	[ "$COMMITTED" -lt "$N" ] || skip "the scan finished before it could be interrupted (machine too fast)"
	[ "$COMMITTED" -ge 1 ] || fail "nothing committed before the $sig"
	expect_eq "integrity after $sig" "$(sqlite3 "$idx" 'PRAGMA integrity_check')" ok
}

# continue_scan INDEX: the next scan must skip what was committed.
continue_scan() {
	local idx=$1
	"$CIDCTL" scan --index "$idx" --json "$WORK/t" >"$WORK/again.json"
	local unchanged hashed unique
	unchanged=$(json "$WORK/again.json" 'j["roots"][0]["unchanged"]')
	hashed=$(json "$WORK/again.json" 'j["roots"][0]["hashed"]')
	# Files whose first and last 4 KiB no other file shares are indexed
	# by size and partial fingerprint, not hashed (all files here are
	# 512 KiB; only the copies share theirs).
	unique=$(json "$WORK/again.json" 'j["roots"][0]["partial_unique"]')
	[ "$unchanged" -ge "$COMMITTED" ] || fail "committed rows were rescanned: unchanged $unchanged < committed $COMMITTED"
	[ "$((unchanged + hashed + unique))" -ge "$N" ] ||
		fail "files left out after continuing: unchanged $unchanged + hashed $hashed + by fingerprint $unique < $N"
	expect_eq "rows" "$(count "$idx")" "$N"
	"$CIDCTL" dups --index "$idx" --json >"$WORK/dups.json"
	expect_eq "duplicate groups" "$(json "$WORK/dups.json" 'j["groups_count"]')" 100
	expect_eq "duplicated bytes" "$(json "$WORK/dups.json" 'j["duplicated_bytes"]')" $((100 * 512 * 1024))
}

interrupt KILL "$WORK/kill9.db"
expect_eq "kill -9 exit" "$SCAN_RC" 137
ok "kill -9 after $COMMITTED rows: index valid"
continue_scan "$WORK/kill9.db"
ok "scan after kill -9 continues and completes"

interrupt INT "$WORK/int.db"
expect_eq "Ctrl-C exit" "$SCAN_RC" 130
expect_grep "Ctrl-C message" "scan interrupted; everything hashed so far is kept" "$WORK/err"
ok "SIGINT after $COMMITTED rows: exit 130, index valid"
continue_scan "$WORK/int.db"
ok "scan after SIGINT continues and completes"

echo "$PASSED passed, 0 failed"
