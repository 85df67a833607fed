// Scanning: walk a tree, hash what is new or changed, record it in the
// index.  Files whose path, inode, size, mtime and ctime match the index are
// not read again.  Writes are committed in batches, so an interrupted scan
// (stop flag, Ctrl-C, kill -9) keeps everything up to its last batch.
#ifndef CID_SCANNER_H_
#define CID_SCANNER_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "cid/hasher.h"
#include "cid/index.h"
#include "cid/io.h"
#include "cid/status.h"

namespace cid {

struct ScanProgress {
  uint64_t files = 0;         // regular files walked so far
  uint64_t hashed = 0;        // files hashed so far
  uint64_t hashed_bytes = 0;  // bytes hashed so far
  uint64_t queued = 0;        // waiting to be hashed
};

class OwnRows;

// What the scans of one run share (cidctl scan A B C), passed to each
// ScanTree in ScanOptions::session: a first scan into a new index keeps
// the rows it wrote in memory and answers its lookups from them
// (scanner.cc, OwnRows); the next root's scan takes them over if the index
// still has exactly those inode rows.
struct ScanSession {
  ScanSession();
  ~ScanSession();
  ScanSession(const ScanSession&) = delete;
  ScanSession& operator=(const ScanSession&) = delete;
  // For a process about to exit: the rows in memory are left to the exit
  // rather than freed one by one (0.1 s at the end of a first scan of /usr,
  // after everything else).  They stay reachable, so leak checkers are quiet.
  void LeaveToExit();
  // After the run's last scan: builds the inode indexes a first scan left
  // out (Index::DeferInodeIndexes) while it handed its rows on.  Without
  // it, the next scan of the index builds them.
  Status Finish(Index* index);
  std::unique_ptr<OwnRows> own;
  // The fingerprints the run's hashing threads took (HasherOptions::seen).
  std::unique_ptr<SeenFingerprints> fingerprints_seen;
  // How many roots the run scans (the caller sets it), and how many of
  // them were begun: the first of several hashes its small files at once
  // rather than probe them (see Scan::ProbeSmall in scanner.cc).
  unsigned roots = 1;
  unsigned roots_begun = 0;
};

struct ScanOptions {
  unsigned workers = 0;  // hashing threads; 0: one per online CPU
  EngineFactory engine;  // empty: DefaultEngineFactory(kDefaultQueueDepth)
  HasherOptions hasher;
  // Index writes are buffered in memory and applied in one short
  // transaction once this many are waiting, or the oldest has waited
  // batch_time, and before every blocking wait for hashing: the write lock
  // is held only while a batch is applied (a few ms for 4096 rows), never
  // across the walk or the hashing of a file.
  uint64_t batch_writes = 4096;
  std::chrono::milliseconds batch_time{1000};
  const std::atomic<bool>* stop = nullptr;           // set to stop early
  ScanSession* session = nullptr;                    // shared by the scans of one run
  std::function<void(const Status&)> on_error;       // unreadable or changed files
  std::function<void(const ScanProgress&)> on_progress;  // about 10 times a second
  // Hash every file again, whatever the index says (cidctl scan --rehash).
  bool rehash = false;
  // Racy-clean rule (git's): a file whose mtime or ctime is not older than
  // the scan's start minus this many ns may change again within the same
  // timestamp, unseen; its row is marked racy and the next scan hashes it
  // again.  -1: the filesystem's granularity as the file shows it: 2 s where
  // its times are whole seconds (ext4 with 128-byte inodes, FAT, some
  // network filesystems), else the tick of the kernel's coarse clock that
  // file times come from (clock_getres(CLOCK_REALTIME_COARSE)).
  int64_t racy_ns = -1;
  // Lazy hashing: a file whose size no other indexed inode has cannot have
  // a duplicate yet; it is recorded with its size only (InodeRecord::hashed
  // false) and looked at when a second inode of its size is indexed.  Of
  // files with size twins, those over kPartialWhole bytes are first split
  // by their partial fingerprint (cid/partial.h: first and last 4 KiB); a
  // file whose fingerprint no twin shares is recorded with it, unhashed,
  // and hashed when one appears.  false: hash every file (cidctl scan
  // --hash-all).
  bool lazy = true;
  // Byte comparison (with lazy): a file of at least compare_min bytes whose
  // partial fingerprint matches an inode with a current, not racy digest
  // (indexed before, or hashed earlier in this scan) is read beside that
  // inode and compared with it byte by byte instead of being hashed; if
  // every byte is equal and neither changed meanwhile, it is given that
  // digest (the digest of equal bytes is equal), else it is hashed on its
  // own.  Of a group of such files found in this scan, one is hashed and
  // the others wait for its digest.  0: hash every file that is read.
  uint64_t compare_min = 32 << 10;
  // Check only: walk the tree and compare it with the index, reading no
  // file and writing nothing (the index may be open read-only), and stop
  // at the first thing a scan would record: a file new, changed, racy,
  // renamed, gone, first indexed under another root, or a root whose last
  // scan did not run to its end.  ScanStats::current gives the answer.
  bool check_only = false;
  // check_only: a directory root whose own stat (device, inode, mtime,
  // ctime) is what its last complete scan recorded, and was already older
  // than the racy window then, counts as unchanged without a walk.  Only for
  // trees nobody changes below the root without the root changing too,
  // such as committed overlay lower layers, which container storage never
  // writes (a file added, removed or renamed in a subdirectory, or written
  // in place, is not seen).
  bool trust_root_signature = false;

  static constexpr unsigned kDefaultQueueDepth = 32;
};

struct ScanStats {
  std::string root;         // canonical
  uint64_t files = 0;       // regular-file paths walked
  uint64_t inodes = 0;      // distinct inodes among them
  uint64_t hardlinks = 0;   // paths naming an inode already seen in this scan
  uint64_t unchanged = 0;   // inodes the index already had (not read)
  uint64_t hashed = 0;      // inodes read and recorded
  uint64_t hashed_bytes = 0;
  uint64_t mapped_bytes = 0;  // of hashed_bytes, hashed from page-cache mappings, not read
  uint64_t changed = 0;     // changed while being read; not recorded
  uint64_t errors = 0;      // unreadable files and directories
  uint64_t symlinks = 0;    // not followed
  uint64_t special = 0;     // devices, FIFOs, sockets: skipped
  uint64_t pseudo_fs = 0;   // proc, sysfs, ... mounts: not entered
  uint64_t removed = 0;     // paths that are gone from the tree
  uint64_t racy = 0;        // hashed, but too close to the scan's start: hashed again next time
  uint64_t deferred = 0;    // recorded by size alone when walked (lazy hashing); a twin met later
                            // in the walk has them hashed after all (counted in hashed too)
  uint64_t fingerprinted = 0;   // partial fingerprints taken (first and last 4 KiB, cid/partial.h)
  uint64_t partial_unique = 0;  // of those, recorded by size and fingerprint alone: no twin matched
  uint64_t compared = 0;        // of hashed, given a twin's digest after a byte-by-byte comparison
  uint64_t compared_bytes = 0;  // their bytes (in hashed_bytes too)
  bool interrupted = false;
  bool current = false;     // check_only: the index describes the whole tree as it is
  double seconds = 0;
  std::string engine;       // "io_uring", "pread", or "none" if nothing was read
};

// Errors: the root cannot be examined, or the index fails (named in the
// message).  File-level problems go to on_error and the counters.
Status ScanTree(Index* index, const std::string& root, const ScanOptions& options, ScanStats* stats);

}  // namespace cid

#endif  // CID_SCANNER_H_
