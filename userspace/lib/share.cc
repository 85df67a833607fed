#include "cid/share.h"

#include <sys/stat.h>

#include <algorithm>

#include "cid/kernel.h"
#include "cid/layers.h"
#include "cid/report.h"

namespace cid {

Status ShareDuplicates(Index* index, const std::vector<std::string>& layers, const ShareOptions& o, ShareStats* stats) {
  auto beneath = [&](const std::string& p) {
    return std::any_of(layers.begin(), layers.end(), [&](const std::string& l) { return PathBeneath(p, l); });
  };
  auto error = [&](const Status& s) {
    if (o.on_error) o.on_error(s);
  };
  if (o.mode == ShareMode::kHardlink) {
    LinkOptions lo;
    lo.layers = o.link_layers.empty() ? layers : o.link_layers;
    lo.journal = o.journal;
    lo.on_error = o.on_error;
    lo.stop = o.stop;
    Status s = LinkDuplicates(index, lo, &stats->links);
    if (!s.ok()) return s;
    if (stats->links.stopped) {
      stats->stopped = true;
      return Status::OK();
    }
  }
  // Counting alone needs no names: a smaller query, no lists built.
  auto count = [&](uint64_t size, uint64_t here, uint64_t total) {
    stats->groups++;
    stats->files += here;
    // Beyond one copy per content; if every copy is here, one of them stays.
    stats->duplicated_bytes += size * (here == total ? here - 1 : here);
  };
  if (o.mode == ShareMode::kReport && !o.eligible) return index->ForEachDuplicateCountUnder(layers, o.min_size, count);
  auto groups = FindDuplicatesUnder(index, layers, o.min_size);
  if (!groups.ok()) return groups.status();
  for (const auto& g : *groups) {
    uint64_t here = 0;
    for (const auto& in : g.inodes)
      if (std::any_of(in.paths.begin(), in.paths.end(), beneath)) here++;
    if (here == 0) continue;
    count(g.size, here, g.inodes.size());
    if (o.mode != ShareMode::kTag) {
      if (!o.eligible) continue;
      for (const auto& in : g.inodes) {
        auto it = std::find_if(in.paths.begin(), in.paths.end(), beneath);
        if (it == in.paths.end()) continue;
        if (o.eligible(*it)) stats->eligible++;
        else stats->ineligible++;
      }
      continue;
    }
    for (const auto& in : g.inodes) {
      if (o.stop && o.stop->load()) {
        stats->stopped = true;
        return Status::OK();
      }
      auto within = std::find_if(in.paths.begin(), in.paths.end(), beneath);
      if ((o.domain || o.only_within) && within == in.paths.end()) continue;
      const std::string& path = within != in.paths.end() ? *within : in.paths[0];
      if (o.eligible) {
        if (!o.eligible(path)) {
          stats->ineligible++;
          continue;
        }
        stats->eligible++;
      }
      struct stat st;
      if (lstat(path.c_str(), &st) < 0 || !S_ISREG(st.st_mode) || st.st_dev != in.dev || st.st_ino != in.ino ||
          static_cast<uint64_t>(st.st_size) != g.size) {
        stats->stale++;
        if (o.on_stale) o.on_stale(path);
        continue;
      }
      auto cur = index->FindInode(in.dev, in.ino);
      if (!cur.ok()) return cur.status();
      if (!cur->has_value() || !(*cur)->Matches(FileStat::From(st))) {
        stats->stale++;
        if (o.on_stale) o.on_stale(path);
        continue;
      }
      // Tagged at an earlier start (tags last the boot): the kernel would
      // hash the whole file again for nothing.
      if (auto q = QueryFile(path);
          q.ok() && q->tagged && q->digest == g.digest && q->domain == o.domain.value_or(0)) {
        stats->tagged++;
        stats->already_tagged++;
        continue;
      }
      TagRequest req;
      req.expect = g.digest;
      req.domain = o.domain;
      auto r = TagFile(path, req);
      if (!r.ok()) {
        stats->tag_failed++;
        error(r.status());
        if (r.status().code() == Status::Code::kUnsupported) return r.status();  // no kernel support at all
        continue;
      }
      stats->tagged++;
    }
  }
  return Status::OK();
}

}  // namespace cid
