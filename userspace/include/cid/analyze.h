// Memory-sharing analysis of live processes (the thesis's section 4.3/4.4
// method, on real frames): pick target processes, stop them (ptrace),
// read /proc/PID/maps and pagemap, /proc/kpageflags, kpagecount and
// kpagecgroup, hash every resident frame once (XXH3-128), resume them, and
// compute how many frames each deduplication strategy would keep.
//
// The figures are the thesis's equations 4.1-4.9 plus two of this
// project's; docs/cid-analyze.md writes them out and lib/analyze_figures.cc
// implements them, equation by equation.
#ifndef CID_ANALYZE_H_
#define CID_ANALYZE_H_

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "cid/status.h"

namespace cid::analyze {

// ---------------------------------------------------------------- targets

// One process to analyze and the groups it is reported under.
struct Target {
  pid_t pid = 0;
  std::string container;  // podman container name ("" if not chosen by container)
  // --all: a process that cannot be stopped or read (another tracer, a
  // protected process) is left out with a note instead of failing the run.
  bool best_effort = false;
};

// Why a target could not be resolved, for distinct exit codes.
enum class TargetError {
  kNone,
  kNotFound,      // no such pid, cgroup or container
  kKernelThread,  // a kernel thread has no user memory to analyze
  kOther,
};

struct TargetResult {
  std::vector<Target> targets;
  TargetError error = TargetError::kNone;
  Status status;
  std::vector<std::string> notes;  // e.g. kernel threads skipped inside a cgroup
};

bool IsKernelThread(pid_t pid);  // PF_KTHREAD in /proc/PID/stat (false if gone)

// Each call appends to *out.  A missing pid, cgroup or container is
// kNotFound; an explicitly named kernel thread is kKernelThread (inside a
// cgroup or with --all they are skipped and noted).
TargetResult TargetsFromPids(const std::vector<pid_t>& pids);
// A cgroup v2 (or v1) directory: every process in it and below it.
TargetResult TargetsFromCgroup(const std::string& dir);
// A podman container (name or id): its init process and every descendant.
// podman_args go between "podman" and "inspect" (e.g. --root DIR).
TargetResult TargetsFromContainer(const std::string& name, const std::vector<std::string>& podman_args);
// Every user process but this one.
TargetResult AllUserProcesses();

// ---------------------------------------------------------------- snapshot

// /proc/kpageflags bits (include/uapi/linux/kernel-page-flags.h).
inline constexpr int kKpfAnon = 12;
inline constexpr int kKpfCompoundHead = 15;
inline constexpr int kKpfCompoundTail = 16;
inline constexpr int kKpfHuge = 17;
inline constexpr int kKpfNoPage = 20;
inline constexpr int kKpfKsm = 21;
inline constexpr int kKpfThp = 22;
inline constexpr int kKpfZeroPage = 24;

struct Mapping {
  uint64_t start = 0, end = 0;
  uint64_t dev = 0, ino = 0;  // as /proc/PID/maps shows them: 0 for anonymous
  std::string perms;
  std::string path;
  bool named() const { return ino != 0; }
};

struct PageRef {
  uint32_t frame;    // index into Snapshot::frames
  uint32_t mapping;  // index into ProcessSnap::maps
};

struct ProcessSnap {
  pid_t pid = 0;
  std::string comm;
  std::string container;
  std::string cgroup;        // the memory cgroup's path ("/" for the root)
  uint64_t memcg_ino = 0;    // that directory's inode, what kpagecgroup reports
  std::vector<Mapping> maps;
  std::vector<PageRef> pages;  // every present page, in address order
  uint64_t swapped = 0;        // pages swapped out (not in any figure)
  uint64_t skipped = 0;        // present pages in regions without struct pages (PFN maps, vsyscall)
  bool dropped = false;        // exited during the snapshot, or excluded: in no figure
  bool excluded = false;       // a best-effort target that could not be stopped or read
  bool best_effort = false;    // from Target
  std::string note;
};

using Hash128 = std::array<uint64_t, 2>;

struct Frame {
  uint64_t pfn = 0;
  Hash128 hash{};
  uint64_t kflags = 0;
  uint64_t kcount = 0;   // mappings system-wide (/proc/kpagecount)
  uint64_t memcg = 0;    // inode of the charged memcg (/proc/kpagecgroup), 0 if none
  bool anon = false;     // anonymous(p) of equation 4.1; named(p) is !anon
  bool hashed = false;   // content known: read and hashed (or the zero page, known without reading)
  bool unreadable = false;  // present, but its contents could not be read: a content of its own
  bool Has(int bit) const { return (kflags >> bit) & 1; }
};

struct Hash128Hasher {
  size_t operator()(const Hash128& h) const { return h[0] ^ (h[1] * 0x9e3779b97f4a7c15ull); }
};

struct SnapshotOptions {
  bool stop = true;     // PTRACE_SEIZE + PTRACE_INTERRUPT every thread; false: live read
  bool verify = false;  // byte-compare every page whose hash was seen before
  // Threads reading and hashing contents while the targets are stopped
  // (0: one per CPU, at most 8).
  unsigned threads = 0;
  // Only virtual addresses in [range_lo, range_hi) (page aligned).
  uint64_t range_lo = 0, range_hi = ~0ull;
  // Called now and then from the scan: pages hashed so far, pages to go.
  std::function<void(uint64_t done, uint64_t total)> on_progress;
  // Polled between processes and page runs; true ends the snapshot
  // (targets are resumed) with Status kBusy "interrupted".
  std::function<bool()> interrupted;
  // Test hook: called with every target stopped, before the first is read.
  std::function<void()> after_stop;
  // Test hook: called before each process's page tables are read.
  std::function<void(pid_t)> before_process;
  // Test hook: called with every page table read, before any contents.
  std::function<void()> before_contents;
};

// Where a snapshot's time went, in seconds.  All but `after` pass with the
// targets stopped (when they are stopped).
struct SnapshotPhases {
  double stop = 0;      // PTRACE_SEIZE + PTRACE_INTERRUPT of every thread
  double pagemap = 0;   // /proc/PID/maps and pagemap of every target
  double contents = 0;  // /proc/kpage* and every frame's contents read and hashed (threads in parallel)
  double verify = 0;    // --verify: pages of equal hash read again and compared
  double resume = 0;    // every thread detached
  double after = 0;     // frame kinds, content numbers (targets running again)
};

struct Snapshot {
  std::vector<ProcessSnap> procs;
  std::vector<Frame> frames;          // each distinct frame once, as first seen
  std::vector<uint32_t> content_of;   // by frame: a content number (equal hashes, equal numbers)
  uint32_t contents = 0;
  bool have_kpagecgroup = false;
  bool stopped = false;
  double stopped_seconds = 0;   // from the first thread stopped to the last resumed
  double scan_seconds = 0;      // the whole snapshot
  uint64_t pages_hashed = 0;    // frames read and hashed (each once)
  uint64_t pages_pinned = 0;    // of those, read with process_vm_readv (the rest through /proc/PID/mem)
  uint64_t bytes_compared = 0;  // --verify
  uint64_t hash_collisions = 0; // --verify: equal hash, different bytes (kept apart)
  uint64_t unreadable = 0;      // present pages whose contents could not be read
  unsigned threads = 1;         // threads that read and hashed contents
  SnapshotPhases phases;
  std::vector<std::string> notes;
  size_t dropped() const;   // targets that exited during the snapshot (not the excluded)
  size_t excluded() const;
};

// Stops the targets (unless !opts.stop), reads everything, resumes them.
// Targets resume on every path out of here (errors, interruptions); were
// this process killed, the kernel detaches ptrace and they run on.
// Not root (no /proc/kpageflags) is kPermission.
Result<Snapshot> TakeSnapshot(const std::vector<Target>& targets, const SnapshotOptions& opts);

// ---------------------------------------------------------------- figures

// Page types of a content hash (thesis Table 5.2): only anonymous frames
// have it, only named frames, or both (mixed).
enum PageType { kAnonymous = 0, kNamed = 1, kMixed = 2, kPageTypes = 3 };
const char* PageTypeName(int t);

struct Figures {
  // Pages (4 KiB) kept under each strategy (the thesis's "shared").
  uint64_t no_sharing = 0;     // every mapping of every frame
  uint64_t mmap_fork = 0;      // |P|: distinct frames
  uint64_t ksm_shared = 0;     // (4.6)
  uint64_t ksm_sharings = 0;   // (4.7)
  uint64_t cbps_shared = 0;    // (4.8) |H|
  uint64_t cbps_sharings = 0;  // (4.9) |P| - |H|
  uint64_t nm_oracle = 0;      // (N.1) named pages once per content, anonymous as mmap/fork
  uint64_t nm_achieved = 0;    // (N.2) frames saved now by sharing across inodes
  uint64_t nm_baseline = 0;    // mmap_fork + nm_achieved: one frame per inode and page
  uint64_t nm_oracle_sharings = 0;  // nm_baseline - nm_oracle
  // The same figures restricted to hashes of each type.
  struct ByType { uint64_t no_sharing = 0, mmap_fork = 0, ksm_shared = 0, cbps_shared = 0, nm_oracle = 0; };
  std::array<ByType, kPageTypes> by_type{};
  // Frame kinds from kpageflags (distinct frames, and their mappings).
  uint64_t zero_frames = 0, zero_mappings = 0;
  uint64_t ksm_frames = 0, ksm_mappings = 0;
  uint64_t thp_frames = 0, hugetlb_frames = 0;
  uint64_t anon_frames = 0, named_frames = 0;
  // smaps-style use (zero page excluded, as smaps does): resident pages,
  // proportional set size (pages, fractional) and unique set size.
  uint64_t rss = 0;
  double pss = 0;
  uint64_t uss = 0;
  // First-toucher memcg charge (kpagecgroup) against use: frames charged
  // to this group's memcgs, and frames it uses that are charged elsewhere.
  uint64_t charged = 0;
  uint64_t used_charged_elsewhere = 0;
  uint64_t swapped = 0;
  uint64_t skipped = 0;
  size_t processes = 0;
};

// Figures over the processes for which include(index) is true (all kept
// processes if include is empty).  Dropped processes are never included.
Figures Compute(const Snapshot& snap, const std::function<bool(size_t)>& include = {});

struct Group {
  std::string kind;  // "process", "cgroup" or "container"
  std::string name;
  std::vector<size_t> procs;
  Figures figures;
};
// Per process, per cgroup and per container (containers only if chosen so).
std::vector<Group> ComputeGroups(const Snapshot& snap);

}  // namespace cid::analyze

#endif  // CID_ANALYZE_H_
