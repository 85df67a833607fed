#!/bin/bash
# cid-oci-hook against its should-fail corpus (hooks_should_fail/), run
# standalone and handed to a cidd: each bad
# input gets its own exit status and a message naming what is wrong with
# --fail-closed, and exit 0 (container not blocked) without it.  Then a
# good stack as a golden run: layers found through the l/ links, indexed,
# duplicates reported, and a second run reading everything from the index.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/hooks_lib.sh"
[ -x "$CID_OCI_HOOK" ] || fail "no hook binary at $CID_OCI_HOOK"

corpus=$HERE/hooks_should_fail
# A cidd of its own, for the runs handed to it (cid-oci-hook runs the hook
# in cidd when cidd is there, cid-oci-hook-standalone otherwise).
CIDD_PIDS=()
stop_cidds() {
	local rc=$?
	for p in "${CIDD_PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
	wait 2>/dev/null
	(exit "$rc")
	cleanup
}
trap stop_cidds EXIT
CSOCK=$WORK/cidd.sock
"$CIDD" --index "$WORK/cidd-index.db" --socket "$CSOCK" 2>"$WORK/cidd.log" &
CIDD_PIDS+=($!)
for _ in $(seq 100); do [ -S "$CSOCK" ] && break; sleep 0.1; done
[ -S "$CSOCK" ] || { cat "$WORK/cidd.log" >&2; fail "cidd did not listen"; }

# run_corpus WHERE SOCKET: every case, with and without --fail-closed.
run_corpus() {
	local where=$1 sock=$2 n=0 case name w args want msg mode extra rc expected a
	for case in "$corpus"/*/; do
		name=$(basename "$case")
		w=$WORK/$where/$name
		mkdir -p "$w"
		make_storage "$w"
		echo "{\"ociVersion\": \"1.0.2\", \"id\": \"c1\", \"status\": \"creating\", \"pid\": 0, \"bundle\": \"$w/bundle\"}" >"$w/state.json"
		for f in state.json config.json mountinfo; do
			[ -e "$case/$f" ] || continue
			dest=$w/$f
			[ "$f" = config.json ] && dest=$w/bundle/config.json
			sed "s|@WORK@|$w|g" "$case/$f" >"$dest"
		done
		[ -e "$case/setup.sh" ] && (cd "$w" && sh "$case/setup.sh")
		args=()
		if [ -e "$case/args" ]; then
			while IFS= read -r a; do args+=("${a//@WORK@/$w}"); done <"$case/args"
		fi
		want=$(sed -n 1p "$case/expect")
		msg=$(sed -n 2p "$case/expect" | sed "s|@WORK@|$w|g")
		for mode in closed open; do
			extra=()
			[ "$mode" = closed ] && extra=(--fail-closed)
			rc=0
			rm -f "$w/log"
			"$CID_OCI_HOOK" --index "$w/index.db" --mountinfo "$w/mountinfo" --socket "$sock" --log "$w/log" \
				"${extra[@]}" "${args[@]}" <"$w/state.json" >"$w/out" 2>"$w/err" || rc=$?
			expected=$want
			[ "$mode" = open ] && [ "$want" != 2 ] && expected=0
			[ "$rc" = "$expected" ] || { cat "$w/err" >&2; fail "$name ($mode, $where): exit $rc, want $expected"; }
			grep -qF -- "$msg" "$w/err" || { cat "$w/err" >&2; fail "$name ($mode, $where): stderr lacks '$msg'"; }
			if [ "$mode" = open ] && [ "$want" != 2 ] && [ "$want" != 0 ]; then
				grep -q "container not blocked" "$w/err" || fail "$name (open, $where): no 'container not blocked'"
			fi
			if [ -s "$w/log" ]; then  # (grep: python's start-up costs ~0.1 s a case)
				grep -q "\"ran_in\":\"$where\"" "$w/log" || fail "$name ($mode): did not run $where: $(cat "$w/log")"
			fi
		done
		n=$((n + 1))
	done
	[ "$n" -ge 20 ] || fail "only $n corpus cases found in $corpus"
	ok "$n bad inputs, hook run $where: distinct exit codes with --fail-closed, exit 0 without"
}
run_corpus standalone "$WORK/no-cidd.sock"
run_corpus cidd "$CSOCK"

# Golden run: a file duplicated across the two layers, one only in L1, one
# in the upper layer (never indexed: only lower layers are).
w=$WORK/good
make_storage "$w"
o=$w/storage/overlay
head -c 100000 /dev/urandom >"$o/L1/diff/shared.bin"
cp "$o/L1/diff/shared.bin" "$o/L2/diff/shared.bin"
echo only-here >"$o/L1/diff/own.txt"
cp "$o/L1/diff/shared.bin" "$o/U/diff/upper.bin"
echo "{\"ociVersion\": \"1.0.2\", \"id\": \"good1\", \"pid\": 0, \"bundle\": \"$w/bundle\"}" >"$w/state.json"
for run in 1 2; do
	"$CID_OCI_HOOK" --fail-closed --budget-ms 60000 --index "$w/index.db" --mountinfo "$w/mountinfo" \
		--socket "$w/no-cidd.sock" --log "$w/log" <"$w/state.json" 2>"$w/err" || { cat "$w/err" >&2; fail "good run $run"; }
done
expect_eq "log lines" "$(wc -l <"$w/log")" 2
last=$(tail -1 "$w/log")
echo "$last" >"$w/last.json"
expect_eq "layers" "$(json "$w/last.json" '",".join(j["layers"])')" "$o/L1/diff,$o/L2/diff"
expect_eq "layers indexed" "$(json "$w/last.json" 'j["layers_indexed"]')" 2
expect_eq "second run hashes nothing" "$(json "$w/last.json" 'j["files_hashed"]')" 0
expect_eq "duplicated files" "$(json "$w/last.json" 'j["duplicated_files"]')" 2
expect_eq "duplicated bytes" "$(json "$w/last.json" 'j["duplicated_bytes"]')" 100000
expect_eq "mode on this kernel" "$(json "$w/last.json" 'j["mode"]')" \
	"$([ -d /sys/kernel/mm/cid ] && echo tag || echo report)"
"$CIDCTL" report --index "$w/index.db" --json >"$w/report.json"
expect_eq "upper layer not indexed" "$(json "$w/report.json" 'len([t for t in j["trees"] if "/U/" in t["root"]])')" 0
expect_eq "files in the index" "$(json "$w/report.json" 'j["total"]["files"]')" 3
expect_eq "second run: layers already current" "$(json "$w/last.json" 'j["layers_current"]')" 2
expect_eq "second run: index only read" "$(json "$w/last.json" 'j["index_written"]')" False
ok "golden stack: both lowers indexed through l/ links, 1 duplicated content reported, rerun reads the index only"

# No cidd and a budget too small for the stack: one line says so, the
# container is not blocked, and the work is left for later.
# The index and the budget come from the hook's environment (hooks.d "env").
rc=0
CID_INDEX=$w/unindexed.db CID_HOOK_BUDGET_MS=0 "$CID_OCI_HOOK" --fail-closed --mountinfo "$w/mountinfo" \
	--socket "$w/no-cidd.sock" --log "$w/nocidd.log" <"$w/state.json" 2>"$w/nocidd.err" || rc=$?
expect_eq "no cidd, budget 0: exit" "$rc" 0
[ -s "$w/unindexed.db" ] || fail "CID_INDEX=$w/unindexed.db was not the index the hook opened"
expect_eq "lines naming the missing cidd" "$(grep -c 'cidd is not running' "$w/nocidd.err")" 1
expect_grep "what was done" "did only what fits in 0 ms (0 of 2 layers indexed)" "$w/nocidd.err"
expect_eq "work left pending" "$(json "$w/nocidd.log" 'j["pending"]')" True
expect_eq "cidd reached" "$(json "$w/nocidd.log" 'j["cidd"]')" False
ok "without cidd: said once on stderr, only what fitted (0 ms: nothing), container not blocked; CID_INDEX and CID_HOOK_BUDGET_MS honoured"

# A layer that changed is scanned again (on a read-write connection).
cp "$o/L1/diff/shared.bin" "$o/L2/diff/again.bin"
"$CID_OCI_HOOK" --fail-closed --budget-ms 60000 --index "$w/index.db" --mountinfo "$w/mountinfo" \
	--socket "$w/no-cidd.sock" --log "$w/log" <"$w/state.json" 2>"$w/err" || { cat "$w/err" >&2; fail "changed layer"; }
tail -1 "$w/log" >"$w/last.json"
expect_eq "changed layer: index written" "$(json "$w/last.json" 'j["index_written"]')" True
expect_eq "changed layer: L1 still current" "$(json "$w/last.json" 'j["layers_current"]')" 1
expect_eq "changed layer: new copy found" "$(json "$w/last.json" 'j["duplicated_files"]')" 3
ok "a file added to a layer: the hook rescans that layer and finds the new copy"

# Escaped ':' and ',' in a layer path, as the mount table shows them.
mkdir -p "$o/L3,x:y/diff"
echo z >"$o/L3,x:y/diff/z"
echo "48 26 0:39 / $o/U/merged rw - overlay overlay rw,lowerdir=$o/l/AAA:$o/L3\\134\\054x\\134:y/diff,upperdir=$o/U/diff,workdir=$o/U/work" >"$w/mountinfo"
"$CID_OCI_HOOK" --fail-closed --budget-ms 60000 --index "$w/index.db" --mountinfo "$w/mountinfo" \
	--socket "$w/no-cidd.sock" --log "$w/log" <"$w/state.json" 2>"$w/err" || { cat "$w/err" >&2; fail "escaped layer"; }
tail -1 "$w/log" >"$w/last.json"
expect_eq "escaped layer" "$(json "$w/last.json" 'j["layers"][1]')" "$o/L3,x:y/diff"
ok "lowerdir with escaped ',' and ':' in a layer name"

# Opted out: nothing indexed.
echo "{\"ociVersion\": \"1.0.2\", \"id\": \"out1\", \"pid\": 0, \"bundle\": \"$w/bundle\", \"annotations\": {\"io.cid.merge\": \"false\"}}" >"$w/optout.json"
"$CID_OCI_HOOK" --fail-closed --index "$w/optout.db" --mountinfo "$w/mountinfo" --socket "$w/no-cidd.sock" \
	<"$w/optout.json" 2>"$w/err"
expect_grep "opt-out message" "io.cid.merge=false, left alone" "$w/err"
[ ! -e "$w/optout.db" ] || fail "io.cid.merge=false still created an index"
ok "io.cid.merge=false leaves the container alone"

# --- the hook run in cidd ---------------------------------------------------
# The golden stack again, handed to cidd: the same findings, "ran_in": "cidd",
# and cid-oci-hook says nothing of its own.
make_storage "$w"  # the two layers of the golden stack again
"$CID_OCI_HOOK" --fail-closed --quiet --budget-ms 60000 --index "$w/index.db" --mountinfo "$w/mountinfo" \
	--socket "$CSOCK" --log "$w/cidd-run.log" <"$w/state.json" 2>"$w/err" || { cat "$w/err" >&2; fail "golden run in cidd"; }
expect_eq "golden run in cidd: ran in" "$(json "$w/cidd-run.log" 'j["ran_in"]')" cidd
expect_eq "golden run in cidd: duplicated files" "$(json "$w/cidd-run.log" 'j["duplicated_files"]')" 3
expect_eq "golden run in cidd: cidd reached" "$(json "$w/cidd-run.log" 'j["cidd"]')" True
[ ! -s "$w/err" ] || { cat "$w/err" >&2; fail "golden run in cidd (--quiet): stderr not empty"; }
"$CID_OCI_HOOK" --budget-ms 60000 --index "$w/index.db" --mountinfo "$w/mountinfo" \
	--socket "$CSOCK" <"$w/state.json" 2>"$w/err" || { cat "$w/err" >&2; fail "golden run in cidd"; }
expect_grep "golden run in cidd: summary relayed" "container good1: 2 layers (2 indexed now), 3 duplicated files" "$w/err"
ok "a run handed to cidd finds what the standalone hook finds; its stderr and exit status are relayed"

# cidd keeps report mode's counts while the index is unchanged; a change
# (here a new copy in a layer, which the hook itself rescans) drops them.
if [ ! -d /sys/kernel/mm/cid ]; then
	cidd_run() {  # LOG: a quiet run handed to cidd, its --log line in LOG
		rm -f "$1"
		"$CID_OCI_HOOK" --fail-closed --quiet --budget-ms 60000 --index "$w/index.db" --mountinfo "$w/mountinfo" \
			--socket "$CSOCK" --log "$1" <"$w/state.json" 2>"$w/err" || { cat "$w/err" >&2; fail "run in cidd"; }
	}
	cidd_run "$w/k1.log"
	expect_eq "unchanged index: counts kept" "$(json "$w/k1.log" 'j.get("counts_kept", False)')" True
	expect_eq "unchanged index: duplicated files" "$(json "$w/k1.log" 'j["duplicated_files"]')" 3
	cp "$o/L1/diff/own.txt" "$o/L2/diff/own-again.txt"
	cidd_run "$w/k2.log"
	expect_eq "changed layer: rescanned" "$(json "$w/k2.log" 'j["index_written"]')" True
	expect_eq "changed layer: counted again" "$(json "$w/k2.log" 'j.get("counts_kept", False)')" False
	expect_eq "changed layer: new copy counted" "$(json "$w/k2.log" 'j["duplicated_files"]')" 5
	cidd_run "$w/k3.log"
	expect_eq "after the change: counted again" "$(json "$w/k3.log" 'j.get("counts_kept", False)')" False
	expect_eq "after the change: duplicated files" "$(json "$w/k3.log" 'j["duplicated_files"]')" 5
	cidd_run "$w/k4.log"
	expect_eq "then kept" "$(json "$w/k4.log" 'j.get("counts_kept", False)')" True
	expect_eq "then kept: duplicated files" "$(json "$w/k4.log" 'j["duplicated_files"]')" 5
	rm "$o/L2/diff/own-again.txt"
	cidd_run "$w/k5.log"
	expect_eq "copy removed: counted again" "$(json "$w/k5.log" 'j["duplicated_files"]')" 3
	ok "report counts kept by cidd while the index is unchanged, counted again after every change"
fi

# A hook in a mount namespace of its own (as a runtime may run it): its
# bundle and layers exist only there, and cidd's thread sees them by
# entering that namespace.
if unshare -m true 2>/dev/null; then
	p=$WORK/private
	mkdir -p "$p"
	unshare -m --propagation private sh -c '
		set -e
		mount -t tmpfs cid-private "$1"
		. "$2"
		make_storage "$1/s"
		o=$1/s/storage/overlay
		head -c 5000 /dev/urandom >"$o/L1/diff/same"
		cp "$o/L1/diff/same" "$o/L2/diff/same"
		echo "{\"ociVersion\": \"1.0.2\", \"id\": \"priv\", \"pid\": 0, \"bundle\": \"$1/s/bundle\"}" >"$1/s/state.json"
		cd "$1/s"
		"$3" --fail-closed --budget-ms 60000 --index index.db --mountinfo mountinfo --socket "$4" --log "$5" \
			<state.json 2>"$6"
		test -s index.db' sh "$p" "$HERE/hooks_lib.sh" "$CID_OCI_HOOK" "$CSOCK" "$WORK/private.log" "$WORK/private.err" ||
		{ cat "$WORK/private.err" >&2; fail "hook in a private mount namespace"; }
	[ -z "$(ls -A "$p")" ] || fail "the private tmpfs leaked into the test's namespace"
	expect_eq "private namespace: ran in" "$(json "$WORK/private.log" 'j["ran_in"]')" cidd
	expect_eq "private namespace: duplicated files" "$(json "$WORK/private.log" 'j["duplicated_files"]')" 2
	ok "a hook in a private mount namespace (tmpfs bundle and layers, relative --index) is run by cidd in that namespace"
else
	echo "SKIP: unshare -m not permitted here: private mount namespace case"
fi

# A cidd that accepts and never answers, and one that does not know the
# request (an older cidd): cid-oci-hook says why and runs the hook itself.
python3 -c '
import socket, sys, threading, time
def serve(path, answer):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(8)
    keep = []
    while True:
        c, _ = s.accept()
        keep.append(c)
        if answer:
            c.recv(65536)
            c.sendall(answer)
old = b"{\"error\":\"unknown op oci-hook (enqueue, domain, state, metrics)\",\"ok\":false}\n"
threading.Thread(target=serve, args=(sys.argv[1], None), daemon=True).start()
threading.Thread(target=serve, args=(sys.argv[2], old), daemon=True).start()
time.sleep(600)' "$WORK/mute.sock" "$WORK/old.sock" &
CIDD_PIDS+=($!)
for _ in $(seq 50); do [ -S "$WORK/mute.sock" ] && [ -S "$WORK/old.sock" ] && break; sleep 0.1; done
for peer in mute old; do
	rc=0
	"$CID_OCI_HOOK" --fail-closed --budget-ms 100 --cidd-timeout-ms 100 --index "$w/index.db" --mountinfo "$w/mountinfo" \
		--socket "$WORK/$peer.sock" --log "$w/$peer.log" <"$w/state.json" 2>"$w/$peer.err" || rc=$?
	expect_eq "$peer cidd: exit" "$rc" 0
	expect_eq "$peer cidd: ran in" "$(json "$w/$peer.log" 'j["ran_in"]')" standalone
	expect_eq "$peer cidd: duplicated files" "$(json "$w/$peer.log" 'j["duplicated_files"]')" 3
done
expect_grep "mute cidd: said so" "cidd did not answer in time; running the hook here" "$w/mute.err"
expect_grep "older cidd: said so" "cidd did not run the hook: .*unknown op" "$w/old.err"
ok "a cidd that never answers (1.2 s) or does not know the request: the hook runs standalone and says why"

# cid-oci-hook reads only --socket, --budget-ms and --cidd-timeout-ms; what
# it cannot read goes to the standalone hook, which explains it.
rc=0
"$CID_OCI_HOOK" --budget-ms=oops --socket "$CSOCK" <"$w/state.json" 2>"$w/err" || rc=$?
expect_eq "bad --budget-ms: exit" "$rc" 2
expect_grep "bad --budget-ms: message" "budget-ms oops: want milliseconds" "$w/err"
"$CID_OCI_HOOK" --help | grep '^usage: cid-oci-hook' >/dev/null || fail "--help"
CID_OCI_HOOK_STANDALONE=/nonexistent "$CID_OCI_HOOK" --socket "$WORK/no-cidd.sock" <"$w/state.json" 2>"$w/err" ||
	fail "no standalone hook: blocked the container"
expect_grep "no standalone: message" "/nonexistent: No such file or directory (container not blocked)" "$w/err"
ok "cid-oci-hook: a value it cannot read and --help go to the standalone hook; a missing standalone hook blocks nothing"
echo "$PASSED passed"
