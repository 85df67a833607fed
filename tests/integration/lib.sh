# shellcheck shell=bash
# Shared by the integration tests (sourced).  Each test gets a private work
# dir, exits 77 to skip, and prints how to rerun itself when it fails.
# Environment: CIDCTL (path to the binary; ctest sets it), KEEP=1 keeps $WORK.
set -euo pipefail

TEST_NAME=$(basename "$0" .sh)
HERE=$(cd "$(dirname "$0")" && pwd)
: "${CIDCTL:?set CIDCTL to the cidctl binary (ctest does this)}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cid-$TEST_NAME.XXXXXX")
chmod 755 "$WORK"
PASSED=0

cleanup() {
	local rc=$?
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
		echo "FAIL: $TEST_NAME (exit $rc)" >&2
		echo "repro: KEEP=1 CIDCTL=$CIDCTL bash $HERE/$TEST_NAME.sh" >&2
	fi
	if [ "${KEEP:-0}" = 1 ]; then
		echo "work dir kept: $WORK" >&2
	else
		chmod -R u+rwX "$WORK" 2>/dev/null || true
		# A runtime's helper (podman's conmon) may still be writing its
		# exit files in there for a moment after the container is gone.
		local i
		for i in 1 2 3 4 5 6 7 8 9 10; do
			rm -rf "$WORK" 2>/dev/null && break
			sleep 0.3
		done
		[ ! -e "$WORK" ] || echo "warning: could not remove $WORK" >&2
	fi
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*" >&2; exit 77; }
ok() { PASSED=$((PASSED + 1)); echo "ok $PASSED - $*"; }

# expect_eq WHAT GOT WANT
expect_eq() { [ "$2" = "$3" ] || fail "$1: got '$2', want '$3'"; }
# expect_grep WHAT PATTERN FILE
expect_grep() { grep -q -- "$2" "$3" || { cat "$3" >&2; fail "$1: no '$2' in output"; }; }

# verity_digest FILE: the content id as `fsverity digest` (Debian package
# fsverity, in scripts/deps.d) computes it, independently of cidctl.
verity_digest() {
	command -v fsverity >/dev/null || fail "fsverity not installed (make deps installs it)"
	local out
	out=$(fsverity digest --hash-alg=sha256 --block-size=4096 "$1") || fail "fsverity digest $1 failed"
	echo "fsverity-${out%% *}"
}

# json FILE EXPR: evaluate a Python expression over the parsed JSON `j`.
json() { python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }
