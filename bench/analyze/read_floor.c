/* The floor under cid-analyze's snapshot (bench/analyze/run.sh): the same
 * targets' pages read the cheapest way cid-analyze may read them, with
 * nothing else done.  Prints, in seconds:
 *
 *   pagemap  /proc/PID/maps and every mapping's pagemap, one pread per
 *            32768 entries, entries only counted
 *   smaps    /proc/PID/smaps read whole (the kernel's part of what smem does)
 *   read     every distinct frame's contents once (sorted by frame number,
 *            first mapping wins), process_vm_readv of up to 256 pages per
 *            call where pinning cannot unshare (pagemap's file or exclusive
 *            bit), /proc/PID/mem for the rest; one thread
 *   hash     the same reads, each page hashed with XXH3-128 as it arrives
 *
 * No KSM check: run it where KSM has not merged the targets' pages.
 * Build: cc -O2 -mavx2 read_floor.c -o read_floor (xxhash.h, inline). */
#define _GNU_SOURCE
#define XXH_INLINE_ALL
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#define PAGE 4096UL
#define BATCH 32768
#define PIN_RUN 256
#define MEM_RUN 64

struct page {
	uint64_t pfn, va;
	int pid;
	int may_pin;
};

static double now(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static int by_pfn(const void *a, const void *b) {
	const struct page *x = a, *y = b;
	return x->pfn < y->pfn ? -1 : x->pfn > y->pfn;
}

static int by_place(const void *a, const void *b) {
	const struct page *x = a, *y = b;
	if (x->pid != y->pid) return x->pid < y->pid ? -1 : 1;
	return x->va < y->va ? -1 : x->va > y->va;
}

static struct page *pages;
static size_t npages, cap;

static void add(uint64_t pfn, uint64_t va, int pid, int may_pin) {
	if (npages == cap) {
		cap = cap ? 2 * cap : 65536;
		pages = realloc(pages, cap * sizeof(*pages));
		if (!pages) exit(1);
	}
	pages[npages++] = (struct page){pfn, va, pid, may_pin};
}

/* One pass over every distinct frame; returns pages read. */
static size_t read_all(int hash, uint64_t *sum) {
	static char buf[PIN_RUN * PAGE];
	struct iovec remote[PIN_RUN];
	size_t done = 0;
	int fd = -1, fd_pid = 0;
	for (size_t i = 0; i < npages;) {
		const struct page *p = &pages[i];
		if (p->pid != fd_pid) {
			char path[64];
			if (fd >= 0) close(fd);
			snprintf(path, sizeof path, "/proc/%d/mem", p->pid);
			fd = open(path, O_RDONLY);
			fd_pid = p->pid;
		}
		size_t j = i + 1;
		ssize_t got;
		if (p->may_pin) {
			size_t nio = 1;
			remote[0] = (struct iovec){(void *)p->va, PAGE};
			for (; j < npages && j - i < PIN_RUN && pages[j].pid == p->pid && pages[j].may_pin; j++) {
				if (pages[j].va == pages[j - 1].va + PAGE)
					remote[nio - 1].iov_len += PAGE;
				else
					remote[nio++] = (struct iovec){(void *)pages[j].va, PAGE};
			}
			struct iovec local = {buf, (j - i) * PAGE};
			got = process_vm_readv(p->pid, &local, 1, remote, nio, 0);
		} else {
			while (j < npages && j - i < MEM_RUN && pages[j].pid == p->pid && !pages[j].may_pin &&
			       pages[j].va == pages[j - 1].va + PAGE)
				j++;
			got = pread(fd, buf, (j - i) * PAGE, (off_t)p->va);
		}
		size_t n = got > 0 ? (size_t)got / PAGE : 0;
		if (hash)
			for (size_t k = 0; k < n; k++) *sum ^= XXH3_128bits(buf + k * PAGE, PAGE).low64;
		done += n;
		i = j;
	}
	if (fd >= 0) close(fd);
	return done;
}

int main(int argc, char **argv) {
	static uint64_t entries[BATCH];
	size_t total_entries = 0;
	double t0 = now();
	for (int a = 1; a < argc; a++) {
		int pid = atoi(argv[a]);
		char path[64], line[4096];
		snprintf(path, sizeof path, "/proc/%d/maps", pid);
		FILE *maps = fopen(path, "r");
		snprintf(path, sizeof path, "/proc/%d/pagemap", pid);
		int pm = open(path, O_RDONLY);
		if (!maps || pm < 0) {
			perror(path);
			return 1;
		}
		while (fgets(line, sizeof line, maps)) {
			unsigned long long start, end;
			if (sscanf(line, "%llx-%llx", &start, &end) != 2 || strstr(line, "[vsyscall]") || strstr(line, "[vvar"))
				continue;
			for (uint64_t va = start; va < end; va += BATCH * PAGE) {
				size_t n = (end - va) / PAGE < BATCH ? (end - va) / PAGE : BATCH;
				ssize_t got = pread(pm, entries, n * 8, (off_t)(va / PAGE * 8));
				if (got <= 0) break;
				total_entries += (size_t)got / 8;
				for (size_t k = 0; k < (size_t)got / 8; k++) {
					uint64_t e = entries[k];
					if (e >> 63) add(e & ((1ULL << 55) - 1), va + k * PAGE, pid, (e >> 61 & 1) || (e >> 56 & 1));
				}
			}
		}
		fclose(maps);
		close(pm);
	}
	double t_pagemap = now() - t0;
	/* Distinct frames, the first mapping of each, read in address order. */
	qsort(pages, npages, sizeof(*pages), by_pfn);
	size_t frames = 0;
	for (size_t i = 0; i < npages; i++)
		if (i == 0 || pages[i].pfn != pages[frames - 1].pfn) pages[frames++] = pages[i];
	npages = frames;
	qsort(pages, npages, sizeof(*pages), by_place);

	t0 = now();
	size_t smaps_bytes = 0;
	for (int a = 1; a < argc; a++) {
		char path[64], buf[65536];
		snprintf(path, sizeof path, "/proc/%s/smaps", argv[a]);
		int fd = open(path, O_RDONLY);
		for (ssize_t n; fd >= 0 && (n = read(fd, buf, sizeof buf)) > 0;) smaps_bytes += (size_t)n;
		if (fd >= 0) close(fd);
	}
	double t_smaps = now() - t0;

	uint64_t sum = 0;
	t0 = now();
	size_t got_read = read_all(0, &sum);
	double t_read = now() - t0;
	t0 = now();
	size_t got_hash = read_all(1, &sum);
	double t_hash = now() - t0;
	size_t pinned = 0;
	for (size_t i = 0; i < npages; i++) pinned += pages[i].may_pin;
	printf("frames %zu pinned %zu entries %zu pagemap %.3f smaps %.3f read %.3f hash %.3f read_pages %zu hash_pages %zu sum %llx\n",
	       npages, pinned, total_entries, t_pagemap, t_smaps, t_read, t_hash, got_read, got_hash,
	       (unsigned long long)sum);
	return 0;
}
