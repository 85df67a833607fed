/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers shared by the in-guest named-merging tests: deterministic file
 * contents, pagemap frame numbers, /proc/meminfo and /sys/kernel/mm/cid
 * readers, thin wrappers around the CID_IOC_* ioctls, and the fs-verity
 * digest (on a SHA-256 of its own) to check the digest the kernel reports.
 *
 * Conventions: diagnostics go to stdout prefixed with "# ", a failed
 * check is counted in cid_failures and printed as "# FAIL: ...".  The
 * test driver (cidtest.c) turns the count into one TAP line per case.
 */
#ifndef CID_TEST_COMMON_H
#define CID_TEST_COMMON_H

#define _GNU_SOURCE
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <linux/cid.h>

#define KiB 1024UL
#define MiB (1024 * KiB)
#define PAGE 4096UL

/* Exit codes of one test case, read by run-suite.sh. */
#define CASE_PASS 0
#define CASE_FAIL 1
#define CASE_NOKERNEL 3		/* CID_IOC_* not known: kernel lacks named merging */
#define CASE_SKIP 77

extern int cid_failures;

void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Records a failure (and prints it) when cond is false; returns cond. */
bool check_(bool cond, const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
#define CHECK(cond, ...) check_(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
/* Prints "# SKIP: reason" for the driver and exits with CASE_SKIP. */
void skip_case(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Fatal set-up error: prints and exits with CASE_FAIL. */
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Content: byte at offset off of the stream named by seed. */
void fill_pattern(void *buf, uint64_t off, size_t len, uint64_t seed);
/* Returns the index of the first wrong byte, or -1 if buf is right. */
long check_pattern(const void *buf, uint64_t off, size_t len, uint64_t seed);
/* Creates (O_EXCL) path with size bytes of the seed stream, mode 0644, fsync'ed. */
void make_file(const char *path, uint64_t seed, uint64_t size);
/* Copies src to dst (new file, given mode). */
void copy_file(const char *src, const char *dst, mode_t mode);

/* read() the whole fd from 0 in odd-sized chunks and verify; true if right. */
bool verify_read(int fd, uint64_t size, uint64_t seed, const char *what);
/* verify_read of a new read-only open of path. */
bool verify_path(const char *path, uint64_t size, uint64_t seed);
/* Verify a mapping of a file of size bytes, including zeros past EOF in the last page. */
bool verify_map(const void *addr, uint64_t size, uint64_t seed, const char *what);
/* A malloc'ed buffer of size bytes of the seed stream (one spare byte); dies on ENOMEM. */
uint8_t *pattern_buf(uint64_t seed, uint64_t size);
/* Reads path in full through a new read-only open and compares with want. */
bool verify_file_bytes(const char *path, const uint8_t *want, uint64_t size);
/* Read one byte of every page so every page is faulted in. */
void touch_pages(const void *addr, uint64_t size);

/* Opens path read-only; dies on failure. */
int open_ro(const char *path);
/* Maps size bytes of path (fd closed unless fdp), dies on failure. */
void *map_file(const char *path, uint64_t size, int prot, int flags, int *fdp);

/* Frame number of addr in this process (0 if not present). */
uint64_t pfn_of(const void *addr);
/* Frame number of addr in process pid (0 if not present). */
uint64_t pfn_of_pid(pid_t pid, uint64_t addr);
/* Counts pages whose frames are equal / different / not present in both. */
struct pfn_cmp { unsigned long same, differ, absent; };
struct pfn_cmp compare_pfns(const void *a, const void *b, uint64_t size);

/*
 * Maps a and b (MAP_SHARED, size bytes), faults every page and checks
 * that all present pages have the same frames (at least one); what names
 * the pair in the message.
 */
bool frames_shared(const char *a, const char *b, uint64_t size, const char *what);

/* Pages of [addr, addr + size) mapped from large (compound) folios. */
unsigned long large_folio_pages(const void *addr, uint64_t size);

long long meminfo_kb(const char *field);
void drop_caches(void);
void compact_memory(void);

/* /sys/kernel/mm/cid/<name> as a number, or -1 if absent. */
long long cid_stat(const char *name);
bool cid_sysfs_present(void);

/* ioctl wrappers: return 0 or -errno. */
int cid_tag_fd(int fd, struct cid_tag *tag);
int cid_tag_path(const char *path, uint32_t flags, uint32_t domain,
		 const uint8_t *expect, struct cid_tag *out);
int cid_query_fd(int fd, struct cid_query *q);
/* Opens path read-only (a new, possibly diverted open) and queries it. */
int cid_query_path(const char *path, struct cid_query *q);
/* Tags path and records a failure if that does not work. */
bool tag_ok(const char *path);
/* Returns the query flags of a new read-only open of path, -errno on error. */
int query_flags(const char *path);
const char *qflags_str(int flags);
/* Fresh files a and b (unlinked first) of size bytes of seed, both tagged; false if a tag failed. */
bool tagged_twins(const char *a, const char *b, uint64_t seed, uint64_t size);
/* Both tagged, with one digest (new read-only opens of each queried). */
bool same_content(const char *a, const char *b);

/*
 * The digest CID_IOC_TAG reports: the fs-verity file digest (SHA-256 Merkle
 * tree over 4096-byte blocks, no salt; what `fsverity digest
 * --hash-alg=sha256 --block-size=4096 FILE` prints).  verity_pattern: of
 * size bytes of the seed stream.  verity_digest_fd: of what pread() returns
 * from offset 0 to EOF; 0 or -errno.  Not thread-safe (static buffers).
 */
void verity_pattern(uint64_t seed, uint64_t size, uint8_t out[32]);
int verity_digest_fd(int fd, uint8_t out[32]);
void sha256(const void *data, size_t len, uint8_t out[32]);
void hex32(const uint8_t d[32], char out[65]);

/* Small helpers. */
char *path_join(const char *dir, const char *name);	/* static ring buffer */
void mkdir_p(const char *path);
void msleep(unsigned int ms);
double now_s(void);
bool write_str(const char *path, const char *s);	/* "echo s > path" */
bool read_str(const char *path, char *buf, size_t len);

#endif
