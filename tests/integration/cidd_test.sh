#!/bin/bash
# cidd end to end: a second instance refused; the hook hands a container's
# layers over the socket; metrics as cidctl metrics/top and a textfile that
# promtool accepts and a real prometheus-node-exporter serves; SIGHUP;
# SIGTERM and kill -9 in the middle of the queue lose no committed row and
# the next start resumes; only root may use the socket; the systemd unit
# passes systemd-analyze verify.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/hooks_lib.sh"
[ -x "$CIDD" ] || fail "no cidd binary at $CIDD"
command -v sqlite3 >/dev/null || fail "sqlite3 missing (scripts/deps.d/userspace.txt)"

D=$WORK/d
mkdir -p "$D/metrics"
IDX=$D/index.db
SOCK=$D/cidd.sock
export CID_SOCKET=$SOCK
PIDS=()
teardown() {
	local rc=$?
	set +e
	for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
	wait 2>/dev/null
	(exit "$rc")
	cleanup
	exit "$rc"
}
trap teardown EXIT

wait_for() {  # WHAT SECONDS COMMAND...: until COMMAND succeeds
	local what=$1 t=$(($2 * 10))
	shift 2
	while ! "$@" >/dev/null 2>&1; do
		t=$((t - 1))
		[ "$t" -gt 0 ] || fail "timed out waiting for $what"
		sleep 0.1
	done
}
start_cidd() {  # LOG ARGS...
	local log=$1
	shift
	"$CIDD" --index "$IDX" --socket "$SOCK" "$@" 2>>"$log" &
	CIDD_PID=$!
	PIDS+=("$CIDD_PID")
}
queue_length() { sqlite3 "$D/cidd.db" "SELECT COUNT(*) FROM queue"; }
inode_rows() { sqlite3 "$IDX" "SELECT COUNT(*) FROM inodes" 2>/dev/null || echo 0; }

# --- the hook hands a container's layers to cidd -------------------------
make_storage "$D/c"
o=$D/c/storage/overlay
for i in $(seq 1 20); do head -c $((i * 1000)) /dev/urandom >"$o/L1/diff/f$i"; cp "$o/L1/diff/f$i" "$o/L2/diff/f$i"; done
# systemd's side of Type=notify: a datagram socket in NOTIFY_SOCKET.
python3 -c 'import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1])
with open(sys.argv[2], "a") as log:
    while True:
        log.write(s.recv(4096).decode() + "\n---\n"); log.flush()' "$D/notify.sock" "$D/notify.log" &
PIDS+=($!)
wait_for "the notify socket" 10 test -S "$D/notify.sock"
export NOTIFY_SOCKET=$D/notify.sock
start_cidd "$D/cidd.log" --metrics-dir "$D/metrics" --metrics-interval 1
unset NOTIFY_SOCKET
wait_for "cidd's socket" 10 "$CIDCTL" metrics
expect_eq "socket mode" "$(stat -c %a "$SOCK")" 600
wait_for "READY=1" 10 grep -q '^READY=1$' "$D/notify.log"
expect_grep "MAINPID" "^MAINPID=$CIDD_PID$" "$D/notify.log"
ok "sd_notify: READY=1 and MAINPID=$CIDD_PID on NOTIFY_SOCKET once the socket (mode 0600) listens"
idle_thread() {  # a thread of cidd at nice 19 in the idle I/O class
	local t
	for t in /proc/"$CIDD_PID"/task/*; do
		[ "$(awk '{print $19}' "$t/stat")" = 19 ] && ionice -p "${t##*/}" | grep -q '^idle$' && return 0
	done
	return 1
}
wait_for "cidd's hashing thread at idle priority" 10 idle_thread
# The socket thread keeps the priority cidd was started with (this shell's).
[ "$(awk '{print $19}' /proc/"$CIDD_PID"/stat)" = "$(awk '{print $19}' /proc/$$/stat)" ] ||
	fail "cidd's main thread (the socket) was niced too"
ok "by default the hashing thread runs at nice 19 in the idle I/O class, the socket thread at the caller's priority"
rc=0
"$CIDD" --index "$IDX" --socket "$D/other.sock" 2>"$D/second.err" || rc=$?
expect_eq "second instance exit" "$rc" 3
expect_grep "second instance message" "another cidd (pid $CIDD_PID) is running" "$D/second.err"
ok "a second cidd on the same state is refused (exit 3, names the running pid)"

echo "{\"ociVersion\": \"1.0.2\", \"id\": \"ctr-1\", \"pid\": 0, \"bundle\": \"$D/c/bundle\", \"annotations\": {\"io.podman.annotations.name\": \"web\"}}" |
	"$CID_OCI_HOOK" --fail-closed --budget-ms 0 --cidd-timeout-ms 10000 --index "$IDX" --mountinfo "$D/c/mountinfo" --log "$D/hook.log" 2>"$D/hook.err" ||
	{ cat "$D/hook.err" >&2; fail "hook"; }
echo "$(tail -1 "$D/hook.log")" >"$D/hook.json"
expect_eq "hook reached cidd" "$(json "$D/hook.json" 'j["cidd"]')" True
expect_eq "hook ran in cidd" "$(json "$D/hook.json" 'j["ran_in"]')" cidd
expect_eq "hook left work pending (0 ms budget)" "$(json "$D/hook.json" 'j["pending"]')" True
wait_for "cidd to index both layers" 30 sh -c "[ \$(sqlite3 '$IDX' 'SELECT COUNT(*) FROM inodes') = 40 ] && [ \$(sqlite3 '$D/cidd.db' 'SELECT COUNT(*) FROM queue') = 0 ]"
"$CIDCTL" metrics --json >"$D/state.json"
expect_eq "containers" "$(json "$D/state.json" '[c["id"] for c in j["containers"]]')" "['ctr-1']"
expect_eq "container name" "$(json "$D/state.json" 'j["containers"][0]["name"]')" web
expect_eq "duplicated bytes" "$(json "$D/state.json" 'j["totals"]["duplicated_bytes"]')" 210000
"$CIDCTL" top >"$D/top.txt"
expect_grep "top lists the container" "ctr-1 .* web .* 2 .* 40" "$D/top.txt"
ok "the hook's leftover layers were indexed by cidd; cidctl metrics --json and top show the container"

# On a terminal, top redraws every --interval until interrupted.
timeout 3 script -qfec "$CIDCTL top --interval 0.2" /dev/null >"$D/top.tty" 2>&1 </dev/null || true
redraws=$(grep -o $'\033\[2J' "$D/top.tty" | wc -l)
[ "$redraws" -ge 3 ] || { cat -v "$D/top.tty" >&2; fail "cidctl top on a terminal drew $redraws times in 3 s"; }
expect_grep "top on a terminal lists the container" "ctr-1 .* web" "$D/top.tty"
ok "cidctl top on a terminal (script(1)) refreshes ($redraws screens in 3 s at --interval 0.2); piped it prints once"

# Annotations reach cidd: io.cid.domain names the container's domain;
# io.cid.merge=false hands nothing over.
hook_with() {  # ID ANNOTATIONS-JSON
	echo "{\"ociVersion\": \"1.0.2\", \"id\": \"$1\", \"pid\": 0, \"bundle\": \"$D/c/bundle\", \"annotations\": $2}" |
		"$CID_OCI_HOOK" --fail-closed --cidd-timeout-ms 10000 --index "$IDX" --mountinfo "$D/c/mountinfo" 2>"$D/hook.err" ||
		{ cat "$D/hook.err" >&2; fail "hook for $1"; }
}
hook_with ctr-dom '{"io.cid.domain": "tenant-a"}'
hook_with ctr-out '{"io.cid.merge": "false"}'
wait_for "cidd to list ctr-dom" 10 sh -c "'$CIDCTL' metrics --json | grep -q ctr-dom"
"$CIDCTL" metrics --json >"$D/state.json"
expect_eq "domain of ctr-dom" "$(json "$D/state.json" '[c["domain"] for c in j["containers"] if c["id"] == "ctr-dom"]')" "['tenant-a']"
expect_eq "opted-out container unknown to cidd" "$(json "$D/state.json" '[c["id"] for c in j["containers"] if c["id"] == "ctr-out"]')" "[]"
ok "io.cid.domain=tenant-a reaches cidd with the container; io.cid.merge=false hands nothing over"

# Containers started from a stack the hook found indexed and shared: cidd
# records them, but walks the layers at most once per --rescan-interval.
walks() { grep -c "^cidd: $o/L1/diff: " "$D/cidd.log"; }
walked=$(walks)
[ "$walked" -ge 1 ] || fail "cidd never walked $o/L1/diff"
hook_with ctr-again-1 '{}'
hook_with ctr-again-2 '{}'
wait_for "cidd to list ctr-again-2" 10 sh -c "'$CIDCTL' metrics --json | grep -q ctr-again-2"
sleep 1
expect_eq "queue after two more starts" "$(queue_length)" 0
expect_eq "walks of a layer after two more starts" "$(walks)" "$walked"
ok "two more containers on an indexed, shared stack: recorded, their layers not walked again"

"$CIDCTL" metrics >"$D/metrics.txt"
expect_grep "metrics text" '^cid_duplicated_bytes 210000$' "$D/metrics.txt"
expect_grep "per container" "^cid_container_files{container=\"ctr-1\",name=\"web\"} 40$" "$D/metrics.txt"
expect_grep "per layer" "^cid_layer_files{layer=\"$o/L1/diff\"} 20$" "$D/metrics.txt"
expect_grep "queue length" '^cid_queue_length 0$' "$D/metrics.txt"
wait_for "the textfile" 10 grep -q '^cid_duplicated_bytes 210000$' "$D/metrics/cid.prom"
if command -v promtool >/dev/null; then
	promtool check metrics <"$D/metrics/cid.prom" >"$D/promtool.out" 2>&1 || { cat "$D/promtool.out" >&2; fail "promtool check metrics"; }
	[ ! -s "$D/promtool.out" ] || { cat "$D/promtool.out" >&2; fail "promtool has remarks"; }
	ok "metrics: cidctl metrics, the textfile (atomic), promtool check metrics clean"
else
	fail "promtool missing (Debian's prometheus, scripts/deps.d/container-hooks.txt)"
fi

NE=$(command -v prometheus-node-exporter) || fail "prometheus-node-exporter missing (scripts/deps.d/container-hooks.txt)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$NE" --web.listen-address="127.0.0.1:$port" --collector.disable-defaults --collector.textfile \
	--collector.textfile.directory="$D/metrics" 2>"$D/ne.log" &
PIDS+=($!)
wait_for "node_exporter" 20 python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/metrics')"
python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$port/metrics').read().decode())" >"$D/scrape.txt"
expect_grep "node_exporter serves cid_files" '^cid_files 40$' "$D/scrape.txt"
expect_grep "node_exporter serves the container" 'cid_container_duplicated_bytes{container="ctr-1",name="web"}' "$D/scrape.txt"
grep -q 'node_textfile_scrape_error 0' "$D/scrape.txt" || { grep textfile "$D/scrape.txt" >&2; fail "node_exporter reports a textfile error"; }
ok "prometheus-node-exporter on 127.0.0.1:$port serves cidd's textfile without errors"

ask() {  # REQUEST-JSON: cidd's one-line answer
	python3 -c 'import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(sys.argv[2].encode() + b"\n")
print(s.makefile().readline().strip())' "$SOCK" "$1"
}
a1=$(ask '{"op":"domain","name":"tenant-a"}')
b1=$(ask '{"op":"domain","name":"tenant-b"}')
a2=$(ask '{"op":"domain","name":"tenant-a"}')
expect_eq "same name, same domain id" "$a2" "$a1"
[ "$a1" != "$b1" ] || fail "two domain names got one id: $a1"
echo "$a1" | grep -q '"id":[1-9]' && echo "$a1" | grep -q '"ok":true' || fail "domain answer: $a1"
bad=$(ask '{"op":"enqueue","paths":["relative/path"]}')
echo "$bad" | grep -q '"error":"enqueue: every path must be an absolute path string","ok":false' || fail "bad enqueue answer: $bad"
bad=$(ask 'not json')
echo "$bad" | grep -q '"ok":false' || fail "answer to garbage: $bad"
ok "domain names map to distinct, stable kernel domain ids; bad requests get a plain error"

if [ "$(id -u)" = 0 ]; then
	chmod 755 "$D"
	rc=0
	setpriv --reuid 65534 --regid 65534 --clear-groups "$CIDCTL" metrics --socket "$SOCK" 2>"$D/nobody.err" || rc=$?
	[ "$rc" != 0 ] || fail "an unprivileged user read cidd's metrics"
	expect_grep "unprivileged refused by the socket's mode" "Permission denied" "$D/nobody.err"
	# With the socket's mode opened up, cidd itself refuses (SO_PEERCRED).
	chmod 666 "$SOCK"
	rc=0
	setpriv --reuid 65534 --regid 65534 --clear-groups "$CIDCTL" metrics --socket "$SOCK" 2>"$D/nobody.err" || rc=$?
	[ "$rc" != 0 ] || fail "an unprivileged user read cidd's metrics through a mode-666 socket"
	expect_grep "SO_PEERCRED refusal" "only root may talk to cidd" "$D/nobody.err"
	q0=$(queue_length)
	setpriv --reuid 65534 --regid 65534 --clear-groups /usr/bin/python3 -c 'import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
try:
    s.sendall(sys.argv[2].encode() + b"\n")
except (BrokenPipeError, ConnectionResetError):
    pass  # cidd refuses without reading; its answer is still there
print(s.makefile().readline().strip())' "$SOCK" "{\"op\":\"enqueue\",\"paths\":[\"$D/metrics\"]}" >"$D/nobody.out"
	expect_grep "enqueue by nobody refused" '"ok":false' "$D/nobody.out"
	expect_eq "queue after nobody's enqueue" "$(queue_length)" "$q0"
	chmod 600 "$SOCK"
	ok "an unprivileged user cannot use the socket: its mode (exit $rc), and SO_PEERCRED behind it (no enqueue)"
fi

kill -HUP "$CIDD_PID"
wait_for "SIGHUP handling" 10 grep -q "SIGHUP" "$D/cidd.log"
kill -TERM "$CIDD_PID"
rc=0
wait "$CIDD_PID" || rc=$?
expect_eq "exit after SIGTERM" "$rc" 0
[ ! -e "$SOCK" ] || fail "socket left behind after SIGTERM"
# Only once cidd has stopped: while it runs, it may be writing the next one.
ls -a "$D/metrics" >"$D/ls.txt"
grep -q tmp "$D/ls.txt" && fail "a temporary metrics file was left: $(cat "$D/ls.txt")"
expect_grep "STOPPING=1 on SIGTERM" '^STOPPING=1$' "$D/notify.log"
ok "SIGHUP re-tags and rewrites metrics; SIGTERM stops cleanly (STOPPING=1) and removes the socket"

# --- a busy index: waited for (bounded), reported, retried, never corrupted
busy=$D/busy-tree
mkdir -p "$busy"
for i in 1 2 3; do head -c 5000 /dev/urandom >"$busy/f$i"; done
before=$(inode_rows)
python3 -c 'import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None); c.execute("BEGIN EXCLUSIVE")
open(sys.argv[2], "w").close(); time.sleep(4); c.execute("ROLLBACK")' "$IDX" "$D/locked" &
locker=$!
PIDS+=("$locker")
wait_for "the index to be locked" 10 test -e "$D/locked"
rc=0
CID_BUSY_TIMEOUT_MS=300 "$CIDD" --index "$IDX" --socket "$SOCK" --once --no-idle --cpu-percent 0 "$busy" 2>"$D/busy.log" || rc=$?
wait "$locker"
expect_eq "cidd --once over a busy index" "$rc" 0
expect_grep "busy index reported" "another process holds the index locked.*retrying later" "$D/busy.log"
expect_eq "rows once the index was free" "$(inode_rows)" $((before + 3))
expect_eq "queue after the busy index" "$(queue_length)" 0
expect_eq "index integrity" "$(sqlite3 "$IDX" 'PRAGMA integrity_check')" ok
ok "a locked index: cidd waits CID_BUSY_TIMEOUT_MS, says so, keeps the tree queued and indexes it once the lock is gone"

# --- SIGTERM and kill -9 mid-queue ---------------------------------------
# 60 MB at 2 MB/s: each phase below sees a few MB done, never the whole tree,
# however slow a loaded machine makes the polling between them.
big=$D/big
mkdir -p "$big"
# Same size and the same first and last 4 KiB: the partial fingerprints all
# agree, so every file must be hashed whole (slowly, under --io-mbps).
for i in $(seq 1 300); do
	{ head -c 4096 /dev/zero; head -c 191808 /dev/urandom; head -c 4096 /dev/zero; } >"$big/f$i"
done
before=$(inode_rows)
start_cidd "$D/slow.log" --io-mbps 2 --no-idle "$big"
wait_for "the first rows of the slow tree" 30 sh -c "[ \$(sqlite3 '$IDX' 'SELECT COUNT(*) FROM inodes') -gt $((before + 20)) ]"
kill -TERM "$CIDD_PID"
rc=0
wait "$CIDD_PID" || rc=$?
expect_eq "exit after SIGTERM mid-queue" "$rc" 0
expect_eq "tree still queued after SIGTERM" "$(queue_length)" 1
after_term=$(inode_rows)
start_cidd "$D/slow.log" --io-mbps 2 --no-idle
wait_for "more rows" 30 sh -c "[ \$(sqlite3 '$IDX' 'SELECT COUNT(*) FROM inodes') -gt $((after_term + 20)) ]"
expect_eq "domain id after a restart" "$(ask '{"op":"domain","name":"tenant-a"}')" "$a1"
kill -9 "$CIDD_PID"
wait "$CIDD_PID" 2>/dev/null || true
expect_eq "index integrity after kill -9" "$(sqlite3 "$IDX" 'PRAGMA integrity_check')" ok
expect_eq "state integrity after kill -9" "$(sqlite3 "$D/cidd.db" 'PRAGMA integrity_check')" ok
expect_eq "tree still queued after kill -9" "$(queue_length)" 1
committed=$(inode_rows)
[ "$committed" -gt "$after_term" ] || fail "no rows committed between SIGTERM and kill -9"
[ "$committed" -lt $((before + 300)) ] || fail "the slow tree finished before kill -9 (not mid-queue)"
rc=0
"$CIDD" --index "$IDX" --socket "$SOCK" --once --cpu-percent 0 --no-idle 2>"$D/resume.log" || rc=$?
expect_eq "resume run" "$rc" 0
expect_eq "queue after resume" "$(queue_length)" 0
expect_eq "rows after resume" "$(inode_rows)" $((before + 300))
unchanged=$(grep -o "$big: 300 files, [0-9]* hashed, [0-9]* unchanged" "$D/resume.log" | awk '{print $6}')
[ -n "$unchanged" ] || { cat "$D/resume.log" >&2; fail "no summary of the resumed tree"; }
[ "$unchanged" -ge $((committed - before)) ] || fail "resume rehashed committed files: $unchanged unchanged < $((committed - before)) committed"
ok "SIGTERM and kill -9 mid-queue: index intact, tree stays queued, resume hashes only the rest ($unchanged of 300 kept)"

# --- the systemd unit ------------------------------------------------------
if command -v systemd-analyze >/dev/null; then
	sed "s|/usr/local/sbin/cidd|$CIDD|" "$CID_SOURCE_DIR/userspace/cidd/cidd.service" >"$D/cidd.service"
	systemd-analyze verify "$D/cidd.service" >"$D/verify.out" 2>&1 || { cat "$D/verify.out" >&2; fail "systemd-analyze verify"; }
	[ ! -s "$D/verify.out" ] || { cat "$D/verify.out" >&2; fail "systemd-analyze verify has remarks"; }
	ok "cidd.service passes systemd-analyze verify"
fi
echo "$PASSED passed"
