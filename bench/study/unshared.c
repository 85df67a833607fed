// study-unshared: which file pages do different users of bench/study still
// keep in frames of their own?  Each user runs from a tree of their own (a
// copy, or an overlayfs over one); a page of the same file (its path inside
// the tree) at the same file offset is the same content, so wherever two
// users map it from different frames, sharing missed it.
//
//   study-unshared ROOT PID... [ROOT PID...]...
//
// Reads /proc/PID/maps and /proc/PID/pagemap (root: frame numbers).  Only
// present file-backed pages count (pagemap bit 61; private copies of file
// pages are anonymous and not the page cache's to share).  Prints, for each
// file of which some page is mapped by two or more users from different
// frames:
//   file PATH unshared N mapped M users U
// (N = frames beyond one per page, M = pages mapped by two or more users),
// sorted by N, then one line
//   total unshared N mapped M files F
#define _GNU_SOURCE
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct page {
	int file;      // index into files[]
	uint64_t idx;  // page index in the file
	int user;
	uint64_t pfn;
};

static char **files;
static size_t nfiles, capfiles;
static struct page *pages;
static size_t npages, cappages;

static int intern(const char *rel) {
	for (size_t i = 0; i < nfiles; i++)
		if (!strcmp(files[i], rel)) return (int)i;
	if (nfiles == capfiles) {
		capfiles = capfiles ? capfiles * 2 : 256;
		files = realloc(files, capfiles * sizeof(*files));
		if (!files) abort();
	}
	files[nfiles] = strdup(rel);
	return (int)nfiles++;
}

static void add(int file, uint64_t idx, int user, uint64_t pfn) {
	if (npages == cappages) {
		cappages = cappages ? cappages * 2 : 65536;
		pages = realloc(pages, cappages * sizeof(*pages));
		if (!pages) abort();
	}
	pages[npages++] = (struct page){file, idx, user, pfn};
}

static void scan(const char *root, int user, const char *pid) {
	char path[64];
	snprintf(path, sizeof(path), "/proc/%s/maps", pid);
	FILE *maps = fopen(path, "r");
	snprintf(path, sizeof(path), "/proc/%s/pagemap", pid);
	int pm = open(path, O_RDONLY);
	if (!maps || pm < 0) {
		fprintf(stderr, "study-unshared: pid %s: cannot read maps/pagemap (exited?)\n", pid);
		if (maps) fclose(maps);
		if (pm >= 0) close(pm);
		return;
	}
	size_t rl = strlen(root);
	char line[8192];
	while (fgets(line, sizeof(line), maps)) {
		uint64_t lo, hi, off;
		int name = 0;
		if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %*s %" SCNx64 " %*s %*s %n", &lo, &hi, &off, &name) < 3 || !name)
			continue;
		char *p = line + name;
		p[strcspn(p, "\n")] = 0;
		if (strncmp(p, root, rl) || p[rl] != '/') continue;
		int file = intern(p + rl);
		for (uint64_t va = lo; va < hi; va += 4096) {
			uint64_t e;
			if (pread(pm, &e, sizeof(e), (off_t)(va / 4096 * 8)) != sizeof(e)) break;
			if (!(e >> 63 & 1) || !(e >> 61 & 1)) continue;  // not present, or anonymous
			add(file, off / 4096 + (va - lo) / 4096, user, e & ((1ULL << 55) - 1));
		}
	}
	fclose(maps);
	close(pm);
}

static int by_page(const void *a, const void *b) {
	const struct page *x = a, *y = b;
	if (x->file != y->file) return x->file < y->file ? -1 : 1;
	if (x->idx != y->idx) return x->idx < y->idx ? -1 : 1;
	if (x->pfn != y->pfn) return x->pfn < y->pfn ? -1 : 1;
	return x->user - y->user;
}

struct result {
	int file;
	uint64_t unshared, mapped, users;
};

static int by_unshared(const void *a, const void *b) {
	const struct result *x = a, *y = b;
	if (x->unshared != y->unshared) return x->unshared > y->unshared ? -1 : 1;
	return strcmp(files[x->file], files[y->file]);
}

int main(int argc, char **argv) {
	const char *root = NULL;
	int user = -1;
	for (int i = 1; i < argc; i++) {
		if (argv[i][0] == '/') {
			root = argv[i];
			user++;
		} else if (root) {
			scan(root, user, argv[i]);
		} else {
			fprintf(stderr, "usage: study-unshared ROOT PID... [ROOT PID...]...\n");
			return 2;
		}
	}
	if (user < 0) {
		fprintf(stderr, "usage: study-unshared ROOT PID... [ROOT PID...]...\n");
		return 2;
	}
	qsort(pages, npages, sizeof(*pages), by_page);
	struct result *res = calloc(nfiles + 1, sizeof(*res));
	uint64_t *umask = calloc((size_t)user / 64 + 1, sizeof(*umask));
	if (!res || !umask) abort();
	for (size_t f = 0; f < nfiles; f++) res[f].file = (int)f;
	for (size_t i = 0; i < npages;) {
		size_t j = i;
		uint64_t frames = 0, nusers = 0;
		memset(umask, 0, ((size_t)user / 64 + 1) * sizeof(*umask));
		for (; j < npages && pages[j].file == pages[i].file && pages[j].idx == pages[i].idx; j++) {
			if (j == i || pages[j].pfn != pages[j - 1].pfn) frames++;
			int u = pages[j].user;
			if (!(umask[u / 64] >> (u % 64) & 1)) nusers++;
			umask[u / 64] |= 1ULL << (u % 64);
		}
		struct result *r = &res[pages[i].file];
		if (nusers > 1) {
			r->mapped++;
			r->unshared += frames - 1;
			if (nusers > r->users) r->users = nusers;
		}
		i = j;
	}
	qsort(res, nfiles, sizeof(*res), by_unshared);
	uint64_t tu = 0, tm = 0, tf = 0;
	for (size_t f = 0; f < nfiles; f++) {
		if (!res[f].unshared) continue;
		printf("file %s unshared %" PRIu64 " mapped %" PRIu64 " users %" PRIu64 "\n", files[res[f].file], res[f].unshared,
		       res[f].mapped, res[f].users);
		tu += res[f].unshared;
		tf++;
	}
	for (size_t f = 0; f < nfiles; f++) tm += res[f].mapped;
	printf("total unshared %" PRIu64 " mapped %" PRIu64 " files %" PRIu64 "\n", tu, tm, tf);
	return 0;
}
