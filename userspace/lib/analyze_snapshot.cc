// A consistent snapshot of the target processes' resident memory.
//
// Every thread of every target is stopped with PTRACE_SEIZE +
// PTRACE_INTERRUPT (not PTRACE_ATTACH: no SIGSTOP is sent, so no group stop
// is left behind) and detached at the end, on every path out.  A signal
// that arrived while a thread was stopped is handed back on detach.  If
// this process dies, even by SIGKILL, the kernel detaches its tracees and
// they run on (exit_ptrace -> __ptrace_unlink wakes them), which is why
// ptrace and not the cgroup freezer stops them: a frozen cgroup would stay
// frozen.
//
// While they are stopped: /proc/PID/maps and /proc/PID/pagemap give every
// present page's frame; each frame not seen before is read
// (/proc/PID/mem; process_vm_readv only where that cannot be opened,
// since its page pins unshare shared anonymous pages) and hashed with
// XXH3-128; /proc/kpageflags, kpagecount and kpagecgroup are read for the
// distinct frames, sorted, in batches.
#include <dirent.h>
#include <fcntl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>

#include "cid/fd.h"
#include "cid/analyze.h"

namespace cid::analyze {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kPmPresent = 1ull << 63;
constexpr uint64_t kPmSwap = 1ull << 62;
constexpr uint64_t kPmPfnMask = (1ull << 55) - 1;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string ProcPath(pid_t pid, const char* what) { return "/proc/" + std::to_string(pid) + "/" + what; }


char TaskState(pid_t pid, pid_t tid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return 'X';
  size_t close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() ? line[close + 2] : 'X';
}

std::string TracerPid(pid_t pid) {
  std::ifstream in(ProcPath(pid, "status"));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("TracerPid:", 0) == 0) {
      std::string v = line.substr(10);
      v.erase(0, v.find_first_not_of(" \t"));
      return v;
    }
  }
  return "0";
}

// Stops every thread of each process; resumes them all at destruction.
class Stopper {
 public:
  Stopper() = default;
  ~Stopper() { ResumeAll(); }
  Stopper(const Stopper&) = delete;
  Stopper& operator=(const Stopper&) = delete;

  // OK, NotFound if the process is gone, or why it cannot be stopped.
  Status Stop(pid_t pid) {
    std::set<pid_t> tried;
    for (;;) {  // again until no new thread appears
      std::vector<pid_t> tids;
      if (DIR* d = opendir(ProcPath(pid, "task").c_str())) {
        while (struct dirent* e = readdir(d)) {
          if (e->d_name[0] != '.') tids.push_back(static_cast<pid_t>(atol(e->d_name)));
        }
        closedir(d);
      } else {
        return Status::NotFound("pid " + std::to_string(pid) + ": exited");
      }
      bool fresh = false;
      for (pid_t tid : tids) {
        if (!tried.insert(tid).second) continue;
        fresh = true;
        if (ptrace(PTRACE_SEIZE, tid, nullptr, nullptr) != 0) {
          int err = errno;
          char st = TaskState(pid, tid);
          if (err == ESRCH || st == 'Z' || st == 'X') continue;  // exiting thread
          if (err == EPERM && TracerPid(pid) != "0")
            return Status::Busy("pid " + std::to_string(pid) + ": cannot stop it: already traced by pid " +
                                TracerPid(pid) + " (use --no-stop for a live read)");
          return Status::FromErrno("pid " + std::to_string(pid) + ": cannot stop thread " +
                                   std::to_string(tid) + " (ptrace)", err);
        }
        seized_.push_back({tid, 0});
        if (ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr) != 0) {
          seized_.back().gone = true;
          continue;
        }
        int status = 0;
        pid_t w;
        do {
          w = waitpid(tid, &status, __WALL);
        } while (w < 0 && errno == EINTR);
        if (w < 0 || WIFEXITED(status) || WIFSIGNALED(status)) {
          seized_.back().gone = true;
        } else if (WIFSTOPPED(status) && (status >> 16) != PTRACE_EVENT_STOP) {
          seized_.back().sig = WSTOPSIG(status);  // signal-delivery-stop: hand it back
        }
      }
      if (!fresh) return tried.empty() ? Status::NotFound("pid " + std::to_string(pid) + ": exited") : Status::OK();
    }
  }

  void ResumeAll() {
    for (const auto& t : seized_) {
      if (!t.gone) ptrace(PTRACE_DETACH, t.tid, nullptr, reinterpret_cast<void*>(static_cast<long>(t.sig)));
    }
    seized_.clear();
  }

  bool any() const { return !seized_.empty(); }

 private:
  struct Seized {
    pid_t tid;
    int sig;
    bool gone = false;
  };
  std::vector<Seized> seized_;
};

// The memory cgroup of a process: its path and the directory's inode,
// which is what /proc/kpagecgroup reports.  v1's memory hierarchy where it
// is mounted (charges live there), else the v2 hierarchy.
class MemcgResolver {
 public:
  MemcgResolver() {
    std::ifstream in("/proc/self/mountinfo");
    for (std::string line; std::getline(in, line);) {
      std::istringstream f(line);
      std::vector<std::string> v;
      for (std::string w; f >> w;) v.push_back(w);
      auto dash = std::find(v.begin(), v.end(), "-");
      if (v.size() < 5 || dash == v.end() || v.end() - dash < 4) continue;
      const std::string& fstype = *(dash + 1);
      const std::string& opts = *(dash + 3);
      if (fstype == "cgroup2" && v2_.empty()) v2_ = v[4];
      if (fstype == "cgroup" && (","+ opts + ",").find(",memory,") != std::string::npos && v1_.empty()) v1_ = v[4];
    }
  }

  void Resolve(pid_t pid, std::string* path, uint64_t* ino) {
    std::ifstream in(ProcPath(pid, "cgroup"));
    std::string v2path, v1path;
    for (std::string line; std::getline(in, line);) {
      size_t a = line.find(':'), b = line.find(':', a + 1);
      if (a == std::string::npos || b == std::string::npos) continue;
      std::string ctl = "," + line.substr(a + 1, b - a - 1) + ",";
      if (line.compare(0, a, "0") == 0 && b == a + 1) v2path = line.substr(b + 1);
      if (ctl.find(",memory,") != std::string::npos) v1path = line.substr(b + 1);
    }
    std::string dir;
    if (!v1_.empty() && !v1path.empty()) {
      *path = v1path;
      dir = v1_ + v1path;
    } else {
      *path = v2path;
      dir = v2_.empty() ? "" : v2_ + v2path;
    }
    *ino = 0;
    if (dir.empty()) return;
    auto it = cache_.find(dir);
    if (it != cache_.end()) {
      *ino = it->second;
      return;
    }
    struct stat st;
    if (stat(dir.c_str(), &st) == 0) *ino = st.st_ino;
    cache_[dir] = *ino;
  }

 private:
  std::string v1_, v2_;
  std::map<std::string, uint64_t> cache_;
};

bool ParseMaps(pid_t pid, std::vector<Mapping>* out) {
  std::ifstream in(ProcPath(pid, "maps"));
  if (!in) return false;
  for (std::string line; std::getline(in, line);) {
    Mapping m;
    unsigned long long start, end, off, ino;
    unsigned major, minor;
    char perms[8];
    int pos = 0;
    if (sscanf(line.c_str(), "%llx-%llx %7s %llx %x:%x %llu %n", &start, &end, perms, &off, &major, &minor, &ino,
               &pos) < 7)
      continue;
    m.start = start;
    m.end = end;
    m.perms = perms;
    m.dev = makedev(major, minor);
    m.ino = ino;
    if (pos > 0 && static_cast<size_t>(pos) <= line.size()) m.path = line.substr(pos);
    out->push_back(std::move(m));
  }
  return true;
}

// Special mappings without struct pages behind them, or not readable:
// their present pages are counted as skipped.
bool SpecialMapping(const Mapping& m) {
  return m.path == "[vvar]" || m.path == "[vvar_vclock]";
}

// Reads one 64-bit entry per sorted pfn from a /proc/kpage* file, a
// window of neighbouring entries per read.
Status ReadKpage(const char* file, const std::vector<uint64_t>& pfns, const std::function<void(size_t, uint64_t)>& f) {
  Fd fd(open(file, O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return Status::FromErrno(file, errno);
  constexpr size_t kWindow = 4096;
  std::vector<uint64_t> buf(kWindow);
  size_t i = 0;
  while (i < pfns.size()) {
    uint64_t base = pfns[i];
    size_t j = i;
    while (j + 1 < pfns.size() && pfns[j + 1] < base + kWindow) j++;
    size_t n = pfns[j] - base + 1;
    ssize_t got = pread(fd.get(), buf.data(), n * 8, static_cast<off_t>(base * 8));
    if (got < 0) return Status::FromErrno(file, errno);
    for (; i <= j; i++) {
      size_t k = pfns[i] - base;
      f(i, (k + 1) * 8 <= static_cast<size_t>(got) ? buf[k] : 0);
    }
  }
  return Status::OK();
}

Hash128 HashPage(const void* p) {
  XXH128_hash_t h = XXH3_128bits(p, kPage);
  return {h.low64, h.high64};
}

struct Representative {
  pid_t pid;
  uint64_t vaddr;
};

class Scanner {
 public:
  Scanner(Snapshot* snap, const SnapshotOptions& opts, uint64_t total) : snap_(snap), opts_(opts), total_(total) {}

  // Reads one process; false with *gone set if it exited, or a Status.
  Status ScanProcess(ProcessSnap* p) {
    if (!ParseMaps(p->pid, &p->maps)) return Gone(p);
    Fd pagemap(open(ProcPath(p->pid, "pagemap").c_str(), O_RDONLY | O_CLOEXEC));
    if (pagemap.get() < 0) {
      if (errno == ENOENT || errno == ESRCH) return Gone(p);
      return Status::FromErrno(ProcPath(p->pid, "pagemap"), errno);
    }
    if (p->maps.empty()) {
      // A zombie (or a process between exec and its first mapping).
      return Gone(p);
    }
    pid_ = p->pid;
    if (!opts_.verify) mems_.clear();
    std::vector<uint64_t> entries(kBatch);
    for (uint32_t mi = 0; mi < p->maps.size(); mi++) {
      const Mapping& m = p->maps[mi];
      if (m.path == "[vsyscall]") continue;  // kernel address, one page for everybody
      uint64_t lo = std::max(m.start, opts_.range_lo), hi = std::min(m.end, opts_.range_hi);
      for (uint64_t va = lo; va < hi; va += kBatch * kPage) {
        if (opts_.interrupted && opts_.interrupted()) return Status::Busy("interrupted");
        size_t n = std::min<uint64_t>(kBatch, (hi - va) / kPage);
        ssize_t got = pread(pagemap.get(), entries.data(), n * 8, static_cast<off_t>(va / kPage * 8));
        if (got <= 0) {
          int err = got < 0 ? errno : 0;
          if (Dead(p->pid)) return Gone(p);
          if (err) return Status::FromErrno(ProcPath(p->pid, "pagemap"), err);
          break;  // beyond what pagemap covers (the vsyscall page)
        }
        n = static_cast<size_t>(got) / 8;
        want_.clear();
        for (size_t k = 0; k < n; k++) {
          uint64_t e = entries[k];
          if (e & kPmSwap) {
            p->swapped++;
            continue;
          }
          if (!(e & kPmPresent)) continue;
          if (SpecialMapping(m)) {
            p->skipped++;
            continue;
          }
          uint64_t pfn = e & kPmPfnMask;
          if (pfn == 0)
            return Status::WithErrno("/proc/" + std::to_string(p->pid) +
                                         "/pagemap shows no frame numbers: reading them needs CAP_SYS_ADMIN (run as root)",
                                     EPERM);
          uint32_t id = FrameId(pfn, m);
          p->pages.push_back({id, mi});
          Frame& f = snap_->frames[id];
          if (!f.hashed && !f.unreadable && !f.queued) {
            f.queued = true;
            want_.push_back({va + k * kPage, id});
          }
        }
        Status s = ReadAndHash(p);
        if (!s.ok()) return s;
      }
    }
    return Status::OK();
  }

 private:
  static constexpr size_t kBatch = 4096;  // pagemap entries per read
  static constexpr size_t kRun = 64;      // pages per process_vm_readv

  // The frame's index in snap_->frames, added if new.  A two-level table
  // by frame number: chunks of 4096 entries, allocated where the targets'
  // frames are, so neither a hash map (the scan's largest cost when it was
  // one) nor a table over all of memory.
  uint32_t FrameId(uint64_t pfn, const Mapping& m) {
    uint64_t hi = pfn / kChunk;
    if (hi >= by_pfn_.size()) by_pfn_.resize(hi + 1);
    if (!by_pfn_[hi]) by_pfn_[hi] = std::make_unique<uint32_t[]>(kChunk);
    uint32_t& slot = by_pfn_[hi][pfn % kChunk];
    if (slot == 0) {
      Frame f;
      f.pfn = pfn;
      f.anon = !m.named();  // refined by kpageflags later
      snap_->frames.push_back(f);
      slot = static_cast<uint32_t>(snap_->frames.size());
    }
    return slot - 1;
  }

  static bool Dead(pid_t pid) {
    char st = TaskState(pid, pid);
    return st == 'Z' || st == 'X';
  }

  Status Gone(ProcessSnap* p) {
    p->dropped = true;
    p->note = "exited during the snapshot";
    return Status::OK();
  }

  int Mem() { return MemOf(pid_); }

  // /proc/PID/mem of any target read so far, kept open for --verify.
  int MemOf(pid_t pid) {
    if (mems_.size() >= 256 && !mems_.count(pid)) mems_.clear();  // bounded: fds are finite
    auto [it, fresh] = mems_.try_emplace(pid);
    if (fresh) it->second = std::make_unique<Fd>(open(ProcPath(pid, "mem").c_str(), O_RDONLY | O_CLOEXEC));
    return it->second->get();
  }

  // Reads len bytes at va; returns how many it read (a prefix, page
  // granular) or -1 with errno.  /proc/PID/mem first: it takes plain page
  // references.  process_vm_readv pins pages (FOLL_PIN), and pinning an
  // anonymous page that is not exclusive (a KSM page, a page still shared
  // after fork) unshares it: the target gets a private copy, and the
  // sharing being measured is undone.  So it is only the fallback where
  // /proc/PID/mem cannot be opened, and then noted.
  ssize_t ReadRemote(pid_t pid, int memfd, uint64_t va, char* buf, size_t len) {
    if (memfd >= 0) return pread(memfd, buf, len, static_cast<off_t>(va));
    if (!pvr_noted_) {
      pvr_noted_ = true;
      snap_->notes.push_back("pid " + std::to_string(pid) +
                             ": /proc/PID/mem unavailable, read with process_vm_readv (which unshares KSM and "
                             "fork-shared anonymous pages it reads)");
    }
    struct iovec local{buf, len};
    struct iovec remote{reinterpret_cast<void*>(va), len};
    return process_vm_readv(pid, &local, 1, &remote, 1, 0);
  }

  Status ReadAndHash(ProcessSnap* p) {
    size_t i = 0;
    buf_.resize(kRun * kPage);
    while (i < want_.size()) {
      size_t j = i + 1;  // a run of consecutive addresses
      while (j < want_.size() && j - i < kRun && want_[j].va == want_[j - 1].va + kPage) j++;
      ssize_t got = ReadRemote(pid_, Mem(), want_[i].va, buf_.data(), (j - i) * kPage);
      if (got < 0 && (errno == ESRCH || Dead(pid_))) {
        // Frames it alone had queued may still be read through another process.
        for (size_t k = i; k < want_.size(); k++) snap_->frames[want_[k].id].queued = false;
        return Gone(p);
      }
      size_t ok_pages = got > 0 ? static_cast<size_t>(got) / kPage : 0;
      for (size_t k = i; k < j; k++) {
        char* page = buf_.data() + (k - i) * kPage;
        // Past a page that failed, read the rest of the run page by page.
        bool have = k - i < ok_pages ||
                    ReadRemote(pid_, Mem(), want_[k].va, page, kPage) == static_cast<ssize_t>(kPage);
        Frame& f = snap_->frames[want_[k].id];
        f.queued = false;
        if (!have) {
          snap_->unreadable++;
          f.unreadable = true;
          f.hash = {f.pfn, ~0ull};  // distinct from every content
          continue;
        }
        f.hash = HashPage(page);
        f.hashed = true;
        snap_->pages_hashed++;
        if (opts_.verify) Verify(&f, page, want_[k].va);
        if (opts_.on_progress && (snap_->pages_hashed & 4095) == 0) opts_.on_progress(snap_->pages_hashed, total_);
      }
      i = j;
    }
    return Status::OK();
  }

  void Verify(Frame* f, const char* page, uint64_t va) {
    for (;;) {
      auto [it, fresh] = reps_.try_emplace(f->hash, Representative{pid_, va});
      if (fresh) return;
      other_.resize(kPage);
      int fd = MemOf(it->second.pid);
      if (fd < 0) return;  // never process_vm_readv here: it would unshare the page
      if (ReadRemote(it->second.pid, fd, it->second.vaddr, other_.data(), kPage) !=
          static_cast<ssize_t>(kPage))
        return;  // the representative is gone; nothing to compare against
      snap_->bytes_compared += kPage;
      if (memcmp(other_.data(), page, kPage) == 0) return;
      // Equal hash, different bytes: keep this content apart.
      snap_->hash_collisions++;
      f->hash[1] ^= 0x9e3779b97f4a7c15ull * (snap_->hash_collisions + 1);
    }
  }

  struct Want {
    uint64_t va;
    uint32_t id;
  };
  Snapshot* snap_;
  const SnapshotOptions& opts_;
  uint64_t total_;
  pid_t pid_ = 0;
  std::map<pid_t, std::unique_ptr<Fd>> mems_;
  std::vector<char> other_;
  std::vector<Want> want_;
  static constexpr uint64_t kChunk = 4096;
  std::vector<std::unique_ptr<uint32_t[]>> by_pfn_;  // frame number -> index in snap_->frames + 1
  std::vector<char> buf_;
  bool pvr_noted_ = false;
  std::unordered_map<Hash128, Representative, Hash128Hasher> reps_;
};

uint64_t ResidentPages(pid_t pid) {
  std::ifstream in(ProcPath(pid, "statm"));
  uint64_t size = 0, resident = 0;
  in >> size >> resident;
  return resident;
}

std::string Comm(pid_t pid) {
  std::ifstream in(ProcPath(pid, "comm"));
  std::string s;
  std::getline(in, s);
  return s;
}

}  // namespace

size_t Snapshot::dropped() const {
  return std::count_if(procs.begin(), procs.end(), [](const ProcessSnap& p) { return p.dropped; });
}

Result<Snapshot> TakeSnapshot(const std::vector<Target>& targets, const SnapshotOptions& opts) {
  double t0 = Now();
  {
    Fd probe(open("/proc/kpageflags", O_RDONLY | O_CLOEXEC));
    if (probe.get() < 0)
      return Status::WithErrno(std::string("/proc/kpageflags: ") + strerror(errno) +
                                   (errno == EACCES || errno == EPERM ? ": frame flags need root" : ""),
                               errno);
  }
  Snapshot snap;
  snap.have_kpagecgroup = access("/proc/kpagecgroup", R_OK) == 0;
  MemcgResolver memcg;
  uint64_t total = 0;
  for (const Target& t : targets) {
    ProcessSnap p;
    p.pid = t.pid;
    p.container = t.container;
    p.comm = Comm(t.pid);
    memcg.Resolve(t.pid, &p.cgroup, &p.memcg_ino);
    total += ResidentPages(t.pid);
    snap.procs.push_back(std::move(p));
  }

  snap.frames.reserve(total + 1024);  // Frame references stay valid while scanning
  Stopper stopper;
  double stop_start = 0;
  if (opts.stop) {
    stop_start = Now();
    for (ProcessSnap& p : snap.procs) {
      if (opts.interrupted && opts.interrupted()) return Status::Busy("interrupted");
      Status s = stopper.Stop(p.pid);
      if (s.IsNotFound()) {
        p.dropped = true;
        p.note = "exited before it could be stopped";
      } else if (!s.ok()) {
        return s;
      }
    }
    snap.stopped = true;
  }
  if (opts.after_stop) opts.after_stop();

  Scanner scanner(&snap, opts, total);
  for (ProcessSnap& p : snap.procs) {
    if (p.dropped) continue;
    if (opts.before_process) opts.before_process(p.pid);
    Status s = scanner.ScanProcess(&p);
    if (!s.ok()) return s;
    if (p.dropped) p.pages.clear();
  }

  // Frame flags, map counts and memcgs, read in frame-number order.
  std::vector<uint64_t> pfns;
  std::vector<Frame*> fr;
  {
    std::vector<std::pair<uint64_t, Frame*>> order;
    order.reserve(snap.frames.size());
    for (Frame& f : snap.frames) order.push_back({f.pfn, &f});
    std::sort(order.begin(), order.end());
    pfns.reserve(order.size());
    fr.reserve(order.size());
    for (auto& [pfn, f] : order) {
      pfns.push_back(pfn);
      fr.push_back(f);
    }
  }
  Status s = ReadKpage("/proc/kpageflags", pfns, [&](size_t i, uint64_t v) { fr[i]->kflags = v; });
  if (s.ok()) s = ReadKpage("/proc/kpagecount", pfns, [&](size_t i, uint64_t v) { fr[i]->kcount = v; });
  if (s.ok() && snap.have_kpagecgroup)
    s = ReadKpage("/proc/kpagecgroup", pfns, [&](size_t i, uint64_t v) { fr[i]->memcg = v; });
  if (!s.ok()) return s;
  stopper.ResumeAll();
  if (opts.stop) snap.stopped_seconds = Now() - stop_start;

  for (Frame* f : fr) {
    // anonymous(p): an anonymous frame (KPF_ANON: also private COW copies
    // of file pages and KSM pages), the zero page, or a special page in a
    // mapping without a file (vDSO).  named(p): a page-cache frame.
    f->anon = f->Has(kKpfAnon) || f->Has(kKpfZeroPage) || f->anon;
  }
  // Frames without struct pages (PFN maps) are in no figure.
  for (ProcessSnap& p : snap.procs) {
    auto keep = std::remove_if(p.pages.begin(), p.pages.end(),
                               [&](const PageRef& r) { return snap.frames[r.frame].Has(kKpfNoPage); });
    p.skipped += p.pages.end() - keep;
    p.pages.erase(keep, p.pages.end());
    if (p.dropped) snap.notes.push_back("pid " + std::to_string(p.pid) + " (" + p.comm + ") " + p.note + ": dropped");
  }
  // Content numbers, so the figures need no hash maps.
  std::unordered_map<Hash128, uint32_t, Hash128Hasher> content;
  content.reserve(snap.frames.size());
  snap.content_of.reserve(snap.frames.size());
  for (const Frame& f : snap.frames) {
    auto [c, fresh] = content.try_emplace(f.hash, snap.contents);
    if (fresh) snap.contents++;
    snap.content_of.push_back(c->second);
  }
  snap.scan_seconds = Now() - t0;
  return snap;
}

}  // namespace cid::analyze
