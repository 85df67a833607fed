// Hashing many files at once.  A FileHasher owns one ReadEngine and keeps
// several files in flight through it, hashing each chunk as its read
// completes; a HashPool runs one FileHasher per core.  Large files whose
// pages are already in the page cache are hashed straight from a read-only
// mapping instead, which saves copying every byte into the read buffer.
//
// A file is hashed only if it stays the same version from open to the end:
// fstat before the first and after the last read must agree on inode, size,
// mtime and ctime, and every read must return the bytes the size promised.
// Otherwise the outcome is Status::Changed and no digest is given.  That
// holds for mapped hashing too: a file truncated under the mapping raises
// SIGBUS, which the hasher catches (see HashMapped in hasher.cc) and turns
// into Status::Changed.
#ifndef CID_HASHER_H_
#define CID_HASHER_H_

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cid/digest.h"
#include "cid/io.h"
#include "cid/partial.h"
#include "cid/status.h"
#include "cid/verity.h"

namespace cid {

struct HashRequest {
  std::string path;
  FileStat expect;  // from the walk; dev/ino must still match at open (ino 0: no check)
  uint64_t id = 0;  // caller's cookie
  // If dir_fd >= 0, the file opened is `rel` beneath dir_fd (see
  // OpenBeneath in safe_open.h: no symlinks, never outside dir_fd's tree,
  // any length) and `path` only names it in messages.  The caller keeps
  // dir_fd open until the outcome is reported.
  int dir_fd = -1;
  std::string rel{};
  // Only the partial fingerprint (cid/partial.h): the first and last
  // kPartialBlock bytes are read and no digest is computed.  A file of at
  // most kPartialWhole bytes is read whole: with HasherOptions::seen, it is
  // hashed too only if its (size, fingerprint) was there already (its
  // twin, or the twin's, was read before it: the caller hashes that one),
  // from the bytes of that one read; without, it is always hashed.  The
  // outcome's partial_only is false if it was hashed.  The file is
  // fstat'ed once, at open: a change during the reads moves its times, so
  // the caller's next scan sees it (with the racy-clean rule for changes
  // within a timestamp tick).
  bool partial_only = false;
  // Compare instead of hashing: an indexed inode whose row is current (the
  // version in `st`, with content id `digest`) that should hold the same
  // bytes.  The file is read as for hashing and the twin's bytes at each
  // offset are read beside it (pread) and compared; if every byte is equal
  // and neither file changed (the twin's fstat at open and after the last
  // read equal `st`, the file's as for hashing), the outcome carries the
  // twin's digest without a SHA-256 of the file (the digest of equal bytes
  // is equal).  At the first difference, or if the twin cannot be opened
  // or is not the version `st` describes, the file is hashed on its own
  // from its first byte.  Ignored with partial_only.
  struct Twin {
    int dir_fd = -1;  // as dir_fd/rel above; kept open by the caller
    std::string rel;
    std::string path;  // for messages
    FileStat st;
    Digest digest;
  };
  std::optional<Twin> twin{};
};

struct HashOutcome {
  uint64_t id = 0;
  std::string path;
  Status status;  // IsChanged(): the file changed while it was read
  Digest digest;  // valid if status.ok()
  FileStat st;    // the version that was hashed (or found at open)
  FileStat expected;  // the request's expect, as given
  uint64_t mapped_bytes = 0;  // how much of it was hashed from a mapping, not read
  bool interrupted = false;   // abandoned on HasherOptions::stop; status is not ok
  uint64_t partial = 0;       // the partial fingerprint (cid/partial.h), valid if status.ok()
  bool partial_only = false;  // only the fingerprint was taken: no digest
  bool compared = false;      // the digest is the twin's: equal byte by byte (HashRequest::twin)
};

struct HasherOptions {
  size_t buffer_size = 256 << 10;  // bytes per read
  unsigned files_in_flight = 4;    // per FileHasher
  // A file of at least map_min_size bytes goes map_window bytes at a time:
  // a window the engine says is in the page cache is hashed from a
  // read-only mapping, one that is not is read.  0: always read.
  // Off by default: it saved 5-8% of the CPU time on a host with cheap
  // page faults and large folios, but in a virtual machine where the first
  // touch of each mapped page traps to the hypervisor (the test machine:
  // mapped reads at about 1 GB/s, pread into a reused buffer at 9 GB/s)
  // it costs twice what it saves.  pread's copy costs at most ~15% over
  // SHA-256 anywhere.
  uint64_t map_min_size = 0;
  uint64_t map_window = 4 << 20;  // rounded down to whole pages
  // Once set, files being read are abandoned at their next read (their
  // outcome has `interrupted`), so a stop never waits for a large file.
  const std::atomic<bool>* stop = nullptr;
  // Shared by the hashing threads of a scan: see HashRequest::partial_only.
  // Of small files whose size other files have, a first scan of /usr hashed
  // 107,000 (a SHA-256 of a 4 KiB block padded with zeros each, 0.4 CPU-s)
  // to find the few thousand that have a twin.
  SeenFingerprints* seen = nullptr;
  // A HashPool's threads run this much nicer than the thread that made it
  // (up to 19; 0: the same).  The walk and the per-file bookkeeping are one
  // thread each and feed every hashing thread; with more threads than
  // cores they had a share each, and the hashing threads, starved of
  // files, then waited too: a first scan of /usr on two cores, its main
  // thread waiting 16,000 times for the walk, took 2.75 s, 2.57 s with
  // the hashing threads at +5 (+10 and +19 the same; the copies no
  // slower).  Where cores are free, nice changes nothing.
  int nice_below = 5;
};

// The calling thread's nice value (-100 if it cannot be read).
int CurrentThreadNice();

class FileHasher {
 public:
  FileHasher(std::unique_ptr<ReadEngine> engine, HasherOptions options);
  ~FileHasher();
  FileHasher(const FileHasher&) = delete;
  FileHasher& operator=(const FileHasher&) = delete;

  // Pulls requests with next(&req, may_block) until it returns false and
  // reports each through done().  next() may block only when may_block.
  void Run(const std::function<bool(HashRequest*, bool may_block)>& next,
           const std::function<void(HashOutcome&&)>& done);

  // One file, synchronously.
  HashOutcome HashPath(const std::string& path);

  const char* engine_name() const { return engine_->name(); }

 private:
  struct Slot;
  bool Start(Slot* slot, HashRequest&& req, const std::function<void(HashOutcome&&)>& done);
  bool Begin(Slot* slot, const std::function<void(HashOutcome&&)>& done);
  Status Read(Slot* slot);
  Status SubmitRead(Slot* slot);
  bool OnRead(Slot* s, int64_t res, const std::function<void(HashOutcome&&)>& done);
  Status Continue(Slot* slot, bool* finished);
  void Finish(Slot* slot, Status status, const std::function<void(HashOutcome&&)>& done, bool interrupted = false);
  bool Stopped() const { return options_.stop && options_.stop->load(std::memory_order_relaxed); }
  // The engine failed after setup (io_uring_enter refused by seccomp, say):
  // go on with pread, restarting the files in flight.  False if that is
  // not possible (the engine was not io_uring).
  bool FallBack(const Status& why);
  // Comparing with HashRequest::twin (see there).
  bool OpenTwin(Slot* slot);
  void CloseTwin(Slot* slot);
  bool TwinMatches(Slot* slot, size_t len);
  bool TwinUnchanged(Slot* slot);
  void HashAlone(Slot* slot);

  std::unique_ptr<ReadEngine> engine_;
  HasherOptions options_;
  uint64_t map_window_;  // options_.map_window, whole pages
  std::vector<std::unique_ptr<Slot>> slots_;
  void MapBuffers();  // points every slot at buffers of its own in buffers_
  uint8_t* buffers_ = nullptr;
  size_t buffers_len_ = 0;
};

class HashPool {
 public:
  // Once *stop is set, requests not yet started are dropped (never
  // reported), files being read are abandoned at their next read (reported
  // as interrupted), and Add() ignores new requests.
  HashPool(unsigned workers, const EngineFactory& factory, HasherOptions options,
           const std::atomic<bool>* stop = nullptr);
  ~HashPool();  // closes and joins
  HashPool(const HashPool&) = delete;
  HashPool& operator=(const HashPool&) = delete;

  void Add(HashRequest req);  // ignored once closed or stopped
  void Close();   // no more requests
  void Cancel();  // drop requests not yet started (they are never reported)
  // Appends finished outcomes.  With wait, blocks until there is at least
  // one or none is outstanding.  Returns true while more may come, false
  // once the pool is closed and everything added has been taken.
  bool Take(std::vector<HashOutcome>* out, bool wait);
  // The same, waiting at most `most` for `at_least` (or every outcome
  // still due, if fewer).
  bool TakeWithin(std::vector<HashOutcome>* out, std::chrono::milliseconds most, size_t at_least = 1);
  size_t pending() const;
  std::string engine_name() const;

 private:
  bool Next(HashRequest* req, bool may_block);
  bool TakeLocked(std::vector<HashOutcome>* out);  // mu_ held
  // What a waiting Take waits for is there: want_ outcomes, or every one
  // still due (none may be: a stop drops requests).  mu_ held.
  bool Enough() const { return outcomes_.size() >= std::max<size_t>(want_, 1) || outcomes_.size() == in_progress_; }
  bool Stopped() const { return stop_ && stop_->load(std::memory_order_relaxed); }
  void Done(HashOutcome&& o);

  mutable std::mutex mu_;
  std::condition_variable work_cv_;  // requests_ grew or closed_
  std::condition_variable done_cv_;  // outcomes_ grew or a worker exited
  std::deque<HashRequest> requests_;  // guarded by mu_
  std::deque<HashOutcome> outcomes_;  // guarded by mu_
  bool closed_ = false;               // guarded by mu_
  size_t in_progress_ = 0;            // added but not yet taken; guarded by mu_
  size_t want_ = 0;                   // outcomes a waiting Take waits for (0: none waits); guarded by mu_
  std::string engine_name_;           // guarded by mu_
  const std::atomic<bool>* const stop_;
  std::vector<std::thread> threads_;
};

}  // namespace cid

#endif  // CID_HASHER_H_
