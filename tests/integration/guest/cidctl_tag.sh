#!/bin/sh
# cidctl against the patched kernel, inside the QEMU guest (busybox sh).
# Not a host test: the VM harness (tests/vm) runs it as a suite, e.g.
#   vm_add_suite "$root" cidctl 120 sh /cidctl_tag.sh /mnt/ext4
# with cidctl at /usr/bin/cidctl and DIR on a real filesystem (ext4, xfs).
# With sqlite3 in the guest too, it also checks the EBADMSG path.
# Prints TAP; exits 1 if any check failed, 77 (skip) without named merging.
dir=${1:-/mnt/ext4}
n=0 failed=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $*"; }
check() { desc=$1; shift; if "$@" >/tmp/cidctl.out 2>&1; then ok "$desc"; else not_ok "$desc"; sed 's/^/# /' /tmp/cidctl.out; fi; }
has() { grep -q -- "$1" /tmp/cidctl.out; }

if ! cidctl status | grep -q 'named merging: available'; then
	echo "1..0 # SKIP no /sys/kernel/mm/cid"
	exit 77
fi
work=$dir/cidctl-guest.$$
mkdir -p "$work/tree" || { echo "1..0 # SKIP cannot write $dir"; exit 77; }
idx=/tmp/cidctl-guest.db
rm -f "$idx"*
cp /bin/busybox "$work/a"
cp /bin/busybox "$work/b"
cp /bin/busybox "$work/tree/d"
echo different >"$work/c"

check "scan" cidctl scan --hash-all --index "$idx" "$work"
cidctl dups --index "$idx" >/tmp/cidctl.out 2>&1
if has ' x3 '; then ok "dups: one content, three inodes"; else not_ok "dups"; cat /tmp/cidctl.out; fi
want=$(cidctl hash "$work/a" | cut -d' ' -f1)

cidctl tag --index "$idx" --json "$work/a" "$work/b" >/tmp/cidctl.out 2>&1
if has '"tagged":2,"failed":0' && has '"verified":true' && has "\"digest\":\"$want\""; then
	ok "tag with the index digest: kernel agrees with userspace ($want)"
else
	not_ok "tag with the index digest"; sed 's/^/# /' /tmp/cidctl.out
fi

cat "$work/a" "$work/b" >/dev/null
cidctl query "$work/a" "$work/b" "$work/c" >/tmp/cidctl.out 2>&1
if has "$work/a: tagged $want" && has "$work/b: tagged $want" && has "$work/c: not tagged" && ! has ' 0 pages cached'; then
	ok "query: both tagged and cached in the shared content"
else
	not_ok "query"; sed 's/^/# /' /tmp/cidctl.out
fi

cidctl status --json >/tmp/cidctl.out 2>&1
if has '"pages_sharing":"[1-9]'; then ok "status: pages_sharing > 0"; else not_ok "status"; sed 's/^/# /' /tmp/cidctl.out; fi

echo x >/tmp/cidctl-tmpfs-file
cidctl tag /tmp/cidctl-tmpfs-file >/tmp/cidctl.out 2>&1
if has 'tag: not supported for this filesystem'; then ok "tmpfs refused with a plain message"; else not_ok "tmpfs"; sed 's/^/# /' /tmp/cidctl.out; fi

exec 3>>"$work/c"
cidctl tag "$work/c" >/tmp/cidctl.out 2>&1
exec 3>&-
if has 'tag: the file is open for writing'; then ok "ETXTBSY explained"; else not_ok "ETXTBSY"; sed 's/^/# /' /tmp/cidctl.out; fi

cidctl tag --domain 7 "$work/c" >/dev/null 2>&1
cidctl query --json "$work/c" >/tmp/cidctl.out 2>&1
if has '"domain":7'; then ok "--domain"; else not_ok "--domain"; sed 's/^/# /' /tmp/cidctl.out; fi

cidctl untag "$work/a" >/dev/null 2>&1
cidctl query "$work/a" >/tmp/cidctl.out 2>&1
if has "$work/a: not tagged"; then ok "untag"; else not_ok "untag"; sed 's/^/# /' /tmp/cidctl.out; fi

cidctl tag --dups --index "$idx" --json >/tmp/cidctl.out 2>&1
if has '"tagged":3,"failed":0'; then ok "tag --dups tags every copy"; else not_ok "tag --dups"; sed 's/^/# /' /tmp/cidctl.out; fi

# EPERM: tagging needs CAP_SYS_ADMIN; try as nobody.
grep -q '^nobody:' /etc/passwd 2>/dev/null || echo 'nobody:x:65534:65534:nobody:/:/bin/sh' >>/etc/passwd
chmod 755 "$work"
if su -s /bin/sh nobody -c "cidctl tag $work/c" >/tmp/cidctl.out 2>&1; then
	not_ok "EPERM: an unprivileged tag succeeded"
elif has 'needs CAP_SYS_ADMIN'; then
	ok "EPERM explained (needs CAP_SYS_ADMIN)"
else
	not_ok "EPERM message"; sed 's/^/# /' /tmp/cidctl.out
fi

# EBADMSG needs an index that is current by stat but wrong about content:
# only a tampered one is, so this check runs where sqlite3 is in the guest.
if command -v sqlite3 >/dev/null; then
	cidctl untag "$work/b" >/dev/null 2>&1
	sqlite3 "$idx" "UPDATE inodes SET digest = zeroblob(32)"
	cidctl tag --index "$idx" "$work/b" >/tmp/cidctl.out 2>&1
	if has 'tag: the content differs from the expected digest'; then
		ok "EBADMSG: a wrong index digest is refused, plainly"
	else
		not_ok "EBADMSG"; sed 's/^/# /' /tmp/cidctl.out
	fi
	cidctl query "$work/b" >/tmp/cidctl.out 2>&1
	if has "$work/b: not tagged"; then ok "refused tag left no tag"; else not_ok "refused tag left a tag"; fi
else
	echo "# sqlite3 not in the guest: EBADMSG check skipped"
fi

rm -rf "$work" "$idx"*
echo "1..$n"
[ "$failed" -eq 0 ]
