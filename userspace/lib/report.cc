#include "cid/report.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "cid/safe_open.h"

namespace cid {

namespace {

uint64_t Pages(uint64_t size, uint64_t page) { return (size + page - 1) / page; }

// Accumulates a Summary from (inode, size, digest), each inode once.
class SummaryBuilder {
 public:
  explicit SummaryBuilder(uint64_t page) : page_(page) {}
  void Add(const InodeRecord& r) {
    if (!inodes_.insert(InodeKey{r.dev, r.ino}).second) return;
    s_.files++;
    s_.bytes += r.size;
    s_.cache_pages += Pages(r.size, page_);
    if (!r.hashed || digests_.insert(r.digest).second) {  // an unhashed inode's size is unique
      s_.distinct_contents++;
      s_.distinct_bytes += r.size;
      s_.shared_cache_pages += Pages(r.size, page_);
    }
  }
  Summary Get() const {
    Summary s = s_;
    s.duplicated_bytes = s.bytes - s.distinct_bytes;
    return s;
  }

 private:
  uint64_t page_;
  Summary s_;
  std::unordered_set<InodeKey, InodeKeyHash> inodes_;
  std::unordered_set<Digest, DigestHash> digests_;
};

void SortGroups(std::vector<DupGroup>* groups) {
  std::sort(groups->begin(), groups->end(), [](const DupGroup& a, const DupGroup& b) {
    if (a.duplicated_bytes() != b.duplicated_bytes()) return a.duplicated_bytes() > b.duplicated_bytes();
    return a.digest < b.digest;
  });
}

using DupRowFn = std::function<void(const InodeRecord&, const std::string& path)>;

// Groups the rows of Index::ForEachDuplicate(Under), which come ordered by
// digest, dev, ino, path.
Result<std::vector<DupGroup>> GroupDuplicates(const std::function<Status(const DupRowFn&)>& each) {
  std::vector<DupGroup> groups;
  Status s = each([&](const InodeRecord& r, const std::string& path) {
    if (groups.empty() || groups.back().digest != r.digest) {
      groups.emplace_back();
      groups.back().digest = r.digest;
      groups.back().size = r.size;
    }
    DupGroup& g = groups.back();
    if (g.inodes.empty() || g.inodes.back().dev != r.dev || g.inodes.back().ino != r.ino)
      g.inodes.push_back(DupInode{r.dev, r.ino, {}, r.mtime_ns, r.ctime_ns});
    g.inodes.back().paths.push_back(path);
  });
  if (!s.ok()) return s;
  // An inode whose only paths vanished mid-query could leave a group of one.
  groups.erase(std::remove_if(groups.begin(), groups.end(), [](const DupGroup& g) { return g.inodes.size() < 2; }),
               groups.end());
  SortGroups(&groups);
  return groups;
}

}  // namespace

Result<std::vector<DupGroup>> FindDuplicates(Index* index, uint64_t min_size) {
  return GroupDuplicates([&](const DupRowFn& fn) { return index->ForEachDuplicate(min_size, fn); });
}

Result<std::vector<DupGroup>> FindDuplicatesUnder(Index* index, const std::vector<std::string>& roots,
                                                  uint64_t min_size) {
  return GroupDuplicates([&](const DupRowFn& fn) { return index->ForEachDuplicateUnder(roots, min_size, fn); });
}

Result<std::vector<DupGroup>> FindCurrentDuplicates(Index* index, uint64_t min_size, uint64_t* stale_paths) {
  auto groups = FindDuplicates(index, min_size);
  if (!groups.ok()) return groups.status();
  auto roots = index->Roots();
  if (!roots.ok()) return roots.status();
  std::vector<std::string> root_paths;
  for (const auto& r : *roots) root_paths.push_back(r.path);
  RootFds fds(std::move(root_paths));
  auto current = [&](const DupGroup& g, const DupInode& in, const std::string& path) {
    auto where = fds.Resolve(path);
    if (!where.ok()) return false;
    int fd = OpenBeneath(where->first, where->second, O_PATH | O_NOFOLLOW);
    if (fd < 0) return false;
    struct stat st;
    bool same = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    close(fd);
    if (!same) return false;
    FileStat f = FileStat::From(st);
    return f.dev == in.dev && f.ino == in.ino && f.size == g.size && f.mtime_ns == in.mtime_ns &&
           f.ctime_ns == in.ctime_ns;
  };
  *stale_paths = 0;
  std::vector<DupGroup> out;
  for (DupGroup& g : *groups) {
    std::vector<DupInode> kept;
    for (DupInode& in : g.inodes) {
      std::vector<std::string> names;
      for (std::string& p : in.paths) {
        if (current(g, in, p)) names.push_back(std::move(p));
        else (*stale_paths)++;
      }
      if (names.empty()) continue;
      in.paths = std::move(names);
      kept.push_back(std::move(in));
    }
    if (kept.size() < 2) continue;
    g.inodes = std::move(kept);
    out.push_back(std::move(g));
  }
  SortGroups(&out);  // fewer copies move a group down
  return out;
}

Result<Report> BuildReport(Index* index, uint64_t page_size) {
  auto roots = index->Roots();
  if (!roots.ok()) return roots.status();
  Report rep;
  rep.page_size = page_size;
  SummaryBuilder total(page_size);
  std::map<int64_t, SummaryBuilder> per_tree;
  std::map<int64_t, std::vector<InodeRecord>> tree_inodes;
  std::unordered_map<Digest, std::set<int64_t>, DigestHash> trees_of;
  Status s = index->ForEachRootInode([&](int64_t root_id, const InodeRecord& r) {
    total.Add(r);
    per_tree.try_emplace(root_id, page_size).first->second.Add(r);
    tree_inodes[root_id].push_back(r);
    if (r.hashed) trees_of[r.digest].insert(root_id);
  });
  if (!s.ok()) return s;
  rep.total = total.Get();
  for (const RootRecord& root : *roots) {
    TreeSummary t;
    t.root = root;
    auto it = per_tree.find(root.id);
    if (it != per_tree.end()) t.within = it->second.Get();
    std::unordered_set<InodeKey, InodeKeyHash> counted;
    for (const InodeRecord& r : tree_inodes[root.id])
      if (r.hashed && trees_of[r.digest].size() > 1 && counted.insert(InodeKey{r.dev, r.ino}).second) t.also_elsewhere_bytes += r.size;
    rep.trees.push_back(std::move(t));
  }
  return rep;
}

}  // namespace cid
