/* A process of known memory for cid-analyze's tests.  Runs its commands in
 * order, prints "ready <pid>..." (its own pid, then any forked children's)
 * on stdout, then sleeps until killed.  Every region it creates lies at a
 * fixed address in [0x600000000000, 0x610000000000), so a test can analyze
 * exactly those pages (cid-analyze --range).
 *
 *   anon N SEED    N anonymous pages, page i filled from (SEED, i)
 *   zero N         N anonymous pages only read: each maps the zero page
 *   sparse G K     G GiB of anonymous address space (MAP_NORESERVE), K pages
 *                  of it written (page i filled from (77, i)), spread evenly
 *   thp N SEED     like anon, with MADV_HUGEPAGE (transparent huge pages where the kernel has one)
 *   map FILE       FILE mapped MAP_SHARED read-only, every page touched
 *   merge          prctl(PR_SET_MEMORY_MERGE): KSM may merge all its anonymous memory
 *   pageout        MADV_PAGEOUT on the region made last (swapped out where swap is on)
 *   clock          clock_gettime through the vDSO, which maps its data pages ([vvar], a PFN map)
 *   threads K      K more threads, sleeping
 *   fork K         K children (after everything above), sleeping
 *   spin FILE      a thread writes an increasing count to FILE every 10 ms
 *
 * Statically linked where libc allows, so it also runs in the QEMU guest.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#endif

#define PAGE 4096UL
static uintptr_t next_addr = 0x600000000000UL;
static void *last_region;
static size_t last_bytes;

static void die(const char *what) {
	perror(what);
	exit(2);
}

static void *region(size_t bytes, int prot, int flags, int fd) {
	void *p = mmap((void *)next_addr, bytes, prot, flags | MAP_FIXED_NOREPLACE, fd, 0);
	if (p == MAP_FAILED) die("mmap");
	last_region = p;
	last_bytes = bytes;
	next_addr += (bytes + (1UL << 30) - 1) & ~((1UL << 30) - 1); /* 1 GiB apart: separate VMAs */
	return p;
}

static uint64_t mix(uint64_t x) {
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static void *sleeper(void *arg) {
	(void)arg;
	for (;;) pause();
	return NULL;
}

static void *spinner(void *arg) {
	const char *file = arg;
	for (uint64_t n = 0;; n++) {
		char buf[32];
		int len = snprintf(buf, sizeof(buf), "%llu\n", (unsigned long long)n);
		int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd >= 0) {
			if (write(fd, buf, len) != len) { /* the test reads what is there */ }
			close(fd);
		}
		usleep(10000);
	}
	return NULL;
}

int main(int argc, char **argv) {
	int forks = 0;
	signal(SIGPIPE, SIG_IGN);
	for (int i = 1; i < argc; i++) {
		const char *c = argv[i];
		if ((!strcmp(c, "anon") || !strcmp(c, "thp")) && i + 2 < argc) {
			size_t n = strtoul(argv[++i], NULL, 0);
			uint64_t seed = strtoull(argv[++i], NULL, 0);
			uint64_t *p = region(n * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
			if (!strcmp(c, "thp")) madvise(p, n * PAGE, MADV_HUGEPAGE); /* regions are 1 GiB aligned */
			for (size_t k = 0; k < n * PAGE / 8; k++) p[k] = mix(seed * 1000003ULL + k);
		} else if (!strcmp(c, "zero") && i + 1 < argc) {
			size_t n = strtoul(argv[++i], NULL, 0);
			/* No THP here: a read fault would map the huge zero page instead. */
			volatile char *p = region(n * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
			madvise((void *)p, n * PAGE, MADV_NOHUGEPAGE);
			for (size_t k = 0; k < n; k++) (void)p[k * PAGE];
		} else if (!strcmp(c, "sparse") && i + 2 < argc) {
			size_t bytes = strtoul(argv[++i], NULL, 0) << 30;
			size_t k = strtoul(argv[++i], NULL, 0);
			char *p = region(bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1);
			for (size_t j = 0; j < k; j++) {
				uint64_t *page = (uint64_t *)(p + (bytes / k * j & ~(PAGE - 1)));
				for (size_t w = 0; w < PAGE / 8; w++) page[w] = mix(77 * 1000003ULL + j * PAGE / 8 + w);
			}
		} else if (!strcmp(c, "map") && i + 1 < argc) {
			int fd = open(argv[++i], O_RDONLY);
			struct stat st;
			if (fd < 0 || fstat(fd, &st) != 0) die(argv[i]);
			volatile char *p = region(st.st_size, PROT_READ, MAP_SHARED, fd);
			for (off_t k = 0; k < st.st_size; k += PAGE) (void)p[k];
			close(fd);
		} else if (!strcmp(c, "pageout")) {
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
			if (!last_region || madvise(last_region, last_bytes, MADV_PAGEOUT) != 0) die("madvise(MADV_PAGEOUT)");
		} else if (!strcmp(c, "clock")) {
			struct timespec ts;
			for (int k = 0; k < 3; k++) clock_gettime(CLOCK_MONOTONIC, &ts);
		} else if (!strcmp(c, "merge")) {
			if (prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0) != 0) die("prctl(PR_SET_MEMORY_MERGE)");
		} else if (!strcmp(c, "threads") && i + 1 < argc) {
			int k = atoi(argv[++i]);
			for (int t = 0; t < k; t++) {
				pthread_t th;
				if (pthread_create(&th, NULL, sleeper, NULL)) die("pthread_create");
			}
		} else if (!strcmp(c, "spin") && i + 1 < argc) {
			pthread_t th;
			if (pthread_create(&th, NULL, spinner, argv[++i])) die("pthread_create");
		} else if (!strcmp(c, "fork") && i + 1 < argc) {
			forks = atoi(argv[++i]);
		} else {
			fprintf(stderr, "analyze_helper: bad command '%s'\n", c);
			return 2;
		}
	}
	/* The whole line in one write, once every child exists. */
	char line[4096];
	int len = snprintf(line, sizeof(line), "ready %d", (int)getpid());
	fflush(stdout);
	for (int k = 0; k < forks; k++) {
		pid_t pid = fork();
		if (pid < 0) die("fork");
		if (pid == 0) {
			for (;;) pause();
		}
		len += snprintf(line + len, sizeof(line) - len, " %d", (int)pid);
	}
	printf("%s\n", line);
	fflush(stdout);
	for (;;) pause();
}
