// SPDX-License-Identifier: GPL-2.0
/*
 * cidbench: the in-guest half of bench/vm (named merging, issue 3).
 *
 *   cidbench probe                 exit 0 if the kernel has named merging
 *   cidbench tag DIR|FILE...       CID_IOC_TAG every regular file below
 *   cidbench read DIR|FILE...      read every regular file below in full
 *   cidbench query FILE            print CID_IOC_QUERY of a fresh open
 *   cidbench perf NAME FILE        cached read MiB/s, mmap fault ns/page,
 *                                  open+close ns, for one (warm) file
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

static int read_all(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	while ((n = read(fd, buf, BUFSZ)) > 0)
		n_bytes += n;
	close(fd);
	return n < 0 ? -errno : 0;
}

static int tag_one(const char *path)
{
	struct cid_tag t;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int ret = 0;

	if (fd < 0)
		return -errno;
	memset(&t, 0, sizeof(t));
	if (ioctl(fd, CID_IOC_TAG, &t) < 0)
		ret = -errno;
	else
		n_tagged++;
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

static int perf(const char *name, const char *path)
{
	long psz = sysconf(_SC_PAGESIZE);
	struct stat st;
	double t0, best;
	int fd, rounds;

	if (stat(path, &st) < 0) {
		perror(path);
		return 1;
	}
	/* Warm the cache (for a tagged file: the shared content cache). */
	n_bytes = 0;
	if (read_all(path) < 0) {
		perror(path);
		return 1;
	}

	/* 1. Cached sequential read, best of 5 passes. */
	best = 1e9;
	for (rounds = 0; rounds < 5; rounds++) {
		n_bytes = 0;
		t0 = now();
		read_all(path);
		t0 = now() - t0;
		if (t0 < best)
			best = t0;
	}
	printf("%s_read_MiBps %.1f\n", name, st.st_size / best / (1 << 20));

	/* 2. mmap read faults on cached pages: touch one byte per page of a
	 * fresh mapping (fault-around included, as applications see it). */
	best = 1e9;
	for (rounds = 0; rounds < 5; rounds++) {
		volatile const char *p;
		unsigned long sum = 0;

		fd = open(path, O_RDONLY);
		p = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED) {
			perror("mmap");
			return 1;
		}
		t0 = now();
		for (off_t off = 0; off < st.st_size; off += psz)
			sum += p[off];
		t0 = now() - t0;
		munmap((void *)p, st.st_size);
		close(fd);
		if (t0 < best)
			best = t0;
		(void)sum;
	}
	printf("%s_mmap_fault_ns_per_page %.0f\n", name, best * 1e9 / (st.st_size / psz));

	/* 3. open + close of the file, best of 5 batches of 2000. */
	best = 1e9;
	for (rounds = 0; rounds < 5; rounds++) {
		t0 = now();
		for (int i = 0; i < 2000; i++) {
			fd = open(path, O_RDONLY);
			if (fd < 0) {
				perror(path);
				return 1;
			}
			close(fd);
		}
		t0 = now() - t0;
		if (t0 < best)
			best = t0;
	}
	printf("%s_open_close_ns %.0f\n", name, best * 1e9 / 2000);
	return 0;
}

int main(int argc, char **argv)
{
	int ret;

	buf = malloc(BUFSZ);
	if (argc < 2 || !buf)
		goto usage;
	if (!strcmp(argv[1], "probe"))
		return probe();
	if (!strcmp(argv[1], "query") && argc == 3)
		return query(argv[2]);
	if (!strcmp(argv[1], "perf") && argc == 4)
		return perf(argv[2], argv[3]);
	if (!strcmp(argv[1], "read") || !strcmp(argv[1], "tag")) {
		int tag = argv[1][0] == 't';
		double t0 = now();

		ret = walk(argc - 2, argv + 2, tag ? tag_one : read_all);
		printf("%s_files %llu\n%s_errors %llu\n", argv[1], n_files, argv[1], n_errors);
		if (tag)
			printf("tagged %llu\n", n_tagged);
		else
			printf("read_bytes %llu\n", n_bytes);
		printf("%s_seconds %.2f\n", argv[1], now() - t0);
		return ret || n_errors;
	}
usage:
	fprintf(stderr, "usage: cidbench probe|tag PATH...|read PATH...|query FILE|perf NAME FILE\n");
	return 2;
}
