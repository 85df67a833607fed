// What to do with the duplicated files of a set of layers once they are
// indexed: tag them for the patched kernel, hard-link them (stock kernel,
// opt-in, read-only layers only), or only report them.  Shared by
// cid-oci-hook, the LXC hook and cidd.
#ifndef CID_SHARE_H_
#define CID_SHARE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "cid/index.h"
#include "cid/linkdups.h"
#include "cid/status.h"

namespace cid {

enum class ShareMode { kReport, kTag, kHardlink };

struct ShareOptions {
  ShareMode mode = ShareMode::kReport;
  std::optional<uint32_t> domain;  // kTag: CID_TAG_DOMAIN
  uint64_t min_size = 1;
  std::string journal;             // kHardlink
  // kHardlink: the read-only layers whose files may be linked with each
  // other (the container's lowers and those of earlier containers); empty:
  // the layers themselves.
  std::vector<std::string> link_layers;
  // Only names this accepts are tagged (the writable-tree policy); all if
  // empty.  In kReport it is asked too, to count what would be tagged.
  std::function<bool(const std::string& path)> eligible;
  // Tag only inodes with a name beneath the layers (a writable tree tags
  // its own files; its twins are tagged by their own tree's hook).
  bool only_within = false;
  const std::atomic<bool>* stop = nullptr;
  std::function<void(const Status&)> on_error;
  // kTag: a name that changed since it was indexed (to be rescanned).
  std::function<void(const std::string& path)> on_stale;
};

struct ShareStats {
  uint64_t groups = 0;            // duplicated contents with a copy in the layers
  uint64_t files = 0;             // inodes of those contents in the layers
  uint64_t duplicated_bytes = 0;  // of those inodes, bytes beyond one copy per content
  uint64_t tagged = 0;            // kTag: inodes tagged (here and their twins elsewhere)
  uint64_t already_tagged = 0;    // kTag: of those, tagged with this digest and domain before
  uint64_t tag_failed = 0;
  uint64_t stale = 0;             // kTag: changed since indexed; rescan before tagging
  uint64_t ineligible = 0;        // refused by `eligible`
  uint64_t eligible = 0;          // accepted by `eligible` (tagged in kTag)
  LinkStats links;                // kHardlink
  bool stopped = false;           // *stop was set before the end
};

// Finds every content of at least min_size bytes that has an inode beneath
// one of `layers` and exists as more than one inode, and handles it per
// mode.  kTag tags every inode of such a content (one name each, the index
// digest passed as the expected digest, only if the name still matches
// its index row), so the layers' copies share with their twins elsewhere;
// with a domain, only the inodes beneath the layers (a domain's files
// share with each other only).
Status ShareDuplicates(Index* index, const std::vector<std::string>& layers, const ShareOptions& options,
                       ShareStats* stats);

}  // namespace cid

#endif  // CID_SHARE_H_
