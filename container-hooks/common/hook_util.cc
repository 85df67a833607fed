#include "hook_util.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>

#include "cid/scanner.h"

namespace cid {

Deadline::Deadline(std::chrono::milliseconds budget, std::atomic<bool>* flag) {
  std::thread([s = shared_, budget, flag] {
    std::unique_lock<std::mutex> l(s->mu);
    if (!s->cv.wait_for(l, budget, [&s] { return s->done; })) *flag = true;
  }).detach();
}

Deadline::~Deadline() {
  {
    std::lock_guard<std::mutex> l(shared_->mu);
    shared_->done = true;
  }
  shared_->cv.notify_all();
}

IndexRun IndexTrees(const std::string& index_path, const std::vector<std::string>& trees, bool lower_layers,
                    const std::atomic<bool>* stop, Index* reader) {
  IndexRun run;
  auto fail = [&](const Status& s) {
    run.error = s;
    run.index_failed = s.message().rfind("index ", 0) == 0;
    return std::move(run);
  };
  ScanOptions so;
  // Lazy hashing (the default): a file whose size no other inode has is
  // recorded by size and hashed once a twin appears, so a new layer of
  // unique files costs a walk, not a read (550 real libraries: 0.16 s
  // against 1.0 s).  It once looked wrong: lxc_hook_test found 8 duplicates
  // where hashing everything found 9, the ninth being a log the first
  // container had appended to since it was indexed (see scanner_test's
  // LazyHashingAcrossRootsSeesATwinAsItIsNow).
  so.stop = stop;
  so.on_error = [&](const Status&) { run.file_errors++; };
  // Which trees the index already describes, in order; the first that it
  // does not and every one after it are scanned.  No index yet (or one of
  // an older schema, which only a writer upgrades): scan them all.
  size_t first_stale = 0;
  std::unique_ptr<Index> own_reader;
  if (!reader) {
    auto ro = Index::Open(index_path, Index::Mode::kReadOnly);
    if (ro.ok()) own_reader = std::move(*ro);
    reader = own_reader.get();
  }
  if (reader) {
    ScanOptions check = so;
    check.check_only = true;
    check.trust_root_signature = lower_layers;
    for (; first_stale < trees.size(); first_stale++) {
      ScanStats st;
      Status s = ScanTree(reader, trees[first_stale], check, &st);
      if (!s.ok() || !st.current) break;  // an error is the scan's to report
    }
    run.indexed = run.current = first_stale;
    if ((stop && stop->load()) || first_stale == trees.size()) {
      run.owned = std::move(own_reader);
      run.index = reader;
      return run;
    }
  }
  auto rw = Index::Open(index_path, Index::Mode::kReadWrite);
  if (!rw.ok()) return fail(rw.status());
  run.wrote = true;
  run.owned = std::move(*rw);
  run.index = run.owned.get();
  own_reader.reset();
  for (size_t i = first_stale; i < trees.size(); i++) {
    ScanStats st;
    Status s = ScanTree(run.index, trees[i], so, &st);
    if (!s.ok()) return fail(s);
    run.hashed += st.hashed;
    if (st.interrupted) break;
    run.indexed++;
  }
  return run;
}

Index* ReadIndexCache::For(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) < 0) return nullptr;
  // Another index, or this path's index replaced: follow it (runs that
  // alternate between two indexes only lose the cache).
  if (index && (st.st_dev != dev || st.st_ino != ino)) index.reset();
  if (!index) {
    auto ro = Index::Open(path, Index::Mode::kReadOnly);
    if (!ro.ok()) return nullptr;
    index = std::move(*ro);
    dev = st.st_dev;
    ino = st.st_ino;
    version = -1;
    reports.clear();
  }
  auto v = index->DataVersion();
  if (!v.ok()) {  // reopened at the next run
    index.reset();
    reports.clear();
    return nullptr;
  }
  if (*v != version) {
    reports.clear();
    version = *v;
  }
  return index.get();
}

bool ParseLong(const char* s, long min, long max, long* out) {
  char* end = nullptr;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < min || v > max) return false;
  *out = v;
  return true;
}

}  // namespace cid
