// What the OCI and LXC hooks share: a time budget, and indexing trees
// within it.
#ifndef CID_CONTAINER_HOOKS_HOOK_UTIL_H_
#define CID_CONTAINER_HOOKS_HOOK_UTIL_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <sys/types.h>

#include "cid/index.h"
#include "cid/share.h"
#include "cid/status.h"

namespace cid {

// Sets *flag once `budget` has passed, unless destroyed first.  The timer
// thread is not joined: on a loaded host, waiting for it to be scheduled
// and exit cost the hook up to several ms at the end of every run.  It
// writes *flag only under mu while done is false, so never after the
// destructor returned; its state outlives it.
class Deadline {
 public:
  Deadline(std::chrono::milliseconds budget, std::atomic<bool>* flag);
  ~Deadline();
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;

 private:
  struct Shared {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;  // guarded by mu
  };
  std::shared_ptr<Shared> shared_ = std::make_shared<Shared>();
};

struct IndexRun {
  size_t indexed = 0;        // trees indexed to the end, in order
  size_t current = 0;        // of those, trees the index already described (no scan, nothing written)
  uint64_t hashed = 0;       // files hashed
  uint64_t file_errors = 0;  // unreadable or changed files
  Status error;              // a tree could not be indexed at all
  bool index_failed = false; // ... because the index failed
  bool wrote = false;        // the index was opened for writing
  std::unique_ptr<Index> owned;  // the connection IndexTrees opened, if it did
  Index* index = nullptr;        // open on the index, for what follows (owned, or the one passed in)
};

// Indexes `trees` in order until *stop is set; the tree being indexed then
// keeps what was committed and the rest is left for cidd.  The common case
// at container start, trees the index already describes as they are, is
// answered by a check (ScanOptions::check_only) on a read-only connection:
// no file read, nothing written, no transaction and no sync.  The index is
// opened for writing only when a tree must be scanned.  `lower_layers`:
// the trees are committed overlay lower layers, which container storage
// never changes, and a root directory unchanged since its last complete
// scan is trusted without a walk (ScanOptions::trust_root_signature; cidd,
// which the hook hands every layer to, walks them in the background).
// `reader`, if given, is a read-only connection to the same index for the
// check (ReadIndexCache): none is opened then, and run.index is it when no
// tree needed a scan.
IndexRun IndexTrees(const std::string& index_path, const std::vector<std::string>& trees, bool lower_layers,
                    const std::atomic<bool>* stop, Index* reader = nullptr);

// What a long-lived process (cidd) keeps for the hook runs it does: one
// read-only connection to the index, open across runs, and report mode's
// counts of the layer sets it answered, kept while the index is unchanged
// (PRAGMA data_version on that connection).  An already-indexed stack then
// costs no connection set-up and, in report mode, no count.  One run at a
// time uses it, under mu.  The index is told by its device and inode, not
// its path: runs resolve paths in their callers' mount namespaces.
struct ReadIndexCache {
  std::mutex mu;
  dev_t dev = 0;
  ino_t ino = 0;
  std::unique_ptr<Index> index;
  int64_t version = -1;
  std::map<std::pair<std::vector<std::string>, uint64_t>, ShareStats> reports;  // (layers, min_size)

  // The connection for the index at `path` (stat here; a connection to
  // another file is closed first), or nullptr if it cannot be opened; drops
  // the counts if the index changed since the last call.  Call with mu held.
  Index* For(const std::string& path);
};

// strtol of a whole string within [min, max].
bool ParseLong(const char* s, long min, long max, long* out);

}  // namespace cid

#endif  // CID_CONTAINER_HOOKS_HOOK_UTIL_H_
