#!/bin/bash
# cid-lxc-hook: the arguments and environment LXC passes, ignored stages,
# each failure's exit status, and real lxc-execute runs over two copied
# rootfs with the hook as lxc.hook.pre-start.  On this (stock) kernel the
# hook reports what the writable-tree policy would tag: ELF files and
# usr/, not var/ or etc/ or anything modified recently, and a service
# appending to its own duplicated log and writing its own duplicated SQLite
# database (Debian's sqlite3 and its libraries copied into the rootfs)
# keeps working.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/hooks_lib.sh"
[ -x "$CID_LXC_HOOK" ] || fail "no hook binary at $CID_LXC_HOOK"
H=$CID_LXC_HOOK
L=$WORK/lxc
mkdir -p "$L"

# --- arguments and failures, without LXC ---------------------------------
rc=0; "$H" onlyname 2>"$L/err" || rc=$?
expect_eq "one argument" "$rc" 2
rc=0; "$H" c1 notlxc pre-start 2>"$L/err" || rc=$?
expect_eq "section other than lxc" "$rc" 2
expect_grep "usage message" "NAME lxc TYPE" "$L/err"
for stage in post-stop start stop pre-mount autodev; do
	rc=0; env -u LXC_ROOTFS_PATH "$H" --log "$L/ignored.log" c1 lxc "$stage" 2>"$L/err" || rc=$?
	expect_eq "stage $stage ignored" "$rc" 0
done
[ ! -e "$L/ignored.log" ] || fail "an ignored stage did work"
check() {  # WANT MESSAGE ENV... : the hook at pre-start, --fail-closed then not
	local want=$1 msg=$2
	shift 2
	for mode in --fail-closed ""; do
		rc=0
		env "$@" "$H" $mode --index "$L/index.db" --socket "$L/none.sock" c1 lxc pre-start 2>"$L/err" || rc=$?
		expect_eq "exit ($* $mode)" "$rc" "$([ -n "$mode" ] && echo "$want" || echo 0)"
		expect_grep "message ($*)" "$msg" "$L/err"
	done
}
check 10 "LXC_ROOTFS_PATH is not set" -u LXC_ROOTFS_PATH
check 11 "$L/nope: No such file or directory" LXC_ROOTFS_PATH="$L/nope"
check 12 "only directory rootfs" LXC_ROOTFS_PATH="overlay:$L/a:$L/b"
ok "argument checks (exit 2), ignored stages (exit 0), failures 10/11/12 with --fail-closed, 0 without"

# --- two rootfs copies --------------------------------------------------
BUSYBOX=$(command -v busybox) || fail "busybox missing (busybox-static)"
R1=$L/r1
mkdir -p "$R1/bin" "$R1/usr/lib" "$R1/var/log" "$R1/etc" "$R1/opt" "$R1/proc" "$R1/sys" "$R1/dev" "$R1/tmp"
cp "$BUSYBOX" "$R1/bin/busybox"
for t in sh cat echo; do ln -s busybox "$R1/bin/$t"; done
mapfile -t libs < <(find /usr/lib/x86_64-linux-gnu -maxdepth 1 -type f -name 'lib*.so.*' -size -300k | sort)
cp "${libs[@]:0:5}" "$R1/usr/lib/"
echo "service log, line 1" >"$R1/var/log/app.log"
echo "setting=1" >"$R1/etc/app.conf"
# A service with its own SQLite database: sqlite3 and what it links.
SQLITE=$(command -v sqlite3) || fail "sqlite3 missing (scripts/deps.d/userspace.txt)"
mkdir -p "$R1/usr/bin" "$R1/var/lib/app"
cp -L "$SQLITE" "$R1/usr/bin/sqlite3"
mapfile -t sqlite_libs < <(ldd "$SQLITE" | grep -o '/[^ ]*')
for lib in "${sqlite_libs[@]}"; do
	mkdir -p "$R1$(dirname "$lib")"
	cp -L "$lib" "$R1$lib"
done
n_sqlite=$((${#sqlite_libs[@]} + 1))   # the libraries (ELF) and usr/bin/sqlite3
sqlite3 "$R1/var/lib/app/app.db" "CREATE TABLE t(x); INSERT INTO t VALUES (1)"
find "$R1" -type f -exec touch -d '2024-01-01 00:00:00' {} +
cp -a "$R1" "$L/r2"
R2=$L/r2
head -c 5000 /dev/urandom >"$R1/opt/fresh.bin"   # duplicated but just written: too young to tag
cp -a "$R1/opt/fresh.bin" "$R2/opt/fresh.bin"
touch "$R1/opt/fresh.bin" "$R2/opt/fresh.bin"
conf() {  # NAME ROOTFS
	cat <<CONF
lxc.uts.name = $1
lxc.rootfs.path = dir:$2
lxc.net.0.type = empty
lxc.apparmor.profile = unconfined
lxc.hook.pre-start = $H --index $L/index.db --log $L/hook.log --socket $L/none.sock --budget-ms 30000
CONF
}
command -v lxc-execute >/dev/null || fail "lxc-execute missing (lxc, scripts/deps.d/container-hooks.txt)"
[ "$(id -u)" = 0 ] || skip "lxc-execute needs root here"
conf cid-probe "$R1" | grep -v hook.pre-start >"$L/probe.conf"
if ! lxc-execute -n cid-probe -P "$L" -f "$L/probe.conf" -- /bin/sh -c : >"$L/probe.out" 2>&1; then
	cat "$L/probe.out" >&2
	skip "lxc-execute cannot start a container here (no namespaces?)"
fi
conf cid-one "$R1" >"$L/one.conf"
conf cid-two "$R2" >"$L/two.conf"
service='echo "service log, line 2" >> /var/log/app.log && cat /var/log/app.log &&
	/usr/bin/sqlite3 -init /dev/null /var/lib/app/app.db "INSERT INTO t VALUES (2); SELECT COUNT(*), SUM(x) FROM t"'
# cid-one starts first (its hook indexes r1), then cid-two's service and
# cid-one's: cid-two's hook sees r1's log and database still duplicated.
lxc-execute -n cid-one -P "$L" -f "$L/one.conf" -- /bin/sh -c : || fail "lxc-execute cid-one"
out2=$(lxc-execute -n cid-two -P "$L" -f "$L/two.conf" -- /bin/sh -c "$service") || fail "lxc-execute cid-two"
out1=$(lxc-execute -n cid-one -P "$L" -f "$L/one.conf" -- /bin/sh -c "$service") || fail "lxc-execute cid-one"
expect_eq "service in cid-one" "$out1" "$(printf 'service log, line 1\nservice log, line 2\n2|3')"
expect_eq "service in cid-two" "$out2" "$(printf 'service log, line 1\nservice log, line 2\n2|3')"
expect_eq "database after the services" "$(sqlite3 "$R2/var/lib/app/app.db" 'PRAGMA integrity_check; SELECT SUM(x) FROM t')" "$(printf 'ok\n3')"
expect_eq "hook runs" "$(wc -l <"$L/hook.log")" 3
sed -n 2p "$L/hook.log" >"$L/two.json"
expect_eq "stage" "$(json "$L/two.json" 'j["stage"]')" pre-start
expect_eq "rootfs" "$(json "$L/two.json" 'j["rootfs"]')" "$R2"
expect_eq "mode" "$(json "$L/two.json" 'j["mode"]')" "$([ -d /sys/kernel/mm/cid ] && echo tag || echo report)"
# Duplicated in r2 when its hook ran: busybox, 5 libraries, sqlite3 and
# its libraries, app.conf, fresh.bin, app.log and app.db.
expect_eq "duplicated files" "$(json "$L/two.json" 'j["duplicated_files"]')" $((10 + n_sqlite))
expect_eq "eligible (busybox, usr/lib, sqlite3 and its libraries)" "$(json "$L/two.json" 'j["eligible"]')" $((6 + n_sqlite))
expect_eq "left alone (etc/, too young, var/log, var/lib)" "$(json "$L/two.json" 'j["ineligible"]')" 4
ok "lxc-execute with the hook as lxc.hook.pre-start: both rootfs indexed, $((6 + n_sqlite)) of $((10 + n_sqlite)) duplicates pass the policy (not the service's log or SQLite database), and the service writing both works"

LXC_ROOTFS_PATH="dir:$R2" "$H" --index "$L/index.db" --socket "$L/none.sock" --log "$L/custom.log" \
	--exclude 'usr/*' --exclude 'var/*' --include 'etc/*.conf' --min-age 0 cid-two lxc mount 2>"$L/err" ||
	{ cat "$L/err" >&2; fail "hook with patterns"; }
# busybox (ELF), app.conf (included), sqlite3's libraries (ELF; sqlite3
# itself is under usr/); not fresh.bin (no pattern, not ELF).
expect_eq "eligible with patterns" "$(json "$L/custom.log" 'j["eligible"]')" $((2 + n_sqlite - 1))
ok "--include/--exclude/--min-age change the policy (mount stage, dir: prefix)"
echo "$PASSED passed"
