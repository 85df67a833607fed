#include "cid/io.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <mutex>

namespace cid {

FileStat FileStat::From(const struct stat& st) {
  FileStat f;
  f.dev = st.st_dev;
  f.ino = st.st_ino;
  f.size = static_cast<uint64_t>(st.st_size);
  f.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  f.ctime_ns = static_cast<int64_t>(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec;
  f.mode = st.st_mode;
  f.nlink = st.st_nlink;
  return f;
}

namespace {

// cachestat(2), Linux 6.5; older <linux/mman.h> lack it.  451 on every
// architecture but alpha (and x32, which adds its own bit).
#if !defined(__NR_cachestat) && !defined(__alpha__) && !(defined(__x86_64__) && defined(__ILP32__))
#define __NR_cachestat 451
#endif
struct CachestatRange {
  uint64_t off;
  uint64_t len;
};
struct CachestatResult {
  uint64_t nr_cache;
  uint64_t nr_dirty;
  uint64_t nr_writeback;
  uint64_t nr_evicted;
  uint64_t nr_recently_evicted;
};
std::atomic<bool> cachestat_missing{false};

}  // namespace

Result<std::string> ReadSmallFile(const std::string& path, size_t max_bytes) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(path, errno);
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      close(fd);
      return Status::FromErrno(path, err);
    }
    if (n == 0) break;
    if (out.size() + static_cast<size_t>(n) > max_bytes) {
      close(fd);
      return Status::FromErrno(path, EFBIG);
    }
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

int Cachestat(int fd, uint64_t off, uint64_t len, uint64_t* nr_cache) {
#ifdef __NR_cachestat
  CachestatRange range{off, len};
  CachestatResult cs{};
  if (syscall(__NR_cachestat, fd, &range, &cs, 0) != 0) return errno;
  *nr_cache = cs.nr_cache;
  return 0;
#else
  (void)fd, (void)off, (void)len, (void)nr_cache;
  return ENOSYS;
#endif
}

bool RangeCached(int fd, uint64_t off, uint64_t len) {
  if (len == 0) return true;
  if (cachestat_missing.load(std::memory_order_relaxed)) return false;
  uint64_t nr_cache = 0;
  int err = Cachestat(fd, off, len, &nr_cache);
  if (err != 0) {
    if (err == ENOSYS) cachestat_missing = true;  // the kernel's answer; no need to ask again
    return false;
  }
  static const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  uint64_t pages = (off + len - 1) / page - off / page + 1;
  return nr_cache >= pages;
}

bool ReadEngine::Cached(int fd, uint64_t off, uint64_t len) { return RangeCached(fd, off, len); }

int64_t ReadEngine::ReadCached(int, void*, uint32_t, uint64_t) { return -EAGAIN; }

int64_t ReadNowait(int fd, void* buf, uint32_t len, uint64_t off) {
  static std::atomic<bool> unsupported{false};
  if (unsupported.load(std::memory_order_relaxed)) return -EAGAIN;
  struct iovec iov = {buf, len};
  ssize_t n;
  do {
    n = preadv2(fd, &iov, 1, static_cast<off_t>(off), RWF_NOWAIT);
  } while (n < 0 && errno == EINTR);
  if (n > 0) return n;
  if (n < 0 && errno == EOPNOTSUPP) unsupported.store(true, std::memory_order_relaxed);
  return -EAGAIN;  // not cached, an error, or the end: the engine's read says which
}

namespace {

// Reads synchronously in Wait(), in submission order.
class PreadEngine final : public ReadEngine {
 public:
  explicit PreadEngine(unsigned depth) : depth_(depth) {}

  Status Submit(int fd, void* buf, uint32_t len, uint64_t off, uint64_t tag) override {
    if (queue_.size() >= depth_) return Status::InvalidArgument("pread engine: queue full");
    queue_.push_back(Req{fd, buf, len, off, tag});
    return Status::OK();
  }

  Status Wait(std::vector<ReadCompletion>* out) override {
    while (!queue_.empty()) {
      Req r = queue_.front();
      queue_.pop_front();
      ssize_t n;
      do {
        n = pread(r.fd, r.buf, r.len, static_cast<off_t>(r.off));
      } while (n < 0 && errno == EINTR);
      out->push_back(ReadCompletion{r.tag, n < 0 ? -static_cast<int64_t>(errno) : n});
    }
    return Status::OK();
  }

  unsigned depth() const override { return depth_; }
  const char* name() const override { return "pread"; }
  int64_t ReadCached(int fd, void* buf, uint32_t len, uint64_t off) override {
    return ReadNowait(fd, buf, len, off);
  }

 private:
  struct Req {
    int fd;
    void* buf;
    uint32_t len;
    uint64_t off;
    uint64_t tag;
  };
  const unsigned depth_;
  std::deque<Req> queue_;
};

class UringEngine final : public ReadEngine {
 public:
  UringEngine(unsigned depth) : depth_(depth) {}
  ~UringEngine() override {
    if (initialized_) io_uring_queue_exit(&ring_);
  }

  int Init() {
    int r = io_uring_queue_init(depth_, &ring_, 0);
    if (r == 0) initialized_ = true;
    return r;
  }

  int64_t ReadCached(int fd, void* buf, uint32_t len, uint64_t off) override {
    return ReadNowait(fd, buf, len, off);
  }

  Status Submit(int fd, void* buf, uint32_t len, uint64_t off, uint64_t tag) override {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (!sqe) {
      int r = io_uring_submit(&ring_);
      if (r < 0) return Status::FromErrno("io_uring_submit", -r);
      sqe = io_uring_get_sqe(&ring_);
      if (!sqe) return Status::IoError("io_uring: submission queue full");
    }
    io_uring_prep_read(sqe, fd, buf, len, off);
    io_uring_sqe_set_data64(sqe, tag);
    return Status::OK();
  }

  Status Wait(std::vector<ReadCompletion>* out) override {
    int r;
    do {
      r = io_uring_submit_and_wait(&ring_, 1);
    } while (r == -EINTR);
    if (r < 0) return Status::FromErrno("io_uring_submit_and_wait", -r);
    io_uring_cqe* cqe;
    unsigned head, n = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      out->push_back(ReadCompletion{io_uring_cqe_get_data64(cqe), cqe->res});
      n++;
    }
    io_uring_cq_advance(&ring_, n);
    return Status::OK();
  }

  unsigned depth() const override { return depth_; }
  const char* name() const override { return "io_uring"; }

 private:
  const unsigned depth_;
  bool initialized_ = false;
  io_uring ring_{};
};

bool UringDisabledByEnv() {
  const char* v = getenv("CID_NO_URING");
  return v && *v && strcmp(v, "0") != 0;
}

}  // namespace

std::unique_ptr<ReadEngine> NewPreadEngine(unsigned depth) {
  return std::make_unique<PreadEngine>(depth);
}

Result<std::unique_ptr<ReadEngine>> NewUringEngine(unsigned depth) {
  auto e = std::make_unique<UringEngine>(depth);
  int r = e->Init();
  if (r < 0) return Status::FromErrno("io_uring_queue_init", -r);
  return std::unique_ptr<ReadEngine>(std::move(e));
}

namespace {
// One decision per process: once io_uring was refused, do not retry it.
std::atomic<bool> uring_refused{false};
}  // namespace

void NoteUringBroken() { uring_refused = true; }

EngineFactory DefaultEngineFactory(unsigned depth) {
  return [depth]() -> std::unique_ptr<ReadEngine> {
    std::atomic<bool>& refused = uring_refused;
    static std::once_flag warned;
    if (UringDisabledByEnv() || refused.load()) return NewPreadEngine(depth);
    auto r = NewUringEngine(depth);
    if (r.ok()) return std::move(r.value());
    refused = true;
    std::call_once(warned, [&] {
      fprintf(stderr, "%s: io_uring unavailable (%s), falling back to pread\n",
              program_invocation_short_name, strerror(r.status().err()));
    });
    return NewPreadEngine(depth);
  };
}

}  // namespace cid
