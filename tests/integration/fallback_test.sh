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

python3 "$HERE/seccomp_no_uring.py" "$CIDCTL" scan --index "$WORK/a.db" --json "$WORK/t" >"$WORK/a.json" 2>"$WORK/err"
expect_grep "fallback message" "io_uring unavailable (Operation not permitted), falling back to pread" "$WORK/err"
expect_eq "said once" "$(grep -c 'io_uring unavailable' "$WORK/err")" 1
expect_eq "engine used" "$(json "$WORK/a.json" 'j["roots"][0]["engine"]')" pread
ok "io_uring refused by seccomp: one message, pread engine"

"$CIDCTL" scan --index "$WORK/b.db" --json "$WORK/t" >"$WORK/b.json"
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

echo "$PASSED passed, 0 failed"
