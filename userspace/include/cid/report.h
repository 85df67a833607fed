// What the index says about duplication: groups of inodes with the same
// content, and the summary `cidctl report` prints.
#ifndef CID_REPORT_H_
#define CID_REPORT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "cid/digest.h"
#include "cid/index.h"
#include "cid/status.h"

namespace cid {

struct DupInode {
  uint64_t dev = 0;
  uint64_t ino = 0;
  std::vector<std::string> paths{};  // sorted
  int64_t mtime_ns = 0;  // the version the index hashed
  int64_t ctime_ns = 0;
};

// One content that exists as more than one inode.
struct DupGroup {
  Digest digest;
  uint64_t size = 0;
  std::vector<DupInode> inodes;  // by (dev, ino); always 2 or more
  // Bytes stored beyond the first copy.
  uint64_t duplicated_bytes() const { return size * (inodes.size() - 1); }
};

// Ordered by duplicated_bytes, largest first, then by digest.
Result<std::vector<DupGroup>> FindDuplicates(Index* index, uint64_t min_size);
// The same, for the contents only that have an inode named beneath one
// of `roots` (each group still lists every inode and name of its content):
// what a container's layers share, at a cost that follows their size.
Result<std::vector<DupGroup>> FindDuplicatesUnder(Index* index, const std::vector<std::string>& roots,
                                                  uint64_t min_size);

// FindDuplicates, keeping only the names that still exist beneath their
// scanned root (never through a symlink) as the inode and version the index
// hashed: a renamed, deleted or changed tree leaves no ghost paths.  Groups
// left with fewer than two inodes are dropped; *stale_paths counts the
// names left out (scan again, or `cidctl forget` a root that is gone).
Result<std::vector<DupGroup>> FindCurrentDuplicates(Index* index, uint64_t min_size, uint64_t* stale_paths);

// Figures over a set of inodes.  Page-cache figures assume every copy is
// cached whole: a file of size s takes ceil(s / page_size) pages.
struct Summary {
  uint64_t files = 0;              // inodes
  uint64_t bytes = 0;              // sum of their sizes
  uint64_t distinct_contents = 0;  // distinct digests
  uint64_t distinct_bytes = 0;     // sum of sizes over distinct digests
  uint64_t duplicated_bytes = 0;   // bytes - distinct_bytes
  uint64_t cache_pages = 0;        // every inode cached separately
  uint64_t shared_cache_pages = 0; // one cached copy per content
  uint64_t saved_pages() const { return cache_pages - shared_cache_pages; }
};

struct TreeSummary {
  RootRecord root;
  Summary within;                 // duplication inside this tree alone
  uint64_t also_elsewhere_bytes = 0;  // bytes of its inodes whose content another tree also has
};

struct Report {
  uint64_t page_size = 4096;
  Summary total;                  // across every tree in the index
  std::vector<TreeSummary> trees; // by root path
};

Result<Report> BuildReport(Index* index, uint64_t page_size);

}  // namespace cid

#endif  // CID_REPORT_H_
