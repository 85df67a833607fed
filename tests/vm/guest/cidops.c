// SPDX-License-Identifier: GPL-2.0
/*
 * In-guest cases for what else a tagged file meets: io_uring reads of cold
 * content and fixed buffers over a private mapping, remapping and hole
 * punching on an idle tagged file, inode flags, the layout queries, a lazy
 * unmount with a live mapping, and which memory cgroup pays for content.
 *
 *   cidops CASE FS WDIR [TDIR [MNT]]     exit 0 pass, 1 fail, 3 no kernel, 77 skip
 *
 * Files are created and tagged under TDIR/CASE and opened under WDIR/CASE,
 * as in cidtest: the same directory on ext4, xfs, btrfs and FUSE; the lower
 * layer and the merged view on overlayfs.  The detach case unmounts MNT
 * (lazily) itself; run-suite.sh mounts it again.  Run by run-suite.sh; see
 * tests/vm/guest/README.md.
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/falloc.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

static uint64_t size = 4 * MiB + 1234;
static uint64_t seed;
static const char *fs;
static bool ovl, fuse, reflink;
static char wdir[400], tdir[400];
static unsigned int case_secs = 300;

#define T(n) path_join(tdir, n)
#define W(n) path_join(wdir, n)

static void on_alarm(int sig)
{
	static const char msg[] = "# FAIL: the case did not finish in time (a hang?)\n";

	(void)sig;
	if (write(1, msg, sizeof(msg) - 1) < 0)
		_exit(CASE_FAIL);
	_exit(CASE_FAIL);
}

/* Query flags of name as the test means the file (see cidtest's wflags). */
static int tflags(const char *name)
{
	return query_flags(T(name));
}

/* Fresh file name in TDIR: size bytes of s, tagged if tag; false if the tag failed. */
static bool fresh(const char *name, uint64_t s, bool tag)
{
	unlink(T(name));
	make_file(T(name), s, size);
	return !tag || tag_ok(T(name));
}

/* ---------------------------------------------------------------------- */
/* io_uring: many concurrent buffered reads of cold tagged twins. */

#define UR_TWINS 4
#define UR_THREADS 4
#define UR_QD 16
#define UR_RANDOM 160
#define UR_CHUNK (128 * KiB)
#define UR_MAXLEN (256 * KiB)

struct ur_thread {
	int id;
	char *paths[UR_TWINS];
	pthread_barrier_t *bar;
	unsigned long reads, bad;
	int err;		/* set-up error (-errno), 0 if none */
};

struct ur_slot { int twin; uint64_t off; size_t len; uint8_t *buf; };

static unsigned int rnd(unsigned int *s)
{
	*s = *s * 1103515245u + 12345u;
	return *s >> 4;
}

/*
 * Thread id sweeps twin id % UR_TWINS in UR_CHUNK reads (so every byte of
 * every twin is read and checked by some thread) and interleaves reads of
 * random length at random, unaligned offsets of all twins; every third
 * request goes straight to io-wq (IOSQE_ASYNC), the others try inline first.
 */
static void *ur_worker(void *arg)
{
	struct ur_thread *t = arg;
	uint64_t nsweep = (size + UR_CHUNK - 1) / UR_CHUNK, sweep = 0, total = nsweep + UR_RANDOM;
	uint64_t issued = 0, done = 0;
	unsigned int rs = 7919u * (t->id + 1);
	struct ur_slot slot[UR_QD];
	struct io_uring ring;
	int fds[UR_TWINS], r;
	uint8_t *bufs;

	r = io_uring_queue_init(UR_QD, &ring, 0);
	bufs = malloc(UR_QD * UR_MAXLEN);
	if (r || !bufs) {
		t->err = r ? r : -ENOMEM;
		pthread_barrier_wait(t->bar);
		return NULL;
	}
	for (int i = 0; i < UR_TWINS; i++) {
		fds[i] = open(t->paths[i], O_RDONLY);
		if (fds[i] < 0)
			t->err = -errno;
	}
	pthread_barrier_wait(t->bar);
	if (t->err)
		return NULL;

	memset(slot, 0, sizeof(slot));
	for (int s = 0; s < UR_QD; s++)
		slot[s].buf = bufs + (size_t)s * UR_MAXLEN;
	while (done < total) {
		while (issued < total && issued - done < UR_QD) {
			struct io_uring_sqe *sqe;
			int s = -1;

			/* a free slot (len 0: not in flight); there is one, fewer than UR_QD are */
			for (int k = 0; k < UR_QD && s < 0; k++)
				if (slot[k].len == 0)
					s = k;
			sqe = s < 0 ? NULL : io_uring_get_sqe(&ring);
			if (!sqe)
				break;
			if ((issued & 1) == 0 && sweep < nsweep) {
				slot[s].twin = t->id % UR_TWINS;
				slot[s].off = sweep++ * UR_CHUNK;
				slot[s].len = UR_CHUNK;
			} else {
				slot[s].twin = rnd(&rs) % UR_TWINS;
				slot[s].off = rnd(&rs) % size;
				slot[s].len = 1 + rnd(&rs) % UR_MAXLEN;
			}
			io_uring_prep_read(sqe, fds[slot[s].twin], slot[s].buf, slot[s].len, slot[s].off);
			io_uring_sqe_set_data64(sqe, s);
			if (issued % 3 == 2)
				sqe->flags |= IOSQE_ASYNC;
			issued++;
		}
		r = io_uring_submit(&ring);
		if (r < 0) {
			t->err = r;
			break;
		}
		{
			struct io_uring_cqe *cqe;
			struct ur_slot *sl;
			uint64_t want;

			r = io_uring_wait_cqe(&ring, &cqe);
			if (r) {
				t->err = r;
				break;
			}
			sl = &slot[io_uring_cqe_get_data64(cqe)];
			want = sl->len < size - sl->off ? sl->len : size - sl->off;
			if (cqe->res < 0 || (uint64_t)cqe->res != want) {
				t->bad++;
				diag("thread %d: READ of twin %d at %llu, %zu bytes: %d (%s), expected %llu",
				     t->id, sl->twin, (unsigned long long)sl->off, sl->len, cqe->res,
				     cqe->res < 0 ? strerror(-cqe->res) : "short", (unsigned long long)want);
			} else {
				long bad = check_pattern(sl->buf, sl->off, want, seed);

				if (bad >= 0) {
					t->bad++;
					diag("thread %d: READ of twin %d at %llu: wrong byte at offset %llu",
					     t->id, sl->twin, (unsigned long long)sl->off,
					     (unsigned long long)(sl->off + bad));
				}
			}
			t->reads++;
			sl->len = 0;
			done++;
			io_uring_cqe_seen(&ring, cqe);
		}
	}
	/* Reap what is still in flight after an error before the buffers go. */
	while (done < issued) {
		struct io_uring_cqe *cqe;

		if (io_uring_wait_cqe(&ring, &cqe))
			break;
		io_uring_cqe_seen(&ring, cqe);
		done++;
	}
	io_uring_queue_exit(&ring);
	for (int i = 0; i < UR_TWINS; i++)
		close(fds[i]);
	free(bufs);
	return NULL;
}

static void case_uring_cold(void)
{
	static const char *names[UR_TWINS] = { "u0", "u1", "u2", "u3" };
	struct ur_thread th[UR_THREADS];
	pthread_t tid[UR_THREADS];
	pthread_barrier_t bar;
	unsigned long reads = 0, bad = 0;
	long long fills;
	struct cid_query q;

	for (int i = 0; i < UR_TWINS; i++)
		if (!fresh(names[i], seed, true))
			return;
	for (int i = 1; i < UR_TWINS; i++)
		CHECK(same_content(T(names[0]), T(names[i])), "%s and %s have one content",
		      names[0], names[i]);
	drop_caches();
	CHECK(!cid_query_path(T(names[0]), &q) && q.content_pages == 0,
	      "the content is cold before the reads (%llu pages)",
	      (unsigned long long)q.content_pages);
	fills = cid_stat("fills");
	pthread_barrier_init(&bar, NULL, UR_THREADS + 1);
	for (int t = 0; t < UR_THREADS; t++) {
		memset(&th[t], 0, sizeof(th[t]));
		th[t].id = t;
		th[t].bar = &bar;
		for (int i = 0; i < UR_TWINS; i++)
			th[t].paths[i] = strdup(W(names[(i + t) % UR_TWINS]));
		if (pthread_create(&tid[t], NULL, ur_worker, &th[t]))
			die("pthread_create");
	}
	alarm(120);	/* a read that never completes fails the case here */
	pthread_barrier_wait(&bar);
	for (int t = 0; t < UR_THREADS; t++) {
		pthread_join(tid[t], NULL);
		CHECK(th[t].err == 0, "thread %d: io_uring set-up or wait: %s", t, strerror(-th[t].err));
		reads += th[t].reads;
		bad += th[t].bad;
	}
	alarm(case_secs);
	diag("%lu io_uring READs of %d twins from %d rings, %lu wrong or short; fills %lld -> %lld",
	     reads, UR_TWINS, UR_THREADS, bad, fills, cid_stat("fills"));
	CHECK(bad == 0, "every READ returned its full length and the right bytes");
	CHECK(reads > UR_THREADS * UR_RANDOM, "all reads completed (%lu)", reads);
	CHECK(cid_stat("fills") > fills, "the reads filled the content (fills moved)");
	if (!ovl)
		CHECK(query_flags(W(names[0])) == (CID_QUERY_TAGGED | CID_QUERY_SHARED),
		      "the twins are diverted");
	for (int i = 0; i < UR_TWINS; i++)
		unlink(T(names[i]));
}

/*
 * io_uring fixed buffers registered over a MAP_PRIVATE mapping of a tagged
 * file (pinned FOLL_WRITE|FOLL_LONGTERM, so copied first), then filled by a
 * READ_FIXED from another file: the tagged file and its twin keep their bytes.
 */
#define FIX_LEN (1 * MiB)
#define FIX_AT (PAGE + 123)
#define FIX_READ (256 * KiB)

static void case_uring_fixed(void)
{
	uint64_t zseed = seed ^ 0x5a5a;
	struct io_uring ring;
	struct io_uring_cqe *cqe;
	struct io_uring_sqe *sqe;
	struct iovec iov;
	uint8_t *ma, *mb;
	uint64_t pfn_b;
	int zfd, r;

	if (!fresh("a", seed, true) || !fresh("b", seed, true) || !fresh("z", zseed, false))
		return;
	ma = map_file(W("a"), size, PROT_READ | PROT_WRITE, MAP_PRIVATE, NULL);
	mb = map_file(W("b"), size, PROT_READ, MAP_SHARED, NULL);
	touch_pages(ma, size);
	touch_pages(mb, size);
	pfn_b = pfn_of(mb + PAGE);
	CHECK(pfn_b && pfn_of(ma + PAGE) == pfn_b,
	      "before registration the private mapping reads the twin's frame");
	r = io_uring_queue_init(4, &ring, 0);
	if (r)
		die("io_uring_queue_init: %s", strerror(-r));
	iov.iov_base = ma;
	iov.iov_len = FIX_LEN;
	r = io_uring_register_buffers(&ring, &iov, 1);
	if (!CHECK(r == 0, "IORING_REGISTER_BUFFERS over a MAP_PRIVATE mapping of a tagged file: %s",
		   strerror(-r)))
		goto out;
	CHECK(pfn_of(ma + PAGE) != pfn_b, "registering the buffer copied the private page");
	CHECK(pfn_of(mb + PAGE) == pfn_b, "the twin's mapping keeps the shared frame");

	zfd = open_ro(W("z"));
	sqe = io_uring_get_sqe(&ring);
	io_uring_prep_read_fixed(sqe, zfd, ma + FIX_AT, FIX_READ, 8192, 0);
	io_uring_submit(&ring);
	r = io_uring_wait_cqe(&ring, &cqe);
	CHECK(!r && cqe->res == FIX_READ, "READ_FIXED into the registered buffer: %d",
	      r ? r : cqe->res);
	if (!r)
		io_uring_cqe_seen(&ring, cqe);
	close(zfd);
	CHECK(check_pattern(ma + FIX_AT, 8192, FIX_READ, zseed) < 0,
	      "the private mapping holds the other file's bytes where they were read");
	CHECK(check_pattern(ma, 0, FIX_AT, seed) < 0 &&
	      check_pattern(ma + FIX_AT + FIX_READ, FIX_AT + FIX_READ,
			    size - FIX_AT - FIX_READ, seed) < 0,
	      "and the tagged file's bytes around them");
	verify_map(mb, size, seed, "twin mapping after READ_FIXED");
	verify_path(W("a"), size, seed);
	verify_path(W("b"), size, seed);
	{
		uint8_t *m2 = map_file(W("a"), size, PROT_READ, MAP_SHARED, NULL);

		verify_map(m2, size, seed, "new mapping of the tagged file");
		munmap(m2, size);
	}
	io_uring_unregister_buffers(&ring);
	/* Cold again: the content is refilled from the files, which kept their bytes. */
	munmap(mb, size);
	drop_caches();
	verify_path(W("b"), size, seed);
	verify_path(W("a"), size, seed);
	mb = NULL;
out:
	io_uring_queue_exit(&ring);
	munmap(ma, size);
	if (mb)
		munmap(mb, size);
	unlink(T("a")), unlink(T("b")), unlink(T("z"));
}

/* ---------------------------------------------------------------------- */
/* Remapping, copying and punching on an idle tagged file. */

/* After name was modified to hold want: its bytes, its tag, the twin's bytes. */
static void after_change(const char *name, const uint8_t *want, const char *op)
{
	verify_file_bytes(W(name), want, size);
	drop_caches();
	CHECK(verify_file_bytes(W(name), want, size), "%s: the modified file reads its new bytes cold", op);
	if (ovl) {
		/* The change went to the upper copy; the tagged lower file is untouched. */
		CHECK(tflags(name) & CID_QUERY_TAGGED, "%s: the lower file keeps its tag", op);
		verify_path(T(name), size, seed);
	} else {
		int f = tflags(name);

		CHECK(f == 0, "%s: the modified file is untagged (%s)", op, qflags_str(f));
	}
	CHECK(verify_path(W("b"), size, seed), "%s: the twin keeps its bytes", op);
}

/* An idle tagged file: tagged, read through a diverted open, closed. */
static bool idle_tagged(const char *name)
{
	if (!fresh(name, seed, true))
		return false;
	return verify_path(W(name), size, seed);
}

/*
 * r (0 or -1 with errno) of an operation only a reflink filesystem
 * supports: true if it ran.  Elsewhere it must be refused as documented.
 */
static bool remap_result(int r, const char *op)
{
	int e = errno;

	if (r == 0)
		return CHECK(reflink, "%s works on %s, which was expected to refuse it", op, fs);
	if (reflink) {
		CHECK(0, "%s: %s", op, strerror(e));
	} else if (ovl && e == EPERM && strstr(op, "FIDEDUPERANGE")) {
		diag("%s: EPERM: overlayfs does not copy up for a dedupe; not supported on ovl", op);
	} else {
		CHECK(e == EOPNOTSUPP || e == EXDEV, "%s on %s: EOPNOTSUPP or EXDEV expected: %s",
		      op, fs, strerror(e));
		diag("%s: %s: not supported on %s (no reflink)", op, strerror(e), fs);
	}
	return false;
}

/* FIDEDUPERANGE of [0, len) of src into dst: 0, or -1 with errno (also a per-range error). */
static int dedupe(int src, uint64_t len, int dst, struct file_dedupe_range_info *out)
{
	struct {
		struct file_dedupe_range r;
		struct file_dedupe_range_info i;
	} d;

	memset(&d, 0, sizeof(d));
	d.r.src_length = len;
	d.r.dest_count = 1;
	d.i.dest_fd = dst;
	if (ioctl(src, FIDEDUPERANGE, &d))
		return -1;
	*out = d.i;
	if (d.i.status < 0) {
		errno = -d.i.status;
		return -1;
	}
	return 0;
}

static int open_w(const char *path, int flags)
{
	int fd = open(path, O_WRONLY | flags, 0644);

	if (fd < 0)
		CHECK(0, "open %s for writing: %m", path);
	return fd;
}

static void copy_range(int in, int out, const char *op)
{
	loff_t oi = 0, oo = 0;

	while ((uint64_t)oi < size) {
		ssize_t n = copy_file_range(in, &oi, out, &oo, size - oi, 0);

		if (n <= 0) {
			CHECK(0, "%s: copy_file_range at %lld: %zd (%m)", op, (long long)oi, n);
			return;
		}
	}
}

static void case_remap(void)
{
	uint64_t yseed = seed ^ 0x77;
	uint8_t *same = pattern_buf(seed, size), *other = pattern_buf(yseed, size);
	struct file_dedupe_range_info di;
	uint64_t dlen = size & ~(PAGE - 1);
	int rd, w, src, dst;

	if (!fresh("b", seed, true) || !fresh("y", yseed, false) || !fresh("x", seed, false))
		return;

	/* A reader holds it: no writable fd can be had (every op below needs one). */
	if (!idle_tagged("busy"))
		return;
	rd = open_ro(W("busy"));
	w = open(W("busy"), O_WRONLY);
	if (ovl)
		diag("ovl: open for writing with a reader: %s (copies up; the reader keeps the lower file)",
		     w < 0 ? strerror(errno) : "works");
	else
		CHECK(w < 0 && errno == ETXTBSY, "open for writing while a reader holds it: ETXTBSY (%m)");
	if (w >= 0)
		close(w);
	CHECK(verify_read(rd, size, seed, "the reader"), "the reader keeps the tagged bytes");
	close(rd);

	/* FICLONE: the tagged file as the source, to a new file. */
	if (idle_tagged("clsrc")) {
		src = open_ro(W("clsrc"));
		unlink(T("clnew"));
		dst = open_w(W("clnew"), O_CREAT);
		if (dst >= 0 && remap_result(ioctl(dst, FICLONE, src), "FICLONE from a tagged file")) {
			verify_file_bytes(W("clnew"), same, size);
			CHECK(tflags("clsrc") & CID_QUERY_TAGGED, "the clone's source keeps its tag");
			verify_path(W("clsrc"), size, seed);
		}
		close(src);
		if (dst >= 0)
			close(dst);
	}
	/* FICLONE onto the tagged file: the write-open drops its tag first. */
	if (idle_tagged("cldst")) {
		src = open_ro(W("y"));
		dst = open_w(W("cldst"), 0);
		if (dst >= 0 && remap_result(ioctl(dst, FICLONE, src), "FICLONE onto a tagged file")) {
			close(dst);
			dst = -1;
			after_change("cldst", other, "FICLONE onto");
		} else if (dst >= 0) {
			CHECK(verify_file_bytes(W("cldst"), same, size), "refused FICLONE left the bytes");
		}
		close(src);
		if (dst >= 0)
			close(dst);
	}
	/* FIDEDUPERANGE: the tagged file as the source, into an equal file. */
	if (idle_tagged("ddsrc")) {
		src = open_ro(W("ddsrc"));
		dst = open(W("x"), O_RDWR);
		if (dst < 0)
			die("open x");
		if (remap_result(dedupe(src, dlen, dst, &di), "FIDEDUPERANGE from a tagged file")) {
			CHECK(di.status == FILE_DEDUPE_RANGE_SAME && di.bytes_deduped == dlen,
			      "dedupe from a tagged file: status %d, %llu bytes", di.status,
			      (unsigned long long)di.bytes_deduped);
			verify_file_bytes(W("x"), same, size);
			CHECK(tflags("ddsrc") & CID_QUERY_TAGGED, "the dedupe source keeps its tag");
			verify_path(W("ddsrc"), size, seed);
		}
		close(src), close(dst);
	}
	/*
	 * FIDEDUPERANGE into the tagged file: root may pass a read-only (so
	 * diverted) destination, which takes no write access; a dedupe never
	 * changes the bytes, so the file must read the same, tagged or not.
	 */
	if (idle_tagged("dddst")) {
		int f;

		src = open_ro(W("x"));
		dst = open_ro(W("dddst"));
		if (remap_result(dedupe(src, dlen, dst, &di), "FIDEDUPERANGE into a tagged file")) {
			CHECK(di.status == FILE_DEDUPE_RANGE_SAME && di.bytes_deduped == dlen,
			      "dedupe of equal bytes into a tagged file: status %d, %llu bytes",
			      di.status, (unsigned long long)di.bytes_deduped);
			close(src);
			src = open_ro(W("y"));
			CHECK(!dedupe(src, dlen, dst, &di) && di.status == FILE_DEDUPE_RANGE_DIFFERS,
			      "dedupe of other bytes into a tagged file: DIFFERS (status %d)", di.status);
			close(dst);
			dst = -1;
			f = tflags("dddst");
			diag("after the dedupe into it the file is %s", qflags_str(f));
			CHECK(verify_path(W("dddst"), size, seed), "the dedupe destination reads its bytes");
			drop_caches();
			CHECK(verify_path(W("dddst"), size, seed), "cold too");
			verify_path(W("b"), size, seed);
		}
		close(src);
		if (dst >= 0)
			close(dst);
	}
	/* copy_file_range from the tagged file, then onto it. */
	if (idle_tagged("cfsrc")) {
		src = open_ro(W("cfsrc"));
		unlink(T("cfnew"));
		dst = open_w(W("cfnew"), O_CREAT);
		if (dst >= 0) {
			copy_range(src, dst, "copy_file_range from a tagged file");
			close(dst);
			verify_file_bytes(W("cfnew"), same, size);
		}
		close(src);
		CHECK(tflags("cfsrc") & CID_QUERY_TAGGED, "the copy's source keeps its tag");
		verify_path(W("cfsrc"), size, seed);
	}
	if (idle_tagged("cfdst")) {
		src = open_ro(W("y"));
		dst = open_w(W("cfdst"), 0);
		if (dst >= 0) {
			copy_range(src, dst, "copy_file_range onto a tagged file");
			close(dst);
			after_change("cfdst", other, "copy_file_range onto");
		}
		close(src);
	}
	/* Punch a hole (KEEP_SIZE) into the tagged file. */
	if (idle_tagged("punch")) {
		dst = open_w(W("punch"), 0);
		if (dst >= 0) {
			if (fallocate(dst, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 64 * KiB, 128 * KiB)) {
				CHECK(0, "punch hole into a tagged file: %m");
			} else {
				uint8_t *want = pattern_buf(seed, size);

				memset(want + 64 * KiB, 0, 128 * KiB);
				close(dst);
				dst = -1;
				after_change("punch", want, "punch hole");
				free(want);
			}
			if (dst >= 0)
				close(dst);
		}
	}
	free(same);
	free(other);
	{
		static const char *files[] = { "b", "y", "x", "busy", "clsrc", "clnew", "cldst",
					       "ddsrc", "dddst", "cfsrc", "cfnew", "cfdst", "punch" };

		for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
			unlink(T(files[i]));
	}
}

/* ---------------------------------------------------------------------- */
/* Immutable and append-only flags, before and after the tag. */

static int get_iflags(const char *path, int *flags)
{
	int fd = open(path, O_RDONLY), r;

	if (fd < 0)
		return -errno;
	r = ioctl(fd, FS_IOC_GETFLAGS, flags) ? -errno : 0;
	close(fd);
	return r;
}

/* Sets (on) or clears fl through fd or, if fd < 0, a new read-only open of path. */
static bool set_iflag(const char *path, int fd, int fl, bool on)
{
	int own = fd < 0 ? open(path, O_RDONLY) : fd, f = 0, r = -1;

	if (own >= 0 && !ioctl(own, FS_IOC_GETFLAGS, &f)) {
		f = on ? f | fl : f & ~fl;
		r = ioctl(own, FS_IOC_SETFLAGS, &f);
	}
	CHECK(r == 0, "%s %s on %s: %m", on ? "set" : "clear",
	      fl == FS_IMMUTABLE_FL ? "immutable" : "append-only", path);
	if (fd < 0 && own >= 0)
		close(own);
	return r == 0;
}

static int open_errno(const char *path, int flags)
{
	int fd = open(path, flags);

	if (fd < 0)
		return errno;
	close(fd);
	return 0;
}

/* The writes an immutable file refuses: EPERM, never ETXTBSY. */
static void immutable_refuses(const char *name, const char *when)
{
	int e;

	e = open_errno(W(name), O_WRONLY);
	CHECK(e == EPERM, "%s: open O_WRONLY: EPERM expected, got %s", when, e ? strerror(e) : "success");
	e = open_errno(W(name), O_RDWR | O_APPEND);
	CHECK(e == EPERM, "%s: open O_RDWR|O_APPEND: EPERM expected, got %s", when,
	      e ? strerror(e) : "success");
	CHECK(truncate(W(name), 0) && errno == EPERM, "%s: truncate: EPERM (%m)", when);
	CHECK(unlink(W(name)) && errno == EPERM, "%s: unlink: EPERM (%m)", when);
}

static void case_iflags(void)
{
	static const char *files[] = { "im", "ap", "sim", "sap", "b" };
	uint8_t *want;
	int f, fd, e;

	if (!fresh("probe", seed ^ 1, false))
		return;
	e = get_iflags(W("probe"), &f);
	unlink(T("probe"));
	if (e)
		skip_case("FS_IOC_GETFLAGS on %s: %s (%s)", fs, strerror(-e),
			  fuse ? "cid-fuse, like libfuse's passthrough example, implements no ioctl"
			       : "no inode flags");
	if (!fresh("b", seed, true))
		return;

	/* 1. Tag, then immutable (set through a diverted open). */
	if (idle_tagged("im")) {
		fd = open_ro(W("im"));
		if (set_iflag(W("im"), fd, FS_IMMUTABLE_FL, true)) {
			diag("tagged, then immutable: %s", qflags_str(tflags("im")));
			immutable_refuses("im", "immutable with a reader");
			CHECK(verify_read(fd, size, seed, "immutable tagged file"), "reads right");
			close(fd);
			fd = -1;
			immutable_refuses("im", "immutable, idle");
			if (!ovl)
				CHECK(tflags("im") & CID_QUERY_TAGGED,
				      "refused writes leave the tag (%s)", qflags_str(tflags("im")));
			verify_path(W("im"), size, seed);
			set_iflag(W("im"), -1, FS_IMMUTABLE_FL, false);
			fd = open(W("im"), O_WRONLY);
			CHECK(fd >= 0 && pwrite(fd, "IMMU", 4, 0) == 4,
			      "after clearing immutable a write works: %m");
			if (fd >= 0)
				close(fd);
			fd = -1;
			want = pattern_buf(seed, size);
			memcpy(want, "IMMU", 4);
			after_change("im", want, "write after clearing immutable");
			free(want);
		}
		if (fd >= 0)
			close(fd);
	}

	/* 2. Tag, then append-only. */
	if (idle_tagged("ap")) {
		fd = open_ro(W("ap"));
		if (set_iflag(W("ap"), fd, FS_APPEND_FL, true)) {
			e = open_errno(W("ap"), O_WRONLY);
			CHECK(e == EPERM, "append-only: open O_WRONLY: EPERM expected, got %s",
			      e ? strerror(e) : "success");
			CHECK(truncate(W("ap"), 0) && errno == EPERM, "append-only: truncate: EPERM (%m)");
			e = open_errno(W("ap"), O_WRONLY | O_APPEND);
			if (ovl)
				diag("ovl: O_APPEND open with a reader: %s", e ? strerror(e) : "works (copy-up)");
			else
				CHECK(e == ETXTBSY, "append-only, in use: O_APPEND open: ETXTBSY expected, got %s",
				      e ? strerror(e) : "success");
			CHECK(verify_read(fd, size, seed, "append-only tagged file"), "reads right");
			close(fd);
			fd = open(W("ap"), O_WRONLY | O_APPEND);
			CHECK(fd >= 0 && write(fd, "APPENDED", 8) == 8,
			      "append-only, idle: O_APPEND open and write work: %m");
			if (fd >= 0)
				close(fd);
			fd = -1;
			{
				struct stat st;

				CHECK(!stat(W("ap"), &st) && (uint64_t)st.st_size == size + 8,
				      "the append grew the file");
			}
			want = pattern_buf(seed, size + 8);
			memcpy(want + size, "APPENDED", 8);
			verify_file_bytes(W("ap"), want, size + 8);
			drop_caches();
			CHECK(verify_file_bytes(W("ap"), want, size + 8), "the appended file reads right cold");
			if (!ovl)
				CHECK(tflags("ap") == 0, "the append dropped the tag (%s)", qflags_str(tflags("ap")));
			verify_path(W("b"), size, seed);
			free(want);
			set_iflag(W("ap"), -1, FS_APPEND_FL, false);
			CHECK(!truncate(W("ap"), size), "cleared: truncate works: %m");
			verify_path(W("ap"), size, seed);
		}
		if (fd >= 0)
			close(fd);
	}

	/* 3. Immutable, then tagged; 4. append-only, then tagged. */
	if (ovl) {
		diag("ovl: flags set through the merged view copy the file up, which is then not the tagged"
		     " lower file: set-then-tag not run");
	} else {
		if (fresh("sim", seed, false) && set_iflag(W("sim"), -1, FS_IMMUTABLE_FL, true)) {
			if (tag_ok(T("sim"))) {
				CHECK(same_content(T("sim"), T("b")), "an immutable file tags to its twin's content");
				frames_shared(W("sim"), W("b"), size, "the immutable tagged file and its twin");
				verify_path(W("sim"), size, seed);
				immutable_refuses("sim", "immutable, then tagged");
			}
			set_iflag(W("sim"), -1, FS_IMMUTABLE_FL, false);
			fd = open(W("sim"), O_WRONLY);
			CHECK(fd >= 0, "cleared: a write-open works: %m");
			if (fd >= 0)
				close(fd);
			CHECK(tflags("sim") == 0, "the write-open dropped the tag");
		}
		if (fresh("sap", seed, false) && set_iflag(W("sap"), -1, FS_APPEND_FL, true)) {
			if (tag_ok(T("sap"))) {
				CHECK(same_content(T("sap"), T("b")), "an append-only file tags to its twin's content");
				verify_path(W("sap"), size, seed);
				e = open_errno(W("sap"), O_WRONLY);
				CHECK(e == EPERM, "append-only, then tagged: O_WRONLY: EPERM, got %s",
				      e ? strerror(e) : "success");
				fd = open(W("sap"), O_WRONLY | O_APPEND);
				CHECK(fd >= 0 && write(fd, "Z", 1) == 1, "idle: O_APPEND write works: %m");
				if (fd >= 0)
					close(fd);
				CHECK(tflags("sap") == 0, "the append dropped the tag");
			}
			set_iflag(W("sap"), -1, FS_APPEND_FL, false);
		}
	}
	verify_path(W("b"), size, seed);
	/* Never leave a file that cannot be removed. */
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		if (!get_iflags(W(files[i]), &f) && (f & (FS_IMMUTABLE_FL | FS_APPEND_FL))) {
			fd = open(W(files[i]), O_RDONLY);
			f &= ~(FS_IMMUTABLE_FL | FS_APPEND_FL);
			if (fd >= 0) {
				ioctl(fd, FS_IOC_SETFLAGS, &f);
				close(fd);
			}
		}
		unlink(W(files[i]));
	}
}

/* ---------------------------------------------------------------------- */
/* FIEMAP and SEEK_DATA/SEEK_HOLE answer for the file's own layout. */

#define FM_MAX 64
struct fmap { struct fiemap m; struct fiemap_extent e[FM_MAX]; };

/* FIEMAP of fd; -errno or the number of extents. */
static int fiemap_fd(int fd, struct fmap *f)
{
	memset(f, 0, sizeof(*f));
	f->m.fm_length = FIEMAP_MAX_OFFSET;
	f->m.fm_flags = FIEMAP_FLAG_SYNC;
	f->m.fm_extent_count = FM_MAX;
	if (ioctl(fd, FS_IOC_FIEMAP, &f->m))
		return -errno;
	return (int)f->m.fm_mapped_extents;
}

static bool same_fiemap(const struct fmap *a, const struct fmap *b)
{
	if (a->m.fm_mapped_extents != b->m.fm_mapped_extents)
		return false;
	for (unsigned int i = 0; i < a->m.fm_mapped_extents; i++)
		if (a->e[i].fe_logical != b->e[i].fe_logical ||
		    a->e[i].fe_physical != b->e[i].fe_physical ||
		    a->e[i].fe_length != b->e[i].fe_length ||
		    a->e[i].fe_flags != b->e[i].fe_flags)
			return false;
	return true;
}

/* The sparse file: data, a hole of HOLE_LEN, data to EOF. */
#define HOLE_AT (64 * KiB)
#define HOLE_LEN (2 * MiB - 64 * KiB)
#define SPARSE_SIZE (2 * MiB + 100 * KiB + 1234)

static uint8_t *sparse_bytes(void)
{
	uint8_t *p = pattern_buf(seed, SPARSE_SIZE);

	memset(p + HOLE_AT, 0, HOLE_LEN);
	return p;
}

/* Writes the sparse file's bytes to path; the hole is a hole unless dense. */
static void make_sparse(const char *path, bool dense)
{
	uint8_t *p = sparse_bytes();
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);

	if (fd < 0)
		die("create %s", path);
	if (pwrite(fd, p, HOLE_AT, 0) != HOLE_AT ||
	    (dense && pwrite(fd, p + HOLE_AT, HOLE_LEN, HOLE_AT) != HOLE_LEN) ||
	    pwrite(fd, p + HOLE_AT + HOLE_LEN, SPARSE_SIZE - HOLE_AT - HOLE_LEN, HOLE_AT + HOLE_LEN) !=
	    (ssize_t)(SPARSE_SIZE - HOLE_AT - HOLE_LEN) || fsync(fd) || close(fd))
		die("write %s", path);
	free(p);
}

static const off_t seek_at[] = { 0, HOLE_AT - 1, HOLE_AT, 1 * MiB, HOLE_AT + HOLE_LEN, SPARSE_SIZE - 1 };
#define NSEEK (sizeof(seek_at) / sizeof(seek_at[0]))

static void seeks(const char *path, off_t out[2][NSEEK])
{
	int fd = open_ro(path);

	for (size_t i = 0; i < NSEEK; i++) {
		out[0][i] = lseek(fd, seek_at[i], SEEK_DATA);
		out[1][i] = lseek(fd, seek_at[i], SEEK_HOLE);
	}
	close(fd);
}

static void case_layout(void)
{
	off_t before[2][NSEEK], after[2][NSEEK], dense[2][NSEEK];
	struct fmap fa, fa2, fb;
	uint8_t *want;
	int fd, n;

	/* FIEMAP of a file before and after its tag, and of its twin. */
	if (!fresh("a", seed, false) || !fresh("b", seed, true))
		return;
	fd = open_ro(W("a"));
	n = fiemap_fd(fd, &fa);
	close(fd);
	if (n == -EOPNOTSUPP || n == -ENOTTY) {
		diag("FIEMAP on %s: %s: not supported, FIEMAP not checked", fs, strerror(-n));
	} else if (CHECK(n > 0, "FIEMAP of the untagged file: %d", n)) {
		if (tag_ok(T("a"))) {
			void *m;

			fd = open_ro(W("a"));
			if (!ovl)
				CHECK(query_flags(W("a")) & CID_QUERY_SHARED, "the tagged file is diverted");
			m = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
			touch_pages(m, size);
			n = fiemap_fd(fd, &fa2);
			CHECK(n > 0 && same_fiemap(&fa, &fa2),
			      "FIEMAP of the tagged, diverted, mapped file is its own untagged layout "
			      "(%d extents, first at %llu; untagged %u, first at %llu)",
			      n, (unsigned long long)fa2.e[0].fe_physical, fa.m.fm_mapped_extents,
			      (unsigned long long)fa.e[0].fe_physical);
			munmap(m, size);
			close(fd);
			fd = open_ro(W("b"));
			n = fiemap_fd(fd, &fb);
			close(fd);
			CHECK(n > 0 && fb.e[0].fe_physical != fa2.e[0].fe_physical,
			      "the twin's FIEMAP shows its own blocks");
		}
	}
	unlink(T("a"));

	/* SEEK_DATA/SEEK_HOLE of a sparse file, before and after its tag. */
	unlink(T("sp")), unlink(T("dn"));
	make_sparse(T("sp"), false);
	make_sparse(T("dn"), true);
	seeks(W("sp"), before);
	diag("sparse file: SEEK_HOLE(0) %lld, SEEK_DATA(%lu) %lld", (long long)before[1][0],
	     (unsigned long)HOLE_AT, (long long)before[0][2]);
	CHECK(before[1][0] < (off_t)(HOLE_AT + HOLE_LEN), "the sparse file has its hole (SEEK_HOLE(0) %lld)",
	      (long long)before[1][0]);
	if (!tag_ok(T("sp")) || !tag_ok(T("dn")))
		goto out;
	CHECK(same_content(T("sp"), T("dn")), "a sparse file and its dense twin have one content");
	seeks(W("sp"), after);
	for (size_t i = 0; i < NSEEK; i++)
		CHECK(after[0][i] == before[0][i] && after[1][i] == before[1][i],
		      "at %lld: SEEK_DATA %lld, SEEK_HOLE %lld tagged; %lld, %lld untagged",
		      (long long)seek_at[i], (long long)after[0][i], (long long)after[1][i],
		      (long long)before[0][i], (long long)before[1][i]);
	seeks(W("dn"), dense);
	CHECK(dense[1][0] == SPARSE_SIZE, "the dense twin has no hole (SEEK_HOLE(0) %lld)",
	      (long long)dense[1][0]);
	want = sparse_bytes();
	drop_caches();
	CHECK(verify_file_bytes(W("sp"), want, SPARSE_SIZE), "the sparse tagged file reads right cold");
	CHECK(verify_file_bytes(W("dn"), want, SPARSE_SIZE), "its dense twin too");
	frames_shared(W("sp"), W("dn"), SPARSE_SIZE, "sparse and dense twins");
	{
		uint8_t *ms = map_file(W("sp"), SPARSE_SIZE, PROT_READ, MAP_SHARED, NULL);

		CHECK(!memcmp(ms, want, SPARSE_SIZE), "the sparse mapping reads right");
		munmap(ms, SPARSE_SIZE);
	}
	free(want);
	seeks(W("sp"), after);
	CHECK(after[1][0] == before[1][0], "SEEK_HOLE after the reads still finds the hole");
out:
	unlink(T("sp")), unlink(T("dn")), unlink(T("b"));
}

/* ---------------------------------------------------------------------- */
/* A lazy unmount under a live diverted mapping. */

static const char *const gauges[] = {
	"contents", "tagged_inodes", "backing_files", "pages_shared", "pages_sharing",
	"metadata_bytes", "digest_bytes",
};
#define NGAUGES (sizeof(gauges) / sizeof(gauges[0]))

static void read_gauges(long long v[NGAUGES])
{
	for (size_t i = 0; i < NGAUGES; i++)
		v[i] = cid_stat(gauges[i]);
}

/*
 * The gauges once caches are dropped and they stopped moving: frees after
 * an RCU grace period (digests, tags) trail drop_caches.  true if two
 * readings 300 ms apart agreed within ten tries.
 */
static bool settled_gauges(long long v[NGAUGES])
{
	long long prev[NGAUGES];

	drop_caches();
	read_gauges(prev);
	for (int tries = 0; tries < 10; tries++) {
		msleep(300);
		drop_caches();
		read_gauges(v);
		if (!memcmp(prev, v, sizeof(prev)))
			return true;
		memcpy(prev, v, sizeof(prev));
	}
	return false;
}

/* The source of the mount at mnt ("" if not mounted). */
static const char *mount_source(const char *mnt)
{
	static char src[256];
	char line[1024], mp[512], s[256];
	FILE *f = fopen("/proc/self/mountinfo", "r");

	src[0] = 0;
	if (!f)
		return src;
	while (fgets(line, sizeof(line), f)) {
		char *dash = strstr(line, " - ");

		if (sscanf(line, "%*s %*s %*s %*s %511s", mp) == 1 && !strcmp(mp, mnt) && dash &&
		    sscanf(dash + 3, "%*s %255s", s) == 1)
			snprintf(src, sizeof(src), "%s", s);
	}
	fclose(f);
	return src;
}

static void case_detach(const char *mnt)
{
	long long pre[NGAUGES], now[NGAUGES];
	char dev[256];
	uint8_t *ma, *mb;
	int fd, tries;
	bool same;

	if (!settled_gauges(pre))
		diag("the gauges did not settle before the case");
	snprintf(dev, sizeof(dev), "%s", mount_source(mnt));
	if (!CHECK(dev[0], "%s is not mounted", mnt))
		return;
	if (!fresh("a", seed, true) || !fresh("b", seed, true))
		return;
	fd = open_ro(W("a"));
	ma = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	mb = map_file(W("b"), size, PROT_READ, MAP_PRIVATE, NULL);
	if (ma == MAP_FAILED)
		die("mmap");
	touch_pages(ma, size / 2);	/* the rest is filled after the detach */
	CHECK(cid_stat("backing_files") > pre[2], "a backing file serves the mapping");
	CHECK(cid_stat("tagged_inodes") >= pre[1] + 2, "the twins are counted");

	CHECK(!umount2(mnt, MNT_DETACH), "umount2(%s, MNT_DETACH): %m", mnt);
	CHECK(!mount_source(mnt)[0], "%s is gone from the mount table", mnt);
	drop_caches();
	CHECK(verify_map(ma, size, seed, "shared mapping after the lazy unmount"),
	      "the diverted mapping reads right after the lazy unmount, also pages filled after it");
	CHECK(verify_map(mb, size, seed, "private mapping of the twin"), "the twin's private mapping too");
	CHECK(verify_read(fd, size, seed, "fd after the lazy unmount"), "read() through the open fd too");
	munmap(ma, size);
	munmap(mb, size);
	close(fd);

	/* A block device is free once its filesystem is gone for good. */
	if (!strncmp(dev, "/dev/", 5)) {
		int b = -1;

		for (tries = 0; tries < 50 && b < 0; tries++) {
			b = open(dev, O_RDONLY | O_EXCL);
			if (b < 0)
				msleep(100);
		}
		CHECK(b >= 0, "the filesystem on %s was released (exclusive open: %m)", dev);
		if (b >= 0)
			close(b);
	}
	if (ovl) {
		/* The tags live on the lower files, which outlive the overlay. */
		unlink(T("a"));
		unlink(T("b"));
	}
	settled_gauges(now);
	same = !memcmp(pre, now, sizeof(pre));
	for (size_t i = 0; i < NGAUGES; i++)
		CHECK(now[i] == pre[i], "/sys/kernel/mm/cid/%s: %lld before, %lld after", gauges[i],
		      pre[i], now[i]);
	if (same)
		diag("all gauges back: contents %lld tagged_inodes %lld backing_files %lld pages_shared %lld",
		     now[0], now[1], now[2], now[3]);
}

/* ---------------------------------------------------------------------- */
/* Which memory cgroup pays for content pages. */

static long long memcg_file(const char *cg)
{
	char buf[8192], *p;

	if (!read_str(path_join(cg, "memory.stat"), buf, sizeof(buf)))
		die("read %s/memory.stat", cg);
	p = !strncmp(buf, "file ", 5) ? buf : strstr(buf, "\nfile ");
	if (!p)
		die("no file line in %s/memory.stat", cg);
	return atoll(p + (*p == '\n') + 5);
}

/* Reads path in full (verified) from a child in cgroup cg. */
static void read_in_cg(const char *cg, const char *path)
{
	pid_t pid = fork();
	int st;

	if (pid < 0)
		die("fork");
	if (!pid) {
		if (!write_str(path_join(cg, "cgroup.procs"), "0"))
			_exit(2);
		_exit(verify_path(path, size, seed) ? 0 : 1);
	}
	waitpid(pid, &st, 0);
	CHECK(WIFEXITED(st) && !WEXITSTATUS(st), "reader in %s: status 0x%x", cg, st);
}

static void case_memcg(void)
{
	char a[128], b[128];
	long long a0, a1, b0, b1, b2, quarter = (long long)size / 4;

	if (access("/sys/fs/cgroup/cgroup.controllers", F_OK))
		mount("none", "/sys/fs/cgroup", "cgroup2", 0, NULL);
	write_str("/sys/fs/cgroup/cgroup.subtree_control", "+memory");
	snprintf(a, sizeof(a), "/sys/fs/cgroup/cid-memcg-a-%d", (int)getpid());
	snprintf(b, sizeof(b), "/sys/fs/cgroup/cid-memcg-b-%d", (int)getpid());
	if ((mkdir(a, 0755) && errno != EEXIST) || (mkdir(b, 0755) && errno != EEXIST) ||
	    access(path_join(a, "memory.stat"), F_OK))
		skip_case("no cgroup2 memory controller in this guest: %m");
	if (!fresh("a", seed, true) || !fresh("b", seed, true) || !fresh("c", seed, false))
		goto out;
	drop_caches();

	a0 = memcg_file(a);
	read_in_cg(a, W("a"));
	a1 = memcg_file(a);
	b0 = memcg_file(b);
	read_in_cg(b, W("b"));
	b1 = memcg_file(b);
	read_in_cg(b, W("c"));
	b2 = memcg_file(b);
	diag("memory.stat file: first reader's memcg +%lld, tagged twin's reader +%lld, "
	     "untagged twin +%lld (file size %llu)", a1 - a0, b1 - b0, b2 - b1,
	     (unsigned long long)size);
	CHECK(a1 - a0 >= 2 * quarter, "the memcg whose read filled the content is charged for it (+%lld)",
	      a1 - a0);
	CHECK(a1 - a0 <= (long long)size + quarter,
	      "and only once: the fill leaves no second copy charged (+%lld)", a1 - a0);
	CHECK(b1 - b0 < quarter, "a second memcg reading a tagged twin is not charged again (+%lld)",
	      b1 - b0);
	CHECK(b2 - b1 >= 2 * quarter, "control: the same memcg pays for an untagged twin (+%lld)",
	      b2 - b1);
out:
	unlink(T("a")), unlink(T("b")), unlink(T("c"));
	drop_caches();
	rmdir(a);
	rmdir(b);
}

/* ---------------------------------------------------------------------- */

static uint64_t fnv(const char *s, uint64_t h)
{
	while (*s)
		h = (h ^ (uint8_t)*s++) * 0x100000001b3ULL;
	return h;
}

int main(int argc, char **argv)
{
	const char *c, *e;

	if (argc < 4) {
		fprintf(stderr, "usage: cidops CASE FS WDIR [TDIR [MNT]]\n");
		return CASE_FAIL;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (getenv("CID_TEST_SIZE"))
		size = strtoull(getenv("CID_TEST_SIZE"), NULL, 0);
	e = getenv("CID_CASE_TIMEOUT");
	if (e)
		case_secs = atoi(e);
	signal(SIGALRM, on_alarm);
	alarm(case_secs);
	c = argv[1];
	fs = argv[2];
	ovl = !strcmp(fs, "ovl");
	fuse = !strcmp(fs, "fuse");
	reflink = !strcmp(fs, "xfs") || !strcmp(fs, "btrfs");
	seed = fnv(c, fnv(fs, 0xcbf29ce484222325ULL)) ^ 0x0b5;
	snprintf(wdir, sizeof(wdir), "%s/%s", argv[3], c);
	snprintf(tdir, sizeof(tdir), "%s/%s", argc > 4 ? argv[4] : argv[3], c);
	if (!cid_sysfs_present())
		return CASE_NOKERNEL;
	mkdir_p(tdir);
	if (!strcmp(c, "uring_cold"))
		case_uring_cold();
	else if (!strcmp(c, "uring_fixed"))
		case_uring_fixed();
	else if (!strcmp(c, "remap"))
		case_remap();
	else if (!strcmp(c, "iflags"))
		case_iflags();
	else if (!strcmp(c, "layout"))
		case_layout();
	else if (!strcmp(c, "detach") && argc == 6)
		case_detach(argv[5]);
	else if (!strcmp(c, "memcg"))
		case_memcg();
	else
		die("unknown case or arguments: %s", c);
	return cid_failures ? CASE_FAIL : CASE_PASS;
}
