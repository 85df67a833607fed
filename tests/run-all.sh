#!/bin/bash
# The whole test suite: host tests (ctest: unit + integration), then the
# kernel suite booted under QEMU (make vm-test), then the project's kernel
# tests again on a KASAN kernel (make vm-test-kasan); each kernel builds
# in the background beside the step before it.  Ends with one line
# "N passed, N failed" summing both; exits non-zero if anything failed.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
BUILD=${BUILD:-build}
JOBS=${JOBS:-$(nproc)}
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

passed=0 failed=0

# The kernels build at the lowest CPU priority beside what runs before
# them: the test kernel beside the host tests, the KASAN kernel beside the
# first guest.  Both leave a core idle much of the time (podman, sleeps,
# a guest waiting on its disks), and at nice 19 the build takes only that.
# vm_run's own make then finds the kernel built; a background build that
# failed is simply run again there, in the foreground, where it counts.
# With sched_autogroup (Debian's default) nice ranks tasks within one
# session only: the build yields to this run's foreground step, while
# another session (a second job on the machine) still gets an equal share
# against this whole run.
bg_pid=
bg_build() {  # TARGET
	nice -n 19 make --no-print-directory "$1" >"$log/$1.bg" 2>&1 &
	bg_pid=$!
}
bg_wait() {
	[ -n "$bg_pid" ] || return 0
	wait "$bg_pid" || echo "(the background build failed; building again in the foreground)"
	bg_pid=
}

bg_build kernel
echo "== host tests (ctest) =="
ctest --test-dir "$BUILD" --output-on-failure -j"$JOBS" 2>&1 | tee "$log/ctest"
ctest_rc=${PIPESTATUS[0]}
# "100% tests passed, 0 tests failed out of 42"
line=$(grep -E 'tests passed, [0-9]+ tests failed out of [0-9]+' "$log/ctest" | tail -1)
if [ -n "$line" ]; then
	f=$(sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+).*/\1/' <<<"$line")
	t=$(sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+).*/\2/' <<<"$line")
	passed=$((passed + t - f)); failed=$((failed + f))
elif [ "$ctest_rc" -ne 0 ]; then
	failed=$((failed + 1))
fi

# vm_run TARGET TITLE: make TARGET and add its "N passed, N failed" line.
vm_run() {
	echo "== $2 =="
	make --no-print-directory "$1" 2>&1 | tee "$log/$1"
	local rc=${PIPESTATUS[0]} p f
	read -r p f < <(sed -nE 's/^([0-9]+) passed, ([0-9]+) failed.*/\1 \2/p' "$log/$1" | tail -1) || true
	p=${p:-0} f=${f:-0}
	passed=$((passed + p)); failed=$((failed + f))
	# A run that fails without counting (build error, oops, timeout) still fails.
	if [ "$rc" -ne 0 ] && [ "$f" = 0 ]; then
		echo "$1: failed (exit $rc) beyond the counted tests; see the log above" >&2
		failed=$((failed + 1))
	fi
}
bg_wait
bg_build kernel-kasan
vm_run vm-test "kernel tests (QEMU)"
bg_wait
vm_run vm-test-kasan "the project's kernel tests on a KASAN kernel (QEMU)"

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
