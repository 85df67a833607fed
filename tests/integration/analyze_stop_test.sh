#!/bin/bash
# cid-analyze stops its targets and always lets them go: killed with
# SIGKILL mid-snapshot (the kernel detaches its tracees: they run on, none
# left stopped), interrupted with SIGINT (resumed, exit 130), and a target
# that exits mid-scan (dropped with a note, exit 3).  The test hook
# CID_ANALYZE_TEST_HOLD=FILE holds cid-analyze with every target stopped
# until FILE is removed.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/analyze_lib.sh"

# wait_for FILE: until cid-analyze has stopped its targets.
wait_for() {
	for _ in $(seq 1000); do [ -e "$1" ] && return 0; sleep 0.01; done
	fail "cid-analyze never stopped its targets ($1 not written)"
}
# count FILE: the spinner's counter.
count() { cat "$1" 2>/dev/null || echo 0; }
# advancing FILE: the spinner writes a higher count within 2 s.
advancing() {
	local a b
	a=$(count "$1")
	for _ in $(seq 200); do
		sleep 0.01
		b=$(count "$1")
		[ "${b:-0}" -gt "${a:-0}" ] && return 0
	done
	return 1
}

helper S spin "$WORK/count" threads 2 anon 64 1
helper T anon 32 2
advancing "$WORK/count" || fail "the spinning helper does not run"

# 1. SIGKILL while every target is stopped.
CID_ANALYZE_TEST_HOLD=$WORK/hold "$CID_ANALYZE" $S $T >"$WORK/out" 2>&1 &
ana=$!
wait_for "$WORK/hold"
expect_eq "target S stopped during the snapshot" "$(state $S)" t
expect_eq "target T stopped during the snapshot" "$(state $T)" t
for t in /proc/$S/task/*; do expect_eq "thread ${t##*/} stopped" "$(awk '{sub(/.*\) /, ""); print substr($0,1,1)}' $t/stat)" t; done
a=$(count "$WORK/count")
sleep 0.3
expect_eq "the spinner does not count while stopped" "$(count "$WORK/count")" "$a"
kill -9 $ana
wait $ana 2>/dev/null || true
rm -f "$WORK/hold"
advancing "$WORK/count" || fail "target did not run on after cid-analyze was killed (state $(state $S))"
for p in $S $T; do
	st=$(state $p)
	[ "$st" = S ] || [ "$st" = R ] || fail "pid $p left in state $st after SIGKILL of cid-analyze"
done
ok "SIGKILL of cid-analyze mid-snapshot: every target runs on"

# 2. SIGINT while they are stopped: resumed, exit 130, nothing written.
CID_ANALYZE_TEST_HOLD=$WORK/hold "$CID_ANALYZE" --save "$WORK/int.json" $S $T >"$WORK/out" 2>"$WORK/err" &
ana=$!
wait_for "$WORK/hold"
expect_eq "stopped before SIGINT" "$(state $S)" t
kill -INT $ana
set +e
wait $ana
rc=$?
set -e
rm -f "$WORK/hold"
expect_eq "exit code after SIGINT" "$rc" 130
expect_grep "interrupted message" "interrupted: every target resumed" "$WORK/err"
[ ! -e "$WORK/int.json" ] || fail "an interrupted snapshot was saved"
advancing "$WORK/count" || fail "target did not resume after SIGINT"
ok "SIGINT: targets resumed, exit 130, nothing saved"

# 3. A target killed mid-scan is dropped, noted, and the rest is counted.
CID_ANALYZE_TEST_HOLD=$WORK/hold "$CID_ANALYZE" --range $RANGE --json $S $T >"$WORK/out.json" 2>"$WORK/err" &
ana=$!
wait_for "$WORK/hold"
kill -9 $T
rm -f "$WORK/hold"
set +e
wait $ana
rc=$?
set -e
expect_eq "exit code with a dropped target" "$rc" 3
expect_grep "dropped message" "pid $T (analyze_helper) exited during the snapshot: dropped" "$WORK/err"
eval "$(python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
print("procs=%d mmap_fork=%d" % (j["figures"]["processes"], j["figures"]["mmap_fork"]))
print("note=%d" % any("exited during the snapshot" in n for n in j["notes"]))
' "$WORK/out.json")"
expect_eq "one process counted" "$procs" 1
expect_eq "only the survivor's 64 pages" "$mmap_fork" 64
expect_eq "noted in the JSON" "$note" 1
advancing "$WORK/count" || fail "the surviving target did not resume"
ok "a target exiting mid-scan: dropped, noted, exit 3"
