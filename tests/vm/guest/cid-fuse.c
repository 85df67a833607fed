// SPDX-License-Identifier: GPL-2.0
/*
 * A minimal FUSE passthrough server for the in-guest tests, after libfuse's
 * example/passthrough.c (high-level API): every path under the mount is
 * the same path under BACKING.  Short attribute and entry timeouts (0.5 s)
 * so a change made to BACKING behind the mount's back is seen quickly.
 *
 *   cid-fuse BACKING MOUNTPOINT        (runs in the foreground)
 *
 * The page cache of the FUSE inodes is what named merging shares; the
 * server itself reads BACKING with plain (cached) I/O.
 *
 * A hostile mode for the fill-verification tests: while BACKING holds a
 * file named ".cid-fuse-lie", reads through files opened without O_DIRECT
 * return every byte inverted, reads through O_DIRECT opens the truth (a
 * server that answers the kernel's hashing and its page-cache fills
 * differently).
 */
#define FUSE_USE_VERSION 31
#define _GNU_SOURCE
#include <fuse.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/time.h>

static int bfd;	/* the backing directory */

/* Opens made with O_DIRECT, by backing fd (the lying mode spares them). */
#define MAX_FD 65536
static unsigned char direct_fd[MAX_FD];

static int lying(int fd)
{
	return fd >= 0 && fd < MAX_FD && !direct_fd[fd] &&
	       faccessat(bfd, ".cid-fuse-lie", F_OK, 0) == 0;
}

/* "/x/y" -> "x/y", "/" -> "." relative to bfd */
static const char *rel(const char *path)
{
	return path[1] ? path + 1 : ".";
}

static void *pt_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	(void)conn;
	cfg->use_ino = 1;
	cfg->attr_timeout = 0.5;
	cfg->entry_timeout = 0.5;
	cfg->negative_timeout = 0;
	cfg->nullpath_ok = 0;
	return NULL;
}

static int pt_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	int r = fi ? fstat(fi->fh, st) : fstatat(bfd, rel(path), st, AT_SYMLINK_NOFOLLOW);

	return r ? -errno : 0;
}

static int pt_access(const char *path, int mask)
{
	return faccessat(bfd, rel(path), mask, 0) ? -errno : 0;
}

static int pt_readlink(const char *path, char *buf, size_t size)
{
	ssize_t n = readlinkat(bfd, rel(path), buf, size - 1);

	if (n < 0)
		return -errno;
	buf[n] = 0;
	return 0;
}

static int pt_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off,
		      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	int fd = openat(bfd, rel(path), O_RDONLY | O_DIRECTORY);
	DIR *d;
	struct dirent *de;

	(void)off, (void)fi, (void)flags;
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d))) {
		struct stat st;

		memset(&st, 0, sizeof(st));
		st.st_ino = de->d_ino;
		st.st_mode = de->d_type << 12;
		if (filler(buf, de->d_name, &st, 0, 0))
			break;
	}
	closedir(d);
	return 0;
}

static int pt_mknod(const char *path, mode_t mode, dev_t rdev)
{
	return mknodat(bfd, rel(path), mode, rdev) ? -errno : 0;
}

static int pt_mkdir(const char *path, mode_t mode)
{
	return mkdirat(bfd, rel(path), mode) ? -errno : 0;
}

static int pt_unlink(const char *path)
{
	return unlinkat(bfd, rel(path), 0) ? -errno : 0;
}

static int pt_rmdir(const char *path)
{
	return unlinkat(bfd, rel(path), AT_REMOVEDIR) ? -errno : 0;
}

static int pt_symlink(const char *from, const char *to)
{
	return symlinkat(from, bfd, rel(to)) ? -errno : 0;
}

static int pt_rename(const char *from, const char *to, unsigned int flags)
{
	return renameat2(bfd, rel(from), bfd, rel(to), flags) ? -errno : 0;
}

static int pt_link(const char *from, const char *to)
{
	return linkat(bfd, rel(from), bfd, rel(to), 0) ? -errno : 0;
}

static int pt_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	int r = fi ? fchmod(fi->fh, mode) : fchmodat(bfd, rel(path), mode, 0);

	return r ? -errno : 0;
}

static int pt_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
	int r = fi ? fchown(fi->fh, uid, gid)
		   : fchownat(bfd, rel(path), uid, gid, AT_SYMLINK_NOFOLLOW);

	return r ? -errno : 0;
}

static int pt_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	int fd, r;

	if (fi)
		return ftruncate(fi->fh, size) ? -errno : 0;
	fd = openat(bfd, rel(path), O_WRONLY);
	if (fd < 0)
		return -errno;
	r = ftruncate(fd, size) ? -errno : 0;
	close(fd);
	return r;
}

static int pt_utimens(const char *path, const struct timespec ts[2], struct fuse_file_info *fi)
{
	int r = fi ? futimens(fi->fh, ts) : utimensat(bfd, rel(path), ts, AT_SYMLINK_NOFOLLOW);

	return r ? -errno : 0;
}

/* O_DIRECT only matters to the kernel side of the mount. */
static int open_flags(int flags)
{
	return flags & ~(O_DIRECT | O_CREAT | O_EXCL | O_NOCTTY);
}

static int pt_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	int fd = openat(bfd, rel(path), open_flags(fi->flags) | O_CREAT | (fi->flags & O_EXCL),
			mode);

	if (fd < 0)
		return -errno;
	fi->fh = fd;
	return 0;
}

static int pt_open(const char *path, struct fuse_file_info *fi)
{
	int fd = openat(bfd, rel(path), open_flags(fi->flags));

	if (fd < 0)
		return -errno;
	if (fd < MAX_FD)
		direct_fd[fd] = !!(fi->flags & O_DIRECT);
	fi->fh = fd;
	return 0;
}

static int pt_read(const char *path, char *buf, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	ssize_t n = pread(fi->fh, buf, size, off), i;

	(void)path;
	if (n < 0)
		return -errno;
	if (lying(fi->fh))
		for (i = 0; i < n; i++)
			buf[i] = ~buf[i];
	return (int)n;
}

static int pt_write(const char *path, const char *buf, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	ssize_t n = pwrite(fi->fh, buf, size, off);

	(void)path;
	return n < 0 ? -errno : (int)n;
}

/* For the punch-hole case (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE). */
static int pt_fallocate(const char *path, int mode, off_t off, off_t len,
			struct fuse_file_info *fi)
{
	(void)path;
	return fallocate(fi->fh, mode, off, len) ? -errno : 0;
}

static int pt_statfs(const char *path, struct statvfs *st)
{
	(void)path;
	return fstatvfs(bfd, st) ? -errno : 0;
}

static int pt_release(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	if (fi->fh < MAX_FD)
		direct_fd[fi->fh] = 0;
	close(fi->fh);
	return 0;
}

static int pt_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	(void)path;
	return (datasync ? fdatasync(fi->fh) : fsync(fi->fh)) ? -errno : 0;
}

static off_t pt_lseek(const char *path, off_t off, int whence, struct fuse_file_info *fi)
{
	off_t r;

	(void)path;
	r = lseek(fi->fh, off, whence);
	return r < 0 ? -errno : r;
}

static const struct fuse_operations ops = {
	.init = pt_init,
	.getattr = pt_getattr,
	.access = pt_access,
	.readlink = pt_readlink,
	.readdir = pt_readdir,
	.mknod = pt_mknod,
	.mkdir = pt_mkdir,
	.symlink = pt_symlink,
	.unlink = pt_unlink,
	.rmdir = pt_rmdir,
	.rename = pt_rename,
	.link = pt_link,
	.chmod = pt_chmod,
	.chown = pt_chown,
	.truncate = pt_truncate,
	.utimens = pt_utimens,
	.open = pt_open,
	.create = pt_create,
	.read = pt_read,
	.write = pt_write,
	.statfs = pt_statfs,
	.release = pt_release,
	.fsync = pt_fsync,
	.fallocate = pt_fallocate,
	.lseek = pt_lseek,
};

int main(int argc, char **argv)
{
	char *args[] = { argv[0], "-f", "-o", "allow_other,default_permissions,fsname=cid-fuse,max_threads=16",
			 argv[argc > 2 ? 2 : 0], NULL };

	if (argc != 3) {
		fprintf(stderr, "usage: %s BACKING MOUNTPOINT\n", argv[0]);
		return 2;
	}
	bfd = open(argv[1], O_RDONLY | O_DIRECTORY);
	if (bfd < 0) {
		perror(argv[1]);
		return 1;
	}
	umask(0);
	return fuse_main(5, args, &ops, NULL);
}
