// cid-analyze's library against synthetic processes of known memory
// (tests/helpers/analyze_helper.c): exact figures for fork sharing,
// identical anonymous content, identical files on different inodes, the
// zero page and KSM-merged pages; every thread stopped during the
// snapshot; a target exiting mid-scan.  Needs root (/proc/kpageflags).
#include <fcntl.h>
#include <dirent.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <chrono>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "cid/analyze.h"
#include "test_util.h"

namespace cid::analyze {
namespace {

constexpr uint64_t kLo = 0x600000000000ull, kHi = 0x610000000000ull;

// The helper running with the given commands; killed (with its children)
// at destruction.
class Helper {
 public:
  explicit Helper(const std::vector<std::string>& cmds) {
    int fds[2];
    if (pipe(fds) != 0) abort();
    pid_t pid = fork();
    if (pid == 0) {
      dup2(fds[1], 1);
      close(fds[0]);
      close(fds[1]);
      std::vector<char*> argv{const_cast<char*>(CID_ANALYZE_HELPER)};
      for (const auto& c : cmds) argv.push_back(const_cast<char*>(c.c_str()));
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(fds[1]);
    std::string line;
    char c;
    while (read(fds[0], &c, 1) == 1 && c != '\n') line += c;
    close(fds[0]);
    std::istringstream in(line);
    std::string ready;
    in >> ready;
    for (long p; in >> p;) pids_.push_back(static_cast<pid_t>(p));
    if (ready != "ready" || pids_.empty()) ADD_FAILURE() << "helper did not start: '" << line << "'";
    main_ = pid;
  }
  ~Helper() {
    for (size_t i = pids_.size(); i-- > 0;) kill(pids_[i], SIGKILL);
    waitpid(main_, nullptr, 0);
  }
  Helper(const Helper&) = delete;
  Helper& operator=(const Helper&) = delete;
  const std::vector<pid_t>& pids() const { return pids_; }
  pid_t pid() const { return pids_.at(0); }

 private:
  pid_t main_ = 0;
  std::vector<pid_t> pids_;
};

bool Root() { return access("/proc/kpageflags", R_OK) == 0 && geteuid() == 0; }

#define REQUIRE_ROOT() \
  if (!Root()) GTEST_SKIP() << "needs root for /proc/kpageflags and frame numbers"

std::vector<Target> Targets(std::initializer_list<const Helper*> hs) {
  std::vector<Target> t;
  for (const Helper* h : hs)
    for (pid_t p : h->pids()) t.push_back({p, ""});
  return t;
}

SnapshotOptions Verify() {
  SnapshotOptions o;
  o.verify = true;
  return o;
}

SnapshotOptions Live() {
  SnapshotOptions o;
  o.stop = false;
  return o;
}

Snapshot Take(const std::vector<Target>& t, SnapshotOptions o = SnapshotOptions()) {
  o.range_lo = kLo;
  o.range_hi = kHi;
  auto r = TakeSnapshot(t, o);
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? std::move(*r) : Snapshot{};
}

TEST(AnalyzeTest, ForkedChildrenShareAnonymousFrames) {
  REQUIRE_ROOT();
  Helper h({"anon", "32", "1", "fork", "2"});
  ASSERT_EQ(h.pids().size(), 3u);
  Snapshot s = Take(Targets({&h}), Verify());
  Figures f = Compute(s);
  EXPECT_EQ(f.processes, 3u);
  EXPECT_EQ(f.no_sharing, 96u);
  EXPECT_EQ(f.mmap_fork, 32u);
  EXPECT_EQ(f.ksm_shared, 32u);
  EXPECT_EQ(f.ksm_sharings, 0u);
  EXPECT_EQ(f.cbps_shared, 32u);
  EXPECT_EQ(f.nm_oracle, 32u);
  EXPECT_EQ(f.nm_achieved, 0u);
  EXPECT_EQ(f.anon_frames, 32u);
  EXPECT_EQ(f.by_type[kAnonymous].mmap_fork, 32u);
  EXPECT_EQ(f.uss, 0u);
  EXPECT_NEAR(f.pss, 32.0, 1e-9);  // three processes, a third each
  EXPECT_EQ(s.pages_hashed, 32u);  // each frame hashed once
  // Never pinned (process_vm_readv): that would unshare them.
  EXPECT_EQ(s.pages_pinned, 0u);
  EXPECT_EQ(s.hash_collisions, 0u);
  EXPECT_TRUE(s.stopped);
  // Reading left the sharing as it was: the same frames again.
  Figures again = Compute(Take(Targets({&h})));
  EXPECT_EQ(again.mmap_fork, 32u);
  EXPECT_NEAR(again.pss, 32.0, 1e-9);
}

TEST(AnalyzeTest, IdenticalAnonymousContentWrittenSeparately) {
  REQUIRE_ROOT();
  Helper a({"anon", "32", "7", "anon", "8", "100"});
  Helper b({"anon", "32", "7", "anon", "8", "200"});
  Snapshot s = Take(Targets({&a, &b}), Verify());
  Figures f = Compute(s);
  EXPECT_EQ(f.no_sharing, 80u);
  EXPECT_EQ(f.mmap_fork, 80u);
  EXPECT_EQ(f.ksm_shared, 48u);  // lower by exactly the 32 identical pages
  EXPECT_EQ(f.ksm_sharings, 32u);
  EXPECT_EQ(f.cbps_shared, 48u);
  EXPECT_EQ(f.nm_oracle, 80u);  // anonymous memory counts as mmap/fork
  EXPECT_EQ(f.uss, 80u);
  EXPECT_GE(s.bytes_compared, 32u * 4096);  // --verify compared the equal pages
  EXPECT_EQ(s.hash_collisions, 0u);
  // Each frame mapped once: all read with process_vm_readv, and left as
  // they were (a second snapshot sees the same frames).
  EXPECT_EQ(s.pages_pinned, 80u);
  Snapshot again = Take(Targets({&a, &b}));
  ASSERT_EQ(again.frames.size(), s.frames.size());
  for (size_t i = 0; i < s.frames.size(); i++) {
    EXPECT_EQ(again.frames[i].pfn, s.frames[i].pfn);
    EXPECT_EQ(again.frames[i].hash, s.frames[i].hash);
  }
}

TEST(AnalyzeTest, IdenticalFilesOnDifferentInodes) {
  REQUIRE_ROOT();
  test::TempDir dir;
  std::string data = test::RandomBytes(16 * 4096, 42);
  test::WriteFile(dir / "one", data);
  test::WriteFile(dir / "two", data);
  test::WriteFile(dir / "other", test::RandomBytes(4 * 4096, 43));
  Helper a({"map", dir / "one", "map", dir / "other"});
  Helper b({"map", dir / "two"});
  Snapshot s = Take(Targets({&a, &b}));
  Figures f = Compute(s);
  EXPECT_EQ(f.no_sharing, 36u);
  EXPECT_EQ(f.mmap_fork, 36u);
  EXPECT_EQ(f.named_frames, 36u);
  EXPECT_EQ(f.ksm_shared, 36u);   // KSM leaves named pages alone
  EXPECT_EQ(f.cbps_shared, 20u);
  EXPECT_EQ(f.nm_oracle, 20u);    // lower by exactly the 16 duplicated pages
  EXPECT_EQ(f.nm_achieved, 0u);   // a stock kernel shares no frame across inodes
  EXPECT_EQ(f.nm_oracle_sharings, 16u);
  EXPECT_EQ(f.by_type[kNamed].mmap_fork, 36u);
  EXPECT_EQ(f.by_type[kNamed].nm_oracle, 20u);
}

TEST(AnalyzeTest, SameFileMappedTwiceIsOneInode) {
  REQUIRE_ROOT();
  test::TempDir dir;
  test::WriteFile(dir / "f", test::RandomBytes(8 * 4096, 5));
  Helper a({"map", dir / "f"});
  Helper b({"map", dir / "f"});
  Figures f = Compute(Take(Targets({&a, &b})));
  EXPECT_EQ(f.no_sharing, 16u);
  EXPECT_EQ(f.mmap_fork, 8u);
  EXPECT_EQ(f.nm_achieved, 0u);  // one inode: ordinary page-cache sharing
  EXPECT_EQ(f.nm_oracle, 8u);
  EXPECT_NEAR(f.pss, 8.0, 1e-9);
}

// Does a read fault on anonymous memory map the shared zero page here?
// (Some kernels allocate a zeroed page instead: the host this was written
// on, a 6.18 Firecracker guest, does.)
bool KernelMapsZeroPage() {
  Helper h({"zero", "2"});
  int fd = open(("/proc/" + std::to_string(h.pid()) + "/pagemap").c_str(), O_RDONLY);
  uint64_t e[2] = {0, 0};
  bool ok = fd >= 0 && pread(fd, e, sizeof(e), static_cast<off_t>(kLo / 4096 * 8)) == sizeof(e);
  if (fd >= 0) close(fd);
  return ok && (e[0] & (1ull << 63)) && e[0] == e[1];
}

TEST(AnalyzeTest, ZeroPage) {
  REQUIRE_ROOT();
  Helper a({"zero", "20"});
  Helper b({"zero", "5", "anon", "3", "9"});
  Figures f = Compute(Take(Targets({&a, &b})));
  EXPECT_EQ(f.no_sharing, 28u);
  EXPECT_EQ(f.cbps_shared, 4u);  // zeros and three distinct pages
  EXPECT_EQ(f.ksm_shared, 4u);
  if (KernelMapsZeroPage()) {
    EXPECT_EQ(f.zero_frames, 1u);
    EXPECT_EQ(f.zero_mappings, 25u);
    EXPECT_EQ(f.mmap_fork, 4u);
    EXPECT_EQ(f.rss, 3u);  // as smaps: the zero page is in nobody's Rss
  } else {
    // Each read fault allocated a zeroed page of its own.
    EXPECT_EQ(f.zero_frames, 0u);
    EXPECT_EQ(f.mmap_fork, 28u);
    EXPECT_EQ(f.ksm_sharings, 24u);
    EXPECT_EQ(f.rss, 28u);
  }
}

// A transparent huge page is counted as its 512 pages, each hashed.
TEST(AnalyzeTest, TransparentHugePage) {
  REQUIRE_ROOT();
  Helper a({"thp", "512", "4"});
  Helper b({"thp", "512", "4"});
  Snapshot s = Take(Targets({&a, &b}), Verify());
  Figures f = Compute(s);
  if (f.thp_frames == 0) GTEST_SKIP() << "the kernel gave no huge page (THP off or memory fragmented)";
  EXPECT_EQ(f.thp_frames, 1024u);  // two huge pages, 512 frames each
  EXPECT_EQ(f.mmap_fork, 1024u);
  EXPECT_EQ(f.ksm_shared, 512u);   // their contents are equal page for page
  EXPECT_EQ(s.pages_hashed, 1024u);
  EXPECT_EQ(s.hash_collisions, 0u);
}

// KSM settings, restored at destruction.
class KsmSettings {
 public:
  KsmSettings() {
    for (const char* k : {"run", "pages_to_scan", "sleep_millisecs"}) saved_.push_back({k, Read(k)});
  }
  ~KsmSettings() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) Write(it->first, it->second);
  }
  KsmSettings(const KsmSettings&) = delete;
  KsmSettings& operator=(const KsmSettings&) = delete;
  static std::string Read(const std::string& k) {
    std::ifstream in("/sys/kernel/mm/ksm/" + k);
    std::string v;
    in >> v;
    return v;
  }
  static bool Write(const std::string& k, const std::string& v) {
    std::ofstream out("/sys/kernel/mm/ksm/" + k);
    out << v;
    out.flush();
    return static_cast<bool>(out);
  }

 private:
  std::vector<std::pair<std::string, std::string>> saved_;
};

uint64_t KsmMergingPages(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/ksm_merging_pages");
  uint64_t v = 0;
  in >> v;
  return v;
}

TEST(AnalyzeTest, KsmMergedPages) {
  REQUIRE_ROOT();
  if (access("/sys/kernel/mm/ksm/run", W_OK) != 0) GTEST_SKIP() << "no KSM in this kernel";
  if (prctl(68 /* PR_GET_MEMORY_MERGE */, 0, 0, 0, 0) < 0)
    GTEST_SKIP() << "no PR_SET_MEMORY_MERGE (Linux 6.4 and later)";
  KsmSettings saved;
  Helper a({"merge", "anon", "24", "3"});
  Helper b({"merge", "anon", "24", "3"});
  ASSERT_TRUE(KsmSettings::Write("pages_to_scan", "10000"));
  ASSERT_TRUE(KsmSettings::Write("sleep_millisecs", "10"));
  ASSERT_TRUE(KsmSettings::Write("run", "1"));
  // Wait for ksmd to merge the 24 identical pages (and whatever else of
  // the two processes is identical: only the fixed region is analyzed).
  Figures f;
  for (int i = 0; i < 300; i++) {
    f = Compute(Take(Targets({&a, &b}), Live()));
    if (f.ksm_frames == 24) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(f.ksm_frames, 24u) << "ksmd did not merge within 30 s (merging pages: " << KsmMergingPages(a.pid())
                               << ", " << KsmMergingPages(b.pid()) << ")";
  f = Compute(Take(Targets({&a, &b})));
  EXPECT_EQ(f.ksm_frames, 24u);
  EXPECT_EQ(f.ksm_mappings, 48u);
  EXPECT_EQ(f.no_sharing, 48u);
  EXPECT_EQ(f.mmap_fork, 24u);  // KSM already did what KSM hint-all predicts
  EXPECT_EQ(f.ksm_shared, 24u);
  EXPECT_EQ(f.anon_frames, 24u);
  // Reading them left them merged (process_vm_readv's pins would have
  // unshared them): a second snapshot sees the same frames.
  f = Compute(Take(Targets({&a, &b})));
  EXPECT_EQ(f.ksm_frames, 24u);
  EXPECT_EQ(f.mmap_fork, 24u);
}

std::string TaskStates(pid_t pid) {
  std::string states;
  for (int tid : [&] {
         std::vector<int> v;
         std::string dir = "/proc/" + std::to_string(pid) + "/task";
         std::unique_ptr<DIR, int (*)(DIR*)> d(opendir(dir.c_str()), closedir);
         while (struct dirent* e = d ? readdir(d.get()) : nullptr)
           if (e->d_name[0] != '.') v.push_back(atoi(e->d_name));
         return v;
       }()) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/stat");
    std::string line;
    std::getline(in, line);
    size_t c = line.rfind(')');
    if (c != std::string::npos) states += line[c + 2];
  }
  return states;
}

TEST(AnalyzeTest, EveryThreadStoppedAndResumed) {
  REQUIRE_ROOT();
  Helper h({"threads", "3", "anon", "4", "1"});
  std::string during;
  SnapshotOptions o;
  o.after_stop = [&] { during = TaskStates(h.pid()); };
  Snapshot s = Take(Targets({&h}), o);
  EXPECT_EQ(during, "tttt");  // four threads, all in a ptrace stop
  std::string after = TaskStates(h.pid());
  EXPECT_EQ(after.find('t'), std::string::npos) << after;
  EXPECT_GT(s.stopped_seconds, 0.0);
}

TEST(AnalyzeTest, TargetExitingMidScanIsDropped) {
  REQUIRE_ROOT();
  Helper a({"anon", "10", "1"});
  Helper b({"anon", "6", "2"});
  SnapshotOptions o;
  o.before_process = [&](pid_t pid) {
    if (pid == b.pid()) {
      kill(pid, SIGKILL);
      // Wait until it is a zombie: its memory is gone.
      for (int i = 0; i < 1000 && TaskStates(pid).find('Z') == std::string::npos; i++) usleep(1000);
    }
  };
  Snapshot s = Take(Targets({&a, &b}), o);
  EXPECT_EQ(s.dropped(), 1u);
  ASSERT_EQ(s.notes.size(), 1u);
  EXPECT_NE(s.notes[0].find("pid " + std::to_string(b.pid())), std::string::npos) << s.notes[0];
  Figures f = Compute(s);
  EXPECT_EQ(f.processes, 1u);
  EXPECT_EQ(f.mmap_fork, 10u);
  EXPECT_EQ(TaskStates(a.pid()).find('t'), std::string::npos);
}

// A mostly reserved address space (runtimes reserve gigabytes, sanitizers
// terabytes): 512 GiB of anonymous mapping with 12 pages written.  Where
// pagemap is read through PAGEMAP_SCAN (Linux 6.7) only the populated
// ranges are read; either way the figures are exact.
TEST(AnalyzeTest, SparseReservation) {
  REQUIRE_ROOT();
  Helper a({"sparse", "512", "12", "anon", "4", "1"});
  Snapshot s = Take(Targets({&a}));
  Figures f = Compute(s);
  EXPECT_EQ(f.no_sharing, 16u);
  EXPECT_EQ(f.mmap_fork, 16u);
  EXPECT_EQ(f.cbps_shared, 16u);
  EXPECT_EQ(f.anon_frames, 16u);
  EXPECT_EQ(s.pages_hashed, 16u);
}

bool SwapOn() {
  std::ifstream in("/proc/swaps");
  int lines = 0;
  for (std::string l; std::getline(in, l);) lines++;
  return lines > 1;  // a header, then one line per swap area
}

// A swap file of its own for the test's lifetime when the host has no swap
// area (CI machines often have none): 64 MiB under TMPDIR, swapon(2) here,
// swapoff(2) and unlinked again in the destructor.  error() says why not.
class TempSwap {
 public:
  TempSwap() {
    if (SwapOn()) return;
    const char* tmp = getenv("TMPDIR");
    path_ = std::string(tmp && *tmp ? tmp : "/var/tmp") + "/cid-analyze-test-swap.XXXXXX";
    int fd = mkstemp(path_.data());
    if (fd < 0) {
      error_ = path_ + ": " + strerror(errno);
      path_.clear();
      return;
    }
    int r = fallocate(fd, 0, 0, 64 << 20);
    close(fd);
    if (r != 0) {
      error_ = path_ + ": fallocate: " + strerror(errno);
      return;
    }
    std::string cmd = "mkswap -q '" + path_ + "' >/dev/null 2>&1";
    if (std::system(cmd.c_str()) != 0) {
      error_ = "mkswap " + path_ + " failed";
      return;
    }
    if (swapon(path_.c_str(), 0) != 0) {
      error_ = "swapon " + path_ + ": " + strerror(errno);
      return;
    }
    on_ = true;
  }
  ~TempSwap() {
    if (on_ && swapoff(path_.c_str()) != 0)
      ADD_FAILURE() << "swapoff " << path_ << ": " << strerror(errno);
    if (!path_.empty()) unlink(path_.c_str());
  }
  const std::string& error() const { return error_; }

 private:
  std::string path_, error_;
  bool on_ = false;
};

// Pages swapped out are in no figure, counted apart (pagemap's swap bit).
TEST(AnalyzeTest, SwappedOutPages) {
  REQUIRE_ROOT();
  TempSwap swap;
  if (!SwapOn()) GTEST_SKIP() << "no swap area active and none could be set up: " << swap.error();
  Helper a({"anon", "8", "1", "anon", "32", "2", "pageout"});
  Snapshot s = Take(Targets({&a}));
  Figures f = Compute(s);
  ASSERT_GT(f.swapped, 0u) << "MADV_PAGEOUT swapped nothing out";
  EXPECT_LE(f.swapped, 32u);
  EXPECT_EQ(f.mmap_fork, 8u + (32u - f.swapped));  // the rest of the 32 may have stayed
  EXPECT_EQ(s.pages_hashed, f.mmap_fork);
  EXPECT_EQ(s.unreadable, 0u);
}

// Present pages of the process's PFN maps ("pf" in smaps' VmFlags).
uint64_t PresentPagesInPfnMaps(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps");
  int pm = open(("/proc/" + std::to_string(pid) + "/pagemap").c_str(), O_RDONLY);
  uint64_t lo = 0, hi = 0, n = 0;
  for (std::string line; std::getline(in, line);) {
    unsigned long long a, b;
    if (sscanf(line.c_str(), "%llx-%llx ", &a, &b) == 2 && line.find(':') > line.find(' ')) {
      lo = a;
      hi = b;
    } else if (line.rfind("VmFlags:", 0) == 0 && (line + " ").find(" pf ") != std::string::npos) {
      for (uint64_t va = lo; va < hi && pm >= 0; va += 4096) {
        uint64_t e = 0;
        if (pread(pm, &e, 8, static_cast<off_t>(va / 4096 * 8)) == 8 && (e >> 63)) n++;
      }
    }
  }
  if (pm >= 0) close(pm);
  return n;
}

// Pages of PFN maps (VM_PFNMAP: the vDSO's data pages, device memory) are
// in no figure and never read: counted as skipped.
TEST(AnalyzeTest, PfnMappedPagesAreSkipped) {
  REQUIRE_ROOT();
  Helper a({"clock", "anon", "4", "1"});
  uint64_t pfn_pages = PresentPagesInPfnMaps(a.pid());
  if (pfn_pages == 0)
    GTEST_SKIP() << "no PFN-mapped page present in a process here (this clock source maps no vDSO data page)";
  auto r = TakeSnapshot(Targets({&a}), SnapshotOptions());  // the whole address space
  ASSERT_TRUE(r.ok()) << r.status().message();
  Figures f = Compute(*r);
  EXPECT_EQ(f.skipped, pfn_pages);
  EXPECT_EQ(r->unreadable, 0u);
  EXPECT_GE(f.mmap_fork, 4u);
}

// The first process to map a frame is the one its contents are read
// through; if it exits after its page tables were read, the frames are
// read through another process that maps them.
TEST(AnalyzeTest, FramesOfATargetExitingBeforeContentsAreReadThroughAnother) {
  REQUIRE_ROOT();
  Helper h({"anon", "16", "3", "fork", "1"});
  ASSERT_EQ(h.pids().size(), 2u);
  SnapshotOptions o = Verify();
  o.before_contents = [&] {
    kill(h.pid(), SIGKILL);
    for (int i = 0; i < 1000 && TaskStates(h.pid()).find('Z') == std::string::npos; i++) usleep(1000);
  };
  Snapshot s = Take(Targets({&h}), o);
  EXPECT_EQ(s.dropped(), 1u);
  EXPECT_TRUE(s.procs[0].dropped);
  EXPECT_EQ(s.pages_hashed, 16u);  // every frame read, through the child
  EXPECT_EQ(s.unreadable, 0u);
  ASSERT_EQ(s.notes.size(), 1u);   // the dropped process, and nothing read with process_vm_readv
  EXPECT_NE(s.notes[0].find("dropped"), std::string::npos) << s.notes[0];
  Figures f = Compute(s);
  EXPECT_EQ(f.processes, 1u);
  EXPECT_EQ(f.mmap_fork, 16u);
  EXPECT_EQ(f.cbps_shared, 16u);  // 16 distinct contents: read, not counted as unreadable
}

TEST(AnalyzeTest, GroupsAndCharge) {
  REQUIRE_ROOT();
  Helper a({"anon", "10", "1", "fork", "1"});
  Snapshot s = Take(Targets({&a}));
  auto groups = ComputeGroups(s);
  ASSERT_GE(groups.size(), 3u);  // two processes, one cgroup
  EXPECT_EQ(groups[0].kind, "process");
  EXPECT_EQ(groups[0].figures.mmap_fork, 10u);
  EXPECT_EQ(groups[1].figures.mmap_fork, 10u);
  EXPECT_EQ(groups[2].kind, "cgroup");
  EXPECT_EQ(groups[2].figures.mmap_fork, 10u);
  EXPECT_EQ(groups[2].figures.no_sharing, 20u);
  if (s.have_kpagecgroup && s.procs[0].memcg_ino) {
    // The parent touched them first: charged to its memcg, which both share.
    EXPECT_EQ(groups[2].figures.charged, 10u);
    EXPECT_EQ(groups[2].figures.used_charged_elsewhere, 0u);
  }
}

TEST(AnalyzeTest, TargetErrors) {
  auto r = TargetsFromPids({999999999});
  EXPECT_EQ(r.error, TargetError::kNotFound);
  EXPECT_NE(r.status.message().find("no such process"), std::string::npos);
  r = TargetsFromPids({2});  // kthreadd
  if (IsKernelThread(2)) {
    EXPECT_EQ(r.error, TargetError::kKernelThread);
  }
  r = TargetsFromCgroup("/sys/fs/cgroup/no-such-cgroup-here");
  EXPECT_EQ(r.error, TargetError::kNotFound);
  EXPECT_NE(r.status.message().find("no-such-cgroup-here"), std::string::npos);
  r = TargetsFromCgroup("/etc");
  EXPECT_EQ(r.error, TargetError::kNotFound);
  EXPECT_NE(r.status.message().find("not a cgroup"), std::string::npos);
}

}  // namespace
}  // namespace cid::analyze
