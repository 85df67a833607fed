# shellcheck shell=bash
# Shared helpers for the QEMU harness (tests/vm/run.sh) and the VM benchmark
# (bench/vm/run.sh).  Source it; it defines functions only.
#
# Guest protocol (tests/vm/init.sh is the guest's /init):
#   /suites.list   one suite per line: NAME TIMEOUT_S COMMAND...
#   console        ttyS0 -> console log (kernel messages + suite output)
#   results        ttyS1 -> results log (suite output only, no printk)
#   markers        "# cid-suite: NAME", "# cid-suite-rc: NAME RC",
#                  "# cid-vm: done" once every suite has run.

vm_log() { echo "vm: $*"; }
vm_die() { echo "vm: error: $*" >&2; exit 1; }

# vm_add_binary ROOT SRC DEST: copy an executable into the initramfs root and,
# if it is dynamically linked, every library ldd names plus the loader, and
# libcrypto, which libcid loads with dlopen on the first hash (ldd does not
# name it).
vm_add_binary() {
	local root=$1 src=$2 dest=$3
	mkdir -p "$root/$(dirname "$dest")"
	cp -L "$src" "$root/$dest"
	chmod 0755 "$root/$dest"
	vm_add_libs "$root" "$src"
}

# vm_add_libs ROOT FILE: the libraries FILE needs (see vm_add_binary).
vm_add_libs() {
	local root=$1 src=$2 lib so
	ldd "$src" >/dev/null 2>&1 || return 0
	for lib in $(ldd "$src" | grep -oE '/[^ ]+' | sort -u); do
		[ -e "$root/$lib" ] && continue
		mkdir -p "$root/$(dirname "$lib")"
		cp -L "$lib" "$root/$lib"
	done
	so=$(grep -aoE 'libcrypto\.so\.[0-9]+' "$src" | head -n 1) || true
	[ -n "$so" ] || return 0
	# (awk reads to the end: an early exit would kill ldconfig with
	# SIGPIPE, and under pipefail that is this script's exit status.)
	lib=$(ldconfig -p | awk -v so="$so" '$1 == so && /x86-64/ && !n++ { print $NF }')
	[ -n "$lib" ] && [ ! -e "$root/$lib" ] || return 0
	mkdir -p "$root/$(dirname "$lib")"
	cp -L "$lib" "$root/$lib"
	vm_add_libs "$root" "$lib"
}

# vm_bench_kernel LOG: build the benchmark kernel, the series with
# kernel/config/cid-test.config + cid-bench.config (-O2; no lockdep,
# DEBUG_VM or DEBUG_LIST), in a kept tree of its own
# ($CID_BENCH_CACHE, default ~/.cache/cid-bench; the first build takes as
# long as make kernel's) into $BUILD/bench-kernel/kernel/bzImage.  The
# build's output goes to LOG; returns kernel/build.sh's status.
# A bzImage built from the same inputs (vm_bench_kernel_key) is kept
# without running kernel/build.sh at all: make's walk of an unchanged object
# tree alone takes tens of seconds.
vm_bench_kernel() {
	local log=$1 top out key
	top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
	out=${BUILD:-build}/bench-kernel/kernel
	case $out in /*) ;; *) out=$top/$out ;; esac
	key=$(vm_bench_kernel_key "$top")
	# (CID_PATCHES or CID_SERIES name other inputs: then always build.sh.)
	if [ -z "${CID_PATCHES:-}${CID_SERIES:-}" ] && [ -f "$out/bzImage" ] &&
		[ "$(cat "$out/bzImage.key" 2>/dev/null)" = "$key" ]; then
		echo "vm_bench_kernel: $out/bzImage was built from these inputs (key $key); not rebuilt" >"$log"
		return 0
	fi
	rm -f "$out/bzImage.key"
	CID_CACHE=${CID_BENCH_CACHE:-$HOME/.cache/cid-bench} BUILD=${BUILD:-build}/bench-kernel \
		CID_KERNEL_CONFIG="$top/kernel/config/cid-test.config $top/kernel/config/cid-bench.config" \
		"$top/kernel/build.sh" >"$log" 2>&1 || return
	[ -n "${CID_PATCHES:-}${CID_SERIES:-}" ] || echo "$key" >"$out/bzImage.key"
}

# vm_bench_kernel_key TOP: a digest of everything the benchmark kernel is
# built from: kernel/build.sh, every file of kernel/patches, the two config
# fragments, the top-level Kconfig, the source tarball (size, mtime) and
# the compiler.
vm_bench_kernel_key() {
	local top=$1
	(
		cd "$top" || exit 1
		find kernel/build.sh kernel/patches kernel/config/cid-test.config kernel/config/cid-bench.config Kconfig \
			-type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
		stat -c '%n %s %Y' "${LINUX_TARBALL:-/usr/src/linux-source-6.12.tar.xz}" 2>&1
		gcc --version | head -n 1
	) | sha256sum | cut -c1-64
}

# vm_base_root ROOT: busybox, /init and the directory skeleton.
vm_base_root() {
	local root=$1 here
	here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
	[ -x /bin/busybox ] || vm_die "/bin/busybox missing; run 'make deps' (busybox-static)"
	ldd /bin/busybox >/dev/null 2>&1 && vm_die "/bin/busybox is dynamically linked; install busybox-static"
	rm -rf "$root"
	mkdir -p "$root"/{bin,sbin,lib,usr/bin,usr/sbin,dev,proc,sys,tmp,mnt,run,root,etc}
	cp /bin/busybox "$root/bin/busybox"
	cp "$here/init.sh" "$root/init"
	chmod 0755 "$root/init"
	: >"$root/suites.list"
	echo "root:x:0:0:root:/root:/bin/sh" >"$root/etc/passwd"
	echo "root:x:0:" >"$root/etc/group"
	# Linked libraries of dynamic binaries (cidctl, test programs).
	ln -s lib "$root/lib64" 2>/dev/null || true
}

# vm_add_suite ROOT NAME TIMEOUT COMMAND...
vm_add_suite() {
	local root=$1 name=$2 tmo=$3
	shift 3
	echo "$name $tmo $*" >>"$root/suites.list"
}

# vm_pack ROOT OUT: newc cpio, gzip (CONFIG_RD_GZIP).
vm_pack() {
	(cd "$1" && find . -print0 | LC_ALL=C sort -z |
		cpio --null -o -H newc --owner=0:0 --quiet) | gzip -1 >"$2.tmp"
	mv "$2.tmp" "$2"
}

# vm_disks DIR: fresh 1 GiB sparse ext4 (vda) and xfs (vdb) images.
vm_disks() {
	local dir=$1
	mkdir -p "$dir"
	rm -f "$dir/ext4.img" "$dir/xfs.img"
	truncate -s "${CID_VM_DISK_SIZE:-1G}" "$dir/ext4.img" "$dir/xfs.img"
	# verity: the guest suite checks the content id against fs-verity.
	mkfs.ext4 -q -F -O verity -L cid-ext4 "$dir/ext4.img" || vm_die "mkfs.ext4 failed"
	mkfs.xfs -q -f -L cid-xfs "$dir/xfs.img" || vm_die "mkfs.xfs failed"
}

# vm_accel: print "kvm" or "tcg".  CID_VM_ACCEL=kvm|tcg|auto (default auto:
# KVM only if /dev/kvm works AND a probe boot of the real kernel finishes;
# nested KVM can hang, so the probe is bounded).
vm_accel() {
	local kernel=$1 want=${CID_VM_ACCEL:-auto} probe
	case $want in
	tcg | kvm) echo "$want"; return ;;
	esac
	if [ ! -w /dev/kvm ]; then echo tcg; return; fi
	probe=$(mktemp -d)
	mkdir -p "$probe/root/bin" "$probe/root/dev" "$probe/root/proc"
	cp /bin/busybox "$probe/root/bin/busybox"
	printf '#!/bin/busybox sh\n/bin/busybox mount -t devtmpfs d /dev\necho CID-KVM-PROBE-OK >/dev/ttyS0\n/bin/busybox reboot -f\n' >"$probe/root/init"
	chmod 0755 "$probe/root/init"
	vm_pack "$probe/root" "$probe/initrd"
	timeout -k 5 "${CID_VM_KVM_PROBE_TIMEOUT:-10}" qemu-system-x86_64 -enable-kvm -cpu host \
		-m 256 -smp 1 -nographic -no-reboot -monitor none \
		-serial "file:$probe/console" -kernel "$kernel" -initrd "$probe/initrd" \
		-append "console=ttyS0 panic=-1 quiet" >/dev/null 2>&1 </dev/null || true
	if grep -q CID-KVM-PROBE-OK "$probe/console" 2>/dev/null; then echo kvm; else echo tcg; fi
	rm -rf "$probe"
}

# vm_boot KERNEL INITRD CONSOLE RESULTS TIMEOUT_S [DISK...]
# Boots the guest; returns qemu's exit status (124 on timeout).
vm_boot() {
	local kernel=$1 initrd=$2 console=$3 results=$4 tmo=$5 accel disk i=0
	shift 5
	local -a args drives=()
	for disk in "$@"; do
		drives+=(-drive "file=$disk,format=raw,if=none,id=d$i,cache=unsafe"
			-device "virtio-blk-pci,drive=d$i")
		i=$((i + 1))
	done
	accel=$(vm_accel "$kernel")
	if [ "$accel" = kvm ]; then
		args=(-enable-kvm -cpu host)
	else
		args=(-accel "tcg,thread=multi" -cpu max)
	fi
	vm_log "booting $(basename "$kernel") under ${accel^^} (${CID_VM_CPUS:-2} vCPUs, ${CID_VM_MEM:-2048} MiB, timeout ${tmo}s)"
	: >"$console"
	: >"$results"
	timeout -k 10 "$tmo" qemu-system-x86_64 "${args[@]}" \
		-m "${CID_VM_MEM:-2048}" -smp "${CID_VM_CPUS:-2}" \
		-nographic -no-reboot -monitor none \
		-serial "file:$console" -serial "file:$results" \
		-kernel "$kernel" -initrd "$initrd" \
		-append "console=ttyS0 panic=-1 rdinit=/init ${CID_VM_CMDLINE:-}" \
		"${drives[@]}" </dev/null
}

# vm_console_problems CONSOLE: print the kernel lines (printk timestamp
# "[   12.345678] ", CONFIG_PRINTK_TIME) that show a kernel problem; exit
# status 0 if there are any.  Suite output is on the console too, so only
# timestamped lines count: a test printing "WARNING:" is not a kernel report.
vm_console_problems() {
	local ts='\[ *[0-9]+\.[0-9]+\] .*' out
	out=$(grep -a -n -E \
		-e "$ts(Oops|BUG:|WARNING:|------------\[ cut here \])" \
		-e "$ts(Kernel panic|general protection fault|kernel BUG at|Call Trace:)" \
		-e "$ts(possible circular locking|inconsistent lock state|suspicious RCU usage|DEBUG_LOCKS_WARN)" \
		-e "$ts(possible recursive locking|lock held when returning|bad unlock balance|possible irq lock inversion)" \
		-e "$ts(KASAN:|UBSAN:|KFENCE:)" \
		-e "$ts(list_add corruption|list_del corruption)" \
		-e "$ts(blocked for more than [0-9]+ seconds|soft lockup|hard LOCKUP|self-detected stall|rcu: INFO: .* stall)" \
		-e "$ts(Bad page state|Bad page map|bad pte|page dumped because)" \
		"$1" | tr -d '\r')
	[ -n "$out" ] || return 1
	echo "$out"
}
