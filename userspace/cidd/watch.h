// Layer stores without hooks (Docker's overlay2, containers/storage when
// podman runs without the hook): watch <root>/<id>/diff directories appear
// (inotify on each root) and rescan every root periodically as a safety
// net, handing each layer to cidd's queue.  A layer is announced once its
// directory has been quiet for a settle time; one extracted more slowly is
// completed by the next rescan (scans are incremental).  Docker's container
// layers (<id> with an <id>-init sibling) are announced as writable; the
// -init layers themselves and containers/storage's l/ are skipped.
#ifndef CID_CIDD_WATCH_H_
#define CID_CIDD_WATCH_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace cid {

class LayerWatcher {
 public:
  using Announce = std::function<void(const std::string& layer, bool writable)>;
  LayerWatcher(std::vector<std::string> roots, std::chrono::seconds rescan, std::chrono::milliseconds settle,
               Announce announce)
      : roots_(std::move(roots)), rescan_(rescan), settle_(settle), announce_(std::move(announce)) {}
  LayerWatcher(const LayerWatcher&) = delete;
  LayerWatcher& operator=(const LayerWatcher&) = delete;

  // Until *stop is set.
  void Run(const std::atomic<bool>* stop);

  // Announces every layer of every root now.
  void RescanAll();

 private:
  void Consider(const std::string& root, const std::string& name);

  const std::vector<std::string> roots_;
  const std::chrono::seconds rescan_;
  const std::chrono::milliseconds settle_;
  const Announce announce_;
};

}  // namespace cid

#endif  // CID_CIDD_WATCH_H_
