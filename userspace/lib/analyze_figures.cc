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

namespace cid::analyze {
namespace {

using Inode = std::pair<uint64_t, uint64_t>;

struct Use {
  const Frame* frame = nullptr;
  uint32_t mappings = 0;
  uint32_t inodes = 0;  // distinct named inodes mapping it
  Inode first{};
};

struct PerHash {
  uint32_t anon = 0, named = 0;
  uint64_t mappings = 0;
};

int TypeOf(const PerHash& h) { return h.anon && h.named ? kMixed : h.anon ? kAnonymous : kNamed; }

}  // namespace

const char* PageTypeName(int t) {
  switch (t) {
    case kAnonymous: return "anonymous";
    case kNamed: return "named";
    default: return "mixed";
  }
}

static Figures ComputeWith(const Snapshot& snap, const std::function<bool(size_t)>& include,
                           const std::unordered_map<uint64_t, uint64_t>* charged_by_memcg,
                           const std::unordered_map<uint64_t, uint64_t>& memcg_of_frame) {
  Figures f;
  std::unordered_map<uint64_t, Use> use;
  std::map<uint64_t, std::set<Inode>> more_inodes;  // frames mapped by 3+ inodes (rare)
  std::set<uint64_t> memcgs;
  for (size_t i = 0; i < snap.procs.size(); i++) {
    const ProcessSnap& p = snap.procs[i];
    if (p.dropped || (include && !include(i))) continue;
    f.processes++;
    f.swapped += p.swapped;
    f.skipped += p.skipped;
    if (p.memcg_ino) memcgs.insert(p.memcg_ino);
    for (const PageRef& r : p.pages) {
      Use& u = use[r.pfn];
      if (!u.frame) u.frame = &snap.frames.at(r.pfn);
      u.mappings++;
      const Mapping& m = p.maps[r.mapping];
      if (u.frame->anon || !m.named()) continue;
      Inode ino{m.dev, m.ino};
      if (u.inodes == 0) {
        u.first = ino;
        u.inodes = 1;
      } else if (ino != u.first) {
        auto& s = more_inodes[r.pfn];
        if (s.insert(ino).second) u.inodes++;
      }
    }
  }

  std::unordered_map<Hash128, PerHash, Hash128Hasher> hashes;
  hashes.reserve(use.size());
  for (const auto& [pfn, u] : use) {
    const Frame& fr = *u.frame;
    PerHash& h = hashes[fr.hash];
    (fr.anon ? h.anon : h.named)++;
    h.mappings += u.mappings;
    f.no_sharing += u.mappings;
    (fr.anon ? f.anon_frames : f.named_frames)++;
    if (!fr.anon && u.inodes > 1) f.nm_achieved += u.inodes - 1;  // (N.2)
    if (fr.Has(kKpfZeroPage)) {
      f.zero_frames++;
      f.zero_mappings += u.mappings;
    } else {
      // smaps-style use: the zero page is in nobody's Rss or Pss.
      f.rss += u.mappings;
      f.pss += static_cast<double>(u.mappings) / static_cast<double>(std::max<uint64_t>(fr.kcount, 1));
      if (fr.kcount <= 1) f.uss += u.mappings;
    }
    if (fr.Has(kKpfKsm)) {
      f.ksm_frames++;
      f.ksm_mappings += u.mappings;
    }
    if (fr.Has(kKpfThp)) f.thp_frames++;
    if (fr.Has(kKpfHuge)) f.hugetlb_frames++;
    uint64_t memcg = fr.memcg;
    if (memcg && !memcgs.count(memcg)) f.used_charged_elsewhere++;
  }
  f.mmap_fork = use.size();  // |P|

  for (const auto& [hash, h] : hashes) {
    uint64_t anonymous_exists = h.anon > 0;                 // (4.4)
    uint64_t named_exists = h.named > 0;                    // (4.5)
    uint64_t ksm_shared = h.named + anonymous_exists;       // (4.6), one h
    uint64_t ksm_sharings = h.anon - anonymous_exists;      // (4.7), one h
    uint64_t oracle = named_exists + h.anon;                // (N.1), one h
    f.ksm_shared += ksm_shared;
    f.ksm_sharings += ksm_sharings;
    f.nm_oracle += oracle;
    Figures::ByType& t = f.by_type[TypeOf(h)];
    t.no_sharing += h.mappings;
    t.mmap_fork += h.anon + h.named;
    t.ksm_shared += ksm_shared;
    t.cbps_shared += 1;
    t.nm_oracle += oracle;
  }
  f.cbps_shared = hashes.size();                 // (4.8)
  f.cbps_sharings = f.mmap_fork - f.cbps_shared; // (4.9)
  f.nm_baseline = f.mmap_fork + f.nm_achieved;
  f.nm_oracle_sharings = f.nm_baseline - f.nm_oracle;

  if (charged_by_memcg) {
    for (uint64_t m : memcgs) {
      auto it = charged_by_memcg->find(m);
      if (it != charged_by_memcg->end()) f.charged += it->second;
    }
  } else {
    for (const auto& [pfn, memcg] : memcg_of_frame) f.charged += memcg && memcgs.count(memcg);
  }
  return f;
}

namespace {

// Every frame any kept process maps, with its memcg; and frames per memcg.
std::unordered_map<uint64_t, uint64_t> MemcgOfFrames(const Snapshot& snap) {
  std::unordered_map<uint64_t, uint64_t> out;
  for (const ProcessSnap& p : snap.procs) {
    if (p.dropped) continue;
    for (const PageRef& r : p.pages) out.emplace(r.pfn, snap.frames.at(r.pfn).memcg);
  }
  return out;
}

}  // namespace

Figures Compute(const Snapshot& snap, const std::function<bool(size_t)>& include) {
  return ComputeWith(snap, include, nullptr, MemcgOfFrames(snap));
}

std::vector<Group> ComputeGroups(const Snapshot& snap) {
  auto frames = MemcgOfFrames(snap);
  std::unordered_map<uint64_t, uint64_t> charged;
  for (const auto& [pfn, memcg] : frames) {
    if (memcg) charged[memcg]++;
  }
  std::vector<Group> groups;
  std::map<std::string, size_t> cgroups, containers;
  for (size_t i = 0; i < snap.procs.size(); i++) {
    const ProcessSnap& p = snap.procs[i];
    if (p.dropped) continue;
    groups.push_back({"process", std::to_string(p.pid) + " " + p.comm, {i}, {}});
  }
  std::vector<Group> cg, ct;
  for (size_t i = 0; i < snap.procs.size(); i++) {
    const ProcessSnap& p = snap.procs[i];
    if (p.dropped) continue;
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
  for (Group& g : groups) {
    std::vector<bool> in(snap.procs.size());
    for (size_t i : g.procs) in[i] = true;
    g.figures = ComputeWith(snap, [&](size_t i) { return static_cast<bool>(in[i]); }, &charged, frames);
  }
  return groups;
}

}  // namespace cid::analyze
