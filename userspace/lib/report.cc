#include "cid/report.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <system_error>
#include <thread>
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
  // Every name is checked in path order, so each directory is opened once
  // (beneath its root, no symlinks) and its names are looked at with
  // fstatat(AT_SYMLINK_NOFOLLOW) of one component: one system call per
  // name instead of an open, fstat and close.
  struct Name {
    const std::string* path;
    size_t group, inode;
    bool current = false;
  };
  std::vector<Name> names;
  for (size_t g = 0; g < groups->size(); g++)
    for (size_t i = 0; i < (*groups)[g].inodes.size(); i++)
      for (const std::string& p : (*groups)[g].inodes[i].paths) names.push_back(Name{&p, g, i});
  std::sort(names.begin(), names.end(), [](const Name& a, const Name& b) { return *a.path < *b.path; });
  // The names are resolved to (root fd, path below it) here, then checked
  // by two threads, each a contiguous half in path order: on 2 idle cores
  // the 16,000 names of three Debian copies took half the time.
  struct Where {
    int root = -1;
    std::string rel;
  };
  std::vector<Where> where(names.size());
  for (size_t i = 0; i < names.size(); i++) {
    auto w = fds.Resolve(*names[i].path);
    if (w.ok()) where[i] = Where{w->first, std::move(w->second)};
  }
  auto check = [&](size_t begin, size_t end) {
    int dir_fd = -1;     // the directory of the last name, opened beneath its root
    int dir_err = 0;     // or why it could not be
    int dir_root = -1;   // the root fd it was opened beneath
    std::string dir_rel;  // its path relative to that root ("" for the root itself)
    for (size_t i = begin; i < end; i++) {
      Name& n = names[i];
      if (where[i].root < 0) continue;
      const std::string& rel = where[i].rel;
      size_t slash = rel.rfind('/');
      std::string_view dir = slash == std::string::npos ? std::string_view() : std::string_view(rel).substr(0, slash);
      std::string_view base =
          slash == std::string::npos ? std::string_view(rel) : std::string_view(rel).substr(slash + 1);
      if (dir_root != where[i].root || dir_rel != dir || (dir_fd < 0 && dir_err == 0)) {
        if (dir_fd >= 0 && dir_fd != dir_root) close(dir_fd);
        dir_root = where[i].root;
        dir_rel = dir;
        dir_err = 0;
        dir_fd = dir.empty() ? dir_root : OpenBeneath(dir_root, dir, O_PATH | O_DIRECTORY | O_NOFOLLOW);
        if (dir_fd < 0) dir_err = -dir_fd;
      }
      if (dir_fd < 0 || base.empty()) continue;
      struct stat st;
      if (fstatat(dir_fd, std::string(base).c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
      const DupGroup& g = (*groups)[n.group];
      const DupInode& in = g.inodes[n.inode];
      FileStat f = FileStat::From(st);
      n.current = f.dev == in.dev && f.ino == in.ino && f.size == g.size && f.mtime_ns == in.mtime_ns &&
                  f.ctime_ns == in.ctime_ns;
    }
    if (dir_fd >= 0 && dir_fd != dir_root) close(dir_fd);
  };
  constexpr size_t kNamesPerThread = 2048;  // fewer: not worth a thread
  size_t half = names.size() / 2;
  std::optional<std::thread> other;
  if (half >= kNamesPerThread) {
    try {
      other.emplace(check, half, names.size());
    } catch (const std::system_error&) {  // no thread: check them all here
      half = names.size();
    }
  } else {
    half = names.size();
  }
  check(0, half);
  if (other) other->join();
  std::unordered_set<const std::string*> current;
  for (const Name& n : names)
    if (n.current) current.insert(n.path);
  *stale_paths = 0;
  std::vector<DupGroup> out;
  for (DupGroup& g : *groups) {
    std::vector<DupInode> kept;
    for (DupInode& in : g.inodes) {
      std::vector<std::string> names;
      for (std::string& p : in.paths) {
        if (current.count(&p)) names.push_back(std::move(p));
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
