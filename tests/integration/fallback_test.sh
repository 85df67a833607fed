#!/bin/bash
# io_uring refused for real (a seccomp filter returning EPERM from
# io_uring_setup, as container runtimes do): cidctl says so once, falls back
# to pread, and indexes exactly what an unrestricted scan indexes.
. "$(dirname "$0")/lib.sh"

mkdir -p "$WORK/t"
for i in $(seq 40); do head -c $((i * 7919)) /dev/urandom >"$WORK/t/f$i"; done
cp "$WORK/t/f7" "$WORK/t/copy-of-f7"

set +e
python3 "$HERE/seccomp_no_uring.py" true
rc=$?
set -e
[ "$rc" = 77 ] && skip "seccomp filter only written for x86_64"
[ "$rc" = 0 ] || skip "cannot install a seccomp filter here (exit $rc)"

python3 "$HERE/seccomp_no_uring.py" "$CIDCTL" scan --hash-all --index "$WORK/a.db" --json "$WORK/t" >"$WORK/a.json" 2>"$WORK/err"
expect_grep "fallback message" "io_uring unavailable (Operation not permitted), falling back to pread" "$WORK/err"
expect_eq "said once" "$(grep -c 'io_uring unavailable' "$WORK/err")" 1
expect_eq "engine used" "$(json "$WORK/a.json" 'j["roots"][0]["engine"]')" pread
ok "io_uring refused by seccomp: one message, pread engine"

"$CIDCTL" scan --hash-all --index "$WORK/b.db" --json "$WORK/t" >"$WORK/b.json"
[ "$(json "$WORK/b.json" 'j["roots"][0]["engine"]')" = io_uring ] ||
	echo "note: io_uring is refused here even without the filter; comparing pread with pread" >&2
"$CIDCTL" dups --index "$WORK/a.db" --json >"$WORK/a-dups.json"
"$CIDCTL" dups --index "$WORK/b.db" --json >"$WORK/b-dups.json"
cmp -s <(json "$WORK/a-dups.json" 'j["groups"]') <(json "$WORK/b-dups.json" 'j["groups"]') ||
	fail "the fallback indexed different content"
expect_eq "the planted duplicate" "$(json "$WORK/a-dups.json" 'j["groups_count"]')" 1
for f in f1 f23 f40; do
	want=$(verity_digest "$WORK/t/$f")
	got=$(python3 "$HERE/seccomp_no_uring.py" "$CIDCTL" hash "$WORK/t/$f" 2>/dev/null | cut -d' ' -f1)
	expect_eq "digest of $f under seccomp" "$got" "$want"
done
ok "fallback results equal io_uring results and fsverity digest"

# io_uring sets up, then io_uring_enter is refused: the scan must fall back
# (or fail), never hang.  timeout turns a hang into exit 124.  The hasher
# reads cached pages with preadv2(RWF_NOWAIT) and only the rest through
# io_uring, so the tree's pages are written back and dropped first.
python3 - "$WORK/t" <<'PY'
import os, sys
for root, _, files in os.walk(sys.argv[1]):
    for name in files:
        fd = os.open(os.path.join(root, name), os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
PY
set +e
timeout 120 python3 "$HERE/seccomp_no_uring.py" --enter "$CIDCTL" scan --hash-all --index "$WORK/c.db" --json "$WORK/t" \
	>"$WORK/c.json" 2>"$WORK/err"
rc=$?
set -e
[ "$rc" = 124 ] && fail "the scan hung when io_uring_enter was refused"
expect_eq "exit status with io_uring_enter refused" "$rc" 0
expect_grep "fallback message" "io_uring failed after setup" "$WORK/err"
"$CIDCTL" dups --index "$WORK/c.db" --json >"$WORK/c-dups.json"
cmp -s <(json "$WORK/a-dups.json" 'j["groups"]') <(json "$WORK/c-dups.json" 'j["groups"]') ||
	fail "the fallback after io_uring_enter failed indexed different content"
expect_eq "every file hashed" "$(json "$WORK/c.json" 'j["roots"][0]["hashed"]')" 41
ok "io_uring_enter refused after setup: falls back to pread, same results"

echo "$PASSED passed, 0 failed"
