#!/bin/bash
# Read-only commands (dups, report, tag's index lookups) open the index
# read-only: they work for a user who may read the index but not write its
# directory, and on a read-only mount.
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || skip "needs root to set up a reader without write access and a read-only mount"
mkdir -p "$WORK/t" "$WORK/idx"
echo "twice" >"$WORK/t/a"
echo "twice" >"$WORK/t/b"
echo "once" >"$WORK/t/c"
"$CIDCTL" scan --quiet --index "$WORK/idx/i.db" "$WORK/t"
chmod 755 "$WORK/idx"
chmod 644 "$WORK/idx/i.db"
[ -e "$WORK/idx/i.db-shm" ] && fail "the scan left its -shm behind"

command -v setpriv >/dev/null || skip "no setpriv (util-linux)"
as_nobody() { setpriv --reuid 65534 --regid 65534 --clear-groups "$@"; }
as_nobody "$CIDCTL" dups --index "$WORK/idx/i.db" --json >"$WORK/nobody.json" 2>"$WORK/err" ||
	fail "dups as a reader without write access: $(cat "$WORK/err")"
expect_eq "groups seen by a non-root reader" "$(json "$WORK/nobody.json" 'j["groups_count"]')" 1
as_nobody "$CIDCTL" report --index "$WORK/idx/i.db" --json >"$WORK/report.json" 2>"$WORK/err" ||
	fail "report as a reader without write access: $(cat "$WORK/err")"
expect_eq "files in the report" "$(json "$WORK/report.json" 'j["total"]["files"]')" 3
ok "dups and report as a user who cannot write the index's directory"

command -v unshare >/dev/null || skip "no unshare"
unshare -m true 2>/dev/null || skip "cannot make a mount namespace here"
rm -f "$WORK/idx/i.db-wal" "$WORK/idx/i.db-shm"  # no writer: nothing in them
unshare -m sh -c 'mount --bind -o ro "$1" "$1" && "$2" dups --index "$1/i.db" --json' sh "$WORK/idx" "$CIDCTL" \
	>"$WORK/ro.json" 2>"$WORK/err" || fail "dups on a read-only mount: $(cat "$WORK/err")"
"$CIDCTL" dups --index "$WORK/idx/i.db" --json >"$WORK/want.json"
cmp -s "$WORK/want.json" "$WORK/ro.json" || fail "dups on a read-only mount differs"
cmp -s "$WORK/want.json" "$WORK/nobody.json" || fail "dups as a non-root reader differs"
ok "dups on a read-only mount"

echo "$PASSED passed, 0 failed"
