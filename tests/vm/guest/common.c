// SPDX-License-Identifier: GPL-2.0
/*
 * Helpers shared by the in-guest named-merging tests; see common.h.
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>

int cid_failures;

void diag(const char *fmt, ...)
{
	va_list ap;

	fputs("# ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
}

bool check_(bool cond, const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	if (cond)
		return true;
	cid_failures++;
	printf("# FAIL (%s:%d): ", strrchr(file, '/') ? strrchr(file, '/') + 1 : file, line);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
	return false;
}

void skip_case(const char *fmt, ...)
{
	va_list ap;

	fputs("# SKIP: ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
	exit(CASE_SKIP);
}

void die(const char *fmt, ...)
{
	va_list ap;
	int e = errno;

	fputs("# FAIL (setup): ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf(" (errno %d: %s)\n", e, strerror(e));
	fflush(stdout);
	exit(CASE_FAIL);
}

/* splitmix64: every 8-byte word is a function of (seed, word index) only. */
static inline uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static inline uint8_t pattern_byte(uint64_t off, uint64_t seed)
{
	return (uint8_t)(mix(seed * 0x100000001b3ULL ^ (off >> 3)) >> ((off & 7) * 8));
}

void fill_pattern(void *buf, uint64_t off, size_t len, uint64_t seed)
{
	uint8_t *p = buf;
	size_t i = 0;

	while (i < len && ((off + i) & 7))
		p[i] = pattern_byte(off + i, seed), i++;
	for (; i + 8 <= len; i += 8) {
		uint64_t w = mix(seed * 0x100000001b3ULL ^ ((off + i) >> 3));

		memcpy(p + i, &w, 8);
	}
	for (; i < len; i++)
		p[i] = pattern_byte(off + i, seed);
}

long check_pattern(const void *buf, uint64_t off, size_t len, uint64_t seed)
{
	const uint8_t *p = buf;
	uint8_t tmp[4096];
	size_t done = 0;

	while (done < len) {
		size_t n = len - done < sizeof(tmp) ? len - done : sizeof(tmp);

		fill_pattern(tmp, off + done, n, seed);
		if (memcmp(tmp, p + done, n)) {
			for (size_t i = 0; i < n; i++)
				if (tmp[i] != p[done + i])
					return (long)(done + i);
		}
		done += n;
	}
	return -1;
}

void make_file(const char *path, uint64_t seed, uint64_t size)
{
	static uint8_t buf[256 * 1024];
	uint64_t off = 0;
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);

	if (fd < 0)
		die("create %s", path);
	while (off < size) {
		size_t n = size - off < sizeof(buf) ? size - off : sizeof(buf);

		fill_pattern(buf, off, n, seed);
		if (write(fd, buf, n) != (ssize_t)n)
			die("write %s", path);
		off += n;
	}
	if (fsync(fd) || close(fd))
		die("fsync/close %s", path);
	/* Keep the creator's pages out of the way of later measurements. */
}

void copy_file(const char *src, const char *dst, mode_t mode)
{
	static char buf[128 * 1024];
	int in = open(src, O_RDONLY), out;
	ssize_t n;

	if (in < 0)
		die("open %s", src);
	out = open(dst, O_WRONLY | O_CREAT | O_EXCL, mode);
	if (out < 0)
		die("create %s", dst);
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, n) != n)
			die("write %s", dst);
	if (n < 0)
		die("read %s", src);
	if (fsync(out) || close(out))
		die("close %s", dst);
	close(in);
	chmod(dst, mode);
}

bool verify_read(int fd, uint64_t size, uint64_t seed, const char *what)
{
	static uint8_t buf[200 * 1024];
	/* Odd chunk sizes cross page boundaries in every way. */
	static const size_t chunks[] = { 4096, 1, 12345, 65536, 200 * 1024, 777 };
	uint64_t off = 0;
	unsigned int k = 0;
	ssize_t n;

	if (lseek(fd, 0, SEEK_SET) != 0)
		return CHECK(0, "%s: lseek: %s", what, strerror(errno));
	for (;;) {
		size_t want = chunks[k++ % 6];

		n = read(fd, buf, want);
		if (n < 0)
			return CHECK(0, "%s: read at %llu: %s", what,
				     (unsigned long long)off, strerror(errno));
		if (n == 0)
			break;
		long bad = check_pattern(buf, off, n, seed);

		if (bad >= 0)
			return CHECK(0, "%s: read() returned wrong byte at offset %llu",
				     what, (unsigned long long)(off + bad));
		off += n;
		if (off > size)
			break;
	}
	return CHECK(off == size, "%s: read() returned %llu bytes, expected %llu", what,
		     (unsigned long long)off, (unsigned long long)size);
}

bool verify_path(const char *path, uint64_t size, uint64_t seed)
{
	int fd = open_ro(path);
	bool ok = verify_read(fd, size, seed, path);

	close(fd);
	return ok;
}

bool verify_map(const void *addr, uint64_t size, uint64_t seed, const char *what)
{
	long bad = check_pattern(addr, 0, size, seed);
	uint64_t end = (size + PAGE - 1) & ~(PAGE - 1);

	if (bad >= 0)
		return CHECK(0, "%s: mapping has wrong byte at offset %ld", what, bad);
	for (uint64_t i = size; i < end; i++)
		if (((const uint8_t *)addr)[i])
			return CHECK(0, "%s: byte %llu past EOF in the last page is not zero",
				     what, (unsigned long long)i);
	return true;
}

uint8_t *pattern_buf(uint64_t seed, uint64_t size)
{
	uint8_t *p = malloc(size + 1);

	if (!p)
		die("malloc");
	fill_pattern(p, 0, size, seed);
	return p;
}

bool verify_file_bytes(const char *path, const uint8_t *want, uint64_t size)
{
	uint8_t *got = malloc(size + 4096);
	uint64_t off = 0;
	ssize_t n;
	int fd = open_ro(path);
	bool ok;

	if (!got)
		die("malloc");
	while ((n = read(fd, got + off, size + 4096 - off)) > 0)
		off += n;
	close(fd);
	ok = CHECK(n == 0 && off == size, "%s: read %llu bytes (%s), expected %llu", path,
		   (unsigned long long)off, n < 0 ? strerror(errno) : "eof",
		   (unsigned long long)size);
	if (ok && memcmp(got, want, size)) {
		uint64_t i = 0;

		while (got[i] == want[i])
			i++;
		ok = CHECK(0, "%s: wrong byte at offset %llu", path, (unsigned long long)i);
	}
	free(got);
	return ok;
}

void touch_pages(const void *addr, uint64_t size)
{
	volatile const uint8_t *p = addr;

	for (uint64_t off = 0; off < size; off += PAGE)
		(void)p[off];
}

int open_ro(const char *path)
{
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		die("open %s", path);
	return fd;
}

void *map_file(const char *path, uint64_t size, int prot, int flags, int *fdp)
{
	int fd = open(path, (prot & PROT_WRITE) && (flags & MAP_SHARED) ? O_RDWR : O_RDONLY);
	void *p;

	if (fd < 0)
		die("open %s", path);
	p = mmap(NULL, size, prot, flags, fd, 0);
	if (p == MAP_FAILED)
		die("mmap %s", path);
	if (fdp)
		*fdp = fd;
	else
		close(fd);
	return p;
}

static uint64_t pagemap_entry(const char *file, uint64_t addr)
{
	uint64_t e = 0;
	int fd = open(file, O_RDONLY);

	if (fd < 0)
		die("open %s", file);
	if (pread(fd, &e, sizeof(e), (addr / PAGE) * sizeof(e)) != sizeof(e))
		die("read %s", file);
	close(fd);
	return e;
}

/* The frame number of a pagemap entry: bits 0-54 if present (bit 63), else 0. */
static uint64_t entry_pfn(uint64_t e)
{
	return (e & (1ULL << 63)) ? (e & ((1ULL << 55) - 1)) : 0;
}

uint64_t pfn_of(const void *addr)
{
	return entry_pfn(pagemap_entry("/proc/self/pagemap", (uint64_t)(uintptr_t)addr));
}

uint64_t pfn_of_pid(pid_t pid, uint64_t addr)
{
	char file[64];

	snprintf(file, sizeof(file), "/proc/%d/pagemap", (int)pid);
	return entry_pfn(pagemap_entry(file, addr));
}

struct pfn_cmp compare_pfns(const void *a, const void *b, uint64_t size)
{
	struct pfn_cmp r = { 0, 0, 0 };
	int fd = open("/proc/self/pagemap", O_RDONLY);
	uint64_t n = (size + PAGE - 1) / PAGE;

	if (fd < 0)
		die("open pagemap");
	for (uint64_t i = 0; i < n; i++) {
		uint64_t ea = 0, eb = 0;

		pread(fd, &ea, 8, ((uintptr_t)a / PAGE + i) * 8);
		pread(fd, &eb, 8, ((uintptr_t)b / PAGE + i) * 8);
		if (!(ea >> 63) || !(eb >> 63))
			r.absent++;
		else if (entry_pfn(ea) == entry_pfn(eb))
			r.same++;
		else
			r.differ++;
	}
	close(fd);
	return r;
}

bool frames_shared(const char *a, const char *b, uint64_t size, const char *what)
{
	void *ma = map_file(a, size, PROT_READ, MAP_SHARED, NULL);
	void *mb = map_file(b, size, PROT_READ, MAP_SHARED, NULL);
	struct pfn_cmp c;

	touch_pages(ma, size);
	touch_pages(mb, size);
	c = compare_pfns(ma, mb, size);
	munmap(ma, size);
	munmap(mb, size);
	return CHECK(c.differ == 0 && c.same > 0, "%s share frames (%lu same, %lu differ)", what,
		     c.same, c.differ);
}

unsigned long large_folio_pages(const void *addr, uint64_t size)
{
	int pm = open("/proc/self/pagemap", O_RDONLY);
	int kf = open("/proc/kpageflags", O_RDONLY);
	uint64_t n = (size + PAGE - 1) / PAGE;
	unsigned long large = 0;

	if (pm < 0 || kf < 0)
		die("open %s", pm < 0 ? "/proc/self/pagemap" : "/proc/kpageflags");
	for (uint64_t i = 0; i < n; i++) {
		uint64_t e = 0, flags = 0, pfn;

		if (pread(pm, &e, 8, ((uintptr_t)addr / PAGE + i) * 8) != 8)
			die("read /proc/self/pagemap");
		pfn = entry_pfn(e);
		if (!pfn)
			continue;
		if (pread(kf, &flags, 8, pfn * 8) != 8)
			die("read /proc/kpageflags");
		/* KPF_COMPOUND_HEAD (15), KPF_COMPOUND_TAIL (16) */
		large += !!(flags & (3ULL << 15));
	}
	close(pm);
	close(kf);
	return large;
}

long long meminfo_kb(const char *field)
{
	char line[256];
	size_t fl = strlen(field);
	long long v = -1;
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		die("open /proc/meminfo");
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, field, fl) && line[fl] == ':') {
			v = atoll(line + fl + 1);
			break;
		}
	fclose(f);
	return v;
}

/* CID_NO_DROP=1: a dry run on a shared host, where dropping caches hurts others. */
void drop_caches(void)
{
	if (getenv("CID_NO_DROP"))
		return;
	sync();
	if (!write_str("/proc/sys/vm/drop_caches", "3"))
		die("drop_caches");
}

void compact_memory(void)
{
	/* Absent without CONFIG_COMPACTION; not an error of the feature. */
	if (getenv("CID_NO_DROP"))
		return;
	write_str("/proc/sys/vm/compact_memory", "1");
}

long long cid_stat(const char *name)
{
	char path[128], buf[64];

	snprintf(path, sizeof(path), "/sys/kernel/mm/cid/%s", name);
	if (!read_str(path, buf, sizeof(buf)))
		return -1;
	return atoll(buf);
}

bool cid_sysfs_present(void)
{
	return access("/sys/kernel/mm/cid", F_OK) == 0;
}

int cid_tag_fd(int fd, struct cid_tag *tag)
{
	return ioctl(fd, CID_IOC_TAG, tag) ? -errno : 0;
}

int cid_tag_path(const char *path, uint32_t flags, uint32_t domain,
		 const uint8_t *expect, struct cid_tag *out)
{
	struct cid_tag t;
	int fd = open(path, O_RDONLY), r;

	if (fd < 0)
		return -errno;
	memset(&t, 0, sizeof(t));
	t.flags = flags;
	t.domain = domain;
	if (expect)
		memcpy(t.digest, expect, sizeof(t.digest));
	r = cid_tag_fd(fd, &t);
	close(fd);
	if (out)
		*out = t;
	return r;
}

int cid_query_fd(int fd, struct cid_query *q)
{
	memset(q, 0, sizeof(*q));
	return ioctl(fd, CID_IOC_QUERY, q) ? -errno : 0;
}

int cid_query_path(const char *path, struct cid_query *q)
{
	int fd = open(path, O_RDONLY), r;

	if (fd < 0)
		return -errno;
	r = cid_query_fd(fd, q);
	close(fd);
	return r;
}

bool tag_ok(const char *path)
{
	int r = cid_tag_path(path, 0, 0, NULL, NULL);

	/*
	 * EAGAIN: ctime or size moved while the kernel hashed (FUSE refreshes
	 * stale attributes during the hash).  Not this helper's subject: the
	 * share case checks a first tag strictly; retry here so one known
	 * problem does not hide every other result.
	 */
	for (int i = 0; r == -EAGAIN && i < 3; i++) {
		diag("CID_IOC_TAG %s: EAGAIN, retrying", path);
		r = cid_tag_path(path, 0, 0, NULL, NULL);
	}
	return CHECK(r == 0, "CID_IOC_TAG %s: %s", path, strerror(-r));
}

int query_flags(const char *path)
{
	struct cid_query q;
	int r = cid_query_path(path, &q);

	return r ? r : (int)q.flags;
}

bool tagged_twins(const char *a, const char *b, uint64_t seed, uint64_t size)
{
	unlink(a), unlink(b);
	make_file(a, seed, size);
	make_file(b, seed, size);
	return tag_ok(a) && tag_ok(b);
}

bool same_content(const char *a, const char *b)
{
	struct cid_query qa, qb;

	return !cid_query_path(a, &qa) && !cid_query_path(b, &qb) &&
	       (qa.flags & CID_QUERY_TAGGED) && (qb.flags & CID_QUERY_TAGGED) &&
	       !memcmp(qa.digest, qb.digest, sizeof(qa.digest));
}

const char *qflags_str(int flags)
{
	static char buf[4][48];
	static int k;
	char *b = buf[k++ & 3];

	if (flags < 0)
		snprintf(b, 48, "error %s", strerror(-flags));
	else
		snprintf(b, 48, "%s%s%s", flags & CID_QUERY_TAGGED ? "TAGGED" : "untagged",
			 flags & CID_QUERY_SHARED ? "|SHARED" : "|not-shared",
			 flags & ~3 ? "|unknown-bits" : "");
	return b;
}

/* ---- SHA-256 (FIPS 180-4), for the fs-verity digest below ---- */

struct sha256_ctx { uint32_t h[8]; uint64_t len; uint8_t buf[64]; size_t n; };

static const uint32_t K256[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(struct sha256_ctx *c, const uint8_t *p)
{
	uint32_t w[64], a, b, d, e, f, g, h, cc, t1, t2;

	for (int i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (int i = 16; i < 64; i++) {
		uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);

		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	a = c->h[0]; b = c->h[1]; cc = c->h[2]; d = c->h[3];
	e = c->h[4]; f = c->h[5]; g = c->h[6]; h = c->h[7];
	for (int i = 0; i < 64; i++) {
		t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
		t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
		h = g; g = f; f = e; e = d + t1; d = cc; cc = b; b = a; a = t1 + t2;
	}
	c->h[0] += a; c->h[1] += b; c->h[2] += cc; c->h[3] += d;
	c->h[4] += e; c->h[5] += f; c->h[6] += g; c->h[7] += h;
}

static void sha256_init(struct sha256_ctx *c)
{
	static const uint32_t iv[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
					0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
	memcpy(c->h, iv, sizeof(iv));
	c->len = 0;
	c->n = 0;
}

static void sha256_update(struct sha256_ctx *c, const uint8_t *p, size_t len)
{
	c->len += len;
	while (len) {
		size_t k = 64 - c->n < len ? 64 - c->n : len;

		memcpy(c->buf + c->n, p, k);
		c->n += k; p += k; len -= k;
		if (c->n == 64) {
			sha256_block(c, c->buf);
			c->n = 0;
		}
	}
}

static void sha256_final(struct sha256_ctx *c, uint8_t out[32])
{
	uint64_t bits = c->len * 8;
	uint8_t pad = 0x80, z = 0, l[8];

	sha256_update(c, &pad, 1);
	while (c->n != 56)
		sha256_update(c, &z, 1);
	for (int i = 0; i < 8; i++)
		l[i] = (uint8_t)(bits >> (56 - 8 * i));
	sha256_update(c, l, 8);
	for (int i = 0; i < 8; i++) {
		out[4 * i] = c->h[i] >> 24; out[4 * i + 1] = c->h[i] >> 16;
		out[4 * i + 2] = c->h[i] >> 8; out[4 * i + 3] = c->h[i];
	}
}

void sha256(const void *data, size_t len, uint8_t out[32])
{
	struct sha256_ctx c;

	sha256_init(&c);
	sha256_update(&c, data, len);
	sha256_final(&c, out);
}

/*
 * ---- fs-verity file digest: what CID_IOC_TAG reports ----
 *
 * As the kernel computes it (Documentation/filesystems/fsverity.rst) and
 * `fsverity digest --hash-alg=sha256 --block-size=4096` prints: SHA-256 of
 * every 4096-byte data block (the last one zero-padded), those hashes packed
 * 128 to a block (zero-padded) and hashed again, level by level, until a
 * level is one block; the root hash is that block's hash (a file of one
 * block has no hash level; an empty file's root hash is all zeros).  The
 * file digest is the SHA-256 of the 256-byte struct fsverity_descriptor.
 * One pending block per level: a file of any size needs 40 KiB.
 */
#define VERITY_BLOCK 4096
#define VERITY_LEVELS 10	/* 2^64 bytes: data plus eight hash levels, plus the root */

struct verity_ctx {
	uint8_t block[VERITY_LEVELS][VERITY_BLOCK];
	size_t fill[VERITY_LEVELS];	/* bytes pending in block[level] */
	uint64_t hashed[VERITY_LEVELS];	/* blocks of the level hashed so far */
	uint64_t size;
};

/* Hashes one whole block of level into level + 1, and that block when full. */
static void verity_block(struct verity_ctx *v, const uint8_t *blk, int level)
{
	struct sha256_ctx c;

	if (level + 1 >= VERITY_LEVELS)
		abort();
	sha256_init(&c);
	sha256_update(&c, blk, VERITY_BLOCK);
	sha256_final(&c, v->block[level + 1] + v->fill[level + 1]);
	v->hashed[level]++;
	v->fill[level + 1] += 32;
	if (v->fill[level + 1] == VERITY_BLOCK) {
		v->fill[level + 1] = 0;
		verity_block(v, v->block[level + 1], level + 1);
	}
}

static void verity_init(struct verity_ctx *v)
{
	memset(v->fill, 0, sizeof(v->fill));
	memset(v->hashed, 0, sizeof(v->hashed));
	v->size = 0;
}

static void verity_update(struct verity_ctx *v, const uint8_t *p, size_t len)
{
	v->size += len;
	while (len) {
		size_t k = VERITY_BLOCK - v->fill[0] < len ? VERITY_BLOCK - v->fill[0] : len;

		if (k == VERITY_BLOCK) {	/* a whole block: hash it where it is */
			verity_block(v, p, 0);
		} else {
			memcpy(v->block[0] + v->fill[0], p, k);
			v->fill[0] += k;
			if (v->fill[0] == VERITY_BLOCK) {
				v->fill[0] = 0;
				verity_block(v, v->block[0], 0);
			}
		}
		p += k;
		len -= k;
	}
}

static void verity_final(struct verity_ctx *v, uint8_t out[32])
{
	uint8_t desc[256] = { 1, 1, 12, 0 };	/* version, SHA-256, log2(4096), no salt */

	for (int i = 0; i < 8; i++)		/* data_size, le64, after sig_size */
		desc[8 + i] = (uint8_t)(v->size >> (8 * i));
	for (int level = 0; v->size; level++) {
		if (v->fill[level]) {
			memset(v->block[level] + v->fill[level], 0, VERITY_BLOCK - v->fill[level]);
			v->fill[level] = 0;
			verity_block(v, v->block[level], level);
		}
		if (v->hashed[level] == 1) {	/* one block: its hash is the root */
			memcpy(desc + 16, v->block[level + 1], 32);
			break;
		}
	}
	sha256(desc, sizeof(desc), out);
}

void verity_pattern(uint64_t seed, uint64_t size, uint8_t out[32])
{
	static uint8_t buf[64 * 1024];
	static struct verity_ctx v;

	verity_init(&v);
	for (uint64_t off = 0; off < size; off += sizeof(buf)) {
		size_t n = size - off < sizeof(buf) ? size - off : sizeof(buf);

		fill_pattern(buf, off, n, seed);
		verity_update(&v, buf, n);
	}
	verity_final(&v, out);
}

int verity_digest_fd(int fd, uint8_t out[32])
{
	static uint8_t buf[64 * 1024];
	static struct verity_ctx v;
	uint64_t off = 0;

	verity_init(&v);
	for (;;) {
		ssize_t n = pread(fd, buf, sizeof(buf), (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		verity_update(&v, buf, (size_t)n);
		off += (uint64_t)n;
	}
	verity_final(&v, out);
	return 0;
}

void hex32(const uint8_t d[32], char out[65])
{
	for (int i = 0; i < 32; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

/* ---- small helpers ---- */

char *path_join(const char *dir, const char *name)
{
	static char buf[8][512];
	static int k;
	char *b = buf[k++ & 7];

	snprintf(b, 512, "%s/%s", dir, name);
	return b;
}

void mkdir_p(const char *path)
{
	char tmp[512];

	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *p = tmp + 1; *p; p++)
		if (*p == '/') {
			*p = 0;
			mkdir(tmp, 0755);
			*p = '/';
		}
	if (mkdir(tmp, 0755) && errno != EEXIST)
		die("mkdir %s", path);
}

void msleep(unsigned int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

bool write_str(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY);
	ssize_t n;

	if (fd < 0)
		return false;
	n = write(fd, s, strlen(s));
	close(fd);
	return n == (ssize_t)strlen(s);
}

bool read_str(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return false;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return false;
	buf[n] = 0;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = 0;
	return true;
}
