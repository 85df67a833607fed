// What the OCI and LXC hooks share: a time budget, and indexing trees
// within it.
#ifndef CID_CONTAINER_HOOKS_HOOK_UTIL_H_
#define CID_CONTAINER_HOOKS_HOOK_UTIL_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cid/index.h"
#include "cid/status.h"

namespace cid {

// Sets *flag once `budget` has passed, unless destroyed first.
class Deadline {
 public:
  Deadline(std::chrono::milliseconds budget, std::atomic<bool>* flag);
  ~Deadline();
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;  // guarded by mu_
  std::thread thread_;
};

struct IndexRun {
  size_t indexed = 0;        // trees indexed to the end, in order
  uint64_t hashed = 0;       // files hashed
  uint64_t file_errors = 0;  // unreadable or changed files
  Status error;              // a tree could not be indexed at all
  bool index_failed = false; // ... because the index failed
};

// Indexes `trees` in order until *stop is set; the tree being indexed then
// keeps what was committed and the rest is left for cidd.
IndexRun IndexTrees(Index* index, const std::vector<std::string>& trees, const std::atomic<bool>* stop);

// strtol of a whole string within [min, max].
bool ParseLong(const char* s, long min, long max, long* out);

}  // namespace cid

#endif  // CID_CONTAINER_HOOKS_HOOK_UTIL_H_
