#include "cid/hasher.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

namespace cid {

struct FileHasher::Slot {
  size_t index = 0;  // in slots_; the read tag
  bool busy = false;
  int fd = -1;
  HashRequest req;
  FileStat before;
  uint64_t off = 0;
  uint32_t want = 0;  // bytes asked for in the outstanding read
  Sha256 sha;
  std::unique_ptr<uint8_t, decltype(&free)> buf{nullptr, &free};
};

namespace {

// Opens without following symlinks, without blocking on a FIFO that
// replaced the file since the walk, and without updating atime where allowed.
int OpenForHash(const std::string& path) {
  int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK;
  int fd = open(path.c_str(), flags | O_NOATIME);
  if (fd < 0 && errno == EPERM) fd = open(path.c_str(), flags);
  if (fd < 0) return -1;
  // io_uring honours O_NONBLOCK on regular files (it would return EAGAIN
  // instead of waiting for the disk), so clear it again.
  if (fcntl(fd, F_SETFL, O_RDONLY) < 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

}  // namespace

FileHasher::FileHasher(std::unique_ptr<ReadEngine> engine, HasherOptions options)
    : engine_(std::move(engine)), options_(options) {
  unsigned n = std::max(1u, std::min(options_.files_in_flight, engine_->depth()));
  for (unsigned i = 0; i < n; i++) {
    auto s = std::make_unique<Slot>();
    s->index = i;
    void* p = nullptr;
    if (posix_memalign(&p, 4096, options_.buffer_size) != 0) abort();
    s->buf.reset(static_cast<uint8_t*>(p));
    slots_.push_back(std::move(s));
  }
}

FileHasher::~FileHasher() {
  for (auto& s : slots_)
    if (s->fd >= 0) close(s->fd);
}

void FileHasher::Finish(Slot* slot, Status status, const std::function<void(HashOutcome&&)>& done) {
  HashOutcome o;
  o.id = slot->req.id;
  o.path = std::move(slot->req.path);
  o.st = slot->before;
  o.expected = slot->req.expect;
  if (status.ok()) {
    struct stat st;
    if (fstat(slot->fd, &st) < 0) {
      status = Status::FromErrno(o.path, errno);
    } else {
      FileStat after = FileStat::From(st);
      if (!after.SameVersion(slot->before) || slot->off != slot->before.size)
        status = Status::Changed(o.path + ": changed while it was being hashed (size or mtime/ctime moved); not recorded");
    }
    if (status.ok()) o.digest = slot->sha.Finish();
  }
  slot->sha.Reset();
  o.status = std::move(status);
  if (slot->fd >= 0) close(slot->fd);
  slot->fd = -1;
  slot->busy = false;
  done(std::move(o));
}

Status FileHasher::SubmitNext(Slot* slot) {
  uint64_t left = slot->before.size - slot->off;
  slot->want = static_cast<uint32_t>(std::min<uint64_t>(left, options_.buffer_size));
  return engine_->Submit(slot->fd, slot->buf.get(), slot->want, slot->off, slot->index);
}

// Returns true if a read is now outstanding for the slot.
bool FileHasher::Start(Slot* slot, HashRequest&& req, const std::function<void(HashOutcome&&)>& done) {
  slot->req = std::move(req);
  slot->off = 0;
  slot->busy = true;
  slot->before = FileStat{};
  slot->fd = OpenForHash(slot->req.path);
  if (slot->fd < 0) {
    Finish(slot, Status::FromErrno(slot->req.path, errno), done);
    return false;
  }
  struct stat st;
  if (fstat(slot->fd, &st) < 0) {
    Finish(slot, Status::FromErrno(slot->req.path, errno), done);
    return false;
  }
  slot->before = FileStat::From(st);
  if (!S_ISREG(st.st_mode)) {
    Finish(slot, Status::Changed(slot->req.path + ": no longer a regular file"), done);
    return false;
  }
  const FileStat& want = slot->req.expect;
  if (want.ino != 0 && (want.dev != slot->before.dev || want.ino != slot->before.ino)) {
    Finish(slot, Status::Changed(slot->req.path + ": replaced by another file during the scan"), done);
    return false;
  }
  if (slot->before.size == 0) {
    Finish(slot, Status::OK(), done);
    return false;
  }
  Status s = SubmitNext(slot);
  if (!s.ok()) {
    Finish(slot, s, done);
    return false;
  }
  return true;
}

void FileHasher::Run(const std::function<bool(HashRequest*, bool may_block)>& next,
                     const std::function<void(HashOutcome&&)>& done) {
  size_t active = 0;
  bool more = true;
  std::vector<ReadCompletion> comps;
  while (true) {
    // Fill idle slots; block for work only when nothing is in flight.
    bool starved = false;
    for (auto& s : slots_) {
      while (more && !starved && !s->busy) {
        HashRequest req;
        if (!next(&req, active == 0)) {
          if (active == 0) more = false;  // a blocking next() only fails when closed
          starved = true;
          break;
        }
        if (Start(s.get(), std::move(req), done)) active++;
      }
    }
    if (active == 0) {
      if (!more) return;
      continue;
    }
    comps.clear();
    Status ws = engine_->Wait(&comps);
    if (!ws.ok()) {
      for (auto& s : slots_)
        if (s->busy) Finish(s.get(), Status::IoError(s->req.path + ": " + ws.message(), ws.err()), done);
      return;
    }
    for (const ReadCompletion& c : comps) {
      Slot* s = slots_[c.tag].get();
      if (c.res == -EINTR || c.res == -EAGAIN) {
        Status st = SubmitNext(s);
        if (!st.ok()) {
          Finish(s, st, done);
          active--;
        }
        continue;
      }
      if (c.res < 0) {
        Finish(s, Status::FromErrno(s->req.path + ": read", static_cast<int>(-c.res)), done);
        active--;
        continue;
      }
      if (c.res == 0) {  // EOF before the size fstat gave: it shrank
        Finish(s, Status::Changed(s->req.path + ": shrank while it was being hashed; not recorded"), done);
        active--;
        continue;
      }
      s->sha.Update(s->buf.get(), static_cast<size_t>(c.res));
      s->off += static_cast<uint64_t>(c.res);
      if (s->off >= s->before.size) {
        Finish(s, Status::OK(), done);
        active--;
        continue;
      }
      Status st = SubmitNext(s);
      if (!st.ok()) {
        Finish(s, st, done);
        active--;
      }
    }
  }
}

HashOutcome FileHasher::HashPath(const std::string& path) {
  bool given = false;
  HashOutcome out;
  Run(
      [&](HashRequest* r, bool) {
        if (given) return false;
        given = true;
        r->path = path;
        return true;
      },
      [&](HashOutcome&& o) { out = std::move(o); });
  return out;
}

HashPool::HashPool(unsigned workers, const EngineFactory& factory, HasherOptions options,
                   const std::atomic<bool>* stop)
    : stop_(stop) {
  if (workers == 0) workers = 1;
  for (unsigned i = 0; i < workers; i++) {
    threads_.emplace_back([this, factory, options] {
      FileHasher h(factory(), options);
      {
        std::lock_guard<std::mutex> l(mu_);
        if (engine_name_.empty()) engine_name_ = h.engine_name();
      }
      h.Run([this](HashRequest* r, bool b) { return Next(r, b); },
            [this](HashOutcome&& o) { Done(std::move(o)); });
    });
  }
}

HashPool::~HashPool() {
  Close();
  for (auto& t : threads_) t.join();
}

void HashPool::Add(HashRequest req) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (Stopped()) return;
    requests_.push_back(std::move(req));
    in_progress_++;
  }
  work_cv_.notify_one();
}

void HashPool::Close() {
  {
    std::lock_guard<std::mutex> l(mu_);
    closed_ = true;
  }
  work_cv_.notify_all();
  done_cv_.notify_all();
}

void HashPool::Cancel() {
  std::lock_guard<std::mutex> l(mu_);
  in_progress_ -= requests_.size();
  requests_.clear();
}

bool HashPool::Next(HashRequest* req, bool may_block) {
  std::unique_lock<std::mutex> l(mu_);
  // The stop flag may be set from a signal handler, which cannot notify:
  // wake up now and then to look at it.
  while (may_block && requests_.empty() && !closed_ && !Stopped())
    work_cv_.wait_for(l, std::chrono::milliseconds(100));
  if (Stopped() && !requests_.empty()) {
    in_progress_ -= requests_.size();
    requests_.clear();
    done_cv_.notify_all();
  }
  if (requests_.empty()) return false;
  *req = std::move(requests_.front());
  requests_.pop_front();
  return true;
}

void HashPool::Done(HashOutcome&& o) {
  {
    std::lock_guard<std::mutex> l(mu_);
    outcomes_.push_back(std::move(o));
  }
  done_cv_.notify_one();
}

bool HashPool::Take(std::vector<HashOutcome>* out, bool wait) {
  std::unique_lock<std::mutex> l(mu_);
  if (wait)
    done_cv_.wait(l, [this] { return !outcomes_.empty() || (closed_ && in_progress_ == 0); });
  while (!outcomes_.empty()) {
    out->push_back(std::move(outcomes_.front()));
    outcomes_.pop_front();
    in_progress_--;
  }
  return !(closed_ && in_progress_ == 0);
}

size_t HashPool::pending() const {
  std::lock_guard<std::mutex> l(mu_);
  return in_progress_;
}

std::string HashPool::engine_name() const {
  std::lock_guard<std::mutex> l(mu_);
  return engine_name_;
}

}  // namespace cid
