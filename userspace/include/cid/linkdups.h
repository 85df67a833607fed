// Sharing without the patched kernel: duplicated files in read-only overlay
// lower layers are hard-linked to one inode, so every container that
// stacks those layers opens one inode and one page cache (what
// containers/storage's own use_hard_links does at pull time).
//
// Two files are linked only when everything a container can observe is
// equal: content (byte for byte, not just the index digest), file type,
// mode, owner, group, mtime and every extended attribute, and both live on
// one filesystem.  An inode any of whose names lies outside the given
// layers (an upper layer, a writable tree) is never linked to or from:
// writing through that name would change every layer.
//
// Each replacement is journalled (one JSON object per line, fsync'd before
// the change) so UndoLinks can give every replaced name its own inode back,
// also after an interrupted run.  The journal holds:
//   {"op":"link","target":T,"source":S,"tmp":TMP,"dev":D,"ino":OLD_INO}
//   {"op":"done","target":T}   or   {"op":"abort","target":T}
#ifndef CID_LINKDUPS_H_
#define CID_LINKDUPS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cid/index.h"
#include "cid/status.h"

namespace cid {

struct LinkOptions {
  std::vector<std::string> layers;  // canonical read-only layer directories
  std::string journal;              // appended to; created if missing
  bool dry_run = false;             // count what would be linked, change nothing
  const std::atomic<bool>* stop = nullptr;  // checked between contents
  std::function<void(const Status&)> on_error;  // per-file problems
};

struct LinkStats {
  uint64_t groups = 0;        // duplicated contents with copies in the layers
  uint64_t linked = 0;        // names now pointing at a shared inode
  uint64_t linked_bytes = 0;  // bytes no longer stored (and cached) twice
  uint64_t differ = 0;        // copies left alone: mode, owner, times or xattrs differ
  uint64_t outside = 0;       // copies left alone: a name outside the layers
  uint64_t stale = 0;         // copies left alone: changed since indexed
  uint64_t errors = 0;
  bool stopped = false;       // *stop was set before the end
};

// The journal beside an index: <dir of index>/hardlinks.journal.
std::string DefaultJournalPath(const std::string& index_path);

Status LinkDuplicates(Index* index, const LinkOptions& options, LinkStats* stats);

struct UndoStats {
  uint64_t restored = 0;   // names given their own inode again
  uint64_t untouched = 0;  // journalled but never linked, or already separate
  uint64_t removed_tmp = 0;
  uint64_t errors = 0;
};

// Reverts every change the journal records, newest first; on success the
// journal is renamed to <journal>.undone.<unix time>.  NotFound if there is
// no journal.
Status UndoLinks(const std::string& journal, const std::function<void(const Status&)>& on_error, UndoStats* stats);

}  // namespace cid

#endif  // CID_LINKDUPS_H_
