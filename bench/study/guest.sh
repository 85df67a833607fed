#!/bin/sh
# shellcheck shell=dash
# In-guest half of bench/study/run.sh.  /dev/vda is the study image: the
# shared tree (shared/, the terminal server's one install) and the users'
# copies (copy/1..N, zero-install: each user's own, identical, separate
# inodes).  /study/plan lists the measurements, one
# "SCENARIO N CONFIG[+CONFIG...]" a line, those without named merging first:
#   SCENARIO  ts (terminal server: N users of shared/), zi (zero-install:
#             user U runs from copy/U), ct (containers: user U runs on an
#             overlayfs whose lower layer is copy/U)
#   CONFIG    stock, nm (copies tagged), ksm (every process started with
#             PR_SET_MEMORY_MERGE, ksmd run for CID_STUDY_KSM_SCANS full
#             scans), nmksm (both)
#   A+B       the users started once and measured in each configuration in
#             turn: "stock+ksm" starts them with PR_SET_MEMORY_MERGE while
#             ksmd is off (nothing merges: stock), measures, then lets ksmd
#             scan and measures the same processes again.  The configurations
#             of a chain agree on tags; those without KSM come first.
# For each it starts the users' processes, waits until every one is ready,
# runs cid-analyze --json --groups on them all (the users' cgroup only), and
# prints "RESULT ID KEY VALUE" lines and the JSON between "BEGIN-JSON ID"
# and "END-JSON ID" (ID is SCENARIO-N-CONFIG), and "PHASE UPTIME what" lines
# as it goes (run.sh shows them live).  Every wait polls for the state it
# waits for, with a limit; a step that fails prints "STUDY-ERROR ID what"
# and the guest goes on with the next measurement.
# Tags (CID_STUDY_TAG):
#   dups     (default) cidctl scan of every copy, cidctl tag --dups, before
#            the first measurement with named merging
#   mapped   the files the users' processes map in the first measurement,
#            in every copy: cidctl tag, started in the background right
#            after that measurement (with /sys/kernel/mm/cid/enabled at 0,
#            so the users running then stay stock) and waited for before the
#            first measurement with named merging
# Workload size (CID_STUDY_WORK): full (default) or small (make demo: fewer
# python modules, smaller heaps; see work.py and work.pl).
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
tag_mode=${CID_STUDY_TAG:-dups}
tag_tmo=${CID_STUDY_TAG_TIMEOUT:-1800}
work_size=${CID_STUDY_WORK:-full}
poll=${CID_STUDY_POLL:-0.2}
r() { echo "RESULT $*"; }
err() { echo "STUDY-ERROR $*"; }
meminfo() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }
now() { awk '{ print $1 }' /proc/uptime; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# since T LIMIT: true once LIMIT seconds have passed since uptime T.
since() { awk -v a="$1" -v l="$2" -v b="$(now)" 'BEGIN { exit !(b - a >= l) }'; }
phase() { echo "PHASE $(now) $*"; }
case $tag_mode in dups | mapped) ;; *) err setup "CID_STUDY_TAG=$tag_mode: dups or mapped"; exit 1 ;; esac
case $work_size in full | small) ;; *) err setup "CID_STUDY_WORK=$work_size: full or small"; exit 1 ;; esac

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
r setup work "$work_size"
r setup tag_mode "$tag_mode"

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
	$e "$@" python3 /tmp/work.py /tmp/u$u "$work_size" >"$d/python.log" 2>&1 &
	launched="$launched $!"
	$e "$@" perl /tmp/work.pl /tmp/u$u "$work_size" >"$d/perl.log" 2>&1 &
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
	t0=$(now)
	while [ -n "$(cat $cg/*/cgroup.procs 2>/dev/null)" ] && ! since "$t0" 60; do sleep "$poll"; done
	# Only the users' processes: a background tagging job runs on.
	[ -n "$launched" ] && wait $launched 2>/dev/null
	launched=
	for c in $cg/u*; do [ -d "$c" ] && rmdir "$c" 2>/dev/null; done
	[ -z "$(cat $cg/*/cgroup.procs 2>/dev/null)" ] || err cleanup "processes left after SIGKILL"
}

# start_users ID SCENARIO N KSM: start N users and wait until every one is
# ready, from a dropped page cache.  Sets c0 and a0 (Cached and AnonPages
# before); fails (everything stopped) if a process exits or time runs out.
start_users() {
	id=$1 sc=$2 n=$3 ksm=$4
	sync
	echo 3 >/proc/sys/vm/drop_caches
	c0=$(meminfo Cached) a0=$(meminfo AnonPages)
	phase "$id: starting $n user(s)"
	t0=$(now)
	launched=
	u=1
	while [ $u -le "$n" ]; do start_user "$id" "$sc" $u "$ksm"; u=$((u + 1)); done
	while :; do
		u=1 all=1
		while [ $u -le "$n" ]; do user_ready "$sc" $u || all=0; u=$((u + 1)); done
		[ $all = 1 ] && break
		dead=
		for p in $launched; do alive "$p" || dead="$dead $p"; done
		if [ -n "$dead" ] || since "$t0" "$ready_tmo"; then
			if [ -n "$dead" ]; then
				err "$id" "a user's process exited before all were ready"
			else
				err "$id" "users not ready after ${ready_tmo}s"
			fi
			u=1
			while [ $u -le "$n" ]; do user_ready "$sc" $u || user_logs "$sc" $u; u=$((u + 1)); done
			stop_all
			return 1
		fi
		sleep "$poll"
	done
	r "$id" ready_seconds "$(elapsed "$t0")"
	phase "$id: $n user(s) ready"
}

# Tags.  tag_state: "" none yet, running (mapped: the background job),
# finished; tag_ok: 1 once they are in place.
tag_state=
tag_ok=0
tag_result() { # what the kernel says after tagging
	for k in contents tagged_inodes pages_shared pages_sharing; do
		[ -r /sys/kernel/mm/cid/$k ] && r tag "$k" "$(cat /sys/kernel/mm/cid/$k)"
	done
}
need_tags() { grep -Eq '^[^#]*[ +](nm|nmksm)([+ ]|$)' $sdir/plan; }

# tag_mapped_start SCENARIO N: the files the users' processes map now,
# relative to their trees, tagged in every copy by a background job.
tag_mapped_start() {
	[ -z "$tag_state" ] || return 0
	tag_state=running
	[ -d /sys/kernel/mm/cid ] || { err tag "kernel without named merging (no /sys/kernel/mm/cid)"; tag_state=finished; return 1; }
	mkdir -p /tmp/cid
	# One awk over every user's maps (a process per file is slow under TCG).
	sc=$1 n=$2
	set --
	u=1
	while [ $u -le "$n" ]; do
		set -- "$@" "root=$(root_of "$sc" $u)/"
		for p in $(cat $cg/u$u/cgroup.procs); do set -- "$@" /proc/$p/maps; done
		u=$((u + 1))
	done
	awk '$6 ~ /^\// && index($6, root) == 1 { f = substr($6, length(root)); if (f !~ /^\/(tmp|dev|proc)\//) print f }' \
		"$@" 2>/dev/null | sort -u >/tmp/cid/mapped.list
	awk -v img="$img" -v n="$users" '{ for (u = 1; u <= n; u++) print img "/copy/" u $0 }' /tmp/cid/mapped.list >/tmp/cid/targets
	r tag files_per_copy "$(wc -l </tmp/cid/mapped.list)"
	# The users running now stay stock: opens are diverted again only
	# once the tags are done (tag_wait).
	echo 0 >/sys/kernel/mm/cid/enabled
	phase "tagging the $(wc -l </tmp/cid/mapped.list) files the users map, in each of the $users copies (background)"
	rm -f /tmp/cid/tag.done
	(
		t0=$(now)
		xargs cidctl tag --no-verify-index </tmp/cid/targets >/tmp/cid/tag.out 2>/tmp/cid/tag.err
		rc=$?
		xargs stat -c %s </tmp/cid/targets | awk '{ s += $1 } END { print s + 0 }' >/tmp/cid/tag.bytes
		echo "$rc $(elapsed "$t0")" >/tmp/cid/tag.done
	) &
}

# tag_wait: until the background job has finished (its tag.done).
tag_wait() {
	t0=$(now)
	while [ ! -s /tmp/cid/tag.done ]; do
		since "$t0" "$tag_tmo" && { err tag "cidctl tag still running after ${tag_tmo}s"; return 1; }
		sleep "$poll"
	done
	read -r rc secs </tmp/cid/tag.done
	r tag tag_seconds "$secs"
	r tag bytes "$(cat /tmp/cid/tag.bytes)"
	r tag tag_wait_seconds "$(elapsed "$t0")"
	r tag tagged_files "$(grep -c . /tmp/cid/tag.out)"
	r tag failed_files "$(grep -vc '^tagged [0-9]*, failed' /tmp/cid/tag.err)"
	[ "$rc" = 0 ] || { err tag "cidctl tag exit $rc"; head -n 10 /tmp/cid/tag.err | sed 's/^/# tag: /'; }
	tag_result
	phase "tags done: $(grep -c . /tmp/cid/tag.out) files in ${secs}s"
	[ -s /tmp/cid/tag.out ]
}

tag_copies() {
	[ "$tag_state" = finished ] && { [ $tag_ok = 1 ]; return; }
	if [ "$tag_mode" = mapped ]; then
		[ -n "$tag_state" ] || { err tag "CID_STUDY_TAG=mapped: no measurement before the first with named merging to take the files from"; return 1; }
		tag_state=finished
		tag_wait || return 1
		echo 1 >/sys/kernel/mm/cid/enabled
		tag_ok=1
		return 0
	fi
	tag_state=finished
	[ -d /sys/kernel/mm/cid ] || { err tag "kernel without named merging (no /sys/kernel/mm/cid)"; return 1; }
	echo 1 >/sys/kernel/mm/cid/enabled 2>/dev/null
	mkdir -p /tmp/cid
	set --
	u=1
	while [ $u -le "$users" ]; do set -- "$@" $img/copy/$u; u=$((u + 1)); done
	phase "cidctl scan of the $users copies"
	t0=$(now)
	cidctl scan --quiet --index /tmp/cid/index.db "$@" >/tmp/cid/scan.log 2>&1 ||
		{ err tag "cidctl scan failed"; sed 's/^/# /' /tmp/cid/scan.log; return 1; }
	r tag scan_seconds "$(elapsed "$t0")"
	phase "cidctl tag --dups"
	t0=$(now)
	cidctl tag --dups --index /tmp/cid/index.db >/tmp/cid/tag.log 2>&1 ||
		{ err tag "cidctl tag --dups failed"; grep -v '^fsverity-sha256:' /tmp/cid/tag.log | head -n 20 | sed 's/^/# /'; }
	r tag tag_seconds "$(elapsed "$t0")"
	tail -n 3 /tmp/cid/tag.log | sed 's/^/# tag: /'
	cidctl report --index /tmp/cid/index.db --json | tr -d '\n' | sed 's/^/RESULT tag report /'
	echo
	tag_result
	tag_ok=1
	return 0
}

ksm_settle() { # ID: ksmd over everything until it has scanned it KSM_SCANS times
	k=/sys/kernel/mm/ksm
	[ -d $k ] || { err "$1" "no /sys/kernel/mm/ksm"; return 1; }
	echo "${CID_STUDY_KSM_PAGES:-4000}" >$k/pages_to_scan
	echo "${CID_STUDY_KSM_SLEEP:-10}" >$k/sleep_millisecs
	f0=$(cat $k/full_scans)
	phase "$1: ksmd scanning"
	t0=$(now)
	echo 1 >$k/run
	while [ "$(cat $k/full_scans)" -lt $((f0 + ksm_scans)) ]; do
		since "$t0" "$ksm_tmo" && { err "$1" "ksmd did not finish $ksm_scans full scans in ${ksm_tmo}s"; break; }
		sleep "$poll"
	done
	r "$1" ksm_seconds "$(elapsed "$t0")"
	for f in pages_shared pages_sharing pages_unshared full_scans; do r "$1" "ksm_$f" "$(cat $k/$f)"; done
	# Stop scanning while cid-analyze reads (it would otherwise merge under it).
	echo 0 >$k/run
	phase "$1: ksmd done ($ksm_scans full scans)"
}

# snapshot ID SCENARIO N CONFIG: cid-analyze over the users' processes.
snapshot() {
	id=$1 sc=$2 n=$3 conf=$4
	if [ "$tag_state" = running ] && [ ! -s /tmp/cid/tag.done ]; then
		# Tagging reads files into the page cache meanwhile: the global
		# Cached and AnonPages tell nothing about the users now.
		r "$id" tagging_meanwhile 1
	else
		r "$id" cached_kB $(($(meminfo Cached) - c0))
		r "$id" anon_kB $(($(meminfo AnonPages) - a0))
	fi
	if [ -f $cg/memory.current ]; then
		r "$id" memcg_bytes "$(cat $cg/memory.current)"
		awk -v id="$id" '$1 ~ /^(anon|file|file_mapped|shmem)$/ { print "RESULT " id " memcg_" $1 " " $2 }' $cg/memory.stat
	fi
	phase "$id: cid-analyze"
	t0=$(now)
	cid-analyze --json --groups --cgroup $cg >/tmp/analyze.json 2>/tmp/analyze.err
	rc=$?
	r "$id" analyze_rc $rc
	r "$id" analyze_seconds "$(elapsed "$t0")"
	sed 's/^/# cid-analyze: /' /tmp/analyze.err
	if [ $rc != 0 ] && [ $rc != 3 ]; then
		err "$id" "cid-analyze exit $rc"
		return
	fi
	echo "BEGIN-JSON $id"
	cat /tmp/analyze.json
	echo
	echo "END-JSON $id"
	phase "$id: measured"
	# Which file pages different users still hold in frames of their own,
	# per file (study-unshared), where the configuration shares them.
	case $conf in nm | nmksm) ;; *) return ;; esac
	[ "$sc" != ts ] && [ "$n" -gt 1 ] || return
	set --
	u=1
	while [ $u -le "$n" ]; do set -- "$@" "$(root_of "$sc" $u)" $(cat $cg/u$u/cgroup.procs); u=$((u + 1)); done
	study-unshared "$@" >/tmp/unshared.txt 2>&1
	sed "s/^/UNSHARED $id /" /tmp/unshared.txt
	# Why: the tag state of the worst files (in user 1's tree).
	awk '$1 == "file" { print $2 }' /tmp/unshared.txt | head -n 15 | while read -r f; do
		echo "UNSHARED-WHY $id $f $(cidctl query --json "$(root_of "$sc" 1)$f" 2>&1 | tr -d '\n')"
	done
}

measure() { # SCENARIO N CONFIG[+CONFIG...]
	sc=$1 n=$2 chain=$3
	confs=$(echo "$chain" | tr + ' ')
	ksm="" tagged_conf="" untagged_conf="" seen_ksm=""
	for conf in $confs; do
		case $conf in
		stock | ksm) untagged_conf=1 ;;
		nm | nmksm) tagged_conf=1 ;;
		*) err "$sc-$n-$chain" "unknown configuration $conf: skipped"; return ;;
		esac
		case $conf in
		ksm | nmksm) ksm=1 seen_ksm=1 ;;
		*) [ -n "$seen_ksm" ] && { err "$sc-$n-$chain" "a configuration without KSM after one with it: skipped"; return; } ;;
		esac
	done
	[ -n "$tagged_conf" ] && [ -n "$untagged_conf" ] && { err "$sc-$n-$chain" "tagged and untagged configurations in one chain: skipped"; return; }
	set -- $confs
	first=$sc-$n-$1
	echo "# study: $sc-$n-$chain"
	if [ -n "$tagged_conf" ]; then tag_copies || { err "$first" "no tags: skipped"; return; }; fi
	if [ "$sc" = ct ]; then prepare_containers || { err "$first" "no containers: skipped"; return; }; fi
	start_users "$first" "$sc" "$n" "$ksm" || return
	settled=
	for conf in $confs; do
		id=$sc-$n-$conf
		case $conf in
		ksm | nmksm) [ -n "$settled" ] || { ksm_settle "$id"; settled=1; } ;;
		*) [ -n "$ksm" ] && r "$id" ksm_prctl_no_scan 1 ;;
		esac
		snapshot "$id" "$sc" "$n" "$conf"
		# Mapped tags: from the first users measured, while the plan goes on.
		[ "$tag_mode" = mapped ] && [ -z "$tag_state" ] && need_tags && tag_mapped_start "$sc" "$n"
	done
	stop_all
	[ -n "$ksm" ] && echo 2 >/sys/kernel/mm/ksm/run
}

phase "setup done"
while read -r sc n conf; do
	case $sc in "" | \#*) continue ;; esac
	measure "$sc" "$n" "$conf"
done <$sdir/plan
# A background tagging job nothing waited for.
[ "$tag_state" = running ] && [ ! -s /tmp/cid/tag.done ] && tag_wait >/dev/null
phase "done"
echo "1..1"
echo "ok 1 study"
