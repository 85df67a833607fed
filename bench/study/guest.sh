#!/bin/sh
# shellcheck shell=dash
# In-guest half of bench/study/run.sh.  /dev/vda is the study image: the
# shared tree (shared/, the terminal server's one install) and the users'
# copies (copy/1..N, zero-install: each user's own, identical, separate
# inodes).  /study/plan lists the measurements, one "SCENARIO N CONFIG" a
# line, those without named merging first:
#   SCENARIO  ts (terminal server: N users of shared/), zi (zero-install:
#             user U runs from copy/U), ct (containers: user U runs on an
#             overlayfs whose lower layer is copy/U)
#   CONFIG    stock, nm (copies tagged: cidctl scan + tag --dups), ksm
#             (every process started with PR_SET_MEMORY_MERGE, ksmd run
#             for CID_STUDY_KSM_SCANS full scans), nmksm (both)
# For each it starts the users' processes, waits until every one is ready,
# runs cid-analyze --json on them all, and prints "RESULT ID KEY VALUE"
# lines and the JSON between "BEGIN-JSON ID" and "END-JSON ID" (ID is
# SCENARIO-N-CONFIG).  Every wait has a limit; a step that fails prints
# "STUDY-ERROR ID what" and the guest goes on with the next measurement.
# For a smoke test on a host: CID_STUDY_IMG=DIR (a directory already
# holding shared/ and copy/N: nothing is mounted there), CID_STUDY_DIR (this
# script's directory with work.py, work.pl and plan), CID_STUDY_CGROUP.
set -u
img=${CID_STUDY_IMG:-/mnt/study}
sdir=${CID_STUDY_DIR:-/study}
cg=${CID_STUDY_CGROUP:-/sys/fs/cgroup/study}
ready_tmo=${CID_STUDY_READY_TIMEOUT:-900}
ksm_scans=${CID_STUDY_KSM_SCANS:-2}
ksm_tmo=${CID_STUDY_KSM_TIMEOUT:-900}
r() { echo "RESULT $*"; }
err() { echo "STUDY-ERROR $*"; }
meminfo() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }
now() { awk '{ print $1 }' /proc/uptime; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

if [ -z "${CID_STUDY_IMG:-}" ]; then
	mkdir -p $img
	mount -t ext4 -o ro /dev/vda $img || { err setup "mount /dev/vda"; echo "not ok 1 study"; exit 1; }
fi
users=$(ls $img/copy | sort -n | tail -n 1)
r setup kernel "$(uname -r)"
r setup mem_total_kB "$(meminfo MemTotal)"
r setup cpus "$(grep -c ^processor /proc/cpuinfo)"
r setup copies "$users"
if [ -d /sys/kernel/mm/cid ]; then r setup named_merging present; else r setup named_merging absent; fi

# Every tree gets a private /tmp (tmpfs: the users' sockets, pid files and
# ready markers; the image stays read-only), /proc and /dev.
prepare_root() {
	mount -t tmpfs -o mode=1777 tmpfs "$1/tmp" &&
		mount -t proc proc "$1/proc" &&
		mount -o bind /dev "$1/dev" &&
		cp $sdir/work.py $sdir/work.pl "$1/tmp/"
}
prepare_root $img/shared || { err setup "preparing $img/shared"; exit 1; }
u=1
while [ $u -le "$users" ]; do
	prepare_root $img/copy/$u || { err setup "preparing $img/copy/$u"; exit 1; }
	u=$((u + 1))
done
# Containers: overlayfs over each copy, upper layer on tmpfs.
ct_ready=0
prepare_containers() {
	[ $ct_ready = 1 ] && return 0
	u=1
	while [ $u -le "$users" ]; do
		c=/run/ct/$u
		mkdir -p $c && mount -t tmpfs tmpfs $c && mkdir -p $c/upper $c/work $c/merged &&
			mount -t overlay overlay -o lowerdir=$img/copy/$u,upperdir=$c/upper,workdir=$c/work $c/merged &&
			prepare_root $c/merged || { err setup "overlayfs over copy/$u"; return 1; }
		u=$((u + 1))
	done
	ct_ready=1
}

echo +memory >"$(dirname $cg)/cgroup.subtree_control" 2>/dev/null
mkdir -p $cg && echo +memory >$cg/cgroup.subtree_control 2>/dev/null
[ -f $cg/memory.current ] || echo "# no memory controller: memcg figures left out"

launch=$(command -v study-launch) || { err setup "no study-launch"; exit 1; }
launched=
# A process that exited is a zombie until the shell reaps it.
alive() { [ -r /proc/$1/status ] && ! grep -q '^State:[[:space:]]*Z' /proc/$1/status 2>/dev/null; }

root_of() { # SCENARIO USER
	case $1 in
	ts) echo $img/shared ;;
	zi) echo $img/copy/$2 ;;
	ct) echo /run/ct/$2/merged ;;
	esac
}

# start_user ID SCENARIO USER KSM: the user's processes, each in its tree.
start_user() {
	id=$1 root=$(root_of "$2" "$3") u=$3 ksm=$4
	d=$root/tmp/u$u
	rm -rf "$d" && mkdir -p "$d/nginx" && mkfifo "$d/fifo" || { err "$id" "user dir $d"; return 1; }
	cat >"$d/nginx/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid /tmp/u$u/nginx/nginx.pid;
error_log /tmp/u$u/nginx/error.log;
events { worker_connections 64; }
http {
	access_log off;
	client_body_temp_path /tmp/u$u/nginx/body;
	proxy_temp_path /tmp/u$u/nginx/proxy;
	fastcgi_temp_path /tmp/u$u/nginx/fastcgi;
	scgi_temp_path /tmp/u$u/nginx/scgi;
	uwsgi_temp_path /tmp/u$u/nginx/uwsgi;
	server { listen unix:/tmp/u$u/nginx/nginx.sock; location / { return 200 "user $u\n"; } }
}
EOF
	mkdir -p $cg/u$u
	set -- "$launch" ${ksm:+--ksm} --cgroup $cg/u$u --cwd /tmp/u$u "$root"
	e="env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME=/tmp/u$u LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1"
	$e "$@" python3 /tmp/work.py /tmp/u$u >"$d/python.log" 2>&1 &
	launched="$launched $!"
	$e "$@" perl /tmp/work.pl /tmp/u$u >"$d/perl.log" 2>&1 &
	launched="$launched $!"
	$e "$@" bash -c "exec 3<>/tmp/u$u/fifo; : >/tmp/u$u/bash.ready; i=0; while :; do i=\$((i + 1)); read -t 5 -u 3 _; done" \
		>"$d/bash.log" 2>&1 &
	launched="$launched $!"
	$e "$@" sleep infinity >/dev/null 2>&1 &
	launched="$launched $!"
	$e "$@" redis-server --port 0 --unixsocket /tmp/u$u/redis.sock --dir /tmp/u$u --save '' --appendonly no \
		--logfile /tmp/u$u/redis.log >/dev/null 2>&1 &
	launched="$launched $!"
	$e "$@" nginx -e /tmp/u$u/nginx/error.log -p /tmp/u$u/nginx/ -c /tmp/u$u/nginx/nginx.conf >"$d/nginx.log" 2>&1 &
	launched="$launched $!"
}
# The processes a ready user has: python3, perl, bash, sleep, redis-server,
# nginx master and worker.
per_user=7
user_ready() { # SCENARIO USER
	d=$(root_of "$1" "$2")/tmp/u$2
	[ -f "$d/python.ready" ] && [ -f "$d/perl.ready" ] && [ -f "$d/bash.ready" ] &&
		[ -S "$d/redis.sock" ] && [ -S "$d/nginx/nginx.sock" ] &&
		[ "$(wc -l <$cg/u$2/cgroup.procs)" -ge $per_user ]
}
user_logs() { # SCENARIO USER: what a user that is not ready said
	d=$(root_of "$1" "$2")/tmp/u$2
	for f in python.log perl.log bash.log nginx.log redis.log nginx/error.log; do
		[ -s "$d/$f" ] && tail -n 5 "$d/$f" | sed "s|^|# u$2 $f: |"
	done
	echo "# u$2 processes: $(tr '\n' ' ' <$cg/u$2/cgroup.procs)"
	ls "$d" | tr '\n' ' ' | sed "s|^|# u$2 files: |"
	echo
}

stop_all() {
	if [ -f $cg/cgroup.kill ]; then
		echo 1 >$cg/cgroup.kill
	else
		for p in $(cat $cg/*/cgroup.procs 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
	fi
	t=0
	while [ -n "$(cat $cg/*/cgroup.procs 2>/dev/null)" ] && [ $t -lt 60 ]; do sleep 1; t=$((t + 1)); done
	wait 2>/dev/null
	for c in $cg/u*; do [ -d "$c" ] && rmdir "$c" 2>/dev/null; done
	[ -z "$(cat $cg/*/cgroup.procs 2>/dev/null)" ] || err cleanup "processes left after SIGKILL"
}

tagged=0
tag_copies() {
	[ $tagged = 1 ] && return 0
	tagged=1
	[ -d /sys/kernel/mm/cid ] || { err tag "kernel without named merging (no /sys/kernel/mm/cid)"; return 1; }
	echo 1 >/sys/kernel/mm/cid/enabled 2>/dev/null
	mkdir -p /tmp/cid
	set --
	u=1
	while [ $u -le "$users" ]; do set -- "$@" $img/copy/$u; u=$((u + 1)); done
	t0=$(now)
	cidctl scan --quiet --index /tmp/cid/index.db "$@" >/tmp/cid/scan.log 2>&1 ||
		{ err tag "cidctl scan failed"; sed 's/^/# /' /tmp/cid/scan.log; return 1; }
	r tag scan_seconds "$(elapsed "$t0")"
	t0=$(now)
	cidctl tag --dups --index /tmp/cid/index.db >/tmp/cid/tag.log 2>&1 ||
		{ err tag "cidctl tag --dups failed"; tail -n 20 /tmp/cid/tag.log | sed 's/^/# /'; }
	r tag tag_seconds "$(elapsed "$t0")"
	tail -n 3 /tmp/cid/tag.log | sed 's/^/# tag: /'
	cidctl report --index /tmp/cid/index.db --json | tr -d '\n' | sed 's/^/RESULT tag report /'
	echo
	for k in contents tagged_inodes pages_shared pages_sharing; do
		[ -r /sys/kernel/mm/cid/$k ] && r tag "$k" "$(cat /sys/kernel/mm/cid/$k)"
	done
	return 0
}

ksm_settle() { # ID: ksmd over everything until it has scanned it KSM_SCANS times
	k=/sys/kernel/mm/ksm
	[ -d $k ] || { err "$1" "no /sys/kernel/mm/ksm"; return 1; }
	echo "${CID_STUDY_KSM_PAGES:-4000}" >$k/pages_to_scan
	echo "${CID_STUDY_KSM_SLEEP:-10}" >$k/sleep_millisecs
	f0=$(cat $k/full_scans)
	t0=$(now)
	echo 1 >$k/run
	t=0
	while [ "$(cat $k/full_scans)" -lt $((f0 + ksm_scans)) ]; do
		[ $t -ge "$ksm_tmo" ] && { err "$1" "ksmd did not finish $ksm_scans full scans in ${ksm_tmo}s"; break; }
		sleep 1
		t=$((t + 1))
	done
	r "$1" ksm_seconds "$(elapsed "$t0")"
	for f in pages_shared pages_sharing pages_unshared full_scans; do r "$1" "ksm_$f" "$(cat $k/$f)"; done
	# Stop scanning while cid-analyze reads (it would otherwise merge under it).
	echo 0 >$k/run
}

measure() { # SCENARIO N CONFIG
	sc=$1 n=$2 conf=$3 id=$1-$2-$3
	echo "# study: $id"
	case $conf in nm | nmksm) tag_copies || { err "$id" "no tags: skipped"; return; } ;; esac
	if [ "$sc" = ct ]; then prepare_containers || { err "$id" "no containers: skipped"; return; }; fi
	ksm= tagged_conf=
	case $conf in ksm | nmksm) ksm=1 ;; esac
	case $conf in nm | nmksm) tagged_conf=1 ;; esac
	sync
	echo 3 >/proc/sys/vm/drop_caches
	sleep 1
	c0=$(meminfo Cached) a0=$(meminfo AnonPages)
	t0=$(now)
	launched=
	u=1
	while [ $u -le "$n" ]; do start_user "$id" "$sc" $u "$ksm"; u=$((u + 1)); done
	t=0
	while :; do
		u=1 all=1
		while [ $u -le "$n" ]; do user_ready "$sc" $u || all=0; u=$((u + 1)); done
		[ $all = 1 ] && break
		dead=
		for p in $launched; do alive "$p" || dead="$dead $p"; done
		if [ $t -ge "$ready_tmo" ] || [ -n "$dead" ]; then
			if [ -n "$dead" ]; then
				err "$id" "a user's process exited before all were ready"
			else
				err "$id" "users not ready after ${ready_tmo}s"
			fi
			u=1
			while [ $u -le "$n" ]; do user_ready "$sc" $u || user_logs "$sc" $u; u=$((u + 1)); done
			stop_all
			return
		fi
		sleep 1
		t=$((t + 1))
	done
	r "$id" ready_seconds "$(elapsed "$t0")"
	[ -n "$ksm" ] && ksm_settle "$id"
	sleep 2
	r "$id" cached_kB $(($(meminfo Cached) - c0))
	r "$id" anon_kB $(($(meminfo AnonPages) - a0))
	if [ -f $cg/memory.current ]; then
		r "$id" memcg_bytes "$(cat $cg/memory.current)"
		awk -v id="$id" '$1 ~ /^(anon|file|file_mapped|shmem)$/ { print "RESULT " id " memcg_" $1 " " $2 }' $cg/memory.stat
	fi
	t0=$(now)
	cid-analyze --json --groups --cgroup $cg >/tmp/analyze.json 2>/tmp/analyze.err
	rc=$?
	r "$id" analyze_rc $rc
	r "$id" analyze_seconds "$(elapsed "$t0")"
	sed 's/^/# cid-analyze: /' /tmp/analyze.err
	if [ $rc = 0 ] || [ $rc = 3 ]; then
		echo "BEGIN-JSON $id"
		cat /tmp/analyze.json
		echo
		echo "END-JSON $id"
		# Which file pages different users still hold in frames of their
		# own, per file (study-unshared), where the config shares them.
		if [ "$sc" != ts ] && [ "$n" -gt 1 ]; then
			set --
			u=1
			while [ $u -le "$n" ]; do set -- "$@" "$(root_of "$sc" $u)" $(cat $cg/u$u/cgroup.procs); u=$((u + 1)); done
			study-unshared "$@" >/tmp/unshared.txt 2>&1
			sed "s/^/UNSHARED $id /" /tmp/unshared.txt
			# Why: the tag state of the worst files (in user 1's tree).
			[ -n "$tagged_conf" ] && awk '$1 == "file" { print $2 }' /tmp/unshared.txt | head -n 15 | while read -r f; do
				echo "UNSHARED-WHY $id $f $(cidctl query --json "$(root_of "$sc" 1)$f" 2>&1 | tr -d '\n')"
			done
		fi
	else
		err "$id" "cid-analyze exit $rc"
	fi
	stop_all
	[ -n "$ksm" ] && echo 2 >/sys/kernel/mm/ksm/run
}

while read -r sc n conf; do
	case $sc in "" | \#*) continue ;; esac
	measure "$sc" "$n" "$conf"
done <$sdir/plan
echo "1..1"
echo "ok 1 study"
