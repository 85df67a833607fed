#include "cid/hasher.h"

#include "cid/huge_pages.h"
#include "cid/safe_open.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <mutex>

namespace cid {

struct FileHasher::Slot {
  size_t index = 0;  // in slots_; the read tag
  bool busy = false;
  int fd = -1;
  HashRequest req;
  FileStat before;
  uint64_t off = 0;
  uint32_t want = 0;  // bytes asked for in the outstanding read
  bool map = false;     // hashed from mappings where cached
  uint64_t mapped = 0;  // bytes hashed from a mapping
  bool one_read = false;  // the whole file came in its first read (see Finish)
  VerityHasher sha;  // the content id: fs-verity digest
  bool partial_only = false;  // reading only the edges the partial fingerprint covers
  // A small file of a partial request: read whole for its fingerprint, and
  // hashed only if the fingerprint was seen (HashRequest::partial_only).
  bool probe = false;
  PartialEdges edges;         // the partial fingerprint's bytes, gathered as they pass
  uint8_t* buf = nullptr;  // buffer_size bytes of FileHasher::buffers_
  // Comparing with req.twin (opened as twin_fd) instead of hashing; the
  // twin's bytes are read into twin_buf beside each read of the file.
  bool comparing = false;
  int twin_fd = -1;
  // Continue's read was served at once from the page cache: sync_res bytes.
  bool sync = false;
  int64_t sync_res = 0;
  bool nonblock = false;  // fd still has O_NONBLOCK (see SubmitRead)
  uint8_t* twin_buf = nullptr;  // buffer_size bytes of FileHasher::buffers_
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

// Hashing from a mapping.  If another process truncates the file while it
// is mapped, touching a page past the new end raises SIGBUS.  That must end
// this one hash as "changed", not the process: the hash runs under a
// per-thread guard, and the handler jumps back to it when the fault is the
// kernel's (si_code > 0) and its address lies in the guarded range of the
// faulting thread.  Any other SIGBUS goes where it went before the handler
// was installed (by default the process dies, as it would have).
//
// The jump leaves VerityHasher::Update midway, in a copy from the mapping or
// in EVP_DigestUpdate: neither holds a lock or is inside malloc then, and
// the hasher is reset before its next use.  Between the
// sigsetjmp and the fault there are only frames without destructors.
struct MapGuard {
  const uint8_t* begin;
  const uint8_t* end;
  sigjmp_buf env;
};

// Constant-initialized, so reading it in the handler needs no TLS setup.
thread_local MapGuard* tls_map_guard = nullptr;
struct sigaction previous_sigbus;

void OnSigbus(int sig, siginfo_t* info, void* ucontext) {
  MapGuard* g = tls_map_guard;
  const auto* addr = static_cast<const uint8_t*>(info->si_addr);
  if (g && info->si_code > 0 && addr >= g->begin && addr < g->end) siglongjmp(g->env, 1);
  if (previous_sigbus.sa_flags & SA_SIGINFO) {
    if (previous_sigbus.sa_sigaction) return previous_sigbus.sa_sigaction(sig, info, ucontext);
  } else if (previous_sigbus.sa_handler != SIG_DFL && previous_sigbus.sa_handler != SIG_IGN) {
    return previous_sigbus.sa_handler(sig);
  }
  // The default action: a fault repeats when the handler returns and then
  // kills; a sent signal is raised again (delivered once the handler returns).
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigaction(SIGBUS, &dfl, nullptr);
  if (info->si_code <= 0) raise(SIGBUS);
}

// Installs the handler once per process; true while it is still in place
// (a program may install its own later, and then mapping is not used).
bool SigbusHandlerInstalled() {
  static std::once_flag once;
  static bool installed = false;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = OnSigbus;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    installed = sigaction(SIGBUS, &sa, &previous_sigbus) == 0;
  });
  if (!installed) return false;
  struct sigaction cur {};
  return sigaction(SIGBUS, nullptr, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == OnSigbus;
}

enum class MapResult { kHashed, kFaulted, kUnmapped };

// Feeds [off, off + len) of fd to sha from a read-only mapping.  kFaulted:
// SIGBUS (the file shrank, or the page could not be read back), and sha
// holds an unfinished state; kUnmapped: not mapped, nothing hashed.
MapResult HashMapped(VerityHasher* sha, PartialEdges* edges, int fd, uint64_t off, uint64_t len) {
  if (!SigbusHandlerInstalled()) return MapResult::kUnmapped;
  void* p = mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(off));
  if (p == MAP_FAILED) return MapResult::kUnmapped;  // e.g. ENODEV: the filesystem cannot map
  MapGuard guard;
  guard.begin = static_cast<const uint8_t*>(p);
  guard.end = guard.begin + len;
  MapResult result = MapResult::kFaulted;
  if (sigsetjmp(guard.env, 1) == 0) {  // 1: restore the signal mask, which the handler's entry blocked SIGBUS in
    tls_map_guard = &guard;
    edges->Add(off, p, len);
    sha->Update(p, len);
    result = MapResult::kHashed;
  }
  tls_map_guard = nullptr;
  munmap(p, len);
  return result;
}

}  // namespace

// The slots' read and compare buffers in one huge-page-advised mapping
// (cid/huge_pages.h): a run starts a hasher per hashing thread and root,
// and each hasher's 2 MiB of fresh buffers cost up to 512 first-touch
// traps in a virtual machine otherwise.
void FileHasher::MapBuffers() {
  size_t len = 2 * slots_.size() * options_.buffer_size;
  buffers_ = static_cast<uint8_t*>(MapHugeAdvised(&len));
  buffers_len_ = len;
  for (size_t i = 0; i < slots_.size(); i++) {
    slots_[i]->buf = buffers_ + 2 * i * options_.buffer_size;
    slots_[i]->twin_buf = slots_[i]->buf + options_.buffer_size;
  }
}

FileHasher::FileHasher(std::unique_ptr<ReadEngine> engine, HasherOptions options)
    : engine_(std::move(engine)), options_(options) {
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  map_window_ = std::max(page, options_.map_window / page * page);
  unsigned n = std::max(1u, std::min(options_.files_in_flight, engine_->depth()));
  for (unsigned i = 0; i < n; i++) {
    auto s = std::make_unique<Slot>();
    s->index = i;
    slots_.push_back(std::move(s));
  }
  MapBuffers();
}

FileHasher::~FileHasher() {
  for (auto& s : slots_) {
    if (s->fd >= 0) close(s->fd);
    if (s->twin_fd >= 0) close(s->twin_fd);
  }
  UnmapHugeAdvised(buffers_, buffers_len_);
}

// Opens the request's twin for a comparison: it must be the version its
// row describes (and as large as the file), else the file is hashed.
bool FileHasher::OpenTwin(Slot* slot) {
  const HashRequest::Twin& t = *slot->req.twin;
  if (t.dir_fd < 0 || t.st.ino == 0 || t.st.size != slot->before.size) return false;
  FileStat now;
  auto fd = OpenFileBeneath(t.dir_fd, t.rel, t.path, t.st, &now, /*keep_nonblock=*/true);  // read with pread
  if (!fd.ok()) return false;
  if (!now.SameVersion(t.st)) {
    close(*fd);
    return false;
  }
  slot->twin_fd = *fd;
  return true;
}

void FileHasher::CloseTwin(Slot* slot) {
  if (slot->twin_fd >= 0) close(slot->twin_fd);
  slot->twin_fd = -1;
  slot->comparing = false;
}

// Whether the twin holds the `len` bytes just read into slot->buf at
// slot->off.
bool FileHasher::TwinMatches(Slot* slot, size_t len) {
  size_t got = 0;
  while (got < len) {
    ssize_t r = pread(slot->twin_fd, slot->twin_buf + got, len - got, static_cast<off_t>(slot->off + got));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    got += static_cast<size_t>(r);
  }
  return memcmp(slot->buf, slot->twin_buf, len) == 0;
}

// After the last comparison: the twin is still the version whose digest
// the file is given.
bool FileHasher::TwinUnchanged(Slot* slot) {
  struct stat st;
  return fstat(slot->twin_fd, &st) == 0 && FileStat::From(st).SameVersion(slot->req.twin->st);
}

// The comparison failed (a byte differs, the twin could not be read or
// changed): the file is hashed on its own, from its first byte.
void FileHasher::HashAlone(Slot* slot) {
  CloseTwin(slot);
  slot->off = 0;
  slot->one_read = false;
  slot->edges.Reset(slot->before.size);
  slot->map = options_.map_min_size != 0 && slot->before.size >= options_.map_min_size;
}

bool FileHasher::FallBack(const Status& why) {
  if (strcmp(engine_->name(), "io_uring") != 0) return false;
  static std::once_flag warned;
  std::call_once(warned, [&] {
    fprintf(stderr, "%s: io_uring failed after setup (%s), falling back to pread\n", program_invocation_short_name,
            why.message().c_str());
  });
  NoteUringBroken();
  // Completions of the old ring are lost with it: nothing of it is reused.
  engine_ = NewPreadEngine(engine_->depth());
  return true;
}

void FileHasher::Finish(Slot* slot, Status status, const std::function<void(HashOutcome&&)>& done,
                        bool interrupted) {
  HashOutcome o;
  o.interrupted = interrupted;
  o.id = slot->req.id;
  o.path = std::move(slot->req.path);
  o.st = slot->before;
  o.expected = slot->req.expect;
  o.mapped_bytes = slot->mapped;
  o.partial_only = slot->partial_only || slot->probe;
  o.compared = status.ok() && slot->comparing;
  if (status.ok() && slot->probe) {
    // One fstat, at open, as for a fingerprint; a file read whole in one
    // read whose (size, fingerprint) was seen is hashed from the buffer
    // still holding it.
    if (slot->off != slot->before.size)
      status = Status::Changed(o.path + ": shrank while it was being read; not recorded");
    if (status.ok()) {
      o.partial = slot->edges.Fingerprint();
      if (options_.seen->TestAndSet(slot->before.size, o.partial) && slot->one_read) {
        slot->sha.Update(slot->buf, static_cast<size_t>(slot->before.size));
        o.digest = slot->sha.Final();
        o.partial_only = false;
      }
    }
  } else if (status.ok() && slot->partial_only) {
    // One fstat, at open (see HashRequest::partial_only).
    if (slot->off != slot->before.size)
      status = Status::Changed(o.path + ": shrank while it was being read; not recorded");
    if (status.ok()) o.partial = slot->edges.Fingerprint();
  } else if (status.ok()) {
    // A file read whole in its first read gets no fstat after it.  A
    // change after the one at open moves the times (or, within the same
    // timestamp tick, is caught by the caller's racy-clean rule, as it
    // would be here), and every reader of the row checks that it names
    // the file's current version (size, mtime, ctime) before it believes
    // the digest; the kernel verifies the digest of what it tags anyway.
    // One system call fewer for most files (126,000 of a first scan of /usr).
    struct stat st;
    if (!slot->one_read || slot->comparing) {
      if (fstat(slot->fd, &st) < 0)
        status = Status::FromErrno(o.path, errno);
      else if (!FileStat::From(st).SameVersion(slot->before) || slot->off != slot->before.size)
        status = Status::Changed(o.path + ": changed while it was being hashed (size or mtime/ctime moved); not recorded");
    }
    if (status.ok()) {
      // Compared: equal bytes have an equal digest, the twin's.
      o.digest = slot->comparing ? slot->req.twin->digest : slot->sha.Final();  // Final also resets
      o.partial = slot->edges.Fingerprint();
      // Noted for the probes of its twins to come (HashRequest::partial_only).
      if (options_.seen && slot->before.size <= kPartialWhole) options_.seen->TestAndSet(slot->before.size, o.partial);
    }
  }
  if (!status.ok()) slot->sha.Reset();
  o.compared = o.compared && status.ok();
  CloseTwin(slot);
  o.status = std::move(status);
  if (slot->fd >= 0) close(slot->fd);
  slot->fd = -1;
  slot->nonblock = false;
  slot->busy = false;
  done(std::move(o));
}

// The read Continue chose: served at once if the page cache holds it
// (slot->sync), else queued on the engine.
Status FileHasher::Read(Slot* slot) {
  int64_t n = engine_->ReadCached(slot->fd, slot->buf, slot->want, slot->off);
  if (n > 0) {
    slot->sync = true;
    slot->sync_res = n;
    return Status::OK();
  }
  return SubmitRead(slot);
}

Status FileHasher::SubmitRead(Slot* slot) {
  // io_uring honours O_NONBLOCK on regular files (EAGAIN instead of
  // waiting for the disk): clear it before the first read it does.
  if (slot->nonblock) {
    if (fcntl(slot->fd, F_SETFL, O_RDONLY) < 0) return Status::FromErrno(slot->req.path, errno);
    slot->nonblock = false;
  }
  return engine_->Submit(slot->fd, slot->buf, slot->want, slot->off, slot->index);
}

// Moves the slot on from slot->off.  A file hashed from mappings goes a
// window at a time: at each window boundary, the run of windows the engine
// says are cached (up to kMaxMapSpan) is hashed from one mapping; a window
// that is not cached is read, in reads that stop at the next boundary,
// where the cache is asked again.  Sets *finished when the whole file has
// been hashed; otherwise a read is queued.
Status FileHasher::Continue(Slot* slot, bool* finished) {
  // Bounds the page tables one mapping needs (512 KiB for 256 MiB).
  constexpr uint64_t kMaxMapSpan = 256 << 20;
  const uint64_t size = slot->before.size;
  *finished = false;
  if (slot->partial_only) {  // the head, then the tail
    uint64_t head = PartialEdges::HeadLen(size);
    if (slot->off >= head && slot->off < PartialEdges::TailOff(size)) slot->off = PartialEdges::TailOff(size);
    uint64_t until_p = slot->off < head ? head : size;
    if (slot->off >= size) {
      *finished = true;
      return Status::OK();
    }
    slot->want = static_cast<uint32_t>(std::min<uint64_t>(until_p - slot->off, options_.buffer_size));
    return Read(slot);
  }
  uint64_t until = size;
  if (slot->map && slot->off % map_window_ == 0) {
    while (slot->off < size) {
      uint64_t len = 0;
      bool uncached = false;
      while (slot->off + len < size && len < kMaxMapSpan) {
        uint64_t w = std::min(map_window_, size - slot->off - len);
        if (!engine_->Cached(slot->fd, slot->off + len, w)) {
          uncached = true;
          break;
        }
        len += w;
      }
      if (len == 0) break;
      MapResult r = HashMapped(&slot->sha, &slot->edges, slot->fd, slot->off, len);
      if (r == MapResult::kUnmapped) {  // this file cannot be mapped: read the rest
        slot->map = false;
        break;
      }
      if (r == MapResult::kFaulted) {  // truncated under the mapping, or a page could not be read back
        struct stat st;
        if (fstat(slot->fd, &st) == 0 && !FileStat::From(st).SameVersion(slot->before))
          return Status::Changed(slot->req.path + ": shrank while it was being hashed; not recorded");
        return Status::FromErrno(slot->req.path + ": read", EIO);
      }
      slot->off += len;
      slot->mapped += len;
      if (uncached) break;
    }
    if (slot->off == size) {
      *finished = true;
      return Status::OK();
    }
  }
  if (slot->map) until = std::min(size, (slot->off / map_window_ + 1) * map_window_);
  slot->want = static_cast<uint32_t>(std::min<uint64_t>(until - slot->off, options_.buffer_size));
  return Read(slot);
}

// Returns true if a read is now outstanding for the slot.
bool FileHasher::Start(Slot* slot, HashRequest&& req, const std::function<void(HashOutcome&&)>& done) {
  slot->req = std::move(req);
  slot->off = 0;
  slot->one_read = false;
  slot->mapped = 0;
  slot->busy = true;
  slot->partial_only = false;
  slot->probe = false;
  slot->before = FileStat{};
  if (slot->req.dir_fd >= 0) {
    // O_NONBLOCK stays until a read goes to the engine (SubmitRead): reads
    // the page cache serves at once need no fcntl.
    auto fd = OpenFileBeneath(slot->req.dir_fd, slot->req.rel, slot->req.path, slot->req.expect, &slot->before,
                              /*keep_nonblock=*/true);
    if (!fd.ok()) {
      Finish(slot, fd.status(), done);
      return false;
    }
    slot->fd = *fd;
    slot->nonblock = true;
    return Begin(slot, done);
  }
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
  return Begin(slot, done);
}

// The file is open and fstat'ed into slot->before: hash it.
bool FileHasher::Begin(Slot* slot, const std::function<void(HashOutcome&&)>& done) {
  slot->edges.Reset(slot->before.size);
  // A file the partial pass would read whole is read whole: hashed as well
  // (at once, or if its fingerprint was seen: a probe).
  bool small = slot->before.size <= kPartialWhole;
  slot->partial_only = slot->req.partial_only && !small;
  slot->probe = slot->req.partial_only && small && options_.seen && slot->before.size > 0;
  if (slot->before.size == 0) {
    Finish(slot, Status::OK(), done);
    return false;
  }
  // A probe reads its one buffer and nothing else: never compared, never mapped.
  bool read_only = slot->partial_only || slot->probe;
  slot->comparing = !read_only && slot->req.twin && OpenTwin(slot);
  slot->map = !read_only && !slot->comparing && options_.map_min_size != 0 &&
              slot->before.size >= options_.map_min_size;
  bool finished;
  Status s = Continue(slot, &finished);
  if (!s.ok() || finished) {
    Finish(slot, s, done);
    return false;
  }
  if (!slot->sync) return true;
  slot->sync = false;
  return OnRead(slot, slot->sync_res, done);
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
    if (!ws.ok() && FallBack(ws)) {
      // A read the old ring had started may still land in the old
      // buffers while the ring is torn down: leave them to that read.
      buffers_ = nullptr;
      MapBuffers();
      for (auto& s : slots_) {  // start the files in flight again, on the new engine
        if (!s->busy) continue;
        s->sha.Reset();
        s->off = 0;
        s->mapped = 0;
        bool finished;
        Status st = Continue(s.get(), &finished);
        if (!st.ok() || finished) {
          Finish(s.get(), st, done);
          active--;
        } else if (s->sync) {
          s->sync = false;
          if (!OnRead(s.get(), s->sync_res, done)) active--;
        }
      }
      continue;
    }
    if (!ws.ok()) {  // fail the files in flight, go on with the next ones
      for (auto& s : slots_)
        if (s->busy) Finish(s.get(), Status::IoError(s->req.path + ": " + ws.message(), ws.err()), done);
      active = 0;
      continue;
    }
    for (const ReadCompletion& c : comps)
      if (!OnRead(slots_[c.tag].get(), c.res, done)) active--;
  }
}

// A read of slot s ended with res (bytes, or -errno): takes the bytes and
// moves on, through every read that the page cache then serves at once,
// until a read is queued on the engine (true) or the file is finished and
// reported (false).
bool FileHasher::OnRead(Slot* s, int64_t res, const std::function<void(HashOutcome&&)>& done) {
  while (true) {
    if (Stopped()) {  // each file in flight ends at its own next completion
      Finish(s, Status::Changed(s->req.path + ": not finished: the scan was stopped"), done, true);
      return false;
    }
    if (res == -EINTR || res == -EAGAIN) {
      Status st = SubmitRead(s);
      if (!st.ok()) {
        Finish(s, st, done);
        return false;
      }
      return true;
    }
    if (res < 0) {
      Finish(s, Status::FromErrno(s->req.path + ": read", static_cast<int>(-res)), done);
      return false;
    }
    if (res == 0) {  // EOF before the size fstat gave: it shrank
      Finish(s, Status::Changed(s->req.path + ": shrank while it was being hashed; not recorded"), done);
      return false;
    }
    bool alone = s->comparing && !TwinMatches(s, static_cast<size_t>(res));
    if (!alone) {
      s->edges.Add(s->off, s->buf, static_cast<size_t>(res));
      if (!s->partial_only && !s->comparing && !s->probe) s->sha.Update(s->buf, static_cast<size_t>(res));
      s->one_read = s->off == 0 && static_cast<uint64_t>(res) == s->before.size;
      s->off += static_cast<uint64_t>(res);
      if (s->off >= s->before.size && s->comparing && !TwinUnchanged(s)) {
        alone = true;
      } else if (s->off >= s->before.size) {
        Finish(s, Status::OK(), done);
        return false;
      }
    }
    if (alone) HashAlone(s);
    bool finished;
    Status st = Continue(s, &finished);
    if (!st.ok() || finished) {
      Finish(s, st, done);
      return false;
    }
    if (!s->sync) return true;
    s->sync = false;
    res = s->sync_res;
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

int CurrentThreadNice() {
  errno = 0;
  int n = getpriority(PRIO_PROCESS, static_cast<id_t>(gettid()));  // Linux: the calling thread's
  return n == -1 && errno != 0 ? -100 : n;
}

HashPool::HashPool(unsigned workers, const EngineFactory& factory, HasherOptions options,
                   const std::atomic<bool>* stop)
    : stop_(stop) {
  if (workers == 0) workers = 1;
  for (unsigned i = 0; i < workers; i++) {
    if (!options.stop) options.stop = stop;
    int nice_here = CurrentThreadNice();
    threads_.emplace_back([this, factory, options, nice_here] {
      if (options.nice_below > 0 && nice_here >= -20)
        setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), std::min(19, nice_here + options.nice_below));
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
    if (Stopped() || closed_) return;
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
  bool wake;
  {
    std::lock_guard<std::mutex> l(mu_);
    outcomes_.push_back(std::move(o));
    wake = want_ != 0 && Enough();
  }
  // Only a Take that waits, and only once it has what it waits for: a
  // wake-up per file cost the taking thread a futex round trip each.
  if (wake) done_cv_.notify_one();
}

bool HashPool::Take(std::vector<HashOutcome>* out, bool wait) {
  std::unique_lock<std::mutex> l(mu_);
  if (wait) {
    // Nothing out (a stop may have dropped the rest) ends the wait too:
    // only the caller adds work, so none can come until it does.
    want_ = 1;
    done_cv_.wait(l, [this] { return Enough(); });
    want_ = 0;
  }
  return TakeLocked(out);
}

bool HashPool::TakeWithin(std::vector<HashOutcome>* out, std::chrono::milliseconds most, size_t at_least) {
  std::unique_lock<std::mutex> l(mu_);
  want_ = std::max<size_t>(at_least, 1);
  done_cv_.wait_for(l, most, [this] { return Enough(); });
  want_ = 0;
  return TakeLocked(out);
}

bool HashPool::TakeLocked(std::vector<HashOutcome>* out) {
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
