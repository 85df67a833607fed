// The figures of a snapshot: the thesis's equations 4.1-4.9 (Ahrens,
// section 4.4) and this project's two named-merging figures (N.1, N.2).
// docs/cid-analyze.md has the same equations in prose.
//
// P is the set of distinct frames mapped by the processes counted, each
// identified by its frame number; H the set of distinct page contents
// (XXH3-128 of the page; with --verify, pages of equal hash and different
// bytes are distinct contents).
//
//   (4.1) anonymous(p) = 1 if frame p is anonymous            (Frame::anon)
//   (4.2) named(p)     = 1 if frame p is named (page cache)   (!Frame::anon)
//   (4.3) hash(p)      = the hash of p's content               (Frame::hash)
//   (4.4) anonymous_exists(h) = 1 if some p in P with hash(p)=h is anonymous
//   (4.5) named_exists(h)     = 1 if some p in P with hash(p)=h is named
//   (4.6) KSM shared   = sum over h of ( |{p : hash(p)=h, named(p)}| + anonymous_exists(h) )
//   (4.7) KSM sharings = sum over h of ( |{p : hash(p)=h, anonymous(p)}| - anonymous_exists(h) )
//   (4.8) CBPS shared   = |H|
//   (4.9) CBPS sharings = |P| - |H|
//   no sharing = sum over p of the number of (process, virtual page) pairs mapping p
//   mmap/fork  = |P|
//
// Named merging (this project):
//   (N.1) oracle = sum over h of ( named_exists(h) + |{p : hash(p)=h, anonymous(p)}| ):
//         every named content once, anonymous memory as mmap/fork.
//   (N.2) achieved = sum over named p of ( |inodes(p)| - 1 ), inodes(p) being the
//         distinct (device, inode) pairs of the mappings of p, as /proc/PID/maps
//         shows them.  On the patched kernel a diverted mapping's frame belongs
//         to the shared content inode while maps shows the user's file, so two
//         files sharing a frame show two inodes.  achieved is what the frames
//         would have cost more without that sharing, one frame per inode:
//         baseline = mmap/fork + achieved, and the oracle's saving against the
//         same baseline is oracle_sharings = baseline - oracle.  When every
//         duplicate is shared, achieved = oracle_sharings.
#include <algorithm>
#include <map>
#include <set>
#include <unordered_map>

#include "cid/analyze.h"
#include "analyze_memory.h"

namespace cid::analyze {
namespace {

using Inode = std::pair<uint64_t, uint64_t>;

struct PerContent {
  uint32_t anon = 0, named = 0;
  uint64_t mappings = 0;
};

int TypeOf(const PerContent& h) { return h.anon && h.named ? kMixed : h.anon ? kAnonymous : kNamed; }

// Computes figures for any subset of a snapshot's processes, reusing its
// per-frame and per-content scratch arrays (cleared through the lists of
// what each run touched), so per-group figures cost what their pages cost.
class Calculator {
 public:
  explicit Calculator(const Snapshot& snap)
      : snap_(snap),
        mappings_(HugeVector<uint32_t>(snap.frames.size())),
        inodes_(HugeVector<uint32_t>(snap.frames.size())),
        first_(HugeVector<Inode>(snap.frames.size())),
        per_content_(HugeVector<PerContent>(snap.contents)) {
    // Frames charged to each memcg, among the frames the kept processes map.
    std::vector<bool> seen(snap.frames.size());
    for (const ProcessSnap& p : snap.procs) {
      if (p.dropped) continue;
      for (const PageRef& r : p.pages) {
        if (seen[r.frame]) continue;
        seen[r.frame] = true;
        if (uint64_t m = snap.frames[r.frame].memcg) charged_[m]++;
      }
    }
  }
  Calculator(const Calculator&) = delete;
  Calculator& operator=(const Calculator&) = delete;

  Figures Run(const std::function<bool(size_t)>& include) {
    Figures f;
    std::set<uint64_t> memcgs;
    std::map<uint32_t, std::set<Inode>> more_inodes;  // frames mapped by 3+ inodes (rare)
    for (size_t i = 0; i < snap_.procs.size(); i++) {
      const ProcessSnap& p = snap_.procs[i];
      if (p.dropped || (include && !include(i))) continue;
      f.processes++;
      f.swapped += p.swapped;
      f.skipped += p.skipped;
      if (p.memcg_ino) memcgs.insert(p.memcg_ino);
      for (const PageRef& r : p.pages) {
        uint32_t id = r.frame;
        if (mappings_[id]++ == 0) touched_.push_back(id);
        const Mapping& m = p.maps[r.mapping];
        if (snap_.frames[id].anon || !m.named()) continue;
        Inode ino{m.dev, m.ino};
        if (inodes_[id] == 0) {
          first_[id] = ino;
          inodes_[id] = 1;
        } else if (ino != first_[id] && more_inodes[id].insert(ino).second) {
          inodes_[id]++;
        }
      }
    }

    for (uint32_t id : touched_) {
      const Frame& fr = snap_.frames[id];
      uint32_t n = mappings_[id];
      PerContent& h = per_content_[snap_.content_of[id]];
      if (h.anon == 0 && h.named == 0) touched_contents_.push_back(snap_.content_of[id]);
      (fr.anon ? h.anon : h.named)++;
      h.mappings += n;
      f.no_sharing += n;
      (fr.anon ? f.anon_frames : f.named_frames)++;
      if (!fr.anon && inodes_[id] > 1) f.nm_achieved += inodes_[id] - 1;  // (N.2)
      if (fr.Has(kKpfZeroPage)) {
        f.zero_frames++;
        f.zero_mappings += n;
      } else {
        // smaps-style use: the zero page is in nobody's Rss or Pss.
        f.rss += n;
        f.pss += static_cast<double>(n) / static_cast<double>(std::max<uint64_t>(fr.kcount, 1));
        if (fr.kcount <= 1) f.uss += n;
      }
      if (fr.Has(kKpfKsm)) {
        f.ksm_frames++;
        f.ksm_mappings += n;
      }
      if (fr.Has(kKpfThp)) f.thp_frames++;
      if (fr.Has(kKpfHuge)) f.hugetlb_frames++;
      if (fr.memcg && !memcgs.count(fr.memcg)) f.used_charged_elsewhere++;
      mappings_[id] = 0;
      inodes_[id] = 0;
    }
    f.mmap_fork = touched_.size();  // |P|
    touched_.clear();

    for (uint32_t c : touched_contents_) {
      PerContent& h = per_content_[c];
      uint64_t anonymous_exists = h.anon > 0;            // (4.4)
      uint64_t named_exists = h.named > 0;               // (4.5)
      uint64_t ksm_shared = h.named + anonymous_exists;  // (4.6), one h
      uint64_t ksm_sharings = h.anon - anonymous_exists; // (4.7), one h
      uint64_t oracle = named_exists + h.anon;           // (N.1), one h
      f.ksm_shared += ksm_shared;
      f.ksm_sharings += ksm_sharings;
      f.nm_oracle += oracle;
      Figures::ByType& t = f.by_type[TypeOf(h)];
      t.no_sharing += h.mappings;
      t.mmap_fork += h.anon + h.named;
      t.ksm_shared += ksm_shared;
      t.cbps_shared += 1;
      t.nm_oracle += oracle;
      h = PerContent();
    }
    f.cbps_shared = touched_contents_.size();       // (4.8) |H|
    f.cbps_sharings = f.mmap_fork - f.cbps_shared;  // (4.9)
    touched_contents_.clear();
    f.nm_baseline = f.mmap_fork + f.nm_achieved;
    f.nm_oracle_sharings = f.nm_baseline - f.nm_oracle;
    for (uint64_t m : memcgs) {
      auto it = charged_.find(m);
      if (it != charged_.end()) f.charged += it->second;
    }
    return f;
  }

 private:
  const Snapshot& snap_;
  std::vector<uint32_t> mappings_;  // by frame: (process, page) pairs mapping it
  std::vector<uint32_t> inodes_;    // by frame: distinct named inodes mapping it
  std::vector<Inode> first_;        // by frame: the first of them
  std::vector<PerContent> per_content_;
  std::vector<uint32_t> touched_, touched_contents_;
  std::unordered_map<uint64_t, uint64_t> charged_;
};

}  // namespace

const char* PageTypeName(int t) {
  switch (t) {
    case kAnonymous: return "anonymous";
    case kNamed: return "named";
    default: return "mixed";
  }
}

Figures Compute(const Snapshot& snap, const std::function<bool(size_t)>& include) {
  Calculator calc(snap);
  return calc.Run(include);
}

std::vector<Group> ComputeGroups(const Snapshot& snap) {
  std::vector<Group> groups, cg, ct;
  std::map<std::string, size_t> cgroups, containers;
  for (size_t i = 0; i < snap.procs.size(); i++) {
    const ProcessSnap& p = snap.procs[i];
    if (p.dropped) continue;
    groups.push_back({"process", std::to_string(p.pid) + " " + p.comm, {i}, {}});
    auto [it, fresh] = cgroups.try_emplace(p.cgroup.empty() ? "?" : p.cgroup, cg.size());
    if (fresh) cg.push_back({"cgroup", it->first, {}, {}});
    cg[it->second].procs.push_back(i);
    if (!p.container.empty()) {
      auto [jt, jfresh] = containers.try_emplace(p.container, ct.size());
      if (jfresh) ct.push_back({"container", p.container, {}, {}});
      ct[jt->second].procs.push_back(i);
    }
  }
  groups.insert(groups.end(), cg.begin(), cg.end());
  groups.insert(groups.end(), ct.begin(), ct.end());
  Calculator calc(snap);
  std::vector<bool> in(snap.procs.size());
  for (Group& g : groups) {
    for (size_t i : g.procs) in[i] = true;
    g.figures = calc.Run([&](size_t i) { return static_cast<bool>(in[i]); });
    for (size_t i : g.procs) in[i] = false;
  }
  return groups;
}

}  // namespace cid::analyze
