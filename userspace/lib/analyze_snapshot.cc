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
// While they are stopped, and nothing else: /proc/PID/maps and
// /proc/PID/pagemap give every present page's frame (one thread); then
// several threads read /proc/kpageflags for the distinct frames (in
// frame-number order, one pread per run of nearby frames), and then
// kpagecount, kpagecgroup and every distinct frame's contents, once,
// through the first process that maps it, hashing each page with XXH3-128
// (AVX2 where the CPU has it) while it is in cache.  Frames that pinning
// cannot unshare (page cache, shmem, anonymous frames mapped once that are
// not KSM pages: the flags are read first for that) are read with
// process_vm_readv, up to 256 pages per call; the rest through
// /proc/PID/mem, which never pins (runs of up to 64 consecutive pages per
// pread).  --verify then re-reads and compares the pages of equal hash.
// The kpage files are read while the targets are stopped, not after: a
// frame freed and reused once they run again would give another page's
// flags, mapping count or memcg next to this one's contents.  After the
// targets resume: frame kinds from the flags, and a content number per
// frame.
#include <dirent.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
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
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

#include "cid/fd.h"
#include "cid/analyze.h"
#include "analyze_memory.h"

#ifdef CID_HAVE_HASH_AVX2
extern "C" void cid_analyze_hash_page_avx2(const void* page, uint64_t out[2]);  // analyze_hash_avx2.c
#endif

namespace cid::analyze {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kPmPresent = 1ull << 63;
constexpr uint64_t kPmSwap = 1ull << 62;
constexpr uint64_t kPmFile = 1ull << 61;       // a page-cache or shmem frame, not an anonymous one
constexpr uint64_t kPmExclusive = 1ull << 56;  // mapped exactly once
constexpr uint64_t kPmPfnMask = (1ull << 55) - 1;

// PAGEMAP_SCAN (Linux 6.7, include/uapi/linux/fs.h; Debian 12's headers
// predate it): the ranges of a mapping that have present or swapped pages,
// found by walking page tables, not by reading an entry per page.
struct PageRegion {
  uint64_t start, end, categories;
};
struct PmScanArg {
  uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
  uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
constexpr uint64_t kPageIsPresent = 1 << 3, kPageIsSwapped = 1 << 4;
constexpr unsigned long kPagemapScan = _IOWR('f', 16, PmScanArg);

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

// Reads one 64-bit entry per sorted pfn from a /proc/kpage* file: one
// pread per run of pfns that lie close together (gaps of at most kGap
// entries are read and thrown away: an entry costs the kernel less than a
// system call, but reading every entry between distant frames costs more).
// pfns[begin, end) only: f(i, entry) for i in that range.
template <class F>
Status ReadKpage(const char* file, const std::vector<uint64_t>& pfns, size_t begin, size_t end, F&& f) {
  Fd fd(open(file, O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return Status::FromErrno(file, errno);
  constexpr size_t kWindow = 8192;
  constexpr uint64_t kGap = 16;
  std::vector<uint64_t> buf(kWindow);
  size_t i = begin;
  while (i < end) {
    uint64_t base = pfns[i];
    size_t j = i;
    while (j + 1 < end && pfns[j + 1] - pfns[j] <= kGap && pfns[j + 1] < base + kWindow) j++;
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
#ifdef CID_HAVE_HASH_AVX2
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) {
    Hash128 h;
    cid_analyze_hash_page_avx2(p, h.data());
    return h;
  }
#endif
  XXH128_hash_t h = XXH3_128bits(p, kPage);
  return {h.low64, h.high64};
}

Hash128 ZeroPageHash() {
  static const Hash128 h = [] {
    static const char zero[kPage] = {};
    return HashPage(zero);
  }();
  return h;
}

// A different content for the k-th set of bytes found under one hash
// (--verify: equal hash, different bytes).
Hash128 Perturbed(Hash128 h, uint64_t k) {
  h[1] ^= 0x9e3779b97f4a7c15ull * k;
  return h;
}

// Content numbers: open addressing over the frames' XXH3 hashes, which are
// uniform already (a node-based map cost a tenth of the snapshot).  A slot
// holds a frame id; that frame has the slot's hash.
void NumberContents(Snapshot* snap) {
  const std::vector<Frame>& frames = snap->frames;
  size_t cap = 16;
  while (cap < frames.size() + frames.size() / 2) cap *= 2;
  std::vector<uint32_t> slots = HugeVector<uint32_t>(cap);  // frame id + 1; 0: empty
  snap->content_of = HugeVector<uint32_t>(frames.size());
  for (uint32_t id = 0; id < frames.size(); id++) {
    const Hash128& h = frames[id].hash;
    for (size_t i = Hash128Hasher()(h) & (cap - 1);; i = (i + 1) & (cap - 1)) {
      if (slots[i] == 0) {
        slots[i] = id + 1;
        snap->content_of[id] = snap->contents++;
        break;
      }
      if (frames[slots[i] - 1].hash == h) {
        snap->content_of[id] = snap->content_of[slots[i] - 1];
        break;
      }
    }
  }
}

// Where a frame's contents are read: the first (process, address) that
// mapped it.
struct Location {
  uint64_t va;
  uint32_t proc;
  // process_vm_readv may read it: pinning it cannot unshare it (see
  // Scanner::MayPin).
  bool may_pin = false;
};
static_assert(sizeof(Location) == 16, "one per frame");

// A buffer of whole 2 MiB blocks that may be huge pages: in a VM, faulting
// in 4 KiB pages of fresh memory cost about 36 us each here, 256 of them
// per 1 MiB buffer.
class PageBuffer {
 public:
  explicit PageBuffer(size_t bytes) : bytes_((bytes + kHuge - 1) & ~(kHuge - 1)) {
    void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) abort();  // out of memory, as new would throw
    madvise(p, bytes_, MADV_HUGEPAGE);
    data_ = static_cast<char*>(p);
  }
  ~PageBuffer() { munmap(data_, bytes_); }
  PageBuffer(const PageBuffer&) = delete;
  PageBuffer& operator=(const PageBuffer&) = delete;
  char* data() { return data_; }

 private:
  static constexpr size_t kHuge = 2 << 20;
  size_t bytes_;
  char* data_;
};

// /proc/PID/mem descriptors of a few processes, for one thread.
class MemFiles {
 public:
  // The descriptor, or -1 with errno as open left it.
  int Get(pid_t pid) {
    if (fds_.size() >= 64 && !fds_.count(pid)) fds_.clear();  // bounded: fds are finite
    auto [it, fresh] = fds_.try_emplace(pid);
    if (fresh) {
      it->second.fd = std::make_unique<Fd>(open(ProcPath(pid, "mem").c_str(), O_RDONLY | O_CLOEXEC));
      it->second.err = errno;
    }
    errno = it->second.err;
    return it->second.fd->get();
  }

 private:
  struct Entry {
    std::unique_ptr<Fd> fd;
    int err = 0;
  };
  std::map<pid_t, Entry> fds_;
};

// Reads the targets' page tables (one thread), then their frames'
// metadata and contents (several threads), all while they are stopped.
class Scanner {
 public:
  Scanner(Snapshot* snap, const SnapshotOptions& opts, uint64_t total)
      : snap_(snap), opts_(opts), total_(total), gone_(new std::atomic<bool>[snap->procs.size()]) {
    for (size_t i = 0; i < snap->procs.size(); i++) gone_[i] = false;
    unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
    threads_ = opts.threads ? opts.threads : std::min(cpus, 8u);
    snap_->threads = threads_;
    loc_.reserve(snap->frames.capacity());
    HugeHint(loc_);
  }

  // Reads one process's maps and page tables: its pages, and a location
  // for every frame not seen before.  Sets p->dropped if it exited.
  Status ScanPageTables(uint32_t pi) {
    ProcessSnap* p = &snap_->procs[pi];
    if (!ParseMaps(p->pid, &p->maps)) {
      if (errno == EACCES || errno == EPERM) return Unreadable(p, "maps", errno);
      return Gone(p);
    }
    Fd pagemap(open(ProcPath(p->pid, "pagemap").c_str(), O_RDONLY | O_CLOEXEC));
    if (pagemap.get() < 0) {
      if (errno == ENOENT || errno == ESRCH) return Gone(p);
      if (errno == EACCES || errno == EPERM) return Unreadable(p, "pagemap", errno);
      return Status::FromErrno(ProcPath(p->pid, "pagemap"), errno);
    }
    if (p->maps.empty()) return Gone(p);  // a zombie (or a process between exec and its first mapping)
    for (uint32_t mi = 0; mi < p->maps.size(); mi++) {
      const Mapping& m = p->maps[mi];
      bool special = SpecialMapping(m);
      bool gone = false;
      Status s = WalkPagemap(p->pid, pagemap.get(), m, &gone, [&](uint64_t va, uint64_t e) -> Status {
        if (e & kPmSwap) {
          p->swapped++;
          return Status::OK();
        }
        if (!(e & kPmPresent)) return Status::OK();
        if (special) {
          p->skipped++;
          return Status::OK();
        }
        uint64_t pfn = e & kPmPfnMask;
        if (pfn == 0)
          return Status::WithErrno("/proc/" + std::to_string(p->pid) +
                                       "/pagemap shows no frame numbers: reading them needs CAP_SYS_ADMIN (run as root)",
                                   EPERM);
        bool fresh = false;
        uint32_t id = FrameId(pfn, m, &fresh);
        p->pages.push_back({id, mi});
        if (fresh) loc_.push_back({va, pi, (e & (kPmFile | kPmExclusive)) != 0});
        return Status::OK();
      });
      if (!s.ok()) return s;
      if (gone) return Gone(p);
    }
    return Status::OK();
  }

  // With every page table read: /proc/kpageflags, kpagecount and
  // kpagecgroup for the distinct frames, and the contents of every frame
  // that has a content to read, each read once and hashed, in parallel.
  // A process that exits meanwhile is dropped and the frames only it was
  // to be read through are read through another process that maps them.
  Status ReadFrames() {
    pfn_order_.reserve(snap_->frames.size());
    for (size_t hi = 0; hi < by_pfn_.size(); hi++) {  // the table is in frame-number order
      if (!by_pfn_[hi]) continue;
      for (uint64_t lo = 0; lo < kChunk; lo++)
        if (uint32_t slot = by_pfn_[hi][lo]) pfn_order_.push_back(slot - 1);
    }
    pfns_.reserve(pfn_order_.size());
    for (uint32_t id : pfn_order_) pfns_.push_back(snap_->frames[id].pfn);
    // Frame flags first: a KSM page must not be read by process_vm_readv.
    Status flags = ReadFlags();
    if (!flags.ok()) return flags;
    for (uint32_t id = 0; id < snap_->frames.size(); id++)
      if (snap_->frames[id].Has(kKpfKsm)) loc_[id].may_pin = false;
    std::vector<uint32_t> ids(snap_->frames.size());
    for (uint32_t id = 0; id < ids.size(); id++) ids[id] = id;  // by process, then address
    for (;;) {
      Status s = ReadContents(ids, /*with_kpage=*/!kpage_done_);
      if (!s.ok()) return s;
      kpage_done_ = true;
      // Frames whose process exited before they were read: another
      // process that maps them, if any is left.
      ids.clear();
      for (uint32_t id = 0; id < snap_->frames.size(); id++) {
        const Frame& f = snap_->frames[id];
        if (!f.hashed && !f.unreadable && gone_[loc_[id].proc]) ids.push_back(id);
      }
      MarkGone();
      if (ids.empty() || !Relocate(&ids)) return Status::OK();
    }
  }

  // --verify: every frame whose hash another frame has too is read again
  // and compared byte for byte with the first frame of that hash; bytes
  // that differ make a content of their own.
  Status Verify() {
    std::vector<std::pair<Hash128, uint32_t>> by_hash;
    by_hash.reserve(snap_->frames.size());
    for (uint32_t id = 0; id < snap_->frames.size(); id++)
      if (snap_->frames[id].hashed && !snap_->frames[id].Has(kKpfZeroPage))
        by_hash.push_back({snap_->frames[id].hash, id});
    std::sort(by_hash.begin(), by_hash.end());
    std::vector<std::pair<size_t, size_t>> groups;  // [begin, end) of equal hashes, two or more
    for (size_t i = 0; i < by_hash.size();) {
      size_t j = i + 1;
      while (j < by_hash.size() && by_hash[j].first == by_hash[i].first) j++;
      if (j - i > 1) groups.push_back({i, j});
      i = j;
    }
    std::atomic<size_t> next{0};
    std::atomic<uint64_t> compared{0}, collisions{0};
    Status s = RunWorkers([&](unsigned w) -> Status {
      MemFiles mems;
      std::vector<std::vector<char>> distinct;  // the different bytes found under one hash
      std::vector<char> page(kPage);
      uint64_t my_compared = 0, my_collisions = 0;
      for (size_t g; (g = next.fetch_add(1)) < groups.size();) {
        if (Interrupted(w)) break;
        distinct.clear();
        for (size_t i = groups[g].first; i < groups[g].second; i++) {
          uint32_t id = by_hash[i].second;
          const Location& l = loc_[id];
          pid_t pid = snap_->procs[l.proc].pid;
          int fd = mems.Get(pid);
          // Never process_vm_readv here: it would unshare the page.
          if (fd < 0 || pread(fd, page.data(), kPage, static_cast<off_t>(l.va)) != static_cast<ssize_t>(kPage))
            continue;  // gone: nothing to compare
          size_t k = 0;
          while (k < distinct.size() && memcmp(distinct[k].data(), page.data(), kPage) != 0) k++;
          if (!distinct.empty()) my_compared += std::min(k + 1, distinct.size()) * kPage;
          if (k == distinct.size()) {
            distinct.push_back(page);
            if (k > 0) my_collisions++;
          }
          if (k > 0) snap_->frames[id].hash = Perturbed(by_hash[i].first, k);
        }
      }
      compared += my_compared;
      collisions += my_collisions;
      return Status::OK();
    });
    snap_->bytes_compared = compared;
    snap_->hash_collisions = collisions;
    return s;
  }

 private:
  static constexpr size_t kBatch = 32768;   // pagemap entries per read (256 KiB)
  static constexpr size_t kRun = 64;        // pages per /proc/PID/mem read: 256 KiB, hashed while in cache
  static constexpr size_t kPinRun = 256;    // pages per process_vm_readv (1 MiB, at most this many iovecs)
  static constexpr size_t kItem = 1024;     // pages per work item
  static constexpr uint64_t kChunk = 4096;  // frame-number table chunk
  static constexpr uint64_t kScanAbove = 8192;  // pages: larger anonymous mappings use PAGEMAP_SCAN

  // Calls f(va, entry) for the pagemap entry of every present or swapped
  // page of m within the snapshot's range; *gone if the process exited.
  template <class F>
  Status WalkPagemap(pid_t pid, int fd, const Mapping& m, bool* gone, F&& f) {
    if (m.path == "[vsyscall]") return Status::OK();  // kernel address, one page for everybody
    uint64_t lo = std::max(m.start, opts_.range_lo), hi = std::min(m.end, opts_.range_hi);
    if (lo >= hi) return Status::OK();
    // Large anonymous mappings are often mostly reservations (language
    // runtimes reserve gigabytes, sanitizers terabytes): ask the kernel
    // where their pages are.  Only anonymous ones, because PAGEMAP_SCAN
    // skips PFN maps, which are counted (as skipped) too.
    bool anonymous = m.ino == 0 && (m.path.empty() || m.path == "[heap]" || m.path == "[stack]" ||
                                    m.path.rfind("[anon:", 0) == 0);
    if (anonymous && hi - lo >= kScanAbove * kPage && scan_works_) {
      std::vector<PageRegion> regions(256);
      for (uint64_t at = lo; at < hi;) {
        PmScanArg arg{};
        arg.size = sizeof(arg);
        arg.start = at;
        arg.end = hi;
        arg.vec = reinterpret_cast<uintptr_t>(regions.data());
        arg.vec_len = regions.size();
        arg.category_anyof_mask = kPageIsPresent | kPageIsSwapped;
        arg.return_mask = kPageIsPresent | kPageIsSwapped;
        int n = ioctl(fd, kPagemapScan, &arg);
        if (n < 0) {
          if (errno == ENOTTY || errno == EINVAL || errno == EOPNOTSUPP) {
            scan_works_ = false;  // before Linux 6.7: read every entry
            break;
          }
          if (Dead(pid)) {
            *gone = true;
            return Status::OK();
          }
          return Status::FromErrno(ProcPath(pid, "pagemap") + " (PAGEMAP_SCAN)", errno);
        }
        for (int i = 0; i < n; i++) {
          Status s = ReadEntries(pid, fd, regions[i].start, regions[i].end, gone, f);
          if (!s.ok() || *gone) return s;
        }
        if (arg.walk_end <= at) break;
        at = arg.walk_end;
      }
      if (scan_works_) return Status::OK();
    }
    return ReadEntries(pid, fd, lo, hi, gone, f);
  }

  // f(va, entry) for the present or swapped pages of [lo, hi), read from
  // pagemap in batches.
  template <class F>
  Status ReadEntries(pid_t pid, int fd, uint64_t lo, uint64_t hi, bool* gone, F&& f) {
    entries_.resize(kBatch);
    for (uint64_t va = lo; va < hi; va += kBatch * kPage) {
      if (opts_.interrupted && opts_.interrupted()) return Status::Busy("interrupted");
      size_t n = std::min<uint64_t>(kBatch, (hi - va) / kPage);
      ssize_t got = pread(fd, entries_.data(), n * 8, static_cast<off_t>(va / kPage * 8));
      if (got <= 0) {
        int err = got < 0 ? errno : 0;
        if (Dead(pid)) {
          *gone = true;
          return Status::OK();
        }
        if (err) return Status::FromErrno(ProcPath(pid, "pagemap"), err);
        break;  // beyond what pagemap covers
      }
      n = static_cast<size_t>(got) / 8;
      for (size_t k = 0; k < n; k++) {
        if (!(entries_[k] & (kPmPresent | kPmSwap))) continue;
        Status s = f(va + k * kPage, entries_[k]);
        if (!s.ok()) return s;
      }
    }
    return Status::OK();
  }

  // The frame's index in snap_->frames, added if new.  A two-level table
  // by frame number: chunks of 4096 entries where the targets' frames are,
  // so neither a hash map (the scan's largest cost when it was one) nor a
  // table over all of memory.  Walked in order, it gives the frames sorted
  // by frame number.
  uint32_t FrameId(uint64_t pfn, const Mapping& m, bool* fresh) {
    uint64_t hi = pfn / kChunk;
    if (hi >= by_pfn_.size()) by_pfn_.resize(hi + 1);
    if (!by_pfn_[hi]) by_pfn_[hi] = chunks_.Chunk();
    uint32_t& slot = by_pfn_[hi][pfn % kChunk];
    if (slot == 0) {
      Frame f;
      f.pfn = pfn;
      f.anon = !m.named();  // refined by kpageflags later
      snap_->frames.push_back(f);
      slot = static_cast<uint32_t>(snap_->frames.size());
      *fresh = true;
    }
    return slot - 1;
  }

  // Zeroed chunks of the frame-number table, carved from 2 MiB blocks
  // that may be huge pages: allocated one by one, each chunk cost four
  // page faults.
  class ChunkArena {
   public:
    ChunkArena() = default;
    ~ChunkArena() {
      for (void* b : blocks_) munmap(b, kBlock);
    }
    ChunkArena(const ChunkArena&) = delete;
    ChunkArena& operator=(const ChunkArena&) = delete;
    uint32_t* Chunk() {
      if (used_ == kPerBlock || blocks_.empty()) {
        void* b = mmap(nullptr, kBlock, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (b == MAP_FAILED) abort();  // out of memory, as new would throw
        madvise(b, kBlock, MADV_HUGEPAGE);
        blocks_.push_back(b);
        used_ = 0;
      }
      return static_cast<uint32_t*>(blocks_.back()) + kChunk * used_++;
    }

   private:
    static constexpr size_t kBlock = 2 << 20;
    static constexpr size_t kPerBlock = kBlock / (kChunk * sizeof(uint32_t));
    std::vector<void*> blocks_;
    size_t used_ = 0;
  };

  int32_t FindFrame(uint64_t pfn) const {
    uint64_t hi = pfn / kChunk;
    if (hi >= by_pfn_.size() || !by_pfn_[hi]) return -1;
    return static_cast<int32_t>(by_pfn_[hi][pfn % kChunk]) - 1;
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

  // A process whose page tables cannot be read: left out if it is a
  // best-effort target, else the run fails.
  Status Unreadable(ProcessSnap* p, const char* what, int err) {
    Status s = Status::FromErrno(ProcPath(p->pid, what), err);
    if (!p->best_effort) return s;
    p->dropped = p->excluded = true;
    p->maps.clear();
    p->pages.clear();
    p->note = "cannot be read (" + s.message() + "): not analyzed";
    return Status::OK();
  }

  void MarkGone() {
    for (size_t i = 0; i < snap_->procs.size(); i++)
      if (gone_[i] && !snap_->procs[i].dropped) Gone(&snap_->procs[i]);
  }

  // Only the first worker (this thread) asks; the others see the answer.
  bool Interrupted(unsigned worker) {
    if (worker == 0 && opts_.interrupted && opts_.interrupted()) abort_ = true;
    return abort_;
  }

  // Runs f(worker) on threads_ threads, this one being worker 0; the
  // first error wins.
  Status RunWorkers(const std::function<Status(unsigned)>& f) {
    std::vector<Status> st(threads_);
    std::vector<std::thread> th;
    for (unsigned w = 1; w < threads_; w++) th.emplace_back([&, w] { st[w] = f(w); });
    st[0] = f(0);
    for (auto& t : th) t.join();
    if (abort_) return Status::Busy("interrupted");
    for (const Status& s : st)
      if (!s.ok()) return s;
    return Status::OK();
  }

  // Reads /proc/PID/mem (process_vm_readv only where that cannot be
  // opened: it pins pages, and pinning an anonymous page that is not
  // exclusive, a KSM page or one still shared after fork, unshares it,
  // undoing the sharing being measured; see MayPin for the frames it may
  // read).
  ssize_t ReadRemote(pid_t pid, int memfd, uint64_t va, char* buf, size_t len) {
    if (memfd >= 0) return pread(memfd, buf, len, static_cast<off_t>(va));
    if (!pvr_used_.exchange(true)) {
      std::lock_guard<std::mutex> lock(notes_mu_);
      snap_->notes.push_back("pid " + std::to_string(pid) +
                             ": /proc/PID/mem unavailable, read with process_vm_readv (which unshares KSM and "
                             "fork-shared anonymous pages it reads)");
    }
    struct iovec local{buf, len};
    struct iovec remote{reinterpret_cast<void*>(va), len};
    return process_vm_readv(pid, &local, 1, &remote, 1, 0);
  }

  // The frames ids (grouped by process, in address order within one)
  // read and hashed by threads_ workers, in items of up to kItem pages of
  // one process; with_kpage, /proc/kpagecount and kpagecgroup are read by
  // the first workers free meanwhile.
  //
  // Frames that may be pinned (MayPin) are read with process_vm_readv, up
  // to kPinRun pages in one call whatever their addresses (one iovec per
  // run of consecutive ones): one copy, page tables walked in batches.  The
  // others through /proc/PID/mem, which takes every page through a bounce
  // buffer (two copies) but only references, never pins, what it reads.
  Status ReadContents(const std::vector<uint32_t>& ids, bool with_kpage) {
    struct Item {
      int kpage;  // > 0: which /proc/kpage* file; -1: contents ids[begin, end)
      size_t begin, end;
    };
    std::vector<Item> items;
    if (with_kpage) {
      items.push_back({1, 0, pfns_.size()});
      if (snap_->have_kpagecgroup) items.push_back({2, 0, pfns_.size()});
    }
    for (size_t i = 0; i < ids.size();) {
      size_t j = i + 1;
      while (j < ids.size() && j - i < kItem && loc_[ids[j]].proc == loc_[ids[i]].proc) j++;
      items.push_back({-1, i, j});
      i = j;
    }
    std::atomic<size_t> next{0};
    std::atomic<uint64_t> done{0};
    return RunWorkers([&](unsigned w) -> Status {
      PageBuffer buf(std::max(kRun, kPinRun) * kPage);
      std::vector<struct iovec> remote(kPinRun);
      MemFiles mems;
      uint64_t hashed = 0, unreadable = 0, pinned = 0;
      Status status;
      for (size_t it; status.ok() && (it = next.fetch_add(1)) < items.size();) {
        if (Interrupted(w)) break;
        const Item& item = items[it];
        if (item.kpage > 0) {
          status = ReadKpageFile(item.kpage, item.begin, item.end);
          continue;
        }
        uint32_t proc = loc_[ids[item.begin]].proc;
        if (gone_[proc]) continue;  // read through another process later
        pid_t pid = snap_->procs[proc].pid;
        int fd = mems.Get(pid);
        if (fd < 0 && (errno == ESRCH || errno == ENOENT || Dead(pid))) {
          gone_[proc] = true;  // a zombie has no memory to open
          continue;
        }
        for (size_t i = item.begin; i < item.end && !gone_[proc];) {
          const Location& first = loc_[ids[i]];
          size_t j = i + 1;
          ssize_t got;
          if (first.may_pin && fd >= 0) {
            // Runs of consecutive addresses, one iovec each.
            size_t nio = 1;
            remote[0] = {reinterpret_cast<void*>(first.va), kPage};
            for (; j < item.end && j - i < kPinRun && loc_[ids[j]].may_pin; j++) {
              if (loc_[ids[j]].va == loc_[ids[j - 1]].va + kPage) {
                remote[nio - 1].iov_len += kPage;
              } else {
                remote[nio++] = {reinterpret_cast<void*>(loc_[ids[j]].va), kPage};
              }
            }
            struct iovec local{buf.data(), (j - i) * kPage};
            got = process_vm_readv(pid, &local, 1, remote.data(), nio, 0);
            if (got > 0) pinned += static_cast<size_t>(got) / kPage;
          } else {
            while (j < item.end && j - i < kRun && !(loc_[ids[j]].may_pin && fd >= 0) &&
                   loc_[ids[j]].va == loc_[ids[j - 1]].va + kPage)
              j++;
            got = ReadRemote(pid, fd, first.va, buf.data(), (j - i) * kPage);
          }
          if (got < 0 && (errno == ESRCH || Dead(pid))) {
            gone_[proc] = true;
            break;
          }
          size_t ok_pages = got > 0 ? static_cast<size_t>(got) / kPage : 0;
          for (size_t k = i; k < j; k++) {
            char* page = buf.data() + (k - i) * kPage;
            // Past a page that failed, read the rest of the run page by page.
            bool have = k - i < ok_pages ||
                        ReadRemote(pid, fd, loc_[ids[k]].va, page, kPage) == static_cast<ssize_t>(kPage);
            Frame& f = snap_->frames[ids[k]];
            if (!have) {
              unreadable++;
              f.unreadable = true;
              f.hash = {f.pfn, ~0ull};  // distinct from every content
              continue;
            }
            f.hash = HashPage(page);
            f.hashed = true;
            hashed++;
          }
          i = j;
        }
        uint64_t now = done += item.end - item.begin;
        if (w == 0 && opts_.on_progress) opts_.on_progress(now, total_);
      }
      std::lock_guard<std::mutex> lock(notes_mu_);
      snap_->pages_hashed += hashed;
      snap_->pages_pinned += pinned;
      snap_->unreadable += unreadable;
      return status;
    });
  }

  // Whether process_vm_readv may read a frame: pinning it (FOLL_PIN
  // without FOLL_WRITE) unshares an anonymous page the kernel has not
  // marked exclusive to one mapping (gup_must_unshare), by copying it
  // unless it is mapped once and otherwise unreferenced.  So: page-cache
  // and shmem frames (pagemap's file bit: never unshared by a short pin),
  // and anonymous frames mapped exactly once (pagemap's exclusive bit)
  // that are not KSM pages (kpageflags; those are always copied).  At
  // worst such a frame mapped once is copied in place of itself: no sharing
  // is undone, and its contents are the same.
  static bool MayPin(uint64_t entry, const Frame& f) {
    return (entry & (kPmFile | kPmExclusive)) != 0 && !f.Has(kKpfKsm);
  }

  // /proc/kpageflags for every frame, on every worker (parts of the
  // frame-number order): the contents' reading depends on it.
  Status ReadFlags() {
    std::atomic<size_t> next{0};
    size_t n = pfns_.size(), parts = threads_;
    return RunWorkers([&](unsigned) -> Status {
      for (size_t part; (part = next.fetch_add(1)) < parts;) {
        Status s = ReadKpageFile(0, part * n / parts, (part + 1) * n / parts);
        if (!s.ok()) return s;
      }
      return Status::OK();
    });
  }

  // One /proc/kpage* file for the frames pfn_order_[begin, end).
  Status ReadKpageFile(int which, size_t begin, size_t end) {
    static const char* const kFiles[] = {"/proc/kpageflags", "/proc/kpagecount", "/proc/kpagecgroup"};
    return ReadKpage(kFiles[which], pfns_, begin, end, [&](size_t i, uint64_t v) {
      Frame& f = snap_->frames[pfn_order_[i]];
      (which == 0 ? f.kflags : which == 1 ? f.kcount : f.memcg) = v;
    });
  }

  // New locations for the frames in *ids (whose process exited before they
  // were read) in the processes still there; false if none has any.
  bool Relocate(std::vector<uint32_t>* ids) {
    std::vector<bool> want(snap_->frames.size());
    for (uint32_t id : *ids) want[id] = true;
    std::vector<uint32_t> found;
    for (uint32_t pi = 0; pi < snap_->procs.size(); pi++) {
      ProcessSnap& p = snap_->procs[pi];
      if (p.dropped || gone_[pi]) continue;
      Fd pagemap(open(ProcPath(p.pid, "pagemap").c_str(), O_RDONLY | O_CLOEXEC));
      if (pagemap.get() < 0) continue;
      for (const Mapping& m : p.maps) {
        bool gone = false;
        (void)WalkPagemap(p.pid, pagemap.get(), m, &gone, [&](uint64_t va, uint64_t e) {
          int32_t id = (e & kPmPresent) ? FindFrame(e & kPmPfnMask) : -1;
          if (id >= 0 && want[id]) {
            want[id] = false;
            loc_[id] = {va, pi, MayPin(e, snap_->frames[id])};
            found.push_back(static_cast<uint32_t>(id));
          }
          return Status::OK();
        });
        if (gone) break;
      }
    }
    std::sort(found.begin(), found.end(), [&](uint32_t a, uint32_t b) {
      return std::tie(loc_[a].proc, loc_[a].va) < std::tie(loc_[b].proc, loc_[b].va);
    });
    *ids = std::move(found);
    return !ids->empty();
  }

  Snapshot* snap_;
  const SnapshotOptions& opts_;
  uint64_t total_;
  unsigned threads_ = 1;
  std::vector<Location> loc_;            // by frame
  std::vector<uint32_t> pfn_order_;      // frame ids in frame-number order
  std::vector<uint64_t> pfns_;           // their frame numbers
  std::vector<uint64_t> entries_;        // pagemap buffer (page-table thread only)
  std::vector<uint32_t*> by_pfn_;        // frame number / kChunk -> chunk: index in snap_->frames + 1
  ChunkArena chunks_;
  std::unique_ptr<std::atomic<bool>[]> gone_;  // by process: exited while its frames were read
  std::atomic<bool> abort_{false};       // interrupted
  std::atomic<bool> pvr_used_{false};
  std::mutex notes_mu_;                  // guards snap_->notes, pages_hashed, pages_pinned, unreadable during the workers
  bool kpage_done_ = false;
  bool scan_works_ = true;               // PAGEMAP_SCAN (Linux 6.7)
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
  return std::count_if(procs.begin(), procs.end(), [](const ProcessSnap& p) { return p.dropped && !p.excluded; });
}

size_t Snapshot::excluded() const {
  return std::count_if(procs.begin(), procs.end(), [](const ProcessSnap& p) { return p.excluded; });
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
    p.best_effort = t.best_effort;
    p.comm = Comm(t.pid);
    if (t.best_effort) {
      // A process this one may not read (ptrace access mode) is not
      // stopped either: left out before anything is tried on it.
      Fd maps(open(ProcPath(t.pid, "maps").c_str(), O_RDONLY | O_CLOEXEC));
      if (maps.get() < 0 && (errno == EACCES || errno == EPERM)) {
        p.dropped = p.excluded = true;
        p.note = "cannot be read (" + ProcPath(t.pid, "maps") + ": " + strerror(errno) + "): not analyzed";
      }
    }
    memcg.Resolve(t.pid, &p.cgroup, &p.memcg_ino);
    uint64_t resident = ResidentPages(t.pid);
    if (opts.range_lo == 0 && opts.range_hi == ~0ull) {
      p.pages.reserve(resident + resident / 8);
      HugeHint(p.pages);
    }
    total += resident;
    snap.procs.push_back(std::move(p));
  }
  snap.frames.reserve(total + 1024);  // Frame references stay valid while scanning
  HugeHint(snap.frames);

  // Stopped: page tables, frame metadata and contents; nothing else.
  Stopper stopper;
  double t = Now();
  if (opts.stop) {
    for (ProcessSnap& p : snap.procs) {
      if (opts.interrupted && opts.interrupted()) return Status::Busy("interrupted");
      if (p.dropped) continue;
      Status s = stopper.Stop(p.pid);
      if (s.IsNotFound()) {
        p.dropped = true;
        p.note = "exited before it could be stopped";
      } else if (!s.ok() && p.best_effort) {
        p.dropped = p.excluded = true;  // its threads stopped so far resume with the rest
        p.note = "cannot be stopped (" + s.message() + "): not analyzed";
      } else if (!s.ok()) {
        return s;
      }
    }
    snap.stopped = true;
  }
  double stop_start = t;
  snap.phases.stop = Now() - t;
  if (opts.after_stop) opts.after_stop();

  Scanner scanner(&snap, opts, total);
  t = Now();
  for (uint32_t i = 0; i < snap.procs.size(); i++) {
    ProcessSnap& p = snap.procs[i];
    if (p.dropped) continue;
    if (opts.before_process) opts.before_process(p.pid);
    Status s = scanner.ScanPageTables(i);
    if (!s.ok()) return s;
  }
  snap.phases.pagemap = Now() - t;
  if (opts.before_contents) opts.before_contents();
  t = Now();
  Status s = scanner.ReadFrames();
  if (!s.ok()) return s;
  snap.phases.contents = Now() - t;
  if (opts.verify) {
    t = Now();
    s = scanner.Verify();
    if (!s.ok()) return s;
    snap.phases.verify = Now() - t;
  }
  t = Now();
  stopper.ResumeAll();
  if (opts.stop) {
    snap.phases.resume = Now() - t;
    snap.stopped_seconds = Now() - stop_start;
  }

  // The targets run again: the rest is arithmetic on what was read.
  t = Now();
  for (Frame& f : snap.frames) {
    // anonymous(p): an anonymous frame (KPF_ANON: also private COW copies
    // of file pages and KSM pages), the zero page, or a special page in a
    // mapping without a file (vDSO).  named(p): a page-cache frame.
    f.anon = f.Has(kKpfAnon) || f.Has(kKpfZeroPage) || f.anon;
    // The zero page's contents are known; unreadable frames without a
    // struct page are in no figure (below), so not unreadable either.
    if (f.Has(kKpfZeroPage) && !f.hashed) {
      f.hash = ZeroPageHash();
      f.hashed = true;
    }
    if (f.unreadable && f.Has(kKpfNoPage)) {
      f.unreadable = false;
      snap.unreadable--;
    }
  }
  // Frames without struct pages (PFN maps) are in no figure.
  for (ProcessSnap& p : snap.procs) {
    if (p.dropped) {
      p.pages.clear();
      snap.notes.push_back("pid " + std::to_string(p.pid) + " (" + p.comm + ") " + p.note +
                           (p.excluded ? "" : ": dropped"));
      continue;
    }
    auto keep = std::remove_if(p.pages.begin(), p.pages.end(),
                               [&](const PageRef& r) { return snap.frames[r.frame].Has(kKpfNoPage); });
    p.skipped += p.pages.end() - keep;
    p.pages.erase(keep, p.pages.end());
  }
  // Content numbers, so the figures need no hash maps.
  NumberContents(&snap);
  snap.phases.after = Now() - t;
  snap.scan_seconds = Now() - t0;
  return snap;
}

}  // namespace cid::analyze
