#!/bin/bash
# cid-lxc-hook: the arguments and environment LXC passes, ignored stages,
# each failure's exit status, and real lxc-execute runs over two copied
# rootfs with the hook as lxc.hook.pre-start.  On this (stock) kernel the
# hook reports what the writable-tree policy would tag: ELF files and
# usr/, not var/ or etc/ or anything modified recently, and a service
# appending to its own duplicated log keeps working.
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
service='echo "service log, line 2" >> /var/log/app.log && cat /var/log/app.log'
out1=$(lxc-execute -n cid-one -P "$L" -f "$L/one.conf" -- /bin/sh -c "$service") || fail "lxc-execute cid-one"
out2=$(lxc-execute -n cid-two -P "$L" -f "$L/two.conf" -- /bin/sh -c "$service") || fail "lxc-execute cid-two"
expect_eq "service in cid-one" "$out1" "$(printf 'service log, line 1\nservice log, line 2')"
expect_eq "service in cid-two" "$out2" "$(printf 'service log, line 1\nservice log, line 2')"
expect_eq "hook runs" "$(wc -l <"$L/hook.log")" 2
tail -1 "$L/hook.log" >"$L/two.json"
expect_eq "stage" "$(json "$L/two.json" 'j["stage"]')" pre-start
expect_eq "rootfs" "$(json "$L/two.json" 'j["rootfs"]')" "$R2"
expect_eq "mode" "$(json "$L/two.json" 'j["mode"]')" "$([ -d /sys/kernel/mm/cid ] && echo tag || echo report)"
# Duplicated in r2: busybox, 5 libraries, app.conf, fresh.bin.  Not
# app.log: cid-one's service appended to r1's before cid-two started (an
# index that kept r1's log as first hashed would still count it).
expect_eq "duplicated files" "$(json "$L/two.json" 'j["duplicated_files"]')" 8
expect_eq "eligible (busybox, usr/lib)" "$(json "$L/two.json" 'j["eligible"]')" 6
expect_eq "left alone (etc/, too young)" "$(json "$L/two.json" 'j["ineligible"]')" 2
ok "lxc-execute with the hook as lxc.hook.pre-start: both rootfs indexed, 6 of 8 duplicates pass the policy, the service writing its duplicated log works"

LXC_ROOTFS_PATH="dir:$R2" "$H" --index "$L/index.db" --socket "$L/none.sock" --log "$L/custom.log" \
	--exclude 'usr/*' --exclude 'var/*' --include 'etc/*.conf' --min-age 0 cid-two lxc mount 2>"$L/err" ||
	{ cat "$L/err" >&2; fail "hook with patterns"; }
# busybox (ELF), app.conf (included), fresh.bin (old enough with --min-age 0? no pattern, not ELF)
expect_eq "eligible with patterns" "$(json "$L/custom.log" 'j["eligible"]')" 2
ok "--include/--exclude/--min-age change the policy (mount stage, dir: prefix)"
echo "$PASSED passed"
