#include "cid/scanner.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory_resource>
#include <mutex>
#include <numeric>
#include <optional>
#include <string_view>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "cid/digest.h"
#include "cid/huge_pages.h"
#include "cid/partial.h"
#include "cid/safe_open.h"
#include "cid/walker.h"

namespace cid {

// Every inode row this scan wrote, in memory, for an index that had no
// inode rows when the scan began (a first scan into a new index, and the
// scans of the next roots of the same run, ScanSession): while
// no other connection writes, these are all the rows there are, and the
// scan's lookups by size, by fingerprint and by inode are answered here
// instead of by SQL.  A lookup in SQL began a read snapshot after every
// batch the writing thread committed, and SQLite then drops its page
// cache and reads the pages again: in a first scan of /usr (167,000
// inodes) 172,000 pread64 calls, and the lookups by size were 17% of the
// scan's CPU time, on the thread every file passes through.  About 200
// bytes per inode and its first name (a first scan only: a rescan's index
// is never new); the overlays of the buffered batches are not kept
// meanwhile (see Batch::PutInode).  The writing thread checks that no
// other connection wrote (see Batch::Apply); if one did, the rows here are
// dropped and the lookups go to SQL and the overlays again.
class OwnRows {
 public:
  size_t size() const { return rows_.size(); }
  void Put(const InodeRecord& r) {
    InodeKey k{r.dev, r.ino};
    auto [it, added] = rows_.try_emplace(k);
    Row& row = it->second;
    const Row* p = &row;
    if (!added) {
      if (row.rec.size != r.size) Unlist(&by_size_, row.rec.size, p);
      if (row.rec.has_partial && (!r.has_partial || row.rec.partial != r.partial || row.rec.size != r.size))
        Unlist(&by_partial_, SizePartial{row.rec.size, row.rec.partial}, p);
      if (!row.rec.has_partial && (r.has_partial || row.rec.size != r.size)) Unlist(&unfingerprinted_, row.rec.size, p);
    }
    if (added || row.rec.size != r.size) by_size_[r.size].push_back(p);
    bool was_listed = !added && row.rec.size == r.size;
    if (r.has_partial && !(was_listed && row.rec.has_partial && row.rec.partial == r.partial))
      by_partial_[SizePartial{r.size, r.partial}].push_back(p);
    if (!r.has_partial && !(was_listed && !row.rec.has_partial)) unfingerprinted_[r.size].push_back(p);
    row.rec = r;
  }
  // The first name put for an inode: an unhashed one is opened by it to be
  // hashed (a backfill), a hashed one to be compared with a twin.
  void Name(const std::string& path, const InodeKey& k) {
    auto it = rows_.find(k);
    if (it == rows_.end() || !it->second.name.empty() || path.empty()) return;
    char* copy = static_cast<char*>(arena_.allocate(path.size(), 1));
    memcpy(copy, path.data(), path.size());
    it->second.name = std::string_view(copy, path.size());
  }
  const InodeRecord* Find(const InodeKey& k) const {
    auto it = rows_.find(k);
    return it == rows_.end() ? nullptr : &it->second.rec;
  }
  // Empty if none was put.
  std::string_view NameOf(const InodeKey& k) const {
    auto it = rows_.find(k);
    return it == rows_.end() ? std::string_view() : it->second.name;
  }
  // As Index::FindInodesOfSize and FindInodesOfSizeAndPartial, with the
  // same limits: the first inodes of the size in the order they came.
  std::vector<InodeRecord> OfSize(uint64_t size, const std::optional<uint64_t>& partial, unsigned limit) const {
    std::vector<InodeRecord> out;
    auto take = [&](const Rows* rows) {
      for (size_t i = 0; rows && i < rows->size() && i < limit; i++) out.push_back((*rows)[i]->rec);
    };
    if (!partial) {
      take(Listed(by_size_, size));
    } else {
      take(Listed(by_partial_, SizePartial{size, *partial}));
      take(Listed(unfingerprinted_, size));
    }
    return out;
  }

 private:
  struct Row {
    InodeRecord rec;
    std::string_view name;  // in arena_
  };
  // Lists of rows by size and fingerprint point at rows_'s nodes, which
  // never move: a lookup by size read each row through rows_ again, a
  // hash and a cache miss each, up to 8 per file.
  using Rows = std::pmr::vector<const Row*>;
  struct SizePartial {
    uint64_t size, partial;
    bool operator==(const SizePartial&) const = default;
  };
  struct SizePartialHash {
    size_t operator()(const SizePartial& k) const { return k.size * 0x9e3779b97f4a7c15ull ^ k.partial; }
  };
  template <typename Map, typename Key>
  static const Rows* Listed(const Map& m, const Key& key) {
    auto it = m.find(key);
    return it == m.end() ? nullptr : &it->second;
  }
  template <typename Map, typename Key>
  static void Unlist(Map* m, const Key& key, const Row* row) {
    auto it = m->find(key);
    if (it == m->end()) return;
    auto& v = it->second;
    v.erase(std::remove(v.begin(), v.end(), row), v.end());
    if (v.empty()) m->erase(it);
  }

  // Everything here, nodes, lists and names, is allocated from huge-page
  // runs (cid/huge_pages.h) and freed all at once: a first scan of /usr
  // kept about 45 MB of them, ~11,000 first-touch traps in a virtual
  // machine through malloc, and malloc and free were 4% of its samples.
  HugePageResource huge_;
  std::pmr::monotonic_buffer_resource arena_{4 << 20, &huge_};
  std::pmr::unordered_map<InodeKey, Row, InodeKeyHash> rows_{&arena_};
  std::pmr::unordered_map<uint64_t, Rows> by_size_{&arena_};
  std::pmr::unordered_map<SizePartial, Rows, SizePartialHash> by_partial_{&arena_};
  // Of each size, the inodes without a fingerprint: a lookup by size and
  // fingerprint takes them too, and walking by_size_'s list past the
  // fingerprinted ones was 2% of a first scan of /usr (sizes with
  // thousands of inodes).
  std::pmr::unordered_map<uint64_t, Rows> unfingerprinted_{&arena_};
};

ScanSession::ScanSession() = default;
ScanSession::~ScanSession() = default;

Status ScanSession::Finish(Index* index) {
  auto missing = index->InodeIndexesMissing();
  if (!missing.ok() || !*missing) return missing.status();
  Status s = index->Begin();
  if (s.ok()) s = index->EnsureInodeIndexes();
  if (s.ok()) s = index->Commit();
  if (!s.ok()) index->Rollback();
  return s;
}

void ScanSession::LeaveToExit() {
  static auto* left = new std::vector<std::unique_ptr<OwnRows>>;
  if (own) left->push_back(std::move(own));
}

namespace {

using Clock = std::chrono::steady_clock;

int64_t NowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// How close to the scan's start a file's times may be before its row is
// racy (see ScanOptions::racy_ns).
int64_t RacyWindow(const ScanOptions& o, const FileStat& st) {
  if (o.racy_ns >= 0) return o.racy_ns;
  constexpr int64_t kSec = 1000000000;
  if (st.mtime_ns % kSec == 0 && st.ctime_ns % kSec == 0) return 2 * kSec;
  static const int64_t tick = [] {
    struct timespec res;
    if (clock_getres(CLOCK_REALTIME_COARSE, &res) != 0) return int64_t{10000000};
    return static_cast<int64_t>(res.tv_sec) * kSec + res.tv_nsec;
  }();
  return tick;
}

// RootRecord::signature of a root directory, or "" if its times are too
// close to `start_ns` to vouch for anything written within them.
std::string RootSignature(const ScanOptions& o, const struct stat& st, int64_t start_ns) {
  if (!S_ISDIR(st.st_mode)) return "";
  FileStat fs = FileStat::From(st);
  if (std::max(fs.mtime_ns, fs.ctime_ns) >= start_ns - RacyWindow(o, fs)) return "";
  return std::to_string(fs.dev) + ":" + std::to_string(fs.ino) + ":" + std::to_string(fs.mtime_ns) + ":" +
         std::to_string(fs.ctime_ns);
}

// The page cache of a scan's own connection (see ScanTree), in KiB, and
// after how many lookups it grows to Index::kWriterCacheKiB.
constexpr unsigned kMergeCacheKiB = 4096;
constexpr unsigned kLookupsForCache = 1024;

// What a check (ScanOptions::check_only) stops with at its first write.
constexpr char kWouldChange[] = "the index does not describe the tree as it is";

// A scan's index writes, buffered in memory and applied in one short
// transaction once batch_writes of them are waiting or the oldest has
// waited batch_time, and before every wait for hashing.  A batch is
// applied by a thread of its own, on its own connection, while the scan
// goes on: applying one (five B-trees per file, then the WAL frames of
// every page it touched) was about 40% of the main thread's time in a
// first scan, the thread every file passes through.  At most one batch is
// being applied at a time; the next waits for it.  The write lock is held
// only while a batch is applied (a few ms for 4096 rows), never while the
// walk or the hashing goes on; and a B-tree page that many rows of a
// batch touch (the size and digest indexes take rows all over) goes to
// the WAL once per batch instead of once per short transaction.  The
// scan's own lookups see the buffered rows, and those of the batch being
// applied, through the overlays below.  What a stopped or killed scan had
// not committed is lost, as an uncommitted transaction would be; the next
// scan does it again.
//
// A check (ScanOptions::check_only) writes nothing: a Put or Delete only
// notes that the scan would write, and the MaybeCommit or Commit that
// follows fails with kWouldChange, which stops the scan.
class Batch {
 public:
  Batch(Index* index, const ScanOptions& o) : index_(index), options_(o) {}
  ~Batch() {
    if (reading_) index_->Rollback();
    if (writer_.joinable()) {
      {
        std::lock_guard<std::mutex> l(mu_);
        quit_ = true;
        cv_.notify_all();
      }
      writer_.join();
    }
  }
  Batch(const Batch&) = delete;
  Batch& operator=(const Batch&) = delete;

  // The index has no inode rows: keep this scan's in memory (OwnRows)
  // and answer lookups from them while nobody else writes.
  // `rows` are all `count` inode rows the index has.
  void TrustOwnRows(std::unique_ptr<OwnRows> rows) {
    own_start_ = rows->size();
    own_ = std::move(rows);
    own_watch_ = true;
  }
  // OwnRows, if they are still all the rows there are, once every batch is
  // committed.
  std::unique_ptr<OwnRows> TakeOwnRows() {
    if (!Own() || WriterBusy() || !ops_.empty()) return nullptr;
    return std::move(own_);
  }

  // While OwnRows answer the lookups, the overlays are not kept (their
  // maps were a third of the main thread's time in a first scan of /usr):
  // OwnRows hold the same rows and names.  Own() builds them from the
  // buffered writes if OwnRows are given up.
  void PutInode(const InodeRecord& r) {
    if (Checking()) return;
    Note();
    OwnRows* own = Own();
    ops_.push_back(Op{Op::kInode, r, {}, 0});
    if (own) own->Put(r);
    else cur_.Add(ops_.back());
  }
  void PutPath(const std::string& path, int64_t root_id, uint64_t dev, uint64_t ino) {
    if (Checking()) return;
    Note();
    OwnRows* own = Own();
    InodeRecord r;
    r.dev = dev;
    r.ino = ino;
    ops_.push_back(Op{Op::kPath, r, path, root_id});
    if (own) own->Name(path, InodeKey{dev, ino});
    else cur_.Add(ops_.back());
  }
  void DeletePath(const std::string& path) {
    if (Checking()) return;
    Note();
    ops_.push_back(Op{Op::kDeletePath, InodeRecord{}, path, 0});
  }

  Status MaybeCommit() {
    if (would_change_) return WouldChange();
    bool due = !ops_.empty() && (ops_.size() >= options_.batch_writes || Clock::now() - first_ >= options_.batch_time);
    // While the writing thread still applies the batch before, this one
    // grows (up to 4 times batch_writes) rather than wait for it: the scan
    // goes on, and a larger batch writes each B-tree page it touches once.
    if (due && ops_.size() < 4 * options_.batch_writes && WriterBusy()) due = false;
    if (due || (reading_ && Clock::now() - read_since_ >= options_.batch_time)) return Commit(false);
    return Status::OK();
  }
  // Hands everything buffered to the writing thread, as one transaction;
  // with wait, returns once it is committed.
  Status Commit(bool wait) {
    if (reading_) {  // the lookups' snapshot ends here
      reading_ = false;
      Status e = index_->Commit();
      if (!e.ok()) return e;
    }
    if (would_change_) return WouldChange();
    // The batch before this one first: committed, its rows are in every
    // snapshot from now on.
    if (!ops_.empty() || wait) {
      Status s = Collect(true);
      if (!s.ok()) return s;
    }
    if (ops_.empty()) return Status::OK();
    if (!writer_.joinable()) {
      auto db = index_->OpenAnother();
      if (!db.ok()) return db.status();
      writer_db_ = std::move(*db);
      writer_ = std::thread([this] { Write(); });
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      handed_ = std::move(ops_);
      busy_ = true;
      cv_.notify_all();
      ops_ = std::move(spare_);
    }
    ops_.clear();
    // Grown from nothing, the buffer's reallocations (each moving every
    // Op) were 1% of a first scan's samples; a batch grows to 4 times
    // batch_writes while the one before is applied (MaybeCommit).  The
    // buffer of the batch applied before is used again: a new one of a few
    // MiB is fresh pages, whose first touch is expensive in a virtual
    // machine (FileHasher::MapBuffers), 18% of a first scan's page faults.
    ops_.reserve(std::min<uint64_t>(4 * options_.batch_writes, 1 << 16));
    std::swap(cur_, applying_);
    cur_.Clear();
    return wait ? Collect(true) : Status::OK();
  }

  bool WriterBusy() {
    std::lock_guard<std::mutex> l(mu_);
    return busy_;
  }

  // The index's answers with the buffered writes applied.
  Result<std::optional<InodeRecord>> FindInode(uint64_t dev, uint64_t ino) {
    if (const OwnRows* own = Own()) {
      const InodeRecord* r = own->Find(InodeKey{dev, ino});
      return r ? std::optional<InodeRecord>(*r) : std::nullopt;
    }
    if (const InodeRecord* r = Buffered(InodeKey{dev, ino})) return std::optional<InodeRecord>(*r);
    if (Status r = Read(); !r.ok()) return r;
    return index_->FindInode(dev, ino);
  }
  // Inodes of `size` (and, if partial is given, whose fingerprint is it or
  // not known), up to about `limit` of them.
  Result<std::vector<InodeRecord>> FindBySize(uint64_t size, const std::optional<uint64_t>& partial, unsigned limit) {
    if (const OwnRows* own = Own()) return own->OfSize(size, partial, limit);
    if (Status r = Read(); !r.ok()) return r;  // first: it may drop applying_
    const std::vector<InodeKey>* lists[2] = {nullptr, nullptr};
    unsigned extra = 0;
    int n = 0;
    for (Overlay* o : {&applying_, &cur_}) {
      auto b = o->sizes.find(size);
      if (b == o->sizes.end()) continue;
      lists[n++] = &b->second;
      extra += static_cast<unsigned>(b->second.size());
    }
    auto rows = partial ? index_->FindInodesOfSizeAndPartial(size, *partial, limit + extra)
                        : index_->FindInodesOfSize(size, limit + extra);
    if (!rows.ok() || (cur_.inodes.empty() && applying_.inodes.empty())) return rows;
    auto fits = [&](const InodeRecord& r) {
      return r.size == size && (!partial || !r.has_partial || r.partial == *partial);
    };
    std::vector<InodeRecord> out;
    std::unordered_set<InodeKey, InodeKeyHash> taken;
    for (const InodeRecord& r : *rows) {
      InodeKey k{r.dev, r.ino};
      const InodeRecord* b = Buffered(k);
      const InodeRecord& now = b ? *b : r;
      if (fits(now) && taken.insert(k).second) out.push_back(now);
    }
    for (int i = 0; i < n; i++)
      for (const InodeKey& k : *lists[i]) {
        const InodeRecord& now = *Buffered(k);
        if (fits(now) && taken.insert(k).second) out.push_back(now);
      }
    return out;
  }
  Result<std::vector<std::string>> PathsOfInode(uint64_t dev, uint64_t ino) {
    if (const OwnRows* own = Own()) {
      if (std::string_view name = own->NameOf(InodeKey{dev, ino}); !name.empty()) return std::vector<std::string>{std::string(name)};
    }
    for (Overlay* o : {&cur_, &applying_}) {
      auto it = o->paths.find(InodeKey{dev, ino});
      if (it != o->paths.end()) return it->second;
    }
    if (Status r = Read(); !r.ok()) return r;
    return index_->PathsOfInode(dev, ino, 1);
  }
  Status WouldChange() {
    would_change_ = true;
    return Status::Changed(kWouldChange);
  }
  bool would_change() const { return would_change_; }

 private:
  struct Op {
    enum Kind { kInode, kPath, kDeletePath } kind;
    InodeRecord inode;  // kInode; dev and ino for kPath
    std::string path;
    int64_t root_id;
  };
  // The rows of a batch: the last buffered row of each inode, the inodes
  // buffered by size (an inode may be listed under a size it no longer
  // has), the names buffered for each inode.
  struct Overlay {
    std::unordered_map<InodeKey, InodeRecord, InodeKeyHash> inodes;
    std::unordered_map<uint64_t, std::vector<InodeKey>> sizes;
    std::unordered_map<InodeKey, std::vector<std::string>, InodeKeyHash> paths;
    void Add(const Op& op) {
      InodeKey k{op.inode.dev, op.inode.ino};
      if (op.kind == Op::kInode) {
        inodes.insert_or_assign(k, op.inode);
        sizes[op.inode.size].push_back(k);
      } else if (op.kind == Op::kPath) {
        paths[k].push_back(op.path);
      }
    }
    void Clear() {
      inodes.clear();
      sizes.clear();
      paths.clear();
    }
  };
  void Note() {
    if (ops_.empty()) first_ = Clock::now();
  }
  // A check records that it would write, and writes nothing.
  bool Checking() {
    if (options_.check_only) would_change_ = true;
    return options_.check_only;
  }
  // OwnRows while they are all the rows there are (nullptr otherwise).
  OwnRows* Own() {
    if (own_ && own_lost_.load(std::memory_order_acquire)) LoseOwnRows();
    return own_.get();
  }
  // Another connection wrote: the lookups go to SQL and the overlays,
  // which were not kept while OwnRows answered.  The batch being applied
  // is waited for and no snapshot older than it stays open (its rows are
  // then in every read), and the overlay of the buffered writes is built.
  void LoseOwnRows() {
    own_.reset();
    Status s = Collect(true);  // the writing thread's error stays in write_error_ for the next commit
    (void)s;
    if (reading_) {
      reading_ = false;
      Status e = index_->Commit();
      (void)e;  // ends a read transaction; a failure shows at the next statement
    }
    applying_.Clear();
    cur_.Clear();
    for (const Op& op : ops_) cur_.Add(op);
  }
  // On the writing thread, in each batch's transaction, with OwnRows:
  // before the first batch the index must still have the inode rows it had
  // when the scan began (none, or the earlier roots' of the run), and from
  // one batch to the next no other connection may have committed.
  // If one did, OwnRows are given up (the lookups go to SQL and the
  // overlays); its rows were missed at most since the batch before, the
  // same window in which other clients miss this scan's buffered rows.
  Status CheckAlone(Index* db) {
    auto version = db->DataVersion();
    if (!version.ok()) return version.status();
    bool other = *version != own_version_;
    if (!own_first_checked_) {
      auto n = own_start_ ? db->CountInodes() : db->HasInodes();
      if (!n.ok()) return n.status();
      other = *n != own_start_;
      own_first_checked_ = true;
    }
    own_version_ = *version;
    if (other) {
      // Lookups go to SQL from now on: by the inode indexes, which a first
      // scan left out (Index::DeferInodeIndexes).
      if (Status e = db->EnsureInodeIndexes(); !e.ok()) return e;
      own_watch_ = false;
      own_lost_.store(true, std::memory_order_release);
    }
    return Status::OK();
  }
  // The newest buffered row of an inode, or nullptr.
  const InodeRecord* Buffered(const InodeKey& k) const {
    for (const Overlay* o : {&cur_, &applying_}) {
      auto it = o->inodes.find(k);
      if (it != o->inodes.end()) return &it->second;
    }
    return nullptr;
  }
  // The lookups between two batches share one read transaction: each
  // statement on its own would take and drop WAL read locks (two fcntl
  // calls) every time.  Readers never block writers in WAL mode; a batch
  // (and every wait for hashing) ends it.  A snapshot taken once the batch
  // being applied is committed holds its rows: its overlay goes.
  Status Read() {
    if (++lookups_ == kLookupsForCache) {
      if (Status c = index_->SetCacheKiB(Index::kWriterCacheKiB); !c.ok()) return c;
    }
    if (reading_) return Status::OK();
    if (Status s = Collect(false); !s.ok()) return s;
    Status s = index_->BeginRead();
    if (s.ok()) {
      reading_ = true;
      read_since_ = Clock::now();
    }
    return s;
  }
  // Once the batch handed to the writing thread is committed (with wait:
  // waits for that), and no snapshot older than it is open, its overlay
  // goes.  Returns the writing thread's error, if it had one.
  Status Collect(bool wait) {
    std::unique_lock<std::mutex> l(mu_);
    if (wait) cv_.wait(l, [&] { return !busy_; });
    if (!busy_ && !reading_) applying_.Clear();
    return write_error_;
  }
  // The writing thread: applies each batch handed to it in one transaction.
  void Write() {
    std::unique_lock<std::mutex> l(mu_);
    while (true) {
      cv_.wait(l, [&] { return busy_ || quit_; });
      if (!busy_) return;
      std::vector<Op> ops = std::move(handed_);
      handed_.clear();
      Status s = write_error_;
      l.unlock();
      if (s.ok()) s = Apply(ops);
      ops.clear();
      l.lock();
      spare_ = std::move(ops);
      if (write_error_.ok()) write_error_ = s;
      busy_ = false;
      cv_.notify_all();
    }
  }
  Status Apply(const std::vector<Op>& ops) {
    Index* db = writer_db_.get();
    // Applied in key order, inodes by (dev, ino) and names by path (stable:
    // a name's put and delete, and an inode's puts, keep their order), so
    // consecutive inserts land on the same or the next B-tree pages.  An
    // inode put twice in one batch (recorded by size, then hashed when a
    // twin came soon after) is written once, as it was put last: the last
    // of its run.
    std::vector<uint32_t> order(ops.size());
    std::iota(order.begin(), order.end(), 0u);
    auto inode_of = [&](uint32_t i) { return std::tie(ops[i].inode.dev, ops[i].inode.ino); };
    std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
      bool ai = ops[a].kind == Op::kInode, bi = ops[b].kind == Op::kInode;
      if (ai != bi) return ai;
      return ai ? inode_of(a) < inode_of(b) : ops[a].path < ops[b].path;
    });
    Status s = db->Begin();
    if (s.ok() && own_watch_) s = CheckAlone(db);
    for (size_t j = 0; s.ok() && j < order.size(); j++) {
      const Op& op = ops[order[j]];
      switch (op.kind) {
        case Op::kInode:
          if (j + 1 == order.size() || ops[order[j + 1]].kind != Op::kInode ||
              inode_of(order[j + 1]) != inode_of(order[j]))
            s = db->PutInode(op.inode);
          break;
        case Op::kPath: s = db->PutPath(op.path, op.root_id, op.inode.dev, op.inode.ino); break;
        case Op::kDeletePath: s = db->DeletePath(op.path); break;
      }
    }
    if (s.ok()) s = db->Commit();
    if (!s.ok()) db->Rollback();
    return s;
  }

  Index* index_;
  const ScanOptions& options_;
  bool would_change_ = false;  // check_only: a write was asked for
  std::vector<Op> ops_;  // in order
  Clock::time_point first_;
  bool reading_ = false;  // a read transaction is open for lookups
  Clock::time_point read_since_;
  uint64_t lookups_ = 0;  // that went to the index (see kLookupsForCache)
  Overlay cur_;       // of ops_
  Overlay applying_;  // of the batch handed to the writing thread, until a snapshot holds it
  std::unique_ptr<OwnRows> own_;       // see TrustOwnRows; dropped once own_lost_
  std::atomic<bool> own_lost_{false};  // set by the writing thread: another connection wrote
  // The writing thread's (set before it starts): see CheckAlone.
  bool own_watch_ = false;
  bool own_first_checked_ = false;
  uint64_t own_start_ = 0;  // the inode rows there were as the scan began
  int64_t own_version_ = 0;
  // The writing thread and what it shares with the scan.
  std::unique_ptr<Index> writer_db_;
  std::thread writer_;
  std::mutex mu_;
  std::condition_variable cv_;  // busy_ or quit_ changed
  std::vector<Op> handed_;      // guarded by mu_
  std::vector<Op> spare_;       // an applied batch's buffer, emptied; guarded by mu_
  bool busy_ = false;           // a batch is being applied; guarded by mu_
  bool quit_ = false;           // guarded by mu_
  Status write_error_;          // the first failure to apply one; guarded by mu_
};

// Runs a walk on its own thread and hands what it finds, in order and in
// chunks, to the calling thread, which calls cb's on_file and on_error: the
// walk's getdents and fstatat then overlap the index work per file (a first
// scan's main thread was busy 64% of the time, the hashing threads 18%).
// The walk stops when *cb.stop is set, as in the calling thread.  While
// the calling thread waits for the walk, it calls idle() every
// millisecond as long as idle() returns true (it has work that may come
// in meanwhile: the scan takes the hashing threads' outcomes and queues
// what follows from them, instead of leaving them idle until the next
// chunk).
Status WalkInThread(const std::function<Status(const WalkCallbacks&, WalkStats*)>& walk, const WalkCallbacks& cb,
                    WalkStats* ws, const std::function<bool()>& idle) {
  struct Item {
    std::string path;
    FileStat st;
    std::optional<Status> error;
  };
  constexpr size_t kChunk = 256, kMaxChunks = 32;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::vector<Item>> chunks;  // guarded by mu
  bool done = false, abandoned = false;  // guarded by mu
  Status result;
  auto push = [&](std::vector<Item>* chunk) {
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return chunks.size() < kMaxChunks || abandoned; });
    if (!abandoned) chunks.push_back(std::move(*chunk));
    chunk->clear();
    cv.notify_all();
  };
  std::thread walker([&] {
    std::vector<Item> chunk;
    WalkCallbacks proxy;
    proxy.stop = cb.stop;
    proxy.on_file = [&](const std::string& p, const FileStat& st) {
      chunk.push_back(Item{p, st, std::nullopt});
      if (chunk.size() >= kChunk) push(&chunk);
    };
    proxy.on_error = [&](const std::string& p, const Status& e) { chunk.push_back(Item{p, FileStat{}, e}); };
    Status r = walk(proxy, ws);
    if (!chunk.empty()) push(&chunk);
    std::lock_guard<std::mutex> l(mu);
    result = r;
    done = true;
    cv.notify_all();
  });
  while (true) {
    std::vector<Item> chunk;
    {
      std::unique_lock<std::mutex> l(mu);
      bool more = true;
      while (more && chunks.empty() && !done) {
        l.unlock();
        more = idle();
        l.lock();
        if (more) cv.wait_for(l, std::chrono::milliseconds(1), [&] { return !chunks.empty() || done; });
      }
      cv.wait(l, [&] { return !chunks.empty() || done; });
      if (chunks.empty()) break;
      chunk = std::move(chunks.front());
      chunks.pop_front();
      cv.notify_all();
    }
    for (Item& it : chunk) {
      if (it.error) cb.on_error(it.path, *it.error);
      else cb.on_file(it.path, it.st);
    }
  }
  {
    std::lock_guard<std::mutex> l(mu);
    abandoned = true;
    cv.notify_all();
  }
  walker.join();
  return result;
}

class Scan {
 public:
  Scan(Index* index, const ScanOptions& o, ScanStats* stats)
      : index_(index), options_(o), stats_(stats), batch_(index, o) {}
  ~Scan() {
    pool_.reset();  // joins the workers, which open files beneath anchor_fd_
    if (anchor_fd_ >= 0) close(anchor_fd_);
  }

  Status Run(const std::string& root);

 private:
  void OnFile(const std::string& path, const FileStat& st);
  void AddPath(const std::string& path, const FileStat& st);
  Status Record(HashOutcome&& o);
  Status RecordPartial(HashOutcome&& o);
  Status RecordFailure(const InodeKey& key, const HashOutcome& o);
  std::vector<std::string> TakeWaiting(const InodeKey& key, const std::string& path);
  InodeRecord RowOf(const HashOutcome& o) const;
  Status Drain(bool wait);
  // Waits up to 20 ms for at_least outcomes (fewer if fewer are due),
  // else for one (see the definition).
  bool Take(std::vector<HashOutcome>* out, size_t at_least);
  void Report(const Status& s) {
    if (options_.on_error) options_.on_error(s);
  }
  void Progress(bool force);
  // The next indexed row not yet merged, or nullptr at the end.
  const PathRecord* PeekRow();
  // Merges the rows before `path` (indexed, not walked: gone) and returns
  // the row for `path` itself, if there is one, in *row.
  bool MergeUpTo(const std::string& path, PathRecord* row);
  Status RemoveRow(const PathRecord& row);
  void Throttle();
  void Queue(const std::string& path, const FileStat& st, int dir_fd, std::string rel, bool partial);
  void Backfill(const InodeRecord& row, bool partial);
  RootFds* Roots();
  // A twin to compare a file with (HashRequest::twin): the indexed inode
  // `st` with content id `digest`, opened by `name` beneath its root.
  std::optional<HashRequest::Twin> TwinOf(const std::string& name, const FileStat& st, const Digest& digest);
  std::optional<HashRequest::Twin> TwinOf(const InodeRecord& row);
  // Hands a request to read a file whole (hash or compare) to the pool.
  void AddWhole(HashRequest&& req);
  // The requests parked on `key` (see parked_), now that it is hashed
  // (o) or failed: compared with it, or hashed on their own.
  void Unpark(const InodeKey& key, const HashOutcome& o);
  // Whether a path lies in (or is) something the walk could not read:
  // its rows are kept.  One lookup per ancestor.
  bool Hidden(const std::string& path) const {
    if (unreadable_.empty()) return false;
    for (size_t end = path.size(); end > 0 && end != std::string::npos; end = path.rfind('/', end - 1))
      if (unreadable_.count(path.substr(0, end))) return true;
    return false;
  }
  // The row describes the file as it is and need not be hashed again.
  bool Current(const InodeRecord& row, const FileStat& st) const {
    return row.Matches(st) && !row.racy && !options_.rehash;
  }

  Index* index_;
  const ScanOptions& options_;
  ScanStats* stats_;
  Batch batch_;
  int64_t root_id_ = 0;
  int64_t start_ns_ = 0;  // wall clock at the start: the racy-clean reference
  // Every file is opened beneath this directory: the root, or for a root
  // that is a file, its parent.  Paths below it start with anchor_len_ bytes
  // of the anchor's path and a slash.
  int anchor_fd_ = -1;
  size_t anchor_len_ = 0;
  // The hashing threads' (HasherOptions::seen), with lazy hashing; before
  // pool_, which uses it until it is destroyed.
  std::unique_ptr<SeenFingerprints> fingerprints_seen_;
  std::unique_ptr<HashPool> pool_;
  Status failed_;  // first index error; stops the walk
  bool indexes_deferred_ = false;  // this scan left the inode indexes out (Index::DeferInodeIndexes)
  // Whether a small file of a shared size is probed (read for its
  // fingerprint, hashed in that read only if the fingerprint was seen) or
  // hashed at once.  A probe saves the SHA-256 of a file with no twin (most
  // of a tree such as /usr) and costs a second read of the first of each
  // group of twins, when the second comes.  In the first root of a run of
  // several (ScanSession::roots), which are mostly copies of one another
  // (the layers or containers of one distribution), nearly every small
  // file is such a first: they are hashed at once, and their fingerprints
  // noted for the next roots' probes.  An inode recorded by its size
  // alone and queued because a file of that size came (Backfill) is hashed
  // at once in any root: in trees of copies, that file is its twin (probed,
  // it raced its twin's probe, and the loser was read again: copies 6%
  // slower).
  bool ProbeSmall() const {
    const ScanSession* run = options_.session;
    return !(run && run->roots > 1 && run->roots_begun == 1);
  }
  std::atomic<bool> stop_{false};
  // The index's rows below the root, streamed in path order (the walk's
  // order) a chunk at a time and merged with the walk: a rescan holds a
  // chunk of rows, not a map of the whole tree.
  std::vector<PathRecord> chunk_;
  size_t chunk_pos_ = 0;
  bool rows_done_ = false;
  std::string last_fetched_;  // the last path fetched (or walked, if later)
  std::string root_path_;
  std::unordered_set<InodeKey, InodeKeyHash> seen_;    // inodes walked in this scan
  // Paths waiting for their inode's digest (the first path is the one hashed).
  std::unordered_map<InodeKey, std::vector<std::string>, InodeKeyHash> waiting_;
  std::unordered_set<InodeKey, InodeKeyHash> backfill_;  // queued inodes recorded by size in an earlier pass
  // Requests out for a partial fingerprint, kept to hash the file whole if
  // the fingerprint matches another's.
  std::unordered_map<InodeKey, HashRequest, InodeKeyHash> partial_reqs_;
  std::unordered_set<uint64_t> sizes_queued_;  // sizes of files queued for hashing in this scan
  std::unique_ptr<RootFds> roots_;             // for backfills outside this root
  std::unordered_set<InodeKey, InodeKeyHash> whole_queued_;  // inodes out to be hashed whole
  // Requests of files that matched an inode being hashed whole (in
  // whole_queued_), keyed by it: once its digest is known they are
  // compared with it (ScanOptions::compare_min).
  std::unordered_map<InodeKey, std::vector<HashRequest>, InodeKeyHash> parked_;
  std::unordered_set<std::string> unreadable_;  // paths the walk could not read
  std::vector<InodeKey> orphan_candidates_;      // inodes a path stopped naming in this scan
  std::unordered_set<std::string> own_files_;  // the index and its journals: never indexed
  uint64_t walked_since_drain_ = 0;
  Clock::time_point last_progress_{};
};

void Scan::Progress(bool force) {
  if (!options_.on_progress) return;
  auto now = Clock::now();
  if (!force && now - last_progress_ < std::chrono::milliseconds(100)) return;
  last_progress_ = now;
  ScanProgress p;
  p.files = stats_->files;
  p.hashed = stats_->hashed;
  p.hashed_bytes = stats_->hashed_bytes;
  p.queued = pool_ ? pool_->pending() : 0;
  options_.on_progress(p);
}

// Records one more name of an inode whose row is current.
void Scan::AddPath(const std::string& path, const FileStat& st) {
  batch_.PutPath(path, root_id_, st.dev, st.ino);
  Status s = batch_.MaybeCommit();
  if (!s.ok()) failed_ = s;
}

const PathRecord* Scan::PeekRow() {
  if (chunk_pos_ < chunk_.size()) return &chunk_[chunk_pos_];
  if (rows_done_ || !failed_.ok()) return nullptr;
  constexpr unsigned kChunk = 1024;
  chunk_.clear();
  chunk_pos_ = 0;
  Status s = index_->LoadTreeChunk(root_path_, last_fetched_, kChunk, &chunk_);
  if (!s.ok()) {
    failed_ = s;
    return nullptr;
  }
  if (chunk_.size() < kChunk) rows_done_ = true;
  if (chunk_.empty()) return nullptr;
  last_fetched_ = chunk_.back().path;
  return &chunk_[0];
}

bool Scan::MergeUpTo(const std::string& path, PathRecord* row) {
  // Rows this scan writes are for paths up to the one walked last, and a
  // call returns with a row after `path` buffered (or every row fetched),
  // so a later fetch (after last_fetched_) never brings them back.
  while (const PathRecord* r = PeekRow()) {
    if (r->path > path) return false;
    if (r->path == path) {
      *row = std::move(chunk_[chunk_pos_++]);
      return true;
    }
    PathRecord gone = std::move(chunk_[chunk_pos_++]);  // indexed, and the walk passed it by
    Status s = RemoveRow(gone);
    if (!s.ok()) {
      failed_ = s;
      return false;
    }
  }
  return false;
}

// A row for a path the walk did not find: gone, unless it lies where the
// walk could not read.
Status Scan::RemoveRow(const PathRecord& row) {
  if (Hidden(row.path)) return Status::OK();
  batch_.DeletePath(row.path);
  orphan_candidates_.push_back(InodeKey{row.inode.dev, row.inode.ino});
  stats_->removed++;
  return batch_.MaybeCommit();
}

void Scan::OnFile(const std::string& path, const FileStat& st) {
  if (!failed_.ok()) return;
  if (Status c = batch_.MaybeCommit(); !c.ok()) {  // a walk of unchanged files writes nothing for long
    failed_ = c;
    return;
  }
  if (!own_files_.empty() && own_files_.count(path)) return;
  stats_->files++;
  Progress(false);
  InodeKey key{st.dev, st.ino};
  bool path_current = false;
  int64_t k_root = root_id_;
  PathRecord row;
  if (MergeUpTo(path, &row)) {
    path_current = Current(row.inode, st);
    if (!path_current) orphan_candidates_.push_back(InodeKey{row.inode.dev, row.inode.ino});
    k_root = row.root_id;
  }
  if (!failed_.ok()) return;
  // Only an inode with several links can be met twice: the set of inodes
  // seen holds those alone.
  if (st.nlink > 1 && !seen_.insert(key).second) {  // another name of an inode already handled
    stats_->hardlinks++;
    if (path_current) return;
    auto w = waiting_.find(key);
    if (w != waiting_.end()) {
      w->second.push_back(path);
      return;
    }
    AddPath(path, st);
    return;
  }
  stats_->inodes++;
  if (path_current) {
    stats_->unchanged++;
    if (k_root != root_id_) {  // first scanned as part of another root
      AddPath(path, st);
    }
    return;
  }
  // A new name for an inode the index already has current (a hardlink into
  // another tree): no need to read it again.  Only inodes with several
  // links can have one; a renamed file is simply read again, which spares
  // a first scan one query per file.
  auto found = st.nlink > 1 ? batch_.FindInode(st.dev, st.ino) : std::optional<InodeRecord>();
  if (!found.ok()) {
    failed_ = found.status();
    return;
  }
  if (found->has_value() && Current(**found, st)) {
    stats_->unchanged++;
    AddPath(path, st);
    return;
  }
  if (options_.check_only) {  // a file to record or read: the index is behind
    failed_ = batch_.WouldChange();
    return;
  }
  if (options_.lazy) {
    // Lazy hashing (as fclones and rmlint do): content can only be
    // duplicated by a file of the same size.  A file whose size no other
    // indexed inode has is recorded with its size alone; when a second
    // inode of that size appears, both are compared.
    auto twins = batch_.FindBySize(st.size, std::nullopt, 4);
    if (!twins.ok()) {
      failed_ = twins.status();
      return;
    }
    bool alone = true;
    for (const InodeRecord& t : *twins) {
      if (t.dev == st.dev && t.ino == st.ino) continue;
      alone = false;
      if (!t.hashed && !t.has_partial) Backfill(t, /*partial=*/true);
    }
    if (alone && !sizes_queued_.count(st.size)) {
      InodeRecord rec{st.dev, st.ino, st.size, st.mtime_ns, st.ctime_ns, Digest{}};
      rec.hashed = false;
      batch_.PutInode(rec);
      batch_.PutPath(path, root_id_, st.dev, st.ino);
      Status w = batch_.MaybeCommit();
      if (!w.ok()) failed_ = w;
      stats_->deferred++;
      return;
    }
    // Then by their first and last 4 KiB (cid/partial.h): only files whose
    // partial fingerprints agree are hashed whole.  A file the partial pass
    // reads whole is hashed in that read if its fingerprint was seen
    // already (HashRequest::partial_only).
    if (st.size > kPartialWhole || (st.size > 0 && ProbeSmall())) {
      waiting_[key].push_back(path);
      Queue(path, st, anchor_fd_, path.substr(anchor_len_), /*partial=*/true);
      return;
    }
  }
  waiting_[key].push_back(path);
  Queue(path, st, anchor_fd_, path.substr(anchor_len_), /*partial=*/false);
}

// Queues an inode recorded earlier by its size alone (or by its size and
// partial fingerprint), now that another inode of that size (and
// fingerprint) appeared: for its fingerprint (partial) or to be hashed.  It
// is opened by one of its indexed names, beneath that name's root.
void Scan::Backfill(const InodeRecord& t, bool partial) {
  InodeKey key{t.dev, t.ino};
  if (waiting_.count(key) || backfill_.count(key)) return;  // already queued
  auto names = batch_.PathsOfInode(t.dev, t.ino);
  if (!names.ok()) {
    failed_ = names.status();
    return;
  }
  if (names->empty()) return;
  const std::string& name = names->front();
  if (!Roots()) return;
  auto where = roots_->Resolve(name);
  if (!where.ok()) return;  // its tree is gone; its own next scan sorts it out
  FileStat expect;
  expect.dev = t.dev;
  expect.ino = t.ino;
  expect.size = t.size;
  backfill_.insert(key);
  Queue(name, expect, where->first, where->second, partial && t.size > kPartialWhole);
}

// The index's roots, each opened once; nullptr (failed_ set) on an index error.
RootFds* Scan::Roots() {
  if (!roots_) {
    auto roots = index_->Roots();
    if (!roots.ok()) {
      failed_ = roots.status();
      return nullptr;
    }
    std::vector<std::string> paths;
    for (const auto& r : *roots) paths.push_back(r.path);
    roots_ = std::make_unique<RootFds>(std::move(paths));
  }
  return roots_.get();
}

std::optional<HashRequest::Twin> Scan::TwinOf(const std::string& name, const FileStat& st, const Digest& digest) {
  if (!Roots()) return std::nullopt;
  auto where = roots_->Resolve(name);
  if (!where.ok()) return std::nullopt;
  HashRequest::Twin t;
  t.dir_fd = where->first;
  t.rel = std::move(where->second);
  t.path = name;
  t.st = st;
  t.digest = digest;
  return t;
}

std::optional<HashRequest::Twin> Scan::TwinOf(const InodeRecord& row) {
  auto names = batch_.PathsOfInode(row.dev, row.ino);
  if (!names.ok()) {
    failed_ = names.status();
    return std::nullopt;
  }
  if (names->empty()) return std::nullopt;
  FileStat st;
  st.dev = row.dev;
  st.ino = row.ino;
  st.size = row.size;
  st.mtime_ns = row.mtime_ns;
  st.ctime_ns = row.ctime_ns;
  return TwinOf(names->front(), st, row.digest);
}

void Scan::AddWhole(HashRequest&& req) {
  req.partial_only = false;
  whole_queued_.insert(InodeKey{req.expect.dev, req.expect.ino});
  pool_->Add(std::move(req));
}

void Scan::Unpark(const InodeKey& key, const HashOutcome& o) {
  auto p = parked_.find(key);
  if (p == parked_.end()) return;
  std::vector<HashRequest> reqs = std::move(p->second);
  parked_.erase(p);
  if (o.interrupted) return;  // a stopped scan records nothing more
  std::optional<HashRequest::Twin> twin;
  if (o.status.ok() && !o.partial_only && !RowOf(o).racy) twin = TwinOf(o.path, o.st, o.digest);
  for (HashRequest& r : reqs) {
    r.twin = twin;
    AddWhole(std::move(r));
  }
}

void Scan::Queue(const std::string& path, const FileStat& st, int dir_fd, std::string rel, bool partial) {
  if (options_.check_only) {  // a file to read: the index is behind
    failed_ = batch_.WouldChange();
    return;
  }
  sizes_queued_.insert(st.size);
  if (!pool_) {  // started at the first file to read: a rescan of an unchanged tree needs none
    unsigned workers = options_.workers ? options_.workers : std::max(1u, std::thread::hardware_concurrency());
    EngineFactory factory =
        options_.engine ? options_.engine : DefaultEngineFactory(ScanOptions::kDefaultQueueDepth);
    HasherOptions hasher = options_.hasher;
    if (options_.lazy) {  // one table for the run: the next root's twins of this one's files
      ScanSession* run = options_.session;
      std::unique_ptr<SeenFingerprints>& table = run ? run->fingerprints_seen : fingerprints_seen_;
      if (!table) table = std::make_unique<SeenFingerprints>();
      hasher.seen = table.get();
    }
    pool_ = std::make_unique<HashPool>(workers, factory, hasher, options_.stop);
  }
  HashRequest req{path, st, 0};
  req.dir_fd = dir_fd;
  req.rel = std::move(rel);
  req.partial_only = partial;
  if (partial) partial_reqs_[InodeKey{st.dev, st.ino}] = req;  // to hash it whole if its fingerprint matches
  if (partial) pool_->Add(std::move(req));
  else AddWhole(std::move(req));
  Throttle();
  // Outcomes are taken every 16 queued files (a mutex round trip): a file
  // whose fingerprint came back is queued to be hashed or compared soon.
  if (++walked_since_drain_ >= 16) {
    walked_since_drain_ = 0;
    Status s = Drain(false);
    if (!s.ok()) failed_ = s;
  }
}

// The names waiting for an inode's outcome (or the one it was hashed by).
std::vector<std::string> Scan::TakeWaiting(const InodeKey& key, const std::string& path) {
  auto w = waiting_.find(key);
  if (w == waiting_.end()) return {path};
  std::vector<std::string> paths = std::move(w->second);
  waiting_.erase(w);
  return paths;
}

// The row for what a hasher saw; racy if its times were too close to the
// scan's start.
InodeRecord Scan::RowOf(const HashOutcome& o) const {
  InodeRecord rec{o.st.dev, o.st.ino, o.st.size, o.st.mtime_ns, o.st.ctime_ns, o.digest};
  rec.hashed = !o.partial_only;
  rec.has_partial = true;
  rec.partial = o.partial;
  rec.racy = std::max(o.st.mtime_ns, o.st.ctime_ns) >= start_ns_ - RacyWindow(options_, o.st);
  return rec;
}

// A walked file could not be read, or changed while it was: not recorded,
// and any older row for its names no longer describes them.
Status Scan::RecordFailure(const InodeKey& key, const HashOutcome& o) {
  std::vector<std::string> paths = TakeWaiting(key, o.path);
  if (o.status.IsChanged()) stats_->changed++;
  else stats_->errors++;
  Report(o.status);
  for (const auto& p : paths) batch_.DeletePath(p);
  return batch_.MaybeCommit();
}

Status Scan::Record(HashOutcome&& o) {
  // Keyed by the inode the walk saw: a file replaced since has another.
  InodeKey key{o.expected.dev, o.expected.ino};
  if (!o.partial_only) {
    whole_queued_.erase(key);
    Unpark(key, o);
  }
  if (o.compared) {
    stats_->compared++;
    stats_->compared_bytes += o.st.size;
  }
  if (o.interrupted) {  // abandoned on the stop flag: whatever the index had stays
    waiting_.erase(key);
    backfill_.erase(key);
    partial_reqs_.erase(key);
    return Status::OK();
  }
  if (o.partial_only) return RecordPartial(std::move(o));
  partial_reqs_.erase(key);  // a small file hashed in its probe (HashRequest::partial_only)
  if (o.status.ok()) {
    // An inode recorded by this fingerprint alone (a probe's first twin, or
    // a row of an earlier scan) is hashed too, if it was recorded already;
    // a fingerprint that has not come back yet meets this row when it does
    // (RecordPartial).
    auto matches = batch_.FindBySize(o.st.size, o.partial, 4);
    if (!matches.ok()) return matches.status();
    for (const InodeRecord& m : *matches)
      if ((m.dev != key.dev || m.ino != key.ino) && !m.hashed && m.has_partial && m.partial == o.partial)
        Backfill(m, /*partial=*/false);
  }
  if (backfill_.erase(key)) {  // an inode recorded by size earlier: its names are in the index already
    if (!o.status.ok()) return Status::OK();  // left unhashed; its own tree's next scan sees to it
    stats_->hashed++;
    stats_->hashed_bytes += o.st.size;
    stats_->mapped_bytes += o.mapped_bytes;
    batch_.PutInode(RowOf(o));
    return batch_.MaybeCommit();
  }
  if (!o.status.ok()) return RecordFailure(key, o);
  std::vector<std::string> paths = TakeWaiting(key, o.path);
  stats_->hashed++;
  stats_->hashed_bytes += o.st.size;
  stats_->mapped_bytes += o.mapped_bytes;
  InodeRecord rec = RowOf(o);
  if (rec.racy) stats_->racy++;
  batch_.PutInode(rec);
  for (const auto& p : paths) batch_.PutPath(p, root_id_, rec.dev, rec.ino);
  return batch_.MaybeCommit();
}

// A partial fingerprint came back.  If an indexed inode of the same size has
// the same fingerprint (or one not known), this file is hashed whole, and
// so is that inode if it was recorded by its fingerprint alone; otherwise
// it is recorded by size and fingerprint, without a digest.  Files whose
// fingerprints are still being taken compare with this one when theirs
// come back, so every pair meets once.
Status Scan::RecordPartial(HashOutcome&& o) {
  InodeKey key{o.expected.dev, o.expected.ino};
  auto r = partial_reqs_.find(key);
  if (r == partial_reqs_.end()) abort();  // every partial request is kept until its outcome
  HashRequest req = std::move(r->second);
  partial_reqs_.erase(r);
  bool backfill = backfill_.count(key) != 0;
  if (!o.status.ok()) {
    if (backfill) {  // left as it was; its own tree's next scan sees to it
      backfill_.erase(key);
      return Status::OK();
    }
    return RecordFailure(key, o);
  }
  stats_->fingerprinted++;
  auto matches = batch_.FindBySize(o.st.size, o.partial, 4);
  if (!matches.ok()) return matches.status();
  bool matched = false;
  const InodeRecord* twin = nullptr;    // hashed, current: compare with it
  const InodeRecord* leader = nullptr;  // being hashed whole: wait for it, then compare
  for (const InodeRecord& m : *matches) {
    if (m.dev == key.dev && m.ino == key.ino) continue;
    // A row by size alone has its fingerprint being taken (queued when
    // this file was walked): it compares with this one when it comes back.
    if (!m.hashed && !m.has_partial) continue;
    matched = true;
    if (!m.hashed) Backfill(m, /*partial=*/false);
    bool same = m.has_partial && m.partial == o.partial;
    if (same && m.hashed && !m.racy && !twin) twin = &m;
    if (same && !m.hashed && whole_queued_.count(InodeKey{m.dev, m.ino}) && !leader) leader = &m;
  }
  if (matched) {  // read it whole; its names stay waiting (or in backfill_)
    bool compare = options_.compare_min != 0 && o.st.size >= options_.compare_min;
    if (compare && twin) {
      req.twin = TwinOf(*twin);
    } else if (compare && leader) {
      parked_[InodeKey{leader->dev, leader->ino}].push_back(std::move(req));
      return Status::OK();
    }
    AddWhole(std::move(req));
    return Status::OK();
  }
  stats_->partial_unique++;
  InodeRecord rec = RowOf(o);
  batch_.PutInode(rec);
  if (backfill) {
    backfill_.erase(key);
  } else {
    for (const auto& p : TakeWaiting(key, o.path)) batch_.PutPath(p, root_id_, rec.dev, rec.ino);
  }
  return batch_.MaybeCommit();
}

// Keeps the queue of files waiting to be hashed (and the bookkeeping for
// each) bounded: a walk far ahead of the hashing waits for some of it.
void Scan::Throttle() {
  constexpr size_t kMaxQueued = 4096;
  if (pool_->pending() <= kMaxQueued) return;
  Status s;
  std::vector<HashOutcome> out;
  while (s.ok() && pool_->pending() > kMaxQueued / 2) {
    out.clear();
    if (!Take(&out, pool_->pending() - kMaxQueued / 2)) break;
    for (auto& o : out) {
      s = Record(std::move(o));
      if (!s.ok()) break;
    }
    if (s.ok()) s = batch_.MaybeCommit();
  }
  if (!s.ok()) failed_ = s;
}

// Takes the outcomes there are, waiting up to 20 ms for at_least of them
// (the hashing threads wake it once, not at every file); if none came,
// then, before it waits on for one, what is buffered goes to the writing thread
// and the lookups' snapshot ends (a scan waiting for a large file keeps
// nothing uncommitted, and holds no snapshot that would stop a
// checkpoint).  Outcomes come a few at a time: committing before every
// wait, as before, made batches of a few rows (a first scan of /usr/share:
// 62,000 pwrite64 of WAL frames for an 18 MB index).
bool Scan::Take(std::vector<HashOutcome>* out, size_t at_least) {
  constexpr std::chrono::milliseconds kShortWait{20};
  bool more = pool_->TakeWithin(out, kShortWait, at_least);
  if (!out->empty() || !more) return more;
  if (Status s = batch_.Commit(false); !s.ok()) failed_ = s;
  return pool_->Take(out, true);
}

Status Scan::Drain(bool wait) {
  if (!pool_) return batch_.MaybeCommit();
  std::vector<HashOutcome> out;
  bool more = true;
  do {
    out.clear();
    if (wait) {
      // Only outcomes taken here queue more work (RecordPartial): with
      // none out, nothing more can come.
      if (pool_->pending() == 0) pool_->Close();
      more = Take(&out, std::min<size_t>(pool_->pending(), 64));
      if (!failed_.ok()) return failed_;
    } else {
      more = pool_->Take(&out, false);
    }
    for (auto& o : out) {
      Status s = Record(std::move(o));
      if (!s.ok()) return s;
    }
    Progress(false);
  } while (wait && more);
  return batch_.MaybeCommit();
}

Status Scan::Run(const std::string& root_arg) {
  auto start = Clock::now();
  start_ns_ = NowNs();
  struct stat st;
  if (lstat(root_arg.c_str(), &st) < 0) return Status::FromErrno(root_arg, errno);
  if (S_ISLNK(st.st_mode))
    return Status::InvalidArgument(root_arg + ": is a symbolic link; symlinks are never followed (scan its target)");
  auto root = CanonicalPath(root_arg);
  if (!root.ok()) return root.status();
  stats_->root = *root;
  // An index kept inside the tree it indexes changes while it is read.
  if (auto own = CanonicalPath(index_->path()); own.ok())
    for (const char* suffix : {"", "-wal", "-shm", "-journal"}) own_files_.insert(*own + suffix);

  Status s;
  if (options_.check_only) {
    auto known = index_->FindRoot(*root);
    if (!known.ok()) return known.status();
    if (!known->has_value() || !(*known)->complete) return Status::OK();  // never scanned to its end
    root_id_ = (*known)->id;
    const std::string& sig = (*known)->signature;
    if (options_.trust_root_signature && !sig.empty() && sig == RootSignature(options_, st, start_ns_)) {
      stats_->current = true;
      return Status::OK();
    }
  } else {
    // A short write transaction for the root; the tree is read outside any.
    s = index_->Begin();
    if (!s.ok()) return s;
    auto id = index_->AddRoot(*root);
    if (!id.ok()) {
      index_->Rollback();
      return id.status();
    }
    root_id_ = *id;
    // A first scan into a new index (or the next root of such a run):
    // its lookups from memory, and the inode indexes built at its end.
    // Any other scan builds them if a first scan killed before its end
    // left them out.
    if (options_.session) options_.session->roots_begun++;
    std::unique_ptr<OwnRows> own = options_.session ? std::move(options_.session->own) : nullptr;
    bool trust = false;
    if (options_.lazy) {
      auto n = own ? index_->CountInodes() : index_->HasInodes();
      if (!n.ok()) s = n.status();
      else trust = *n == (own ? own->size() : 0);
    }
    if (s.ok() && trust && !own) {
      auto d = index_->DeferInodeIndexes();
      if (!d.ok()) s = d.status();
      else indexes_deferred_ = *d;
    } else if (s.ok() && !trust) {
      s = index_->EnsureInodeIndexes();
    }
    if (s.ok()) s = index_->Commit();
    if (!s.ok()) {
      index_->Rollback();
      return s;
    }
    if (trust) batch_.TrustOwnRows(own ? std::move(own) : std::make_unique<OwnRows>());
  }
  root_path_ = *root;


  // The walk stops on the caller's flag or on an index error; the flag is
  // polled between files, which is cheap and safe to set from a signal.
  auto user_stop = options_.stop;
  WalkCallbacks cb;
  cb.stop = &stop_;
  cb.on_file = [this, user_stop](const std::string& p, const FileStat& fs) {
    if ((user_stop && user_stop->load(std::memory_order_relaxed)) || !failed_.ok()) stop_ = true;
    if (!stop_) OnFile(p, fs);
  };
  cb.on_error = [this](const std::string& p, const Status& e) {
    unreadable_.insert(p);
    if (options_.check_only) {
      failed_ = batch_.WouldChange();  // leave it to a scan to keep the rows and say why
      return;
    }
    Report(e);
  };
  WalkStats ws;
  if (S_ISDIR(st.st_mode)) {
    anchor_fd_ = OpenRootDir(*root);
    if (anchor_fd_ < 0) return Status::FromErrno(*root, -anchor_fd_);
    anchor_len_ = *root == "/" ? 1 : root->size() + 1;
    // Waiting for the walk, the outcomes that came are taken and what
    // follows from them queued: the hashing threads had nothing to do
    // until the next chunk (a partial fingerprint's file waited to be
    // hashed whole or compared).
    auto idle = [this] {
      if (!pool_ || !failed_.ok() || stop_) return false;
      Status d = Drain(false);
      if (!d.ok()) failed_ = d;
      return failed_.ok() && pool_->pending() > 0;
    };
    s = WalkInThread([&](const WalkCallbacks& c, WalkStats* w) { return WalkFd(anchor_fd_, *root, c, w); }, cb, &ws,
                     idle);
  } else {
    size_t slash = root->rfind('/');
    std::string parent = slash == 0 ? "/" : root->substr(0, slash);
    anchor_fd_ = OpenRootDir(parent);
    if (anchor_fd_ < 0) return Status::FromErrno(parent, -anchor_fd_);
    anchor_len_ = slash + 1;
    s = Walk(*root, cb, &ws);
  }
  stats_->errors += ws.errors;
  stats_->symlinks = ws.symlinks;
  stats_->special = ws.special;
  stats_->pseudo_fs = ws.pseudo_fs;
  if (user_stop && user_stop->load()) stop_ = true;

  if (pool_ && stop_) {
    pool_->Close();
    pool_->Cancel();
  }
  Status d = Drain(true);  // closes the pool once nothing is left (a fingerprint may queue a hash)
  if (failed_.ok() && !d.ok()) failed_ = d;
  if (failed_.ok() && !s.ok()) failed_ = s;
  stats_->engine = pool_ ? pool_->engine_name() : "none";
  pool_.reset();
  if (options_.check_only) {
    if (batch_.would_change()) return Status::OK();
    if (!failed_.ok()) return failed_;
    if (user_stop && user_stop->load()) stop_ = true;
    stats_->interrupted = stop_.load();
    // Rows beyond the last walked path name files that are gone.
    stats_->current = !stats_->interrupted && PeekRow() == nullptr && failed_.ok();
    if (!failed_.ok()) return failed_;
    stats_->seconds = std::chrono::duration<double>(Clock::now() - start).count();
    return Status::OK();
  }
  if (!failed_.ok()) return failed_;

  // Set during the drain, the flag made the pool drop files it had not
  // started: this scan is incomplete even if the walk ran to its end.
  if (user_stop && user_stop->load()) stop_ = true;
  stats_->interrupted = stop_.load();
  if (!stats_->interrupted) {
    // Whatever the index knew below the root and the walk did not find is
    // gone, unless it sat in a directory that could not be read.
    // What the index still has beyond the last walked path is gone too.
    while (PeekRow() != nullptr) {
      PathRecord gone = std::move(chunk_[chunk_pos_++]);
      s = RemoveRow(gone);
      if (!s.ok()) return s;
    }
    if (!failed_.ok()) return failed_;
  }
  s = batch_.Commit(true);
  if (s.ok()) s = index_->Begin();
  if (!s.ok()) return s;
  uint64_t orphans = 0;
  if (!orphan_candidates_.empty()) {
    auto n = index_->DeleteInodesIfOrphan(orphan_candidates_);
    if (!n.ok()) {
      index_->Rollback();
      return n.status();
    }
    orphans = *n;
  }
  s = index_->SetRootScanned(root_id_, !stats_->interrupted, NowNs());
  // The root as the walk began: a change during the scan leaves a newer one.
  if (s.ok()) s = index_->SetRootSignature(root_id_, stats_->interrupted ? "" : RootSignature(options_, st, start_ns_));
  if (s.ok()) s = index_->Commit();
  if (!s.ok()) {
    index_->Rollback();
    return s;
  }
  // The next root of the run goes on with the rows in memory, unless
  // some were deleted here (it checks the count before it trusts them).
  // The inode indexes are built now, or by ScanSession::Finish once the
  // last root of the run is scanned.
  if (options_.session && !orphans) options_.session->own = batch_.TakeOwnRows();
  if (indexes_deferred_ && !(options_.session && options_.session->own)) {
    s = index_->Begin();
    if (s.ok()) s = index_->EnsureInodeIndexes();
    if (s.ok()) s = index_->Commit();
    if (!s.ok()) {
      index_->Rollback();
      return s;
    }
  }
  Progress(true);
  stats_->seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return Status::OK();
}

}  // namespace

Status ScanTree(Index* index, const std::string& root, const ScanOptions& options, ScanStats* stats) {
  // A scan may hash: say so here if it cannot, rather than abort midway.
  if (!options.check_only) {
    if (Status c = Sha256Available(); !c.ok()) return c;
  }
  // SQLite's page cache of the scan's own connection (the writes have
  // theirs, on the batch thread's): small while it only merges the
  // indexed rows with the walk, as a rescan of an unchanged tree does; a
  // merge reads every page of the tree's rows once, and a 32 MiB cache
  // filled up to its bound with them (198 B per file for /usr).  Raised at
  // the scan's kLookupsForCache'th lookup by size or inode (a first scan's
  // lookups go all over the size index and the inode rows).
  if (Status c = index->SetCacheKiB(kMergeCacheKiB); !c.ok()) return c;
  Scan scan(index, options, stats);
  Status s = scan.Run(root);
  Status c = index->SetCacheKiB(Index::kWriterCacheKiB);
  return s.ok() ? c : s;
}

}  // namespace cid
