#!/bin/bash
# cid-oci-hook against its should-fail corpus (hooks_should_fail/): each bad
# input gets its own exit status and a message naming what is wrong with
# --fail-closed, and exit 0 (container not blocked) without it.  Then a
# good stack as a golden run: layers found through the l/ links, indexed,
# duplicates reported, and a second run reading everything from the index.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/hooks_lib.sh"
[ -x "$CID_OCI_HOOK" ] || fail "no hook binary at $CID_OCI_HOOK"

corpus=$HERE/hooks_should_fail
n=0
for case in "$corpus"/*/; do
	name=$(basename "$case")
	w=$WORK/$name
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
		"$CID_OCI_HOOK" --index "$w/index.db" --mountinfo "$w/mountinfo" --socket "$w/no-cidd.sock" \
			"${extra[@]}" "${args[@]}" <"$w/state.json" >"$w/out" 2>"$w/err" || rc=$?
		expected=$want
		[ "$mode" = open ] && [ "$want" != 2 ] && expected=0
		[ "$rc" = "$expected" ] || { cat "$w/err" >&2; fail "$name ($mode): exit $rc, want $expected"; }
		grep -qF -- "$msg" "$w/err" || { cat "$w/err" >&2; fail "$name ($mode): stderr lacks '$msg'"; }
		if [ "$mode" = open ] && [ "$want" != 2 ] && [ "$want" != 0 ]; then
			grep -q "container not blocked" "$w/err" || fail "$name (open): no 'container not blocked'"
		fi
	done
	n=$((n + 1))
done
[ "$n" -ge 20 ] || fail "only $n corpus cases found in $corpus"
ok "$n bad inputs: distinct exit codes with --fail-closed, exit 0 without"

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
echo "$PASSED passed"
