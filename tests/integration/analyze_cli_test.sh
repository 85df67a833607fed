#!/bin/bash
# cid-analyze end to end: help, exact figures for two identical files on
# different inodes (named-merging oracle lower by exactly their pages,
# achieved 0 on this kernel), --save/--base/table/chart, JSON, quiet when
# piped, and every bad case with its message and exit code.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/analyze_lib.sh"
export CID_ANALYZE_DIR=$WORK/snapshots

"$CID_ANALYZE" --help >"$WORK/out"
for w in --cgroup --container --all --no-stop --verify --base --save --json --svg --png "exit:"; do
	expect_grep "help mentions $w" "$w" "$WORK/out"
done
"$CID_ANALYZE" table --help >/dev/null || fail "table --help"
ok "--help"

# Two identical 64-page files on different inodes, and one of 8 other pages.
head -c $((64 * 4096)) /dev/urandom >"$WORK/one"
cp "$WORK/one" "$WORK/two"
head -c $((8 * 4096)) /dev/urandom >"$WORK/three"
helper A map "$WORK/one" map "$WORK/three"
helper B map "$WORK/two"
"$CID_ANALYZE" --range $RANGE --verify --json --save files $A $B >"$WORK/files.json" 2>"$WORK/err"
[ ! -s "$WORK/err" ] || { cat "$WORK/err"; fail "cid-analyze wrote to stderr when piped"; }
# One python3 run for every figure (python3 can take a second to start here).
eval "$(python3 -c '
import json, sys
j = json.load(open(sys.argv[1])); s = json.load(open(sys.argv[2]))
f = j["figures"]
for k in ("no_sharing", "mmap_fork", "ksm_shared", "cbps_shared", "nm_oracle", "nm_achieved", "nm_oracle_sharings"):
    print("%s=%d" % (k, f[k]))
print("named_mmap_fork=%d" % f["by_type"]["named"]["mmap_fork"])
print("hashed=%d" % j["snapshot"]["pages_hashed"])
print("saved_oracle=%d" % s["figures"]["nm_oracle"])
' "$WORK/files.json" "$CID_ANALYZE_DIR/files.json")"
expect_eq "no sharing" "$no_sharing" 136
expect_eq "mmap/fork" "$mmap_fork" 136
expect_eq "KSM hint all (named pages untouched)" "$ksm_shared" 136
expect_eq "full CBPS" "$cbps_shared" 72
expect_eq "named-merging oracle: lower by exactly 64" "$nm_oracle" 72
expect_eq "named merging achieved on a stock kernel" "$nm_achieved" 0
expect_eq "oracle sharings" "$nm_oracle_sharings" 64
expect_eq "named by type" "$named_mmap_fork" 136
expect_eq "pages hashed once each" "$hashed" 136
expect_eq "saved" "$saved_oracle" 72
ok "identical files on two inodes: exact figures, saved as a named snapshot"

# Relative to a base: one file mapped alone is the "1 user" case.
"$CID_ANALYZE" --range $RANGE --save one-user $B >/dev/null
"$CID_ANALYZE" --range $RANGE --base one-user $A $B >"$WORK/table"
expect_grep "table row mmap/fork relative 2.12" "^mmap/fork  *136 .* 2.12 " "$WORK/table"
expect_grep "table row oracle relative 1.12" "^named merging oracle  *72 .* 1.12 " "$WORK/table"
expect_grep "base named" "relative to mmap/fork of one-user (64 pages)" "$WORK/table"
"$CID_ANALYZE" table one-user files >"$WORK/t2"
expect_grep "table subcommand" "^mmap/fork  *1.00  *2.12" "$WORK/t2"
"$CID_ANALYZE" chart "$WORK/chart.svg" one-user "$CID_ANALYZE_DIR/files.json"
expect_grep "svg written" "<svg" "$WORK/chart.svg"
expect_grep "svg has a named bar" "files, named merging oracle, named: 72" "$WORK/chart.svg"
python3 -c 'import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])' "$WORK/chart.svg" ||
	fail "chart is not well-formed XML"
if command -v rsvg-convert >/dev/null; then
	"$CID_ANALYZE" --range $RANGE $A $B --png "$WORK/chart.png" >/dev/null
	expect_eq "PNG magic" "$(head -c 4 "$WORK/chart.png" | tail -c 3)" PNG
fi
ok "--base, table, chart (SVG, PNG)"

# A cgroup v2 directory as the target: the processes in it and below it.
cg2=$(findmnt -rn -t cgroup2 -o TARGET | sed -n 1p)
if [ -n "$cg2" ] && mkdir "$cg2/cid-analyze-test.$$" 2>/dev/null; then
	CG=$cg2/cid-analyze-test.$$
	extra_cleanup() {
		for p in $(cat "$CG/sub/cgroup.procs" "$CG/cgroup.procs" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
		sleep 0.1
		rmdir "$CG/sub" "$CG" 2>/dev/null || true
	}
	mkdir "$CG/sub"
	helper C anon 16 3 fork 1
	read -r c0 c1 <<<"$C"
	echo "$c0" >"$CG/cgroup.procs"
	echo "$c1" >"$CG/sub/cgroup.procs"
	"$CID_ANALYZE" --range $RANGE --cgroup "$CG" --json >"$WORK/cg.json"
	eval "$(python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
print("procs=%d mf=%d ns=%d" % (j["figures"]["processes"], j["figures"]["mmap_fork"], j["figures"]["no_sharing"]))
print("groups=%d" % len([g for g in j["groups"] if g["kind"] == "cgroup"]))
' "$WORK/cg.json")"
	expect_eq "processes in the cgroup and below" "$procs" 2
	expect_eq "fork-shared frames" "$mf" 16
	expect_eq "mappings" "$ns" 32
	# Groups are memory cgroups: v1's memory hierarchy where it is mounted
	# (the two processes share one there), else these two v2 cgroups.
	if findmnt -rn -t cgroup -o OPTIONS | grep -w memory >/dev/null; then want=1; else want=2; fi
	expect_eq "memory cgroups reported" "$groups" $want
	ok "--cgroup: a cgroup and its child"
fi

# --all: every user process on this host is stopped (for the few
# milliseconds the range takes), the helpers among them with their exact
# figures, cid-analyze itself not, and all of them resumed.  Exit 3 (a
# process exited meanwhile) is normal on a busy host.
set +e
"$CID_ANALYZE" --all --range $RANGE --json >"$WORK/all.json" 2>"$WORK/err"
rc=$?
set -e
[ "$rc" = 0 ] || [ "$rc" = 3 ] || { cat "$WORK/err"; fail "--all: exit $rc"; }
read -r a0 _ <<<"$A"
read -r b0 _ <<<"$B"
eval "$(python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
pids = {p["pid"] for p in j["processes"]}
print("nprocs=%d stopped=%d" % (len(pids), j["snapshot"]["stopped"]))
print("has_a=%d has_b=%d" % (int(sys.argv[2]) in pids, int(sys.argv[3]) in pids))
g = {x["name"].split()[0]: x["figures"] for x in j["groups"] if x["kind"] == "process"}
print("a_mf=%d b_mf=%d" % (g[sys.argv[2]]["mmap_fork"], g[sys.argv[3]]["mmap_fork"]))
' "$WORK/all.json" "$a0" "$b0")"
expect_eq "--all stopped the targets" "$stopped" 1
expect_eq "--all includes helper A" "$has_a" 1
expect_eq "--all includes helper B" "$has_b" 1
expect_eq "helper A's frames" "$a_mf" 72
expect_eq "helper B's frames" "$b_mf" 64
[ "$nprocs" -gt 2 ] || fail "--all found only $nprocs processes"
for p in $A $B; do [ "$(state "$p")" != t ] || fail "pid $p still stopped after --all"; done
ok "--all: $nprocs processes, the helpers' figures exact, all resumed"

# Bad cases: message and exit code each.
run() { set +e; "$CID_ANALYZE" "$@" >"$WORK/out" 2>"$WORK/err"; rc=$?; set -e; }
run
expect_eq "no targets" "$rc" 2
expect_grep "no targets message" "no targets" "$WORK/err"
run --range zz $A
expect_eq "bad --range" "$rc" 2
run 999999999
expect_eq "no such pid" "$rc" 5
expect_grep "no such pid message" "pid 999999999: no such process" "$WORK/err"
run 2
expect_eq "kernel thread" "$rc" 6
expect_grep "kernel thread message" "pid 2 is a kernel thread" "$WORK/err"
run --cgroup /sys/fs/cgroup/no-such-group
expect_eq "no such cgroup" "$rc" 5
expect_grep "no such cgroup message" "cgroup /sys/fs/cgroup/no-such-group: No such file or directory" "$WORK/err"
run --cgroup /etc
expect_eq "not a cgroup" "$rc" 5
expect_grep "not a cgroup message" "not a cgroup directory" "$WORK/err"
run --base nothing-saved-here $A
expect_eq "no such base" "$rc" 5
expect_grep "no such base message" "snapshot nothing-saved-here: $CID_ANALYZE_DIR/nothing-saved-here.json" "$WORK/err"
echo '{"foo": 1}' >"$WORK/bad.json"
run --base "$WORK/bad.json" $A
expect_eq "not a snapshot" "$rc" 1
expect_grep "not a snapshot message" "not a cid-analyze snapshot" "$WORK/err"
if command -v podman >/dev/null; then
	run --container no-such-container-xyz --podman-arg=--root=$WORK/podman --podman-arg=--runroot=$WORK/podman-run \
		--podman-arg=--storage-driver=vfs
	expect_eq "no such container" "$rc" 5
	expect_grep "no such container message" "container no-such-container-xyz: no such container" "$WORK/err"
fi
if command -v setpriv >/dev/null; then
	set +e
	setpriv --reuid=65534 --regid=65534 --clear-groups "$CID_ANALYZE" $A >"$WORK/out" 2>"$WORK/err"
	rc=$?
	set -e
	expect_eq "not root" "$rc" 4
	expect_grep "not root message" "/proc/kpageflags: Permission denied: frame flags need root" "$WORK/err"
fi
ok "bad cases: messages and exit codes 2, 5, 6, 1, 4"
