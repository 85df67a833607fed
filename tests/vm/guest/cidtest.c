// SPDX-License-Identifier: GPL-2.0
/*
 * Named-merging functional tests, run inside the QEMU guest by run-suite.sh.
 *
 *   cidtest CASE FS WDIR [TDIR [BDIR]]
 *
 * runs one test case as its own process, so a crash hides nothing else.
 * Files are created and tagged under TDIR/CASE and opened, mapped and
 * read under WDIR/CASE: the same directory on ext4, xfs and FUSE; the
 * lower layer (ext4) and the merged overlay view on overlayfs.  BDIR is the
 * FUSE server's backing directory, to change a file underneath the mount.
 *
 * Exit status: 0 pass, 1 fail, 3 the kernel lacks named merging (probe),
 * 77 skip (reason on a "# SKIP: " line).  Everything else printed is a
 * "# " diagnostic line; run-suite.sh turns the status into a TAP line.
 *
 * Sharing is proven as in tools/testing/selftests/mm/ksm_functional_tests.c:
 * the frame numbers /proc/self/pagemap reports for two mappings of two
 * different files must be equal.  File contents are a PRNG stream keyed by
 * (seed, offset), so every byte read back is verified without a copy.
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

struct ctx {
	const char *fs;
	const char *name;
	char wdir[400];
	char tdir[400];
	char bdir[400];
	bool ovl, fuse;
};

static uint64_t SZ = 4 * MiB + 1234;	/* not a page multiple: the tail is checked too */
static uint64_t NPAGES;
static uint64_t seed;			/* per (fs, case): contents never collide across cases */

#define T(n) path_join(c->tdir, n)
#define W(n) path_join(c->wdir, n)
#define SHARED_FLAGS (CID_QUERY_TAGGED | CID_QUERY_SHARED)

static const char *err(int r)
{
	static char buf[4][96];
	static int k;
	char *b = buf[k++ & 3];

	if (r == -ENOTTY)
		return "ENOTTY (kernel lacks named merging)";
	snprintf(b, 96, "%s", r < 0 ? strerror(-r) : "success");
	return b;
}

/* cid_tag_path, retried on EAGAIN like tag_ok (see there). */
static int tag_retry(const char *path, uint32_t flags, uint32_t domain, const uint8_t *expect,
		     struct cid_tag *out)
{
	int r = cid_tag_path(path, flags, domain, expect, out);

	for (int i = 0; r == -EAGAIN && i < 3; i++) {
		diag("CID_IOC_TAG %s: EAGAIN, retrying", path);
		r = cid_tag_path(path, flags, domain, expect, out);
	}
	return r;
}

static int open_err(const char *path, int flags)
{
	int fd = open(path, flags);

	if (fd >= 0) {
		close(fd);
		return 0;
	}
	return -errno;
}

/* Two (or more) identical tagged files in TDIR. */
static bool make_twins(struct ctx *c, const char *a, const char *b, uint64_t s)
{
	return tagged_twins(T(a), T(b), s, SZ);
}

static bool expect_shared_pfns(const void *a, const void *b, const char *what)
{
	struct pfn_cmp r = compare_pfns(a, b, SZ);

	return CHECK(r.same == NPAGES && !r.differ && !r.absent,
		     "%s: %lu of %llu frames shared, %lu differ, %lu not present",
		     what, r.same, (unsigned long long)NPAGES, r.differ, r.absent);
}

/*
 * Query flags of a new read-only open as the test means the file.  On
 * overlayfs the merged file itself is never diverted (the real lower file
 * that overlayfs opens is), and the ioctl is not passed down to it, so ask
 * the lower file; sharing through the merged view is proven by PFNs.
 */
static int wflags(struct ctx *c, const char *name)
{
	return query_flags(c->ovl ? T(name) : W(name));
}

static void *map_touch(const char *path, int prot, int flags)
{
	void *p = map_file(path, SZ, prot, flags, NULL);

	touch_pages(p, SZ);
	return p;
}

static void show_stats(const char *when)
{
	if (!cid_sysfs_present())
		return;
	diag("sysfs %s: contents %lld tagged_inodes %lld pages_shared %lld pages_sharing %lld "
	     "general_profit %lld tags %lld untags %lld write_denials %lld", when,
	     cid_stat("contents"), cid_stat("tagged_inodes"), cid_stat("pages_shared"),
	     cid_stat("pages_sharing"), cid_stat("general_profit"), cid_stat("tags"),
	     cid_stat("untags"), cid_stat("write_denials"));
}

/* ---------------------------------------------------------------------- */

/* The path /proc/self/maps shows for the mapping at addr ("" if none). */
static const char *maps_path(const void *addr)
{
	static char path[512];
	char line[700];
	FILE *f = fopen("/proc/self/maps", "r");

	path[0] = 0;
	if (!f)
		return path;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long s, e;
		int pos = 0;

		if (sscanf(line, "%llx-%llx %*s %*s %*s %*s %n", &s, &e, &pos) < 2 || !pos)
			continue;
		if ((uintptr_t)addr < s || (uintptr_t)addr >= e)
			continue;
		line[strcspn(line, "\n")] = 0;
		snprintf(path, sizeof(path), "%s", line + pos);
		break;
	}
	fclose(f);
	return path;
}

/* Two identical tagged files: same frames, right bytes, Cached grows once. */
static void t_share(struct ctx *c)
{
	long long tags0 = cid_stat("tags"), k[6];
	struct cid_tag ta, tb;
	struct cid_query q;
	uint8_t want[32];
	char h1[65], h2[65];
	int r, fd;

	make_file(T("a"), seed, SZ);
	make_file(T("b"), seed, SZ);
	make_file(T("u1"), seed + 1, SZ);
	make_file(T("u2"), seed + 1, SZ);
	verity_pattern(seed, SZ, want);

	r = cid_tag_path(T("a"), 0, 0, NULL, &ta);
	if (!CHECK(r == 0, "tag a: %s", err(r)))
		return;
	r = cid_tag_path(T("b"), 0, 0, NULL, &tb);
	if (!CHECK(r == 0, "tag b: %s", err(r)))
		return;
	hex32(ta.digest, h1);
	hex32(want, h2);
	CHECK(!memcmp(ta.digest, want, 32), "tag digest %s, fs-verity digest of the file is %s", h1, h2);
	CHECK(!memcmp(ta.digest, tb.digest, 32), "twins got different digests");
	CHECK(ta.size == SZ, "tag size %llu, file size %llu", (unsigned long long)ta.size,
	      (unsigned long long)SZ);
	if (tags0 >= 0)
		CHECK(cid_stat("tags") == tags0 + 2, "sysfs tags went %lld -> %lld after two tags",
		      tags0, cid_stat("tags"));

	fd = open_ro(c->ovl ? T("a") : W("a"));
	r = cid_query_fd(fd, &q);
	CHECK(r == 0, "query a: %s", err(r));
	CHECK(q.flags == SHARED_FLAGS, "new read-only open of a: %s, expected TAGGED|SHARED",
	      qflags_str(q.flags));
	CHECK(q.size == SZ && !memcmp(q.digest, want, 32), "query size/digest wrong");
	CHECK(q.tagged_inodes >= 2, "query tagged_inodes %llu, expected >= 2",
	      (unsigned long long)q.tagged_inodes);
	close(fd);

	/* Cached: the first twin costs its size, the second nothing. */
	drop_caches();
	k[0] = meminfo_kb("Cached");
	verify_path(W("a"), SZ, seed);
	k[1] = meminfo_kb("Cached");
	verify_path(W("b"), SZ, seed);
	k[2] = meminfo_kb("Cached");
	drop_caches();
	k[3] = meminfo_kb("Cached");
	verify_path(W("u1"), SZ, seed + 1);
	k[4] = meminfo_kb("Cached");
	verify_path(W("u2"), SZ, seed + 1);
	k[5] = meminfo_kb("Cached");
	diag("Cached +kB: tagged a %lld, tagged twin b %lld; untagged u1 %lld, untagged twin u2 %lld "
	     "(file %llu kB)", k[1] - k[0], k[2] - k[1], k[4] - k[3], k[5] - k[4],
	     (unsigned long long)SZ / 1024);
	CHECK(k[5] - k[4] > (long long)(SZ / 2 / 1024),
	      "control: reading an untagged twin grew Cached by only %lld kB", k[5] - k[4]);
	CHECK(k[2] - k[1] < (long long)(SZ / 10 / 1024),
	      "reading the tagged twin b grew Cached by %lld kB (> 10%% of its size)", k[2] - k[1]);
	CHECK(k[1] - k[0] > (long long)(SZ / 2 / 1024),
	      "reading tagged a grew Cached by only %lld kB: where did its pages go?", k[1] - k[0]);

	/* Frames: MAP_SHARED a, MAP_SHARED b, MAP_PRIVATE b all on the same frames. */
	void *ma = map_touch(W("a"), PROT_READ, MAP_SHARED);
	void *mb = map_touch(W("b"), PROT_READ, MAP_SHARED);
	void *mp = map_touch(W("b"), PROT_READ, MAP_PRIVATE);
	void *mu1 = map_touch(W("u1"), PROT_READ, MAP_SHARED);
	void *mu2 = map_touch(W("u2"), PROT_READ, MAP_SHARED);

	expect_shared_pfns(ma, mb, "MAP_SHARED a vs MAP_SHARED b");
	expect_shared_pfns(ma, mp, "MAP_SHARED a vs MAP_PRIVATE b");
	verify_map(ma, SZ, seed, "a");
	verify_map(mb, SZ, seed, "b");
	verify_map(mp, SZ, seed, "b private");
	/*
	 * The content's page cache may hold large folios, whatever the
	 * filesystem's does (ext4 in 6.12: order-0 only).  Readahead falls
	 * back to order-0 when memory is fragmented, so any large folio
	 * proves it; the count is shown.
	 */
	unsigned long large = large_folio_pages(ma, SZ);

	diag("shared content: %lu of %llu pages in large folios", large,
	     (unsigned long long)NPAGES);
	CHECK(large > 0, "none of the %llu pages of the shared content is in a large folio",
	      (unsigned long long)NPAGES);
	struct pfn_cmp u = compare_pfns(mu1, mu2, SZ);
	CHECK(u.same == 0, "control: untagged twins share %lu frames", u.same);
	/* /proc/PID/maps names the file the user mapped, not the content inode. */
	CHECK(!strcmp(maps_path(mb), W("b")) || (c->ovl && !strcmp(maps_path(mb), T("b"))),
	      "/proc/self/maps names \"%s\" for a mapping of %s", maps_path(mb), W("b"));
	if (c->ovl)
		diag("/proc/self/maps: %s", maps_path(mb));

	fd = open_ro(c->ovl ? T("b") : W("b"));
	cid_query_fd(fd, &q);
	diag("query b: %s content_pages %llu content_users %llu tagged_inodes %llu",
	     qflags_str(q.flags), (unsigned long long)q.content_pages,
	     (unsigned long long)q.content_users, (unsigned long long)q.tagged_inodes);
	CHECK(q.content_pages >= NPAGES, "content_pages %llu, expected >= %llu resident",
	      (unsigned long long)q.content_pages, (unsigned long long)NPAGES);
	CHECK(q.content_users >= 1, "content_users 0 with an open and three mappings");
	close(fd);

	/* Tagging right after writing the file through this mount must work. */
	make_file(T("fresh"), seed, SZ);
	r = cid_tag_path(T("fresh"), 0, 0, NULL, NULL);
	CHECK(r == 0, "tag a file just written through the mount: %s", err(r));

	show_stats("after sharing");
	if (cid_sysfs_present()) {
		CHECK(cid_stat("contents") >= 1, "sysfs contents %lld", cid_stat("contents"));
		CHECK(cid_stat("tagged_inodes") >= 2, "sysfs tagged_inodes %lld",
		      cid_stat("tagged_inodes"));
		CHECK(cid_stat("pages_shared") > 0, "sysfs pages_shared %lld",
		      cid_stat("pages_shared"));
	} else {
		CHECK(0, "/sys/kernel/mm/cid is missing");
	}
}

/* Tagging hashes the file but leaves none of its own pages cached. */
static void t_tagcache(struct ctx *c)
{
	struct cid_tag t;
	long long k0, k1;
	int fd, r;

	make_file(T("a"), seed, SZ);
	drop_caches();
	/*
	 * Earlier cases tagged files, so these opens look the untagged inode
	 * up and remember the miss (IOP_CID_UNTAGGED): tagging must forget it.
	 */
	close(open_ro(T("a")));
	fd = open_ro(T("a"));
	CHECK(query_flags(T("a")) == 0, "untagged a: %s",
	      qflags_str(query_flags(T("a"))));
	k0 = meminfo_kb("Cached");
	memset(&t, 0, sizeof(t));
	r = cid_tag_fd(fd, &t);
	k1 = meminfo_kb("Cached");
	if (!CHECK(r == 0, "tag: %s", err(r)))
		return;
	/* The tagging fd is not diverted: its mapping shows the inode's own cache. */
	unsigned char *vec = malloc(NPAGES);
	void *m = mmap(NULL, SZ, PROT_READ, MAP_SHARED, fd, 0);
	unsigned long resident = 0;

	if (m == MAP_FAILED)
		die("mmap tagging fd");
	if (mincore(m, SZ, vec))
		die("mincore");
	for (uint64_t i = 0; i < NPAGES; i++)
		resident += vec[i] & 1;
	diag("after tagging: Cached %+lld kB, %lu of %llu of the file's own pages resident",
	     k1 - k0, resident, (unsigned long long)NPAGES);
	CHECK(resident <= NPAGES / 10, "tagging left %lu of %llu pages in the file's own cache",
	      resident, (unsigned long long)NPAGES);
	if (!c->fuse)	/* a FUSE server's backing file is cached on its own fs */
		CHECK(k1 - k0 < (long long)(SZ / 10 / 1024),
		      "tagging grew Cached by %lld kB", k1 - k0);
	munmap(m, SZ);
	close(fd);
	CHECK(wflags(c, "a") == SHARED_FLAGS, "new open after tag: %s",
	      qflags_str(wflags(c, "a")));
}

/* MAP_PRIVATE write (optionally after mprotect) COWs off the shared frame. */
static void cow(struct ctx *c, bool via_mprotect)
{
	static const char msg[] = "named-merging-cow";
	const uint64_t off = PAGE + 100;
	uint8_t *pa, *mb;
	uint64_t old, now;

	if (!make_twins(c, "a", "b", seed))
		return;
	pa = map_touch(W("a"), via_mprotect ? PROT_READ : PROT_READ | PROT_WRITE, MAP_PRIVATE);
	mb = map_touch(W("b"), PROT_READ, MAP_SHARED);
	expect_shared_pfns(pa, mb, "before the write");
	old = pfn_of(pa + PAGE);
	if (via_mprotect && !CHECK(mprotect(pa, SZ, PROT_READ | PROT_WRITE) == 0, "mprotect: %s",
				   strerror(errno)))
		return;
	memcpy(pa + off, msg, sizeof(msg));
	now = pfn_of(pa + PAGE);
	CHECK(!memcmp(pa + off, msg, sizeof(msg)), "writer does not see its write");
	CHECK(now && now != old, "writer's frame did not change (pfn %#llx -> %#llx)",
	      (unsigned long long)old, (unsigned long long)now);
	CHECK(pfn_of(mb + PAGE) == old, "the twin's frame changed");
	CHECK(check_pattern(pa + PAGE, PAGE, 100, seed) < 0 &&
	      check_pattern(pa + off + sizeof(msg), off + sizeof(msg),
			    2 * PAGE - off - sizeof(msg), seed) < 0,
	      "the rest of the writer's COWed page is wrong");
	verify_map(mb, SZ, seed, "twin b mapping");
	verify_path(W("b"), SZ, seed);
	verify_path(W("a"), SZ, seed);	/* a private write never reaches the file */
	struct pfn_cmp r = compare_pfns(pa + 2 * PAGE, mb + 2 * PAGE, SZ - 2 * PAGE);
	CHECK(r.same == NPAGES - 2 && pfn_of(pa) == pfn_of(mb),
	      "untouched pages stopped sharing: %lu same, %lu differ", r.same, r.differ);
	CHECK(wflags(c, "a") == SHARED_FLAGS, "a after private write: %s",
	      qflags_str(wflags(c, "a")));
}

static void t_cow_private(struct ctx *c) { cow(c, false); }
static void t_cow_mprotect(struct ctx *c) { cow(c, true); }

/* Overlay: a write-open through the merged view copies up; the lower twin keeps its tag. */
static void write_ovl(struct ctx *c, bool truncate_it)
{
	uint8_t *want = pattern_buf(seed, SZ), *ma;
	uint64_t size = truncate_it ? SZ / 2 : SZ;
	int fd;

	if (!make_twins(c, "a", "b", seed))
		return;
	ma = map_touch(W("a"), PROT_READ, MAP_SHARED);
	if (truncate_it) {
		CHECK(truncate(W("a"), size) == 0, "truncate via overlay: %s", strerror(errno));
	} else {
		fd = open(W("a"), O_RDWR);
		if (!CHECK(fd >= 0, "write-open via overlay: %s", strerror(errno)))
			return;
		fill_pattern(want + PAGE, PAGE, PAGE, seed + 1);
		CHECK(pwrite(fd, want + PAGE, PAGE, PAGE) == PAGE, "pwrite: %s", strerror(errno));
		close(fd);
	}
	verify_file_bytes(W("a"), want, size);
	verify_map(ma, SZ, seed, "mapping of a from before the copy-up");
	CHECK(query_flags(T("a")) == SHARED_FLAGS, "lower a: %s", qflags_str(query_flags(T("a"))));
	CHECK(wflags(c, "b") == SHARED_FLAGS, "twin b: %s", qflags_str(wflags(c, "b")));
	verify_path(W("b"), SZ, seed);
	uint8_t *mb = map_touch(W("b"), PROT_READ, MAP_SHARED);
	expect_shared_pfns(ma, mb, "old mapping of a vs twin b");
	if (!truncate_it) {
		uint8_t *na = map_touch(W("a"), PROT_READ, MAP_SHARED);
		struct pfn_cmp pc = compare_pfns(na, mb, SZ);

		CHECK(pc.same == 0, "copied-up a shares %lu frames with b", pc.same);
		CHECK(!memcmp(na, want, SZ), "mapping of the copied-up a is wrong");
	}
}

/* ETXTBSY while in use (fd or mapping); then a write-open drops the tag. */
static void t_write(struct ctx *c)
{
	long long wd0 = cid_stat("write_denials"), un0 = cid_stat("untags");
	uint8_t *want, *ma, *mb;
	int fd, fd2, r;

	if (c->ovl)
		return write_ovl(c, false);
	if (!make_twins(c, "a", "b", seed))
		return;
	want = pattern_buf(seed, SZ);
	fd = open_ro(W("a"));
	ma = mmap(NULL, SZ, PROT_READ, MAP_SHARED, fd, 0);
	if (ma == MAP_FAILED)
		die("mmap");
	touch_pages(ma, SZ);
	close(fd);
	r = open_err(W("a"), O_WRONLY);
	CHECK(r == -ETXTBSY, "O_WRONLY open of a tagged file still mapped: %s, expected ETXTBSY",
	      err(r));
	r = open_err(W("a"), O_RDWR);
	CHECK(r == -ETXTBSY, "O_RDWR open of a tagged file still mapped: %s, expected ETXTBSY",
	      err(r));
	if (wd0 >= 0)
		CHECK(cid_stat("write_denials") >= wd0 + 1, "sysfs write_denials %lld -> %lld",
		      wd0, cid_stat("write_denials"));
	fd2 = open_ro(W("a"));
	munmap(ma, SZ);
	r = open_err(W("a"), O_WRONLY);
	CHECK(r == -ETXTBSY, "O_WRONLY open while a diverted fd is open: %s, expected ETXTBSY",
	      err(r));
	close(fd2);

	/* Nobody uses it now: the write-open succeeds and the tag goes first. */
	fd = open(W("a"), O_RDWR);
	if (!CHECK(fd >= 0, "O_RDWR open of an unused tagged file: %s", strerror(errno)))
		return;
	fill_pattern(want + PAGE, PAGE, PAGE, seed + 1);
	CHECK(pwrite(fd, want + PAGE, PAGE, PAGE) == PAGE, "pwrite: %s", strerror(errno));
	close(fd);
	r = wflags(c, "a");
	CHECK(r == 0, "a after a write: %s, expected untagged and not shared", qflags_str(r));
	verify_file_bytes(W("a"), want, SZ);
	ma = map_touch(W("a"), PROT_READ, MAP_SHARED);
	CHECK(!memcmp(ma, want, SZ), "mapping of the written a shows old bytes");
	diag("untags %lld -> %lld", un0, cid_stat("untags"));

	/* The twin is untouched. */
	CHECK(wflags(c, "b") == SHARED_FLAGS, "twin b: %s", qflags_str(wflags(c, "b")));
	verify_path(W("b"), SZ, seed);
	mb = map_touch(W("b"), PROT_READ, MAP_SHARED);
	verify_map(mb, SZ, seed, "twin b");
	struct pfn_cmp pc = compare_pfns(ma, mb, SZ);
	CHECK(pc.same == 0, "written a still shares %lu frames with b", pc.same);
}

static void t_truncate(struct ctx *c)
{
	uint8_t *ma;
	struct stat st;
	int fd, r;

	if (c->ovl)
		return write_ovl(c, true);
	if (!make_twins(c, "a", "b", seed))
		return;
	ma = map_touch(W("a"), PROT_READ, MAP_SHARED);
	r = truncate(W("a"), SZ / 2) ? -errno : 0;
	CHECK(r == -ETXTBSY, "truncate of a mapped tagged file: %s, expected ETXTBSY", err(r));
	munmap(ma, SZ);
	fd = open_ro(W("a"));
	r = truncate(W("a"), SZ / 2) ? -errno : 0;
	CHECK(r == -ETXTBSY, "truncate while a diverted fd is open: %s, expected ETXTBSY", err(r));
	close(fd);
	r = truncate(W("a"), SZ / 2) ? -errno : 0;
	CHECK(r == 0, "truncate of an unused tagged file: %s", err(r));
	CHECK(stat(W("a"), &st) == 0 && (uint64_t)st.st_size == SZ / 2, "size after truncate %lld",
	      (long long)st.st_size);
	r = wflags(c, "a");
	CHECK(r == 0, "a after truncate: %s, expected untagged", qflags_str(r));
	verify_path(W("a"), SZ / 2, seed);
	CHECK(wflags(c, "b") == SHARED_FLAGS, "twin b: %s", qflags_str(wflags(c, "b")));
	verify_path(W("b"), SZ, seed);
}

static void t_unlink(struct ctx *c)
{
	uint8_t *ma, *mb, *mc;

	if (!make_twins(c, "a", "b", seed))
		return;
	make_file(T("c"), seed, SZ);
	tag_ok(T("c"));
	ma = map_touch(W("a"), PROT_READ, MAP_SHARED);
	mb = map_touch(W("b"), PROT_READ, MAP_PRIVATE);
	CHECK(unlink(W("a")) == 0, "unlink a tagged file that is mapped: %s", strerror(errno));
	verify_map(ma, SZ, seed, "unlinked a");
	verify_map(mb, SZ, seed, "twin b");
	CHECK(unlink(W("b")) == 0, "unlink b while its twin's mapping lives: %s", strerror(errno));
	verify_map(ma, SZ, seed, "unlinked a");
	mc = map_touch(W("c"), PROT_READ, MAP_SHARED);
	expect_shared_pfns(ma, mc, "unlinked a vs c");
	expect_shared_pfns(mb, mc, "unlinked b vs c");
	munmap(ma, SZ);
	munmap(mb, SZ);
	CHECK(wflags(c, "c") == SHARED_FLAGS, "c: %s", qflags_str(wflags(c, "c")));
	verify_path(W("c"), SZ, seed);
	verify_map(mc, SZ, seed, "c");
	show_stats("after unlink");
}

static void t_rename(struct ctx *c)
{
	uint8_t *ma, *mx, *mb2;
	int r;

	if (!make_twins(c, "a", "b", seed))
		return;
	make_file(T("n"), seed + 1, SZ);
	make_file(T("x"), seed + 1, SZ);
	ma = map_touch(W("a"), PROT_READ, MAP_SHARED);
	CHECK(rename(W("n"), W("a")) == 0, "rename over a mapped tagged file: %s", strerror(errno));
	if (!c->ovl) {
		r = wflags(c, "a");
		CHECK(r >= 0 && !(r & CID_QUERY_SHARED), "new file at a: %s", qflags_str(r));
	}
	verify_path(W("a"), SZ, seed + 1);
	verify_map(ma, SZ, seed, "old a's mapping");
	uint8_t *na = map_touch(W("a"), PROT_READ, MAP_SHARED);
	struct pfn_cmp pc = compare_pfns(na, ma, SZ);
	CHECK(pc.same == 0, "new file at a shares %lu frames with the old a", pc.same);
	verify_map(na, SZ, seed + 1, "new a");

	mb2 = map_touch(W("b"), PROT_READ, MAP_SHARED);
	CHECK(rename(W("b"), W("x")) == 0, "rename a tagged file over another: %s",
	      strerror(errno));
	r = query_flags(W("x"));
	verify_path(W("x"), SZ, seed);
	mx = map_touch(W("x"), PROT_READ, MAP_SHARED);
	verify_map(mx, SZ, seed, "x");
	/* rename moves ctime, not mtime: the tag stays (printed; bytes checked). */
	struct pfn_cmp px = compare_pfns(mb2, mx, SZ);
	diag("tagged b renamed to x: %s, %lu of %llu frames still shared with the old mapping",
	     qflags_str(r), px.same, (unsigned long long)NPAGES);
}

static void t_hardlink(struct ctx *c)
{
	uint8_t *m2, *mb;
	int r;

	if (!make_twins(c, "a", "b", seed))
		return;
	/* A link made before the tag is the same inode: diverted too. */
	make_file(T("c"), seed, SZ);
	CHECK(link(T("c"), T("c2")) == 0, "link: %s", strerror(errno));
	tag_ok(T("c"));
	r = wflags(c, "c2");
	CHECK(r == SHARED_FLAGS, "link made before the tag: %s", qflags_str(r));
	verify_path(W("c2"), SZ, seed);
	m2 = map_touch(W("c2"), PROT_READ, MAP_SHARED);
	mb = map_touch(W("b"), PROT_READ, MAP_SHARED);
	expect_shared_pfns(m2, mb, "link c2 (made before the tag) vs twin b");
	verify_map(m2, SZ, seed, "c2");

	/* A link made after the tag: still the same tagged inode. */
	if (!CHECK(link(T("a"), T("a2")) == 0, "link: %s", strerror(errno)))
		return;
	r = wflags(c, "a2");
	uint8_t *m3 = map_touch(W("a2"), PROT_READ, MAP_SHARED);
	struct pfn_cmp pc = compare_pfns(m3, mb, SZ);
	diag("link made after the tag: %s, %lu of %llu frames shared with twin b", qflags_str(r),
	     pc.same, (unsigned long long)NPAGES);
	CHECK(pc.same == NPAGES, "link a2 (made after the tag) shares %lu of %llu frames",
	      pc.same, (unsigned long long)NPAGES);
	verify_map(m3, SZ, seed, "a2");

	/*
	 * A write through another name drops the tag, also when that name was
	 * opened before the tag: FUSE may keep an inode per name, and the miss
	 * that one remembers (IOP_CID_UNTAGGED) must not let a write keep it.
	 */
	make_file(T("d"), seed + 1, SZ);
	if (!CHECK(link(T("d"), T("d2")) == 0, "link: %s", strerror(errno)))
		return;
	close(open_ro(T("d2")));
	if (!tag_ok(T("d")))
		return;
	int fd = open(T("d2"), O_WRONLY | O_CLOEXEC);
	CHECK(fd >= 0 && pwrite(fd, "x", 1, 0) == 1, "write through d2: %s", strerror(errno));
	if (fd >= 0)
		close(fd);
	r = query_flags(T("d"));
	CHECK(r >= 0 && !(r & CID_QUERY_TAGGED), "d after a write through its other name d2: %s",
	      qflags_str(r));
}

/*
 * A write lease on a read-only descriptor is granted only while nobody
 * holds or denies write access (i_writecount == 0): a probe of the count.
 * @path must not be diverted (untagged, or named merging disabled).
 */
static int wrlease_err(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), r;

	if (fd < 0)
		return -errno;
	r = fcntl(fd, F_SETLEASE, F_WRLCK) ? -errno : 0;
	if (!r)
		fcntl(fd, F_SETLEASE, F_UNLCK);
	close(fd);
	return r;
}

/*
 * After its last close a diverted file keeps its write denial (idle), so
 * the next open and close cost no atomic operation on i_writecount.  A
 * writer takes it back, through any name; an untag gives it back.
 */
static void t_idle(struct ctx *c)
{
	long long wd0;
	uint8_t *mb;
	int fd, r;

	/* The probe needs the file's own inode: run-suite.sh runs it on ext4 and xfs. */
	if (c->ovl || c->fuse)
		die("idle: the write-lease probe needs the file's own inode");
	if (!make_twins(c, "a", "b", seed))
		return;
	close(open_ro(W("a")));
	CHECK(query_flags(W("a")) == SHARED_FLAGS, "a after an open and close: %s",
	      qflags_str(query_flags(W("a"))));
	if (write_str("/sys/kernel/mm/cid/enabled", "0")) {
		r = wrlease_err(W("a"));
		write_str("/sys/kernel/mm/cid/enabled", "1");
		CHECK(r == -EAGAIN, "write lease on an idle tagged file: %s, expected EAGAIN "
		      "(its write denial is kept for the next open)", err(r));
	}

	/* A writer through another name takes the idle denial back. */
	if (!CHECK(link(T("a"), T("a2")) == 0, "link: %s", strerror(errno)))
		return;
	wd0 = cid_stat("write_denials");
	fd = open(W("a2"), O_WRONLY | O_CLOEXEC);
	if (!CHECK(fd >= 0, "O_WRONLY open of an idle tagged file through another name: %s",
		   strerror(errno)))
		return;
	CHECK(pwrite(fd, "x", 1, 0) == 1, "pwrite: %s", strerror(errno));
	if (wd0 >= 0)
		CHECK(cid_stat("write_denials") == wd0, "write_denials %lld -> %lld for a write "
		      "that was let in", wd0, cid_stat("write_denials"));
	r = query_flags(W("a"));
	CHECK(r == 0, "a after a write through a2: %s, expected untagged", qflags_str(r));
	close(fd);
	r = wrlease_err(W("a"));
	CHECK(r == 0, "write lease on a after its writer closed: %s", err(r));
	mb = map_touch(W("b"), PROT_READ, MAP_SHARED);
	verify_map(mb, SZ, seed, "twin b");

	/* An untag gives the idle denial back. */
	make_file(T("c"), seed, SZ);
	if (!tag_ok(T("c")))
		return;
	close(open_ro(W("c")));
	fd = open_ro(W("c"));
	CHECK(ioctl(fd, CID_IOC_UNTAG) == 0, "CID_IOC_UNTAG: %s", strerror(errno));
	close(fd);
	r = wrlease_err(W("c"));
	CHECK(r == 0, "write lease on c after its untag: %s", err(r));
	r = open_err(W("c"), O_RDWR);
	CHECK(r == 0, "O_RDWR open of c after its untag: %s", err(r));
}

/* Changes between tagging and opening: the open is not diverted, reads see the file. */
static void t_changed(struct ctx *c)
{
	uint8_t *want;
	int fd, r;

	if (!make_twins(c, "a", "b", seed))
		return;
	if (!c->fuse) {
		/* chmod moves ctime, not the contents: the tag stays. */
		CHECK(chmod(T("b"), 0600) == 0, "chmod: %s", strerror(errno));
		r = wflags(c, "b");
		CHECK(r == SHARED_FLAGS, "b after chmod: %s, expected shared", qflags_str(r));
		/*
		 * Locally, contents change only through a write, which drops the
		 * tag first; a moved mtime stands for a change the kernel did
		 * not see (offline, remote).
		 */
		struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT }, { .tv_sec = 1000000000 } };
		CHECK(utimensat(AT_FDCWD, T("a"), ts, 0) == 0, "utimensat: %s", strerror(errno));
		r = wflags(c, "a");
		CHECK(r >= 0 && !(r & CID_QUERY_SHARED),
		      "a after its mtime moved: %s, expected not shared", qflags_str(r));
		verify_path(W("a"), SZ, seed);
		CHECK(wflags(c, "b") == SHARED_FLAGS, "twin b: %s", qflags_str(wflags(c, "b")));
		return;
	}
	/* FUSE: change the backing file behind the mount's back, same size ... */
	want = pattern_buf(seed, SZ);
	fill_pattern(want + PAGE, PAGE, PAGE, seed + 1);
	fd = open(path_join(c->bdir, "a"), O_WRONLY);
	if (fd < 0)
		die("open backing a");
	CHECK(pwrite(fd, want + PAGE, PAGE, PAGE) == PAGE, "pwrite backing: %s", strerror(errno));
	close(fd);
	/* ... and another one's size. */
	make_file(T("c"), seed, SZ);
	tag_ok(T("c"));
	fd = open(path_join(c->bdir, "c"), O_WRONLY | O_APPEND);
	if (fd < 0)
		die("open backing c");
	uint8_t tail[100];
	fill_pattern(tail, SZ, sizeof(tail), seed);
	CHECK(write(fd, tail, sizeof(tail)) == sizeof(tail), "append: %s", strerror(errno));
	close(fd);
	msleep(1500);	/* the server's attr/entry timeouts are 0.5 s */
	r = wflags(c, "a");
	CHECK(r >= 0 && !(r & CID_QUERY_SHARED), "a changed underneath: %s, expected not shared",
	      qflags_str(r));
	verify_file_bytes(W("a"), want, SZ);
	r = query_flags(W("c"));
	CHECK(r >= 0 && !(r & CID_QUERY_SHARED), "c grown underneath: %s, expected not shared",
	      qflags_str(r));
	verify_path(W("c"), SZ + sizeof(tail), seed);
	CHECK(wflags(c, "b") == SHARED_FLAGS, "twin b: %s", qflags_str(wflags(c, "b")));
	verify_path(W("b"), SZ, seed);
}

/* The expected digest is checked, never trusted; UNTAG drops the tag. */
static void t_digest(struct ctx *c)
{
	long long un0 = cid_stat("untags");
	uint8_t want[32], bad[32], got[32];
	struct cid_tag t;
	int r, fd;

	make_file(T("a"), seed, SZ);
	verity_pattern(seed, SZ, want);
	memcpy(bad, want, 32);
	bad[31] ^= 1;
	r = tag_retry(T("a"), CID_TAG_EXPECT_DIGEST, 0, bad, &t);
	CHECK(r == -EBADMSG, "tag with a forged expected digest: %s, expected EBADMSG", err(r));
	r = wflags(c, "a");
	CHECK(r == 0, "a after the refused tag: %s, expected untagged", qflags_str(r));
	verify_path(W("a"), SZ, seed);

	r = tag_retry(T("a"), CID_TAG_EXPECT_DIGEST, 0, want, &t);
	CHECK(r == 0, "tag with the right expected digest: %s", err(r));
	CHECK(!memcmp(t.digest, want, 32), "digest out differs");
	r = wflags(c, "a");
	CHECK(r == SHARED_FLAGS, "a after tag: %s", qflags_str(r));
	/* What a diverted open reads hashes to the digest the kernel gave. */
	fd = open_ro(W("a"));
	r = verity_digest_fd(fd, got);
	close(fd);
	CHECK(r == 0 && !memcmp(got, want, 32), "fs-verity digest of a read through the diversion: %s%s",
	      err(r), r == 0 && memcmp(got, want, 32) ? ", differs from the tag's" : "");

	fd = open_ro(T("a"));
	r = ioctl(fd, CID_IOC_UNTAG) ? -errno : 0;
	close(fd);
	CHECK(r == 0, "CID_IOC_UNTAG: %s", err(r));
	r = wflags(c, "a");
	CHECK(r == 0, "a after CID_IOC_UNTAG: %s", qflags_str(r));
	if (un0 >= 0)
		CHECK(cid_stat("untags") > un0, "sysfs untags did not move (%lld)", un0);
	verify_path(W("a"), SZ, seed);
}

/* Files share only within their sharing domain. */
static void t_domain(struct ctx *c)
{
	const char *names[4] = { "d7a", "d7b", "d9", "d0" };
	uint32_t dom[4] = { 7, 7, 9, 0 };
	uint8_t *m[4];
	struct cid_query q;
	int r;

	for (int i = 0; i < 4; i++) {
		make_file(T(names[i]), seed, SZ);
		r = tag_retry(T(names[i]), dom[i] ? CID_TAG_DOMAIN : 0, dom[i], NULL, NULL);
		CHECK(r == 0, "tag %s in domain %u: %s", names[i], dom[i], err(r));
	}
	for (int i = 0; i < 4; i++)
		m[i] = map_touch(W(names[i]), PROT_READ, MAP_SHARED);
	expect_shared_pfns(m[0], m[1], "two files in domain 7");
	for (int i = 2; i < 4; i++) {
		struct pfn_cmp pc = compare_pfns(m[0], m[i], SZ);

		CHECK(pc.same == 0, "domain 7 and domain %u share %lu frames", dom[i], pc.same);
		verify_map(m[i], SZ, seed, names[i]);
	}
	r = cid_query_path(c->ovl ? T("d7b") : W("d7b"), &q);
	CHECK(r == 0 && q.domain == 7, "query domain %u, expected 7", q.domain);
}

static int child_status(pid_t pid)
{
	int st;

	if (waitpid(pid, &st, 0) != pid)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* In a child: try to tag path, exit 0 on success, 1 on EPERM, 2 otherwise. */
static int try_tag_exit(const char *path, const char *who)
{
	struct cid_tag t;
	int fd = open(path, O_RDONLY);

	if (fd < 0) {
		diag("%s: open %s: %s", who, path, strerror(errno));
		return 3;
	}
	memset(&t, 0, sizeof(t));
	if (ioctl(fd, CID_IOC_TAG, &t) == 0) {
		diag("%s: tag succeeded", who);
		return 0;
	}
	if (errno == EPERM)
		return 1;
	diag("%s: tag failed with %s, expected EPERM", who, strerror(errno));
	return 2;
}

static void t_errors(struct ctx *c)
{
	struct cid_tag t;
	struct cid_query q;
	pid_t pid;
	int fd, wfd, r, st;

	make_file(T("a"), seed, SZ);
	chmod(c->tdir, 0755);

	pid = fork();
	if (pid == 0) {
		if (setgroups(0, NULL) || setgid(65534) || setuid(65534))
			_exit(4);
		_exit(try_tag_exit(T("a"), "uid 65534"));
	}
	st = child_status(pid);
	CHECK(st == 1, "unprivileged tag: child status %d, expected EPERM (1)", st);

	pid = fork();
	if (pid == 0) {
		if (unshare(CLONE_NEWUSER)) {
			diag("unshare(CLONE_NEWUSER): %s", strerror(errno));
			_exit(5);
		}
		_exit(try_tag_exit(T("a"), "root in a user namespace"));
	}
	st = child_status(pid);
	if (st == 5)
		diag("no user namespaces: that half is not tested");
	else
		CHECK(st == 1, "tag in a user namespace: child status %d, expected EPERM (1)", st);

	wfd = open(T("a"), O_WRONLY);
	if (wfd < 0)
		die("open for writing");
	r = cid_tag_path(T("a"), 0, 0, NULL, NULL);
	CHECK(r == -ETXTBSY, "tag while someone has it open for writing: %s, expected ETXTBSY",
	      err(r));
	close(wfd);
	fd = open(T("a"), O_RDWR);
	memset(&t, 0, sizeof(t));
	r = cid_tag_fd(fd, &t);
	CHECK(r == -ETXTBSY, "tag on an O_RDWR fd: %s, expected ETXTBSY", err(r));
	close(fd);

	fd = open(c->tdir, O_RDONLY | O_DIRECTORY);
	memset(&t, 0, sizeof(t));
	r = cid_tag_fd(fd, &t);
	CHECK(r == -EINVAL, "tag a directory: %s, expected EINVAL", err(r));
	close(fd);

	fd = open_ro(T("a"));
	memset(&t, 0, sizeof(t));
	t.reserved[2] = 1;
	r = cid_tag_fd(fd, &t);
	CHECK(r == -EINVAL, "tag with reserved[2] != 0: %s, expected EINVAL", err(r));
	memset(&t, 0, sizeof(t));
	t.flags = 1U << 31;
	r = cid_tag_fd(fd, &t);
	CHECK(r == -EINVAL, "tag with an unknown flag: %s, expected EINVAL", err(r));
	r = cid_query_fd(fd, &q);
	CHECK(r == 0 && q.flags == 0, "query of an untagged file: %s flags %s", err(r),
	      qflags_str(q.flags));
	close(fd);
	r = wflags(c, "a");
	CHECK(r == 0, "a after all refused tags: %s", qflags_str(r));
}

/* tmpfs pages are the file's only storage: refuse. */
static void t_tmpfs(struct ctx *c)
{
	int r;

	make_file(T("a"), seed, 64 * KiB);
	r = cid_tag_path(T("a"), 0, 0, NULL, NULL);
	CHECK(r == -EOPNOTSUPP, "tag a tmpfs file: %s, expected EOPNOTSUPP", err(r));
	r = query_flags(T("a"));
	CHECK(r == 0 || r == -EOPNOTSUPP, "tmpfs file after refused tag: %s", qflags_str(r));
}

/* Tags outlive the inode in memory while ctime and size stay. */
static void t_evict(struct ctx *c)
{
	uint8_t *ma, *mb;
	int r;

	if (!make_twins(c, "a", "b", seed))
		return;
	verify_path(W("a"), SZ, seed);
	show_stats("before eviction");
	drop_caches();
	drop_caches();
	show_stats("after drop_caches");
	r = wflags(c, "a");
	CHECK(r == SHARED_FLAGS, "a after inode eviction: %s", qflags_str(r));
	ma = map_touch(W("a"), PROT_READ, MAP_SHARED);
	mb = map_touch(W("b"), PROT_READ, MAP_SHARED);
	expect_shared_pfns(ma, mb, "after eviction");
	verify_map(ma, SZ, seed, "a");
	verify_map(mb, SZ, seed, "b");
}

/* cachestat(2) of a whole file; Debian 12's headers predate it. */
#ifndef SYS_cachestat
#define SYS_cachestat 451
#endif
struct cstat {
	uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};

static int cachestat_fd(int fd, struct cstat *cs)
{
	uint64_t range[2] = { 0, 0 };	/* off, len: 0 = to the end */

	memset(cs, 0, sizeof(*cs));
	return syscall(SYS_cachestat, fd, range, cs, 0) ? -errno : 0;
}

/*
 * A diverted open sets up its backing file only when it is first mapped,
 * spliced or advised, or reads a page the content lacks; shares it with the
 * other opens of the same path, and gives it up with the last of them; it
 * denies writes from the moment it is open.
 */
static void t_lazy(struct ctx *c)
{
	static uint8_t buf[64 * 1024];
	long long bf0 = cid_stat("backing_files"), t0 = cid_stat("tagged_inodes");
	uint8_t *m1, *m2;
	int fd1, fd2, r, i;

	if (!make_twins(c, "a", "b", seed))
		return;
	if (!CHECK(bf0 >= 0, "sysfs backing_files missing"))
		return;

	/* Open and close only: shared, writes denied, no backing file. */
	fd1 = open_ro(T("a"));
	r = open_err(T("a"), O_WRONLY);
	CHECK(r == -ETXTBSY, "O_WRONLY open while an unread diverted fd is open: %s, "
	      "expected ETXTBSY", err(r));
	CHECK(cid_stat("backing_files") == bf0, "backing_files %lld -> %lld on an open "
	      "without a read", bf0, cid_stat("backing_files"));
	struct cid_query q;
	r = cid_query_fd(fd1, &q);
	CHECK(r == 0 && q.flags == SHARED_FLAGS, "unread diverted fd: %s, flags %s", err(r),
	      qflags_str(q.flags));
	/* Advice about pages nobody read needs no backing file either. */
	CHECK(posix_fadvise(fd1, 0, SZ, POSIX_FADV_DONTNEED) == 0, "fadvise DONTNEED");
	CHECK(cid_stat("backing_files") == bf0, "backing_files %lld -> %lld after DONTNEED "
	      "on an unread fd", bf0, cid_stat("backing_files"));
	for (i = 0; i < 1000; i++)
		close(open_ro(T("a")));
	CHECK(cid_stat("backing_files") == bf0, "backing_files %lld -> %lld after 1000 "
	      "open+close", bf0, cid_stat("backing_files"));

	/* Two opens of one path, one reads, one maps: one backing file. */
	fd2 = open_ro(T("a"));
	CHECK(pread(fd1, buf, sizeof(buf), 0) == (ssize_t)sizeof(buf), "pread: %s",
	      strerror(errno));
	CHECK(check_pattern(buf, 0, sizeof(buf), seed) < 0, "pread through the first open");
	CHECK(cid_stat("backing_files") == bf0 + 1, "backing_files %lld -> %lld after a read",
	      bf0, cid_stat("backing_files"));
	m2 = mmap(NULL, SZ, PROT_READ, MAP_SHARED, fd2, 0);
	if (m2 == MAP_FAILED)
		die("mmap");
	touch_pages(m2, SZ);
	CHECK(cid_stat("backing_files") == bf0 + 1, "backing_files %lld -> %lld: the second "
	      "open of the same path did not share", bf0, cid_stat("backing_files"));
	verify_map(m2, SZ, seed, "mapping of the second open");
	m1 = map_touch(T("b"), PROT_READ, MAP_SHARED);
	expect_shared_pfns(m1, m2, "lazily set up twins");
	munmap(m1, SZ);
	close(fd1);
	close(fd2);
	/* The mapping keeps the backing file, and the write denial, alive. */
	CHECK(cid_stat("backing_files") == bf0 + 1, "backing_files %lld -> %lld with the "
	      "mapping alive", bf0, cid_stat("backing_files"));
	r = open_err(T("a"), O_WRONLY);
	CHECK(r == -ETXTBSY, "O_WRONLY open while mapped: %s, expected ETXTBSY", err(r));
	munmap(m2, SZ);
	CHECK(cid_stat("backing_files") == bf0, "backing_files %lld -> %lld after the last "
	      "close and munmap", bf0, cid_stat("backing_files"));

	/*
	 * Many short reads: right bytes every time, nothing left behind.  The
	 * mapping above brought every page in, so no read needs a fill, and
	 * reads that need none are served without a backing file.
	 */
	for (i = 0; i < 200; i++) {
		off_t off = (off_t)(i * 7919 % (NPAGES - 1)) * PAGE + i;
		long long bfs;

		fd1 = open_ro(T(i & 1 ? "a" : "b"));
		if (pread(fd1, buf, 4096, off) != 4096 ||
		    check_pattern(buf, off, 4096, seed) >= 0) {
			CHECK(0, "open+pread+close round %d at %lld: wrong bytes", i,
			      (long long)off);
			close(fd1);
			break;
		}
		bfs = cid_stat("backing_files");
		close(fd1);
		if (bfs != bf0) {
			CHECK(0, "open+pread round %d of cached pages at %lld: backing_files "
			      "%lld -> %lld", i, (long long)off, bf0, bfs);
			break;
		}
	}
	CHECK(i == 200, "open+pread of cached pages: %d of 200 rounds without a backing "
	      "file and with the right bytes", i);
	CHECK(cid_stat("backing_files") == bf0, "backing_files %lld -> %lld after 200 "
	      "open+read+close", bf0, cid_stat("backing_files"));

	/*
	 * cachestat(2) of a diverted file counts the content's pages: through
	 * a path that has read them, and through a new twin of the same bytes
	 * that never has (whose own page cache tagging emptied).
	 */
	if (make_twins(c, "c", "d", seed)) {
		struct cstat cs;

		fd1 = open_ro(T("a"));
		fd2 = open_ro(T("c"));
		r = cachestat_fd(fd1, &cs);
		CHECK(r == 0 && cs.nr_cache == NPAGES, "cachestat of diverted a: %s, %llu of "
		      "%llu pages", err(r), (unsigned long long)cs.nr_cache,
		      (unsigned long long)NPAGES);
		r = cachestat_fd(fd2, &cs);
		CHECK(r == 0 && cs.nr_cache == NPAGES, "cachestat of diverted, unread twin c: "
		      "%s, %llu of %llu pages", err(r), (unsigned long long)cs.nr_cache,
		      (unsigned long long)NPAGES);
		CHECK(cid_stat("backing_files") == bf0, "backing_files %lld -> %lld after "
		      "cachestat", bf0, cid_stat("backing_files"));
		close(fd1);
		close(fd2);
	}

	/* Evicting the inodes forgets their set-up, not their tags. */
	drop_caches();
	drop_caches();
	CHECK(cid_stat("tagged_inodes") == t0 + 4, "tagged_inodes %lld -> %lld after eviction",
	      t0, cid_stat("tagged_inodes"));
	CHECK(query_flags(T("a")) == SHARED_FLAGS, "a after eviction: %s",
	      qflags_str(query_flags(T("a"))));
	verify_path(T("a"), SZ, seed);
	verify_path(T("b"), SZ, seed);
}

static unsigned long resident_pages(void *m)
{
	static unsigned char vec[64 * 1024];
	unsigned long n = 0;

	if (mincore(m, SZ, vec))
		die("mincore");
	for (uint64_t i = 0; i < NPAGES; i++)
		n += vec[i] & 1;
	return n;
}

/* sendfile, splice, readahead(2), fadvise + mincore, pread at odd offsets. */
static void t_iopaths(struct ctx *c)
{
	static uint8_t buf[256 * 1024];
	char tmp[64];
	int fd, out, p[2];
	off_t off;
	ssize_t n;

	if (!make_twins(c, "a", "b", seed))
		return;
	CHECK(wflags(c, "a") == SHARED_FLAGS, "a: %s", qflags_str(wflags(c, "a")));
	fd = open_ro(W("a"));

	/* sendfile into a tmpfs file */
	snprintf(tmp, sizeof(tmp), "/tmp/cid-sendfile.%d", (int)getpid());
	out = open(tmp, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (out < 0)
		die("open %s", tmp);
	off = 0;
	while ((uint64_t)off < SZ && (n = sendfile(out, fd, &off, 1000 * 1000)) > 0)
		;
	CHECK((uint64_t)off == SZ, "sendfile stopped at %lld: %s", (long long)off, strerror(errno));
	verify_read(out, SZ, seed, "sendfile copy");
	close(out);
	unlink(tmp);

	/* splice through a pipe, starting at an odd offset */
	if (pipe(p))
		die("pipe");
	loff_t lo = 12345;
	uint64_t got = 0;
	while ((uint64_t)lo < SZ) {
		n = splice(fd, &lo, p[1], NULL, 60000, 0);
		if (!CHECK(n > 0, "splice at %lld: %s", (long long)lo, n ? strerror(errno) : "eof"))
			break;
		for (ssize_t k = 0; k < n;) {
			ssize_t m = read(p[0], buf, n - k);

			if (m <= 0)
				die("read pipe");
			long bad = check_pattern(buf, 12345 + got, m, seed);
			if (!CHECK(bad < 0, "splice: wrong byte at %llu",
				   (unsigned long long)(12345 + got + bad)))
				goto spliced;
			got += m;
			k += m;
		}
	}
spliced:
	CHECK(12345 + got == SZ, "splice returned %llu bytes", (unsigned long long)got);
	close(p[0]);
	close(p[1]);

	/* readahead(2) then pread */
	drop_caches();
	CHECK(readahead(fd, 0, SZ) == 0, "readahead: %s", strerror(errno));
	verify_read(fd, SZ, seed, "after readahead");

	/* fadvise(WILLNEED) on a: the pages show up in the mincore of b's mapping */
	drop_caches();
	uint8_t *mb = map_file(W("b"), SZ, PROT_READ, MAP_SHARED, NULL);
	uint8_t *ma = map_file(W("a"), SZ, PROT_READ, MAP_SHARED, NULL);
	unsigned long before = resident_pages(mb), ra = 0, rb = 0;
	/*
	 * WILLNEED reads ahead at most max(io_pages, ra_pages) pages, and
	 * asynchronously: wait until a's mapping shows some, then b's (the
	 * same content mapping) must show exactly as many.
	 */
	CHECK(posix_fadvise(fd, 0, SZ, POSIX_FADV_WILLNEED) == 0, "fadvise WILLNEED failed");
	for (int i = 0; i < 50; i++) {
		msleep(100);
		ra = resident_pages(ma);
		rb = resident_pages(mb);
		if (ra && rb == ra)
			break;
	}
	diag("mincore after WILLNEED on a: a %lu, twin b %lu (before: %lu) of %llu pages", ra, rb,
	     before, (unsigned long long)NPAGES);
	CHECK(ra > 0, "WILLNEED on a brought none of a's pages in");
	CHECK(rb == ra, "twin b's mapping shows %lu resident pages, a's %lu", rb, ra);
	verify_map(mb, SZ, seed, "b after WILLNEED");

	/* pread at pseudo-random odd offsets and lengths */
	srand(seed);
	for (int i = 0; i < 300; i++) {
		uint64_t o = (uint64_t)rand() % SZ;
		size_t len = 1 + rand() % 70000;

		n = pread(fd, buf, len, o);
		uint64_t expect = o + len > SZ ? SZ - o : len;
		if (!CHECK(n == (ssize_t)expect, "pread(%zu at %llu) = %zd", len,
			   (unsigned long long)o, n))
			break;
		long bad = check_pattern(buf, o, n, seed);
		if (!CHECK(bad < 0, "pread at %llu: wrong byte at %llu", (unsigned long long)o,
			   (unsigned long long)(o + bad)))
			break;
	}
	n = pread(fd, buf, 100, SZ);
	CHECK(n == 0, "pread at EOF returned %zd", n);
	close(fd);
}

/* Memory pressure (memcg), drop_caches and compaction while mapped. */
static void t_pressure(struct ctx *c)
{
	char cg[128], buf[512];
	bool have_cg = false;
	pid_t pid;
	int st;

	if (!make_twins(c, "a", "b", seed))
		return;
	if (access("/sys/fs/cgroup/cgroup.controllers", F_OK))
		mount("none", "/sys/fs/cgroup", "cgroup2", 0, NULL);
	snprintf(cg, sizeof(cg), "/sys/fs/cgroup/cid-pressure-%d", (int)getpid());
	if (!access("/sys/fs/cgroup/cgroup.controllers", F_OK)) {
		write_str("/sys/fs/cgroup/cgroup.subtree_control", "+memory");
		if (mkdir(cg, 0755) == 0 && write_str(path_join(cg, "memory.max"), "3M"))
			have_cg = true;
	}
	if (!have_cg)
		diag("no cgroup2 memory controller: pressure from drop_caches and compaction only");
	drop_caches();	/* the child's faults fill (and are charged) the shared pages */

	pid = fork();
	if (pid == 0) {
		if (have_cg && !write_str(path_join(cg, "cgroup.procs"), "0"))
			diag("could not enter %s", cg);
		uint8_t *ma = map_file(W("a"), SZ, PROT_READ, MAP_SHARED, NULL);
		uint8_t *mb = map_file(W("b"), SZ, PROT_READ, MAP_PRIVATE, NULL);
		int fd = open_ro(W("a"));

		for (int round = 0; round < 3; round++) {
			verify_map(ma, SZ, seed, "a under pressure");
			verify_map(mb, SZ, seed, "b under pressure");
			verify_read(fd, SZ, seed, "read a under pressure");
		}
		_exit(cid_failures ? 1 : 0);
	}
	for (int i = 0; waitpid(pid, &st, WNOHANG) == 0; i++) {
		if (i & 1)
			drop_caches();
		else
			compact_memory();
		msleep(100);
	}
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child under pressure: %s %d",
	      WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
	if (have_cg) {
		if (read_str(path_join(cg, "memory.events"), buf, sizeof(buf))) {
			for (char *p = buf; (p = strchr(p, '\n')); )
				*p = ' ';
			diag("memory.events: %s", buf);
		}
		rmdir(cg);
	}

	/* Compaction and drop_caches while this process keeps both mapped. */
	uint8_t *ma = map_touch(W("a"), PROT_READ, MAP_SHARED);
	uint8_t *mb = map_touch(W("b"), PROT_READ, MAP_SHARED);
	expect_shared_pfns(ma, mb, "before compaction");
	for (int i = 0; i < 3; i++) {
		compact_memory();
		drop_caches();
		verify_map(ma, SZ, seed, "a after compaction");
		verify_map(mb, SZ, seed, "b after compaction");
	}
	touch_pages(ma, SZ);
	touch_pages(mb, SZ);
	expect_shared_pfns(ma, mb, "after compaction");
}

struct text_map { uint64_t start, end, off; char path[256]; };

static bool find_text(pid_t pid, const char *suffix, struct text_map *tm)
{
	char file[64], line[512], perms[8];
	FILE *f;
	bool found = false;

	snprintf(file, sizeof(file), "/proc/%d/maps", (int)pid);
	f = fopen(file, "r");
	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		unsigned long long s, e, o;
		int pos = 0;

		if (sscanf(line, "%llx-%llx %7s %llx %*s %*s %n", &s, &e, perms, &o, &pos) < 4 ||
		    !pos || perms[2] != 'x')
			continue;
		line[strcspn(line, "\n")] = 0;
		if (!strstr(line + pos, suffix))
			continue;
		tm->start = s;
		tm->end = e;
		tm->off = o;
		snprintf(tm->path, sizeof(tm->path), "%s", line + pos);
		found = true;
	}
	fclose(f);
	return found;
}

static pid_t spawn_sleeper(const char *path)
{
	int p[2];
	char ch;
	pid_t pid;

	if (pipe(p))
		die("pipe");
	pid = fork();
	if (pid == 0) {
		dup2(p[1], 1);
		execl(path, "cid-exec-twin", "__sleeper", (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	if (read(p[0], &ch, 1) != 1) {
		close(p[0]);
		return -1;
	}
	close(p[0]);
	return pid;
}

/* Exec of two tagged copies of one static ELF: both run, their text shares frames. */
static void t_exec(struct ctx *c)
{
	struct text_map t1, t2;
	unsigned long same = 0, differ = 0, absent = 0;
	struct cid_query q;
	pid_t p1, p2;
	int st;

	copy_file("/proc/self/exe", T("e1"), 0755);
	copy_file("/proc/self/exe", T("e2"), 0755);
	if (!tag_ok(T("e1")) || !tag_ok(T("e2")))
		return;
	p1 = spawn_sleeper(W("e1"));
	p2 = spawn_sleeper(W("e2"));
	if (!CHECK(p1 > 0 && p2 > 0, "exec of a tagged binary failed"))
		goto out;
	if (!CHECK(find_text(p1, "/e1", &t1) && find_text(p2, "/e2", &t2),
		   "no executable mapping of e1/e2 in /proc/PID/maps"))
		goto out;
	diag("child text: %s %llx-%llx", t1.path, (unsigned long long)t1.start,
	     (unsigned long long)t1.end);
	CHECK(!strstr(t1.path, "(deleted)") && strstr(t1.path, c->name),
	      "/proc/PID/maps names %s, not the file that was executed", t1.path);
	for (uint64_t a = t1.start; a < t1.end; a += PAGE) {
		uint64_t b = t2.start + (a - t1.start) + t1.off - t2.off;

		if (b >= t2.end)
			break;
		uint64_t f1 = pfn_of_pid(p1, a), f2 = pfn_of_pid(p2, b);

		if (!f1 || !f2)
			absent++;
		else if (f1 == f2)
			same++;
		else
			differ++;
	}
	diag("text pages: %lu shared, %lu differ, %lu not present in both", same, differ, absent);
	CHECK(same > 0 && differ == 0, "text of tagged ELF twins: %lu shared, %lu differ", same,
	      differ);
	memset(&q, 0, sizeof(q));
	if (cid_query_path(c->ovl ? T("e1") : W("e1"), &q) == 0)
		diag("query e1: %s content_pages %llu content_users %llu", qflags_str(q.flags),
		     (unsigned long long)q.content_pages, (unsigned long long)q.content_users);
	CHECK(q.flags == SHARED_FLAGS && q.content_pages > 0, "e1 while running: %s",
	      qflags_str(q.flags));
out:
	if (p1 > 0)
		kill(p1, SIGKILL), waitpid(p1, &st, 0);
	if (p2 > 0)
		kill(p2, SIGKILL), waitpid(p2, &st, 0);
	/* and the binary runs to completion */
	pid_t pid = fork();
	if (pid == 0) {
		execl(W("e2"), "cid-exec-twin", "__exit42", (char *)NULL);
		_exit(127);
	}
	st = child_status(pid);
	CHECK(st == 42, "tagged binary exited with %d, expected 42", st);
}

/* ---- bounded concurrent stress ---- */

#define NTWINS 4
static const uint64_t SSZ = 512 * KiB + 77;

static bool stress_replace(struct ctx *c, int i, unsigned int *n)
{
	char tmp[64], name[16];

	snprintf(tmp, sizeof(tmp), "tmp.%d.%u", (int)getpid(), (*n)++);
	snprintf(name, sizeof(name), "t%d", i);
	make_file(T(tmp), seed, SSZ);
	int r = cid_tag_path(T(tmp), 0, 0, NULL, NULL);
	if (!CHECK(r == 0 || r == -EAGAIN, "stress: tag %s: %s", tmp, err(r)))
		return false;
	if (!CHECK(rename(T(tmp), T(name)) == 0, "stress: rename: %s", strerror(errno)))
		return false;
	/* rename moved its ctime, which may have dropped the tag: tag it again */
	r = cid_tag_path(T(name), 0, 0, NULL, NULL);
	return CHECK(!r || r == -ETXTBSY || r == -ENOENT || r == -EAGAIN,
		     "stress: tag %s after rename: %s", name, err(r));
}

static int stress_worker(struct ctx *c, int id, double until)
{
	static uint8_t buf[70000];
	unsigned long ops[6] = { 0 };
	unsigned int n = 0;
	double last_drop = 0;
	char name[16];

	srand(seed + id * 7919);
	while (now_s() < until && !cid_failures) {
		int op = rand() % 10, i = rand() % NTWINS, fd, r;
		struct stat st;

		snprintf(name, sizeof(name), "t%d", i);
		if (c->ovl && op >= 5 && op <= 8)
			op = 0;	/* never change the lower layer under a mounted overlay */
		if (op == 9 && (id || now_s() < last_drop + 0.5))
			op = 1;	/* one worker drops caches, at most twice a second */
		switch (op) {
		case 0 ... 4:
			fd = open(W(name), O_RDONLY);
			if (fd < 0) {
				/*
				 * Another worker replaced or unlinked it: ENOENT,
				 * or on FUSE ESTALE (the server forgot the node
				 * between the lookup and the open).
				 */
				if (!CHECK(errno == ENOENT || (errno == ESTALE && c->fuse),
					   "stress: open %s: %s", name, strerror(errno)))
					return 1;
				break;
			}
			fstat(fd, &st);
			CHECK((uint64_t)st.st_size == SSZ, "stress: %s has size %lld", name,
			      (long long)st.st_size);
			uint8_t *m = mmap(NULL, SSZ, PROT_READ, op & 1 ? MAP_PRIVATE : MAP_SHARED,
					  fd, 0);
			if (m == MAP_FAILED)
				die("stress mmap");
			for (int k = 0; k < 8; k++) {
				uint64_t o = ((uint64_t)rand() % SSZ) & ~(PAGE - 1);
				uint64_t len = SSZ - o < PAGE ? SSZ - o : PAGE;
				long bad = check_pattern(m + o, o, len, seed);

				CHECK(bad < 0, "stress: %s mapping wrong at %llu", name,
				      (unsigned long long)(o + bad));
			}
			uint64_t o = (uint64_t)rand() % SSZ;
			ssize_t got = pread(fd, buf, sizeof(buf), o);
			CHECK(got >= 0 && check_pattern(buf, o, got, seed) < 0 &&
			      (uint64_t)got == (SSZ - o < sizeof(buf) ? SSZ - o : sizeof(buf)),
			      "stress: %s pread at %llu wrong (%zd)", name, (unsigned long long)o, got);
			munmap(m, SSZ);
			close(fd);
			ops[0]++;
			break;
		case 5 ... 6:
			stress_replace(c, i, &n);
			ops[1]++;
			break;
		case 7:
			r = unlink(T(name)) ? errno : 0;
			CHECK(!r || r == ENOENT, "stress: unlink: %s", strerror(r));
			stress_replace(c, i, &n);
			ops[2]++;
			break;
		case 8:	/* write the same bytes: drops the tag, content stays */
			fd = open(W(name), O_WRONLY);
			if (fd < 0) {
				CHECK(errno == ETXTBSY || errno == ENOENT, "stress: write-open: %s",
				      strerror(errno));
				ops[3]++;
				break;
			}
			o = ((uint64_t)rand() % SSZ) & ~(PAGE - 1);
			fill_pattern(buf, o, PAGE, seed);
			CHECK(pwrite(fd, buf, SSZ - o < PAGE ? SSZ - o : PAGE, o) > 0,
			      "stress: pwrite: %s", strerror(errno));
			close(fd);
			r = cid_tag_path(T(name), 0, 0, NULL, NULL);
			/* EAGAIN: a rename or unlink by another worker moved its ctime */
			CHECK(!r || r == -ETXTBSY || r == -ENOENT || r == -EAGAIN,
			      "stress: re-tag: %s", err(r));
			ops[4]++;
			break;
		case 9:
			last_drop = now_s();
			if (rand() & 1)
				drop_caches();
			else
				compact_memory();
			ops[5]++;
			break;
		}
	}
	diag("worker %d: %lu reads, %lu replaces, %lu unlinks, %lu write-open denials, "
	     "%lu writes, %lu drop/compact", id, ops[0], ops[1], ops[2], ops[3], ops[4], ops[5]);
	return cid_failures ? 1 : 0;
}

static void t_stress(struct ctx *c)
{
	const char *e = getenv("CID_STRESS_SECS");
	double secs = e ? atof(e) : 6, until;
	pid_t pids[3];
	char name[16];

	for (int i = 0; i < NTWINS; i++) {
		snprintf(name, sizeof(name), "t%d", i);
		make_file(T(name), seed, SSZ);
		tag_ok(T(name));
	}
	until = now_s() + secs;
	for (int w = 0; w < 3; w++) {
		pids[w] = fork();
		if (pids[w] == 0)
			_exit(stress_worker(c, w, until));
	}
	for (int w = 0; w < 3; w++) {
		int st = child_status(pids[w]);

		CHECK(st == 0, "stress worker %d: status %d", w, st);
	}
	for (int i = 0; i < NTWINS; i++) {
		snprintf(name, sizeof(name), "t%d", i);
		verify_path(W(name), SSZ, seed);
	}
	show_stats("after stress");
}

/* Unmount with tagged files: prepare, (run-suite.sh unmounts and remounts), check. */
static void t_umount_prep(struct ctx *c)
{
	if (!make_twins(c, "a", "b", seed))
		return;
	uint8_t *ma = map_touch(W("a"), PROT_READ, MAP_SHARED);
	uint8_t *mb = map_touch(W("b"), PROT_READ, MAP_SHARED);

	expect_shared_pfns(ma, mb, "before unmount");
	munmap(ma, SZ);
	munmap(mb, SZ);
}

static void t_umount_check(struct ctx *c)
{
	int r = wflags(c, "a");
	uint8_t *ma, *mb;

	CHECK(r == 0, "a after unmount and remount: %s, expected a plain file", qflags_str(r));
	verify_path(W("a"), SZ, seed);
	verify_path(W("b"), SZ, seed);
	ma = map_touch(W("a"), PROT_READ, MAP_SHARED);
	mb = map_touch(W("b"), PROT_READ, MAP_SHARED);
	struct pfn_cmp pc = compare_pfns(ma, mb, SZ);
	CHECK(pc.same == 0, "untagged files still share %lu frames after remount", pc.same);
}

/* Overlay: tagging through the merged path tags the real inode or is refused. */
static void t_ovl_tag(struct ctx *c)
{
	int r;

	make_file(T("a"), seed, SZ);
	make_file(T("b"), seed, SZ);
	tag_ok(T("b"));
	r = cid_tag_path(W("a"), 0, 0, NULL, NULL);
	if (r == -EOPNOTSUPP) {
		diag("tagging through the overlay: EOPNOTSUPP (tag the lower file instead)");
		return;
	}
	if (!CHECK(r == 0, "tag through the overlay: %s, expected success or EOPNOTSUPP", err(r)))
		return;
	diag("tagging through the overlay tagged the underlying inode");
	r = query_flags(T("a"));
	CHECK(r == SHARED_FLAGS, "lower a: %s", qflags_str(r));
	diag("query through the merged path: %s", qflags_str(query_flags(W("a"))));
	uint8_t *ma = map_touch(W("a"), PROT_READ, MAP_SHARED);
	uint8_t *mb = map_touch(W("b"), PROT_READ, MAP_SHARED);
	expect_shared_pfns(ma, mb, "a tagged via overlay vs b");
}

/* The sysfs knobs exist; enabled rejects garbage and is restored. */
static void t_sysfs(struct ctx *c)
{
	static const char *files[] = { "enabled", "contents", "tagged_inodes", "pages_shared",
				       "pages_sharing", "general_profit", "tags", "untags",
				       "write_denials" };
	char old[32], now[32];
	int r;

	if (!cid_sysfs_present())
		skip_case("/sys/kernel/mm/cid is absent");
	/* general_profit may be negative: metadata with nothing shared. */
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		char path[96], val[32];

		snprintf(path, sizeof(path), "/sys/kernel/mm/cid/%s", files[i]);
		CHECK(read_str(path, val, sizeof(val)) &&
		      (!strcmp(files[i], "general_profit") || cid_stat(files[i]) >= 0),
		      "%s missing or negative", path);
	}
	CHECK(access("/sys/kernel/mm/cid/backing_files", R_OK) == 0, "backing_files missing");
	show_stats("now");
	if (!read_str("/sys/kernel/mm/cid/enabled", old, sizeof(old)))
		return;
	CHECK(!strcmp(old, "1"), "enabled is %s, default is 1", old);
	CHECK(!write_str("/sys/kernel/mm/cid/enabled", "abc"), "enabled accepted \"abc\"");
	if (CHECK(write_str("/sys/kernel/mm/cid/enabled", "0"), "write 0 to enabled: %s",
		  strerror(errno))) {
		read_str("/sys/kernel/mm/cid/enabled", now, sizeof(now));
		CHECK(!strcmp(now, "0"), "enabled reads %s after writing 0", now);
		make_file(T("a"), seed, 64 * KiB);
		r = cid_tag_path(T("a"), 0, 0, NULL, NULL);
		diag("with enabled=0: tag %s, new open %s", err(r), qflags_str(wflags(c, "a")));
		verify_path(W("a"), 64 * KiB, seed);
	}
	write_str("/sys/kernel/mm/cid/enabled", old);
	read_str("/sys/kernel/mm/cid/enabled", now, sizeof(now));
	CHECK(!strcmp(now, old), "enabled not restored: %s", now);
}

/* Does the kernel know CID_IOC_QUERY at all? */
static void t_probe(struct ctx *c)
{
	struct cid_query q;
	int fd, r;

	make_file(T("probe"), seed, 4096);
	fd = open_ro(T("probe"));
	r = cid_query_fd(fd, &q);
	close(fd);
	if (r == -ENOTTY) {
		diag("CID_IOC_QUERY: ENOTTY: kernel lacks named merging");
		exit(CASE_NOKERNEL);
	}
	CHECK(r == 0, "CID_IOC_QUERY on an untagged file: %s", err(r));
}

/*
 * One clear line instead of a failure per check when the ioctl is unknown:
 * ENOTTY from CID_IOC_QUERY on a small file in the case's directory.
 */
static void kernel_probe(struct ctx *c)
{
	struct cid_query q;
	int fd = open(T(".cid-probe"), O_RDWR | O_CREAT, 0644), r;

	if (fd < 0)
		die("create %s", T(".cid-probe"));
	if (write(fd, "probe\n", 6) != 6)
		die("write probe");
	close(fd);
	fd = open_ro(T(".cid-probe"));
	r = cid_query_fd(fd, &q);
	close(fd);
	unlink(T(".cid-probe"));
	if (r == -ENOTTY) {
		diag("CID_IOC_QUERY on %s: ENOTTY: kernel lacks named merging", c->fs);
		exit(CASE_NOKERNEL);
	}
}

static const struct { const char *name; void (*fn)(struct ctx *); const char *seedname; } cases[] = {
	{ "probe", t_probe, NULL },
	{ "share", t_share, NULL },
	{ "tagcache", t_tagcache, NULL },
	{ "cow_private", t_cow_private, NULL },
	{ "cow_mprotect", t_cow_mprotect, NULL },
	{ "write", t_write, NULL },
	{ "truncate", t_truncate, NULL },
	{ "unlink", t_unlink, NULL },
	{ "rename", t_rename, NULL },
	{ "hardlink", t_hardlink, NULL },
	{ "idle", t_idle, NULL },
	{ "changed", t_changed, NULL },
	{ "digest", t_digest, NULL },
	{ "domain", t_domain, NULL },
	{ "errors", t_errors, NULL },
	{ "tmpfs", t_tmpfs, NULL },
	{ "evict", t_evict, NULL },
	{ "lazy", t_lazy, NULL },
	{ "iopaths", t_iopaths, NULL },
	{ "pressure", t_pressure, NULL },
	{ "exec", t_exec, NULL },
	{ "stress", t_stress, NULL },
	{ "umount_prep", t_umount_prep, "umount" },
	{ "umount_check", t_umount_check, "umount" },
	{ "ovl_tag", t_ovl_tag, NULL },
	{ "sysfs", t_sysfs, NULL },
};

static uint64_t fnv(const char *s, uint64_t h)
{
	while (*s)
		h = (h ^ (uint8_t)*s++) * 0x100000001b3ULL;
	return h;
}

int main(int argc, char **argv)
{
	struct ctx c;
	const char *e;

	if (argc >= 2 && !strcmp(argv[1], "__sleeper")) {
		if (write(1, "R", 1) != 1)
			return 1;
		sleep(60);
		return 0;
	}
	if (argc >= 2 && !strcmp(argv[1], "__exit42"))
		return 42;
	if (argc < 4) {
		fprintf(stderr, "usage: %s CASE FS WDIR [TDIR [BDIR]]\n", argv[0]);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	e = getenv("CID_TEST_SIZE");
	if (e)
		SZ = strtoull(e, NULL, 0);
	NPAGES = (SZ + PAGE - 1) / PAGE;
	e = getenv("CID_CASE_TIMEOUT");
	alarm(e ? atoi(e) : 300);

	memset(&c, 0, sizeof(c));
	c.fs = argv[2];
	c.name = argv[1];
	c.ovl = !strcmp(c.fs, "ovl");
	c.fuse = !strcmp(c.fs, "fuse");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (strcmp(cases[i].name, argv[1]))
			continue;
		const char *dirname = cases[i].seedname ? cases[i].seedname : cases[i].name;

		seed = fnv(dirname, fnv(c.fs, 0xcbf29ce484222325ULL));
		snprintf(c.wdir, sizeof(c.wdir), "%s/%s", argv[3], dirname);
		snprintf(c.tdir, sizeof(c.tdir), "%s/%s", argc > 4 ? argv[4] : argv[3], dirname);
		if (argc > 5)
			snprintf(c.bdir, sizeof(c.bdir), "%s/%s", argv[5], dirname);
		c.name = dirname;
		mkdir_p(c.tdir);
		if (cases[i].fn != t_probe)
			kernel_probe(&c);
		cases[i].fn(&c);
		return cid_failures ? CASE_FAIL : CASE_PASS;
	}
	fprintf(stderr, "cidtest: unknown case %s\n", argv[1]);
	return 2;
}
