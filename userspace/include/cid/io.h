// File I/O behind a small interface, so tests can inject faults (LevelDB's
// Env).  A ReadEngine queues positioned reads and returns their completions;
// the io_uring engine keeps many reads in flight, the pread engine is the
// fallback where io_uring is refused (seccomp, old kernels, CID_NO_URING=1).
// It also tells whether a range is already in the page cache, where hashing
// it straight from a mapping beats copying it into a buffer.
#ifndef CID_IO_H_
#define CID_IO_H_

#include <sys/stat.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cid/status.h"

namespace cid {

// What the index remembers about an inode to decide whether it changed.
struct FileStat {
  uint64_t dev = 0;
  uint64_t ino = 0;
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;
  uint32_t mode = 0;
  uint64_t nlink = 0;

  static FileStat From(const struct stat& st);
  // Same inode with the same size, mtime and ctime.
  bool SameVersion(const FileStat& o) const {
    return dev == o.dev && ino == o.ino && size == o.size && mtime_ns == o.mtime_ns &&
           ctime_ns == o.ctime_ns;
  }
};

struct ReadCompletion {
  uint64_t tag;  // as given to Submit
  int64_t res;   // bytes read, or -errno
};

class ReadEngine {
 public:
  virtual ~ReadEngine() = default;
  ReadEngine() = default;
  ReadEngine(const ReadEngine&) = delete;
  ReadEngine& operator=(const ReadEngine&) = delete;

  // Queues a read of `len` bytes at `off`; the completion carries `tag`.
  // At most depth() reads may be outstanding.
  virtual Status Submit(int fd, void* buf, uint32_t len, uint64_t off, uint64_t tag) = 0;
  // Starts queued reads and waits until at least one has completed;
  // appends every completion available to `out`.
  virtual Status Wait(std::vector<ReadCompletion>* out) = 0;
  virtual unsigned depth() const = 0;
  virtual const char* name() const = 0;

  // Whether every page of [off, off + len) of fd is in the page cache now.
  // False where that cannot be told: cachestat(2) is missing (before Linux
  // 6.5, or refused by seccomp) or refuses this file (EPERM: it reports only
  // on files the caller owns or may write, as mincore(2) does).
  virtual bool Cached(int fd, uint64_t off, uint64_t len);

  // Reads at once what of [off, off + len) the page cache holds
  // (preadv2 RWF_NOWAIT): the bytes read (> 0), or -EAGAIN where nothing
  // could be read without waiting for the disk, or the engine reads only
  // through Submit (the default, and engines that tests hook).  A file
  // whose pages are cached then costs one system call per read, not a
  // submission and a completion.
  virtual int64_t ReadCached(int fd, void* buf, uint32_t len, uint64_t off);
};

// preadv2(RWF_NOWAIT) for ReadEngine::ReadCached; -EAGAIN once the kernel
// or filesystem said it cannot do that (EOPNOTSUPP).
int64_t ReadNowait(int fd, void* buf, uint32_t len, uint64_t off);

// The whole of a small file (a config, a list), with read(2): no
// iostreams, whose locale set-up alone costs a short-lived process such as
// a hook run 0.4 ms.  Errors name the path (Status::FromErrno); a file
// larger than max_bytes is refused with EFBIG.
Result<std::string> ReadSmallFile(const std::string& path, size_t max_bytes = 16u << 20);

// cachestat(2) of [off, off + len) of fd: 0 with the pages of the range in
// the page cache in *nr_cache, or the errno it failed with (ENOSYS: the
// kernel, or the headers this was built with, predate Linux 6.5).
int Cachestat(int fd, uint64_t off, uint64_t len, uint64_t* nr_cache);

// The page-cache probe behind ReadEngine::Cached.
bool RangeCached(int fd, uint64_t off, uint64_t len);

std::unique_ptr<ReadEngine> NewPreadEngine(unsigned depth);
// Fails with the errno io_uring_queue_init returned (EPERM, ENOSYS, ENOMEM).
Result<std::unique_ptr<ReadEngine>> NewUringEngine(unsigned depth);

using EngineFactory = std::function<std::unique_ptr<ReadEngine>()>;

// io_uring unless CID_NO_URING is set to a non-empty value other than "0";
// if io_uring is refused, prints once to stderr
//   "<prog>: io_uring unavailable (<strerror>), falling back to pread"
// and returns pread engines from then on.
EngineFactory DefaultEngineFactory(unsigned depth);

// Tells DefaultEngineFactory that io_uring failed after setup (its
// io_uring_enter refused): it returns pread engines from then on.
void NoteUringBroken();

}  // namespace cid

#endif  // CID_IO_H_
