// cidd's own database, beside the index (cidd.db): the queue of trees to
// index, the containers the hooks announced with their layers, and the
// sharing domains' names mapped to kernel domain ids.  SQLite in WAL mode
// with synchronous=NORMAL: a row cidd was told about survives kill -9, so
// the next start resumes the queue; a power cut can take the last commits,
// which the hooks and the watcher hand over again (state.cc, Open).
#ifndef CID_CIDD_STATE_H_
#define CID_CIDD_STATE_H_

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cid/status.h"

namespace cid {

struct QueueItem {
  int64_t id = 0;
  std::string path;
  std::string domain;  // sharing domain name, or empty
  bool hardlink = false;
  bool writable = false;  // a writable tree: tag only what TreePolicy allows
  int attempts = 0;
};

struct ContainerRow {
  std::string id;
  std::string name;
  std::string domain;
  std::vector<std::string> layers;
};

class StateDb {
 public:
  static Result<std::unique_ptr<StateDb>> Open(const std::string& path);
  ~StateDb();
  StateDb(const StateDb&) = delete;
  StateDb& operator=(const StateDb&) = delete;

  // Adds a path unless it is already queued; true if added.
  Result<bool> Enqueue(const std::string& path, const std::string& domain, bool hardlink, bool writable);
  Result<std::optional<QueueItem>> Next();  // oldest queued item
  Status Done(int64_t id);
  Status Retry(int64_t id);  // attempts + 1, moved to the end of the queue
  Result<std::vector<QueueItem>> Queue();

  Status PutContainer(const ContainerRow& c);
  // A hook's announcement in one transaction (one sync, not one per row):
  // the container, if given, and every path enqueued.  Returns how many
  // paths were added.
  Result<uint64_t> Announce(const ContainerRow* c, const std::vector<std::string>& paths, const std::string& domain,
                            bool hardlink, bool writable);
  Result<std::vector<ContainerRow>> Containers();

  // The kernel domain id of a name: ids 1, 2, ... in order of first use,
  // kept for good.
  Result<uint32_t> DomainId(const std::string& name);

 private:
  StateDb(std::string path, sqlite3* db) : path_(std::move(path)), db_(db) {}
  Status Exec(const char* sql);
  Status Error(const char* what) const;
  Result<bool> EnqueueLocked(const std::string& path, const std::string& domain, bool hardlink, bool writable);
  Status PutContainerLocked(const ContainerRow& c);

  const std::string path_;
  // Every method holds mu_ while it uses db_ (the control and worker
  // threads share it), so another thread's statement never lands inside
  // Announce's transaction.
  std::mutex mu_;
  sqlite3* db_;  // guarded by mu_
};

}  // namespace cid

#endif  // CID_CIDD_STATE_H_
