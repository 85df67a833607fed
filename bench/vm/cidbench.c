// SPDX-License-Identifier: GPL-2.0
/*
 * cidbench: the in-guest half of bench/vm (named merging, issue 3).
 *
 *   cidbench probe                 exit 0 if the kernel has named merging
 *   cidbench tag DIR|FILE...       CID_IOC_TAG every regular file below
 *   cidbench read DIR|FILE...      read every regular file below in full
 *   cidbench query FILE            print CID_IOC_QUERY of a fresh open
 *   cidbench perf NAME FILE [NAME FILE]...
 *                                  cached read MiB/s, mmap fault ns/page,
 *                                  open+close and open+pread+close ns, for
 *                                  warm files measured alternately; files
 *                                  given one NAME are averaged
 *   cidbench cold NAME FILE [NAME FILE]...
 *                                  sequential read MiB/s from a dropped cache
 *                                  (a tagged file's fill: its source read,
 *                                  copied and verified), alternately, median
 *                                  of COLD_ROUNDS per file, mean per NAME
 *   cidbench frames NAME FILE...   share of FILEs' cached pages in large folios
 *   cidbench atomic                ns per locked read-modify-write (what a
 *                                  spin_lock() or atomic_inc() costs), per
 *                                  plain one, per call+return (direct and
 *                                  through a pointer), on this CPU or emulator
 *
 * Output lines are "key value" pairs the host script turns into a table.
 * Statically linked; needs only the UAPI header from the kernel series.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <linux/cid.h>

static unsigned long long n_files, n_bytes, n_errors, n_tagged;
static char *buf;
#define BUFSZ (128 * 1024)

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Room for the buffer at any of PLACEMENTS page offsets. */
#define PLACEMENTS 8

static int read_into(const char *path, char *to)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	while ((n = read(fd, to, BUFSZ)) > 0)
		n_bytes += n;
	close(fd);
	return n < 0 ? -errno : 0;
}

static int read_all(const char *path)
{
	return read_into(path, buf);
}

static unsigned long long n_tag_bytes;

static int tag_one(const char *path)
{
	struct cid_tag t;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int ret = 0;

	if (fd < 0)
		return -errno;
	memset(&t, 0, sizeof(t));
	if (ioctl(fd, CID_IOC_TAG, &t) < 0) {
		ret = -errno;
	} else {
		n_tagged++;
		n_tag_bytes += t.size;
	}
	close(fd);
	return ret;
}

static int (*walk_fn)(const char *);

static int walk_cb(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	int ret;

	(void)ftw;
	if (type != FTW_F || !S_ISREG(st->st_mode))
		return 0;
	n_files++;
	ret = walk_fn(path);
	if (ret < 0 && n_errors++ < 5)
		fprintf(stderr, "cidbench: %s: %s\n", path, strerror(-ret));
	return 0;
}

static int walk(int argc, char **argv, int (*fn)(const char *))
{
	walk_fn = fn;
	for (int i = 0; i < argc; i++)
		if (nftw(argv[i], walk_cb, 64, FTW_PHYS) < 0) {
			perror(argv[i]);
			return 1;
		}
	return 0;
}

static int probe(void)
{
	struct cid_query q;
	int fd = open("/proc/self/exe", O_RDONLY);
	int ret;

	if (access("/sys/kernel/mm/cid", F_OK) == 0)
		return 0;
	/* No sysfs dir: ask the ioctl (ENOTTY means no such ioctl). */
	ret = ioctl(fd, CID_IOC_QUERY, &q);
	return ret == 0 || errno != ENOTTY ? 0 : 1;
}

static int query(const char *path)
{
	struct cid_query q;
	int fd = open(path, O_RDONLY);

	if (fd < 0 || ioctl(fd, CID_IOC_QUERY, &q) < 0) {
		printf("query_error %s\n", strerror(errno));
		return 1;
	}
	printf("flags %s%s\ncontent_pages %llu\ncontent_users %llu\ntagged_inodes %llu\n",
	       q.flags & CID_QUERY_TAGGED ? "tagged" : "untagged",
	       q.flags & CID_QUERY_SHARED ? ",shared" : "",
	       (unsigned long long)q.content_pages,
	       (unsigned long long)q.content_users,
	       (unsigned long long)q.tagged_inodes);
	close(fd);
	return 0;
}

/*
 * One measurement of one file; returns the figure (higher is better for
 * read, lower for the rest).  @place moves the read buffer and the mapping
 * by that many pages.  Under TCG the cost of touching a page depends on
 * where its frame and the user page it is copied to or mapped at fall in
 * QEMU's direct-mapped software TLB: two untagged copies of one file have
 * read 56 and 290 MiB/s with one buffer address.  Every file is measured
 * at every placement, so a file is not judged by its frames' luck.
 */
static double measure(int metric, const char *path, off_t size, int place)
{
	long psz = sysconf(_SC_PAGESIZE);
	double t0;
	int fd, i;

	switch (metric) {
	case 0:	/* cached sequential read, MiB/s */
		n_bytes = 0;
		t0 = now();
		read_into(path, buf + place * psz);
		return size / (now() - t0) / (1 << 20);
	case 1: {	/* mmap read faults on cached pages, ns per page */
		size_t span = size + PLACEMENTS * psz;
		volatile const char *p;
		unsigned long sum = 0;
		char *area;

		/* A fresh mapping; fault-around included, as applications see it. */
		fd = open(path, O_RDONLY);
		area = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		p = area == MAP_FAILED ? MAP_FAILED :
			mmap(area + place * psz, size, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
		if (fd < 0 || p == MAP_FAILED) {
			perror(path);
			exit(1);
		}
		t0 = now();
		for (off_t off = 0; off < size; off += psz)
			sum += p[off];
		t0 = now() - t0;
		munmap(area, span);
		close(fd);
		(void)sum;
		return t0 * 1e9 / (size / psz);
	}
	case 2:	/* open + close, ns */
	case 3:	/* open + 4 KiB pread + close, ns */
		t0 = now();
		for (i = 0; i < 2000; i++) {
			fd = open(path, O_RDONLY);
			if (fd < 0) {
				perror(path);
				exit(1);
			}
			if (metric == 3 && pread(fd, buf, 4096, (off_t)(i % 64) << 12) != 4096) {
				perror(path);
				exit(1);
			}
			close(fd);
		}
		return (now() - t0) * 1e9 / 2000;
	}
	return 0;
}

/* Sizes of the FILEs of NAME FILE pairs; -1 if one cannot be stat'ed. */
static int pair_sizes(int nf, char **args, off_t *size)
{
	for (int f = 0; f < nf; f++) {
		struct stat st;

		if (stat(args[2 * f + 1], &st) < 0) {
			perror(args[2 * f + 1]);
			return -1;
		}
		size[f] = st.st_size;
	}
	return 0;
}

/* "NAME_METRIC mean" once per NAME, the mean of v[] over its files. */
static void print_by_name(int nf, char **args, const double *v, const char *metric, int prec)
{
	for (int f = 0; f < nf; f++) {
		double sum = 0;
		int g, k = 0;

		for (g = 0; g < f && strcmp(args[2 * g], args[2 * f]); g++)
			;
		if (g < f)	/* printed with the first file of its name */
			continue;
		for (g = f; g < nf; g++) {
			if (!strcmp(args[2 * g], args[2 * f])) {
				sum += v[g];
				k++;
			}
		}
		printf("%s_%s %.*f\n", args[2 * f], metric, prec, sum / k);
	}
}

/*
 * perf NAME FILE [NAME FILE]...: every metric for every file, the files
 * measured alternately round after round, so that drift in the guest's
 * speed (TCG) hits them alike, each placement twice; the best of the
 * ROUNDS rounds counts.  One line per NAME: the mean of its files' bests.
 * Placements move only the user side; several files of distinct contents
 * under one NAME spread the luck of where the page-cache frames fall.
 */
#define ROUNDS (2 * PLACEMENTS)

static int perf(int n, char **args)
{
	static const char *const metrics[] = {
		"read_MiBps", "mmap_fault_ns_per_page", "open_close_ns",
		"open_read4k_close_ns",
	};
	double best[4][8];
	off_t size[8];
	int m, f, round, nf = n / 2;

	if (n % 2 || nf < 1 || nf > 8)
		return 2;
	if (pair_sizes(nf, args, size))
		return 1;
	for (f = 0; f < nf; f++) {
		if (size[f] < (256 << 10)) {
			fprintf(stderr, "%s: %lld bytes; perf needs at least 256 KiB\n",
				args[2 * f + 1], (long long)size[f]);
			return 1;
		}
		/* Warm the cache (for a tagged file: the shared content cache). */
		if (read_all(args[2 * f + 1]) < 0) {
			perror(args[2 * f + 1]);
			return 1;
		}
	}
	for (m = 0; m < 4; m++) {
		for (f = 0; f < nf; f++)
			best[m][f] = m ? 1e18 : 0;
		for (round = 0; round < ROUNDS; round++) {
			for (f = 0; f < nf; f++) {
				/* Alternate which file goes first. */
				int g = (f + round) % nf;
				double v = measure(m, args[2 * g + 1], size[g],
						   round % PLACEMENTS);

				if (m ? v < best[m][g] : v > best[m][g])
					best[m][g] = v;
			}
		}
		print_by_name(nf, args, best[m], metrics[m], m ? 0 : 1);
	}
	return 0;
}

static void drop_caches(void)
{
	int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);

	sync();
	if (fd < 0 || write(fd, "3", 1) != 1) {
		perror("/proc/sys/vm/drop_caches");
		exit(1);
	}
	close(fd);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/*
 * cold NAME FILE [NAME FILE]...: each round drops every cache and reads
 * every file once in full, the files in turn (alternating who goes first);
 * the median of a file's rounds counts, and the mean of its NAME's files
 * is printed as NAME_cold_read_MiBps.  For a tagged file this is a fill:
 * its own file is read into its page cache, copied into the content,
 * verified block by block against the digests of the tag, and dropped.
 */
#define COLD_ROUNDS 5

static int cold(int n, char **args)
{
	double v[8][COLD_ROUNDS], med[8];
	off_t size[8];
	int f, round, nf = n / 2;

	if (n % 2 || nf < 1 || nf > 8)
		return 2;
	if (pair_sizes(nf, args, size))
		return 1;
	for (round = 0; round < COLD_ROUNDS; round++) {
		for (f = 0; f < nf; f++) {
			int g = (f + round) % nf;
			double t0;

			drop_caches();
			t0 = now();
			if (read_all(args[2 * g + 1]) < 0) {
				perror(args[2 * g + 1]);
				return 1;
			}
			v[g][round] = size[g] / (now() - t0) / (1 << 20);
		}
	}
	for (f = 0; f < nf; f++) {
		qsort(v[f], COLD_ROUNDS, sizeof(double), cmp_double);
		med[f] = v[f][COLD_ROUNDS / 2];
	}
	print_by_name(nf, args, med, "cold_read_MiBps", 1);
	return 0;
}

/*
 * atomic: what one locked read-modify-write (x86 "lock xadd", as in
 * spin_lock() and atomic_inc()) costs against a plain increment of memory,
 * and what a call and return of a function that is not inlined cost,
 * direct and through a pointer (as file->f_op->release() is):
 * single-threaded, uncontended, best of 16 runs of 1M operations.  On a
 * CPU each is a few nanoseconds at most; TCG runs a locked operation
 * through a helper when the guest has several vCPUs, and looks up its
 * translation of the code a return or an indirect call lands on.
 */
static volatile unsigned long word;

static __attribute__((noinline)) void bump(void)
{
	word = word + 1;
	__asm__ volatile("" ::: "memory");
}

static void (*volatile bump_ptr)(void) = bump;

static int atomic_cost(void)
{
	static const char *const names[] = {
		"atomic_rmw_ns", "plain_rmw_ns", "call_ret_ns", "indirect_call_ret_ns",
	};
	double best[4] = { 1e18, 1e18, 1e18, 1e18 };
	const long n = 1 << 20;

	for (int round = 0; round < 16; round++) {
		for (int k = 0; k < 4; k++) {
			double t0 = now(), t;

			switch (k) {
			case 0:
				for (long i = 0; i < n; i++)
					__atomic_fetch_add(&word, 1, __ATOMIC_SEQ_CST);
				break;
			case 1:
				for (long i = 0; i < n; i++)
					word = word + 1;
				break;
			case 2:
				for (long i = 0; i < n; i++)
					bump();
				break;
			case 3:
				for (long i = 0; i < n; i++)
					bump_ptr();
				break;
			}
			t = now() - t0;
			if (t < best[k])
				best[k] = t;
		}
	}
	for (int k = 0; k < 4; k++)
		printf("%s %.1f\n", names[k], best[k] * 1e9 / n);
	return 0;
}

/*
 * frames NAME FILE...: what the page cache holds behind each FILE, from
 * /proc/self/pagemap and /proc/kpageflags (root only): the share of its
 * pages that sit in large folios, and how many runs of physically
 * contiguous frames 1000 pages make.  Shows that a tagged file's content
 * got the large folios named merging asks for.
 */
static int frames(int n, char **args)
{
	long psz = sysconf(_SC_PAGESIZE);
	double runs = 0, large = 0, pages = 0;
	int pm = open("/proc/self/pagemap", O_RDONLY);
	int kf = open("/proc/kpageflags", O_RDONLY);

	if (pm < 0 || kf < 0) {
		perror(pm < 0 ? "/proc/self/pagemap" : "/proc/kpageflags");
		return 1;
	}
	for (int f = 1; f < n; f++) {
		struct stat st;
		uint64_t *ent, prev = 0;
		size_t np;
		char *p;
		int fd = open(args[f], O_RDONLY);

		if (fd < 0 || fstat(fd, &st) < 0) {
			perror(args[f]);
			return 1;
		}
		np = st.st_size / psz;
		p = mmap(NULL, np * psz, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
		ent = calloc(np, sizeof(*ent));
		if (p == MAP_FAILED || !ent ||
		    pread(pm, ent, np * sizeof(*ent), (uintptr_t)p / psz * sizeof(*ent)) !=
		    (ssize_t)(np * sizeof(*ent))) {
			perror(args[f]);
			return 1;
		}
		for (size_t i = 0; i < np; i++) {
			uint64_t pfn = ent[i] & ((1ULL << 55) - 1), flags = 0;

			if (!(ent[i] >> 63) || !pfn) {
				fprintf(stderr, "%s: page %zu not present or no PFN\n", args[f], i);
				return 1;
			}
			if (!i || pfn != prev + 1)
				runs++;
			prev = pfn;
			/* KPF_COMPOUND_HEAD 15, KPF_COMPOUND_TAIL 16 */
			if (pread(kf, &flags, sizeof(flags), pfn * sizeof(flags)) != sizeof(flags)) {
				perror("/proc/kpageflags");
				return 1;
			}
			large += !!(flags & (3ULL << 15));
		}
		pages += np;
		munmap(p, np * psz);
		free(ent);
		close(fd);
	}
	printf("%s_large_folio_pages_pct %.1f\n", args[0], large * 100 / pages);
	printf("%s_frame_runs_per_1000_pages %.1f\n", args[0], runs * 1000 / pages);
	return 0;
}

int main(int argc, char **argv)
{
	int ret;

	buf = aligned_alloc(4096, BUFSZ + PLACEMENTS * 4096);
	if (argc < 2 || !buf)
		goto usage;
	if (!strcmp(argv[1], "probe"))
		return probe();
	if (!strcmp(argv[1], "query") && argc == 3)
		return query(argv[2]);
	if (!strcmp(argv[1], "perf") && argc >= 4 && argc % 2 == 0)
		return perf(argc - 2, argv + 2);
	if (!strcmp(argv[1], "atomic") && argc == 2)
		return atomic_cost();
	if (!strcmp(argv[1], "frames") && argc >= 4)
		return frames(argc - 2, argv + 2);
	if (!strcmp(argv[1], "cold") && argc >= 4 && argc % 2 == 0)
		return cold(argc - 2, argv + 2);
	if (!strcmp(argv[1], "read") || !strcmp(argv[1], "tag")) {
		int tag = argv[1][0] == 't';
		double t0 = now();

		ret = walk(argc - 2, argv + 2, tag ? tag_one : read_all);
		printf("%s_files %llu\n%s_errors %llu\n", argv[1], n_files, argv[1], n_errors);
		if (tag)
			printf("tagged %llu\ntag_bytes %llu\ntag_MBps %.1f\n", n_tagged,
			       n_tag_bytes, n_tag_bytes / (now() - t0) / 1e6);
		else
			printf("read_bytes %llu\n", n_bytes);
		printf("%s_seconds %.2f\n", argv[1], now() - t0);
		return ret || n_errors;
	}
usage:
	fprintf(stderr, "usage: cidbench probe|tag PATH...|read PATH...|query FILE|perf NAME FILE [NAME FILE]...|cold NAME FILE [NAME FILE]...|frames NAME FILE...|atomic\n");
	return 2;
}
