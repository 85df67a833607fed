#!/bin/bash
# The kernel test suite (make vm-test): boot the patched kernel from
# make kernel under QEMU and run, in the guest,
#   1. the upstream mm selftests of tests/vm/selftests.list,
#   2. the project's own suite, tests/vm/guest/ (if it exists),
# then count their TAP results.  Ends with one line
#   N passed, N failed, N skipped
# and exits non-zero if any test failed, the guest did not finish, or the
# console shows an oops, BUG, WARNING, lockdep, KASAN/UBSAN, list
# corruption, hung-task or soft-lockup report.
#
# Environment:
#   BUILD            build directory (default build)
#   CID_VM_SUITES    extended regex; run only the suites whose name matches
#                    (e.g. CID_VM_SUITES=cid for the project suite alone)
#   CID_VM_ACCEL     kvm | tcg | auto (default auto: probe KVM, else TCG)
#   CID_VM_CIDCTL_FROM  build directory to take cidctl from (default BUILD)
#   CID_VM_GUEST_FS  filesystems the project suite runs on (default: all)
#   CID_VM_MEM CID_VM_CPUS CID_VM_CMDLINE CID_VM_TIMEOUT
# See tests/vm/README.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cd "$top"
BUILD=${BUILD:-build}
export BUILD
# shellcheck source=tests/vm/lib.sh
. "$here/lib.sh"

kernel=$BUILD/kernel/bzImage
[ -f "$kernel" ] && [ -f "$BUILD/kernel/srctree" ] || vm_die "$kernel missing: run 'make kernel' first"
src=$(cat "$BUILD/kernel/srctree")
obj=$(cat "$BUILD/kernel/objtree")
vm=$BUILD/vm
mkdir -p "$vm"
vm=$(cd "$vm" && pwd)
root=$vm/root
want=${CID_VM_SUITES:-.}
host_fail=()	# failures found on the host side (build errors)

vm_base_root "$root"
tmo_total=0
add_suite() {
	echo "$1" | grep -qE "$want" || return 0
	vm_add_suite "$root" "$@"
	tmo_total=$((tmo_total + $2))
}

# 1. Upstream mm selftests: only the programs of the suites selected are
# built (the KASAN run needs one of them; building all took 100 s there).
selected=$(while read -r name _; do
	case $name in "" | \#*) continue ;; esac
	if echo "$name" | grep -qE "$want"; then echo "${name%%:*}"; fi
done <"$here/selftests.list" | sort -u | tr '\n' ' ')
if CID_SELFTESTS=${selected:- } tests/vm/selftests.sh "$src" "$obj" "$vm/selftests"; then :; else
	host_fail+=("selftests: build script failed")
fi
mkdir -p "$root/selftests/mm"
while read -r name tmo args; do
	case $name in "" | \#*) continue ;; esac
	echo "$name" | grep -qE "$want" || continue
	prog=${name%%:*}
	if [ ! -f "$src/tools/testing/selftests/mm/$prog.c" ]; then
		vm_log "$prog: not in this tree (its patch is not applied); not run"
		continue
	fi
	if [ ! -x "$vm/selftests/$prog" ]; then
		host_fail+=("$name: does not build (see $vm/selftests/$prog.log)")
		continue
	fi
	vm_add_binary "$root" "$vm/selftests/$prog" "/selftests/mm/$prog"
	# The suite runs in its own tmpfs directory holding links to the tests,
	# the way run_vmtests.sh runs them from the build directory (some exec
	# ./NAME or create files next to themselves).
	add_suite "$name" "$tmo" "ln -s /selftests/mm/* /selftests/*.awk /selftests/*.sh . && ${args:-./$prog}"
done <"$here/selftests.list"
cp "$here/tap-uffd.awk" "$here/on-disk.sh" "$root/selftests/"
chmod 0755 "$root/selftests/on-disk.sh"

# 2. cidctl from the userspace build, if any.
from=${CID_VM_CIDCTL_FROM:-$BUILD}
# built NAME: the first executable NAME of the userspace build, if any
# (under userspace/ and tests/ first: other directories of a build tree
# hold stale copies, such as the study's guest root).
built() {
	local d
	for d in "$from/userspace" "$from/tests" "$from/container-hooks" "$from"; do
		[ -d "$d" ] || continue
		find "$d" \( -path "$from/vm" -o -path "$from/bench-vm" -o -path "$from/kasan" -o -path "$from/study" \) -prune -o \
			-type f -name "$1" -perm -u+x -print -quit 2>/dev/null | grep . && return
	done
	return 0
}
cidctl=$(built cidctl)
if [ -n "$cidctl" ]; then
	vm_add_binary "$root" "$cidctl" /usr/bin/cidctl
	vm_log "including $cidctl as /usr/bin/cidctl"
	# cidctl scan/dups/tag/query/status against the kernel, on the
	# selftests' scratch ext4 disk.
	cp tests/integration/guest/cidctl_tag.sh "$root/selftests/cidctl_tag.sh"
	add_suite cidctl 300 "/selftests/on-disk.sh /dev/vdc ext4 sh -c 'sh /selftests/cidctl_tag.sh \"\$PWD\"'"
fi

# cid-analyze against the kernel: achieved sharing equals the oracle for
# tagged twins (dynamically linked; its libraries come along).
ana=$(built cid-analyze)
hlp=$(built analyze_helper)
if [ -n "$cidctl" ] && [ -n "$ana" ] && [ -n "$hlp" ]; then
	vm_add_binary "$root" "$ana" /usr/bin/cid-analyze
	vm_add_binary "$root" "$hlp" /usr/bin/analyze_helper
	cp tests/integration/guest/analyze_named.sh "$root/selftests/analyze_named.sh"
	add_suite cid-analyze 300 "/selftests/on-disk.sh /dev/vdc ext4 sh -c 'sh /selftests/analyze_named.sh \"\$PWD\"'"
fi

# cid-oci-hook and cidd against the kernel (tests/integration/guest/hook_kernel.sh):
# an overlay over two layer copies and a runtime's state JSON; the hook and
# then cidd tag the duplicates, the merged view's copy and its twin map the
# same frames (analyze_helper reads pagemap), cidctl top shows the container.
# A few seconds of guest time.
hook=$(built cid-oci-hook)
standalone=$(built cid-oci-hook-standalone)
cidd=$(built cidd)
if [ -n "$cidctl" ] && [ -n "$hook" ] && [ -n "$standalone" ] && [ -n "$cidd" ]; then
	vm_add_binary "$root" "$hook" /usr/bin/cid-oci-hook
	vm_add_binary "$root" "$standalone" /usr/bin/cid-oci-hook-standalone
	vm_add_binary "$root" "$cidd" /usr/bin/cidd
	[ -z "$hlp" ] || vm_add_binary "$root" "$hlp" /usr/bin/analyze_helper
	cp tests/integration/guest/hook_kernel.sh tests/integration/guest/hook_state.json "$root/selftests/"
	add_suite hooks 120 \
		"/selftests/on-disk.sh /dev/vdc ext4 sh -c 'sh /selftests/hook_kernel.sh \"\$PWD\" /selftests/hook_state.json'"
fi

# btrfs-progs for the suite's btrfs cases (an image on the ext4 disk).
for t in mkfs.btrfs btrfs; do
	if p=$(command -v "$t"); then
		vm_add_binary "$root" "$p" "/sbin/$t"
	else
		vm_log "$t not found (btrfs-progs); the btrfs cases will fail"
	fi
done

# 3. The project's suite: tests/vm/guest/build.sh STAGING, run from /cid-guest.
stage=$vm/guest
if [ -f tests/vm/guest/build.sh ] && echo cid | grep -qE "$want"; then
	rm -rf "$stage"
	mkdir -p "$stage"
	if bash tests/vm/guest/build.sh "$stage"; then
		cp -a "$stage" "$root/cid-guest"
		# Libraries of dynamically linked programs in the staging dir.
		while IFS= read -r f; do
			if ldd "$f" >/dev/null 2>&1; then
				vm_add_binary "$root" "$f" "/cid-guest/${f#"$stage"/}"
			fi
		done < <(find "$stage" -type f -perm -u+x)
		if [ -f "$stage/run-suite.sh" ]; then
			# CID_VM_GUEST_FS: the filesystems the suite runs on (its CID_FS).
			add_suite cid "${CID_VM_GUEST_TIMEOUT:-1500}" \
				"${CID_VM_GUEST_FS:+CID_FS='$CID_VM_GUEST_FS' }sh /cid-guest/run-suite.sh"
		else
			vm_log "tests/vm/guest/build.sh left no run-suite.sh; project suite not run"
		fi
	else
		host_fail+=("cid: tests/vm/guest/build.sh failed")
	fi
fi
[ -s "$root/suites.list" ] || vm_die "no suite selected (CID_VM_SUITES=$want)"

vm_pack "$root" "$vm/initrd.gz"
vm_disks "$vm/disks"
# Scratch filesystems for the selftests that need a real one as their cwd.
rm -f "$vm/disks/st-ext4.img" "$vm/disks/st-xfs.img"
truncate -s 512M "$vm/disks/st-ext4.img" "$vm/disks/st-xfs.img"
mkfs.ext4 -q -F "$vm/disks/st-ext4.img" && mkfs.xfs -q -f "$vm/disks/st-xfs.img" ||
	vm_die "mkfs of the selftest scratch images failed"
vm_log "initramfs $(du -h "$vm/initrd.gz" | cut -f1), suites: $(awk '{printf "%s ", $1}' "$root/suites.list")"

# 4. Boot.  The guest limit is per suite; the host limit is their sum plus
# boot, so a hung guest is still caught.
timeout=${CID_VM_TIMEOUT:-$((tmo_total + 180))}
start=$(date +%s)
set +e
vm_boot "$kernel" "$vm/initrd.gz" "$vm/console.log" "$vm/results.log" "$timeout" \
	"$vm/disks/ext4.img" "$vm/disks/xfs.img" "$vm/disks/st-ext4.img" "$vm/disks/st-xfs.img"
qemu_rc=$?
set -e
vm_log "guest ran $(($(date +%s) - start))s (qemu exit $qemu_rc); console: $vm/console.log"

# 5. Count.
tr -d '\r' <"$vm/results.log" >"$vm/results.txt"
summary=$(awk -v known="$here/known-skips" -f "$here/tap-count.awk" "$vm/results.txt")
echo "per suite:                passed failed skipped  exit  time"
echo "$summary" | while read -r tag name p f s rc; do
	[ "$tag" = SUITE ] || continue
	t=$(awk -v n="$name" '$2 == "cid-suite-time:" && $3 == n {print $4}' "$vm/results.txt")
	printf '  %-28s %6s %6s %7s %5s %5s\n' "$name" "$p" "$f" "$s" "${rc:--}" "${t:--}"
done
echo "$summary" | grep -vE '^(COUNTS|SUITE) ' || true
read -r _ passed failed skipped < <(echo "$summary" | grep '^COUNTS ')

for f in "${host_fail[@]+"${host_fail[@]}"}"; do
	echo "FAIL $f"
	failed=$((failed + 1))
done
bad=0
if ! grep -q '^# cid-vm: done' "$vm/results.txt"; then
	if [ "$qemu_rc" = 124 ] || [ "$qemu_rc" = 137 ]; then
		echo "FAIL guest: timed out after ${timeout}s; last console lines:"
	else
		echo "FAIL guest: did not finish (qemu exit $qemu_rc); last console lines:"
	fi
	tail -n 30 "$vm/console.log" | tr -d '\r' | sed 's/^/  | /'
	bad=1
fi
if problems=$(vm_console_problems "$vm/console.log"); then
	echo "FAIL kernel: the console log reports problems:"
	echo "$problems" | sed -n '1,60s/^/  | /p'
	bad=1
fi
[ "$bad" = 1 ] && failed=$((failed + 1))

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
