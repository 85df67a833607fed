// The persistent index: one SQLite database (WAL) with one row per inode
// seen (device, inode, size, mtime/ctime in ns, digest), the paths that
// name each inode, and the roots that were scanned.  Writers work in short
// transactions, so an interrupted scan loses at most its last batch and the
// next scan continues where it stopped.
//
// Schema (PRAGMA user_version 2, application_id 'CID1'):
//   roots(id, path UNIQUE, scanned_ns, complete)
//   inodes(dev, ino, size, mtime_ns, ctime_ns, digest BLOB(32, or empty: not
//          hashed), flags (1: racy), partial (the partial fingerprint,
//          cid/partial.h, or NULL: not taken)), PK (dev, ino), indexed by
//          digest and by (size, partial)
//   paths(path PK, root_id, dev, ino)
//   root_sigs(root_id PK, sig): the root directory's stat at its last
//          complete scan (added without a version change: a writer creates
//          it, and readers of an index without it see no signatures)
// The digest is the fs-verity file digest.  Version 1 held plain SHA-256
// digests and no flags: opening such an index for writing upgrades it in
// place and deletes its inode rows, keeping its paths, so the next scan
// hashes every file again and no old digest is ever reported or handed to
// the kernel; opened read-only, it is refused with a message saying to scan.
// The partial column came later without a version change: a writer adds it
// to an index that lacks it, readers never need it, and an older cidctl
// that rewrites a row leaves it NULL (not known), which is always safe.
#ifndef CID_INDEX_H_
#define CID_INDEX_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "cid/digest.h"
#include "cid/io.h"
#include "cid/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace cid {

struct InodeRecord {
  uint64_t dev = 0;
  uint64_t ino = 0;
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;
  Digest digest;  // meaningful only if hashed
  // False for a file recorded with its size only: no other indexed inode
  // had its size, so it could not have a duplicate (ScanOptions::lazy).
  bool hashed = true;
  // Its mtime or ctime was within the timestamp granularity of the scan
  // that hashed it: it may have changed since without its times moving,
  // so the next scan hashes it again (git's racy-clean rule).
  bool racy = false;
  // The partial fingerprint (cid/partial.h) of this version, if taken.  A
  // row that is not hashed but has one was compared with its size twins
  // and matched none of them: it is hashed when a file of the same size
  // and fingerprint appears.
  bool has_partial = false;
  uint64_t partial = 0;

  // The row still describes the file `st` was taken from.
  bool Matches(const FileStat& st) const {
    return dev == st.dev && ino == st.ino && size == st.size && mtime_ns == st.mtime_ns && ctime_ns == st.ctime_ns;
  }
};

// An inode: what the index and reports key rows by.
struct InodeKey {
  uint64_t dev = 0;
  uint64_t ino = 0;
  bool operator==(const InodeKey&) const = default;
};
struct InodeKeyHash {
  size_t operator()(const InodeKey& k) const { return k.ino * 0x9e3779b97f4a7c15ull ^ k.dev; }
};

struct PathRecord {
  std::string path;
  int64_t root_id = 0;
  InodeRecord inode;
};

struct RootRecord {
  int64_t id = 0;
  std::string path;
  int64_t scanned_ns = 0;  // end of the last scan, 0 if never finished
  bool complete = false;   // the last scan ran to the end
  // The root directory as its last complete scan found it (device, inode,
  // mtime, ctime), if it was already older than the racy window then;
  // empty otherwise.  See ScanOptions::trust_root_signature.
  std::string signature;
};

// The default index: /var/lib/cid/index.db for root, otherwise
// $XDG_STATE_HOME/cid/index.db (default ~/.local/state/cid/index.db).
std::string DefaultIndexPath();

struct IndexOptions {
  // How long a connection waits for another's lock before answering Busy
  // (Status::IsBusy: a reader or hook may take that as "skip").  -1: the
  // CID_BUSY_TIMEOUT_MS environment variable, else 2000 ms.
  int busy_timeout_ms = -1;
};

// One Index is one SQLite connection: use it from one thread at a time,
// and give each thread its own (they share the file through WAL: readers
// never wait on the writer, writers hold the lock only for short
// transactions).  Read-only opens never write anything, not even a
// checkpoint.
class Index {
 public:
  enum class Mode { kReadOnly, kReadWrite };

  // kReadWrite creates the file (and its directory) if needed; kReadOnly
  // requires it to exist.  Errors name the file and say what is wrong
  // (not a database, damaged, locked, not writable).
  // kReadOnly needs no write access anywhere: it shares a writer's -shm
  // where it can, and reads the file alone (immutable) where its directory
  // is not writable to it or is on a read-only mount.
  static Result<std::unique_ptr<Index>> Open(const std::string& path, Mode mode);
  static Result<std::unique_ptr<Index>> Open(const std::string& path, Mode mode, const IndexOptions& options);
  ~Index();
  Index(const Index&) = delete;
  Index& operator=(const Index&) = delete;

  const std::string& path() const { return path_; }

  // A second read-write connection to the same file, with the same busy
  // timeout: for a thread of its own (a scan applies its batches on one).
  Result<std::unique_ptr<Index>> OpenAnother() const;
  // SQLite's page cache for this connection, in KiB (PRAGMA cache_size).
  // Read-write connections start with kWriterCacheKiB; pages are
  // allocated as they are read, up to that bound.  8 MiB: with a batch
  // applied in key order (scanner.cc) a first scan of /usr was 3-4% faster
  // than with 32 MiB and peaked 27 MB lower (fresh cache pages are
  // first-touch traps in a virtual machine; re-reading one is a pread).
  Status SetCacheKiB(unsigned kib);
  static constexpr unsigned kWriterCacheKiB = 8192;

  Status Begin();  // a write transaction (BEGIN IMMEDIATE)
  // A read transaction (BEGIN DEFERRED): the statements until Commit() see
  // one snapshot and take the WAL read lock once, not each.
  Status BeginRead();
  Status Commit();
  Status Rollback();

  // Whether any inode row exists (one B-tree step), as 0 or 1.
  Result<uint64_t> HasInodes();
  // How many inode rows there are (a walk of the smallest B-tree).
  Result<uint64_t> CountInodes();
  // PRAGMA data_version: changes between two calls on this connection if
  // and only if another connection committed meanwhile.
  Result<int64_t> DataVersion();

  // The inode table's secondary indexes, by digest and by size and
  // fingerprint, take their keys in no order: kept up row by row, each
  // batch of a first scan dirtied nearly every page of both and wrote them
  // to the WAL again (a first scan of /usr wrote 112,000 pages for a
  // 46 MB file).  A first scan into an empty index leaves them out
  // while it loads and builds them once, sorted, at its end.
  // Both in the caller's write transaction.  Drops them if the index has
  // no inode rows; returns whether it did.
  Result<bool> DeferInodeIndexes();
  // Builds them if they are missing (a first scan that is over, was
  // killed, or no longer writes alone); nothing if they are there.
  Status EnsureInodeIndexes();
  // Whether either is missing (a read, no transaction needed).
  Result<bool> InodeIndexesMissing();

  Result<int64_t> AddRoot(const std::string& root);
  Status SetRootScanned(int64_t root_id, bool complete, int64_t when_ns);
  // Records (or with "" forgets) RootRecord::signature.
  Status SetRootSignature(int64_t root_id, const std::string& signature);
  Result<std::vector<RootRecord>> Roots();
  // The root scanned as exactly `root`, if any.
  Result<std::optional<RootRecord>> FindRoot(const std::string& root);

  // Every path equal to or below `root`, keyed by path.
  Status LoadTree(const std::string& root, std::unordered_map<std::string, PathRecord>* out);
  // Up to `limit` rows of paths equal to or below `root` and after `after`
  // ("" for the first), in path (byte) order, appended to *out: a tree
  // streamed a chunk at a time.
  Status LoadTreeChunk(const std::string& root, const std::string& after, unsigned limit,
                       std::vector<PathRecord>* out);
  Result<std::optional<InodeRecord>> FindInode(uint64_t dev, uint64_t ino);
  Result<std::optional<PathRecord>> FindPath(const std::string& path);
  // Up to `limit` inodes of exactly this size (with their partial
  // fingerprints).
  Result<std::vector<InodeRecord>> FindInodesOfSize(uint64_t size, unsigned limit);
  // Up to `limit` inodes of this size whose partial fingerprint is
  // `partial` or not known (NULL).
  Result<std::vector<InodeRecord>> FindInodesOfSizeAndPartial(uint64_t size, uint64_t partial, unsigned limit);
  // Up to `limit` paths naming the inode, in path order.
  Result<std::vector<std::string>> PathsOfInode(uint64_t dev, uint64_t ino, unsigned limit);

  Status PutInode(const InodeRecord& rec);
  Status PutPath(const std::string& path, int64_t root_id, uint64_t dev, uint64_t ino);
  Status DeletePath(const std::string& path);
  // Removes inodes no path names any more; returns how many.
  Result<uint64_t> DeleteOrphanInodes();
  // The same, looking only at these inodes (the ones whose paths a scan
  // removed or pointed elsewhere): cheap enough for every scan.
  Result<uint64_t> DeleteInodesIfOrphan(const std::vector<InodeKey>& candidates);
  // Forgets a scanned root: its row, the paths it recorded and the inodes
  // left without a path.  Runs its own short transactions (call it outside
  // one).  NotFound if `root` is not a scanned root.  Returns the paths removed.
  Result<uint64_t> ForgetRoot(const std::string& root);

  struct Counts {
    uint64_t roots = 0, paths = 0, inodes = 0;
  };
  Result<Counts> Count();

  // Each (root, inode) once, for reports.
  Status ForEachRootInode(const std::function<void(int64_t root_id, const InodeRecord&)>& fn);
  // Every path of every inode whose digest is shared by another inode of at
  // least min_size bytes, ordered by digest, dev, ino, path.
  Status ForEachDuplicate(uint64_t min_size,
                          const std::function<void(const InodeRecord&, const std::string& path)>& fn);
  // The same, for the contents only that have an inode with a path equal
  // to or below one of `roots` (and every path of every inode of those
  // contents, wherever it is): the cost follows the roots' size, not the
  // index's (a range of the paths key per root, then the digest index).
  Status ForEachDuplicateUnder(const std::vector<std::string>& roots, uint64_t min_size,
                               const std::function<void(const InodeRecord&, const std::string& path)>& fn);
  // The same contents, one call each, counted without listing names: the
  // size, how many of its inodes have a name beneath the roots, and how
  // many inodes hold it in all.
  Status ForEachDuplicateCountUnder(const std::vector<std::string>& roots, uint64_t min_size,
                                    const std::function<void(uint64_t size, uint64_t here, uint64_t total)>& fn);

 private:
  Index(std::string path, sqlite3* db, int busy_ms) : path_(std::move(path)), db_(db), busy_ms_(busy_ms) {}
  Status Init(Mode mode);
  Status AddPartialColumn();
  Status Exec(const char* sql);
  // BEGIN IMMEDIATE, fn, then COMMIT, or ROLLBACK if fn fails.
  Status InTransaction(const std::function<Status()>& fn);
  // The common table expressions r (the ranges of the paths key `roots`
  // covers, bound from ?2) and m (digest, size, dev, ino of every hashed
  // inode of at least ?1 bytes named there, once per path), for a WITH.
  static std::string ScopedInodesSql(size_t roots);
  // Prepares (cached per text) a statement that starts with
  // ScopedInodesSql(roots.size()) and binds min_size and the ranges.
  Result<sqlite3_stmt*> PrepareScoped(const std::string& sql, const std::vector<std::string>& roots,
                                      uint64_t min_size);
  Result<sqlite3_stmt*> Prepare(const char* sql);  // cached per SQL text
  Result<int64_t> QueryInt(const char* sql, const char* what);  // the first column of its one row
  Status Error(const char* what, int rc) const;

  const std::string path_;
  sqlite3* db_;
  const int busy_ms_;  // the busy timeout it was opened with
  std::unordered_map<const char*, sqlite3_stmt*> stmts_;
  std::unordered_map<std::string, sqlite3_stmt*> scoped_stmts_;  // PrepareScoped's, by text
};

}  // namespace cid

#endif  // CID_INDEX_H_
