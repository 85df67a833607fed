#include "cid/index.h"

#include <errno.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace cid {

namespace {

// 1: digests were the plain SHA-256 of each file; no flags column.
// 2: digests are fs-verity file digests (cid/verity.h); inodes.flags (racy)
//    and an index by size.  Upgrading from 1 adds the column and deletes
//    every inode row, whose digest is of the old kind, and keeps the paths:
//    a path without an inode row is hashed again by the next scan.
constexpr int kSchemaVersion = 2;
constexpr int kApplicationId = 0x43494431;  // 'CID1'
constexpr int kBusyTimeoutMs = 2000;

const char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS roots(
  id INTEGER PRIMARY KEY,
  path TEXT NOT NULL UNIQUE,
  scanned_ns INTEGER NOT NULL DEFAULT 0,
  complete INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS inodes(
  dev INTEGER NOT NULL,
  ino INTEGER NOT NULL,
  size INTEGER NOT NULL,
  mtime_ns INTEGER NOT NULL,
  ctime_ns INTEGER NOT NULL,
  digest BLOB NOT NULL,
  flags INTEGER NOT NULL DEFAULT 0,
  partial INTEGER,
  PRIMARY KEY(dev, ino)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS paths(
  path TEXT PRIMARY KEY,
  root_id INTEGER NOT NULL,
  dev INTEGER NOT NULL,
  ino INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS paths_by_inode ON paths(dev, ino);
)sql";

// The inode table's secondary indexes (see Index::DeferInodeIndexes): part
// of the schema, left out by a first scan while it loads.  The digest index
// holds the hashed rows only (a row recorded by size or fingerprint has an
// empty digest: of /usr's 140,000 inodes, 16,000 are hashed), so a query
// by digest says length(digest)=32 for SQLite to use it.  Indexes made
// before keep a digest index of every row, which serves the same queries.
const char kInodeIndexes[] = R"sql(
CREATE INDEX IF NOT EXISTS inodes_by_digest ON inodes(digest) WHERE length(digest)=32;
CREATE INDEX IF NOT EXISTS inodes_by_size_partial ON inodes(size, partial);
)sql";

// Added to version 2 indexes by any writer; older ones ignore it.
const char kRootSigs[] = "CREATE TABLE IF NOT EXISTS root_sigs(root_id INTEGER PRIMARY KEY, sig TEXT NOT NULL)";

Status MakeDirs(const std::string& dir) {
  if (dir.empty()) return Status::OK();
  struct stat st;
  if (stat(dir.c_str(), &st) == 0) return Status::OK();
  size_t slash = dir.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    Status s = MakeDirs(dir.substr(0, slash));
    if (!s.ok()) return s;
  }
  if (mkdir(dir.c_str(), 0755) < 0 && errno != EEXIST) return Status::FromErrno(dir, errno);
  return Status::OK();
}

// inodes.flags
constexpr int64_t kFlagRacy = 1;  // recorded within the timestamp granularity of its scan: hash again

// Migrations from older schemas, applied in one transaction.
const char kSchema1To2[] = R"sql(
ALTER TABLE inodes ADD COLUMN flags INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS inodes_by_size ON inodes(size);
)sql";

// The columns ReadInode takes, from table alias i.
#define CID_INODE_COLS "i.dev, i.ino, i.size, i.mtime_ns, i.ctime_ns, i.digest, i.flags"
// The same and the partial fingerprint (ReadInodeWithPartial): only for
// writers, which add the column to an index that lacks it.
#define CID_INODE_COLS_P CID_INODE_COLS ", i.partial"

// sqlite stores integers signed; device and inode numbers are unsigned.
int64_t S(uint64_t v) { return static_cast<int64_t>(v); }
uint64_t U(int64_t v) { return static_cast<uint64_t>(v); }

InodeRecord ReadInode(sqlite3_stmt* st, int col) {
  InodeRecord r;
  r.dev = U(sqlite3_column_int64(st, col));
  r.ino = U(sqlite3_column_int64(st, col + 1));
  r.size = U(sqlite3_column_int64(st, col + 2));
  r.mtime_ns = sqlite3_column_int64(st, col + 3);
  r.ctime_ns = sqlite3_column_int64(st, col + 4);
  const void* blob = sqlite3_column_blob(st, col + 5);
  r.hashed = blob && sqlite3_column_bytes(st, col + 5) == static_cast<int>(kDigestSize);
  if (r.hashed) memcpy(r.digest.bytes.data(), blob, kDigestSize);
  r.racy = (sqlite3_column_int64(st, col + 6) & kFlagRacy) != 0;
  return r;
}

InodeRecord ReadInodeWithPartial(sqlite3_stmt* st, int col) {
  InodeRecord r = ReadInode(st, col);
  r.has_partial = sqlite3_column_type(st, col + 7) != SQLITE_NULL;
  if (r.has_partial) r.partial = U(sqlite3_column_int64(st, col + 7));
  return r;
}

// Resets a cached statement whatever way the caller leaves.
struct StmtReset {
  sqlite3_stmt* st;
  ~StmtReset() {
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
  }
};

}  // namespace

std::string DefaultIndexPath() {
  if (geteuid() == 0) return "/var/lib/cid/index.db";
  const char* state = getenv("XDG_STATE_HOME");
  if (state && *state) return std::string(state) + "/cid/index.db";
  const char* home = getenv("HOME");
  return std::string(home && *home ? home : ".") + "/.local/state/cid/index.db";
}

Status Index::Error(const char* what, int rc) const {
  std::string msg = "index " + path_ + ": " + what + ": " + sqlite3_errmsg(db_);
  switch (rc & 0xff) {
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
      return Status::Corruption(msg + " (the index is damaged; move it aside and scan again)");
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Status::Busy(msg + " (another process holds the index locked)");
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
      return Status::IoError(msg + " (check that the file and its directory are writable)", EACCES);
    case SQLITE_FULL:
      return Status::IoError(msg, ENOSPC);
    default:
      return Status::IoError(msg);
  }
}

namespace {

// "file:" URI of a path, percent-encoding what a URI would misread.
std::string FileUri(const std::string& path, const char* query) {
  std::string out = "file:";
  for (unsigned char c : path) {
    if (c == '%' || c == '?' || c == '#' || c < 0x20 || c >= 0x7f) {
      char buf[4];
      snprintf(buf, sizeof(buf), "%%%02X", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "?" + query;
}

// A reader that cannot create or write the -shm next to a WAL index (its
// directory is not writable to it, or is on a read-only mount) can only
// read the file as it stands.
bool DirectoryWritable(const std::string& path) {
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  if (access(dir.c_str(), W_OK) != 0) return false;
  struct statvfs vfs;
  return statvfs(dir.c_str(), &vfs) != 0 || !(vfs.f_flag & ST_RDONLY);
}

int BusyTimeoutFromEnv(int fallback) {
  const char* v = getenv("CID_BUSY_TIMEOUT_MS");
  if (!v || !*v) return fallback;
  char* end = nullptr;
  long ms = strtol(v, &end, 10);
  return (*end || ms < 0 || ms > INT32_MAX) ? fallback : static_cast<int>(ms);
}

}  // namespace

Result<std::unique_ptr<Index>> Index::Open(const std::string& path, Mode mode) {
  return Open(path, mode, IndexOptions{});
}

Result<std::unique_ptr<Index>> Index::Open(const std::string& path, Mode mode, const IndexOptions& options) {
  int flags = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI;
  std::string uri;
  if (mode == Mode::kReadOnly) {
    struct stat st;
    if (stat(path.c_str(), &st) < 0) {
      if (errno == ENOENT)
        return Status::NotFound("index " + path + " does not exist; run 'cidctl scan PATH' first");
      return Status::FromErrno("index " + path, errno);
    }
    flags |= SQLITE_OPEN_READONLY;
    // mode=ro shares the writer's -shm and sees its commits; where no -shm
    // can be made, immutable=1 reads the file alone (a writer elsewhere
    // cannot have uncheckpointed work there without the -wal this reader
    // would then be unable to use anyway).
    uri = FileUri(path, DirectoryWritable(path) ? "mode=ro" : "immutable=1");
  } else {
    size_t slash = path.rfind('/');
    if (slash != std::string::npos && slash > 0) {
      Status s = MakeDirs(path.substr(0, slash));
      if (!s.ok()) return Status::IoError("index " + path + ": cannot create its directory: " + s.message(), s.err());
    }
    flags |= SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    uri = FileUri(path, "mode=rwc");
  }
  // No bulk page-cache allocation per connection: SQLite would otherwise
  // set up 20 cache slots (88 KiB, every page of it written) at each
  // connection's first read, for a mapped read-only connection that hardly
  // uses its cache, and for each sorter.  Short-lived processes (a hook
  // run is a few ms) pay that in page faults; long ones do not notice.
  // Process-wide, so only before SQLite is first used (else a no-op).
  // Nor memory statistics, which nothing here reads: with them every
  // sqlite3_malloc and free takes a process-wide mutex (1.4% of a first
  // scan of /usr went to pthread_mutex_lock and unlock, most of it there).
  static const bool configured [[maybe_unused]] = sqlite3_config(SQLITE_CONFIG_PAGECACHE, nullptr, 0, 0) == SQLITE_OK &&
                                                   sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0) == SQLITE_OK;
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(uri.c_str(), &db, flags, nullptr);
  int busy = options.busy_timeout_ms >= 0 ? options.busy_timeout_ms : BusyTimeoutFromEnv(kBusyTimeoutMs);
  std::unique_ptr<Index> idx(new Index(path, db, busy));
  if (rc != SQLITE_OK) return idx->Error("cannot open", rc);
  sqlite3_busy_timeout(db, busy);
  sqlite3_extended_result_codes(db, 1);
  Status s = idx->Init(mode);
  if (!s.ok() && mode == Mode::kReadOnly && uri.find("mode=ro") != std::string::npos && !s.IsCorruption() &&
      s.code() != Status::Code::kUnsupported) {
    // The -shm exists but this reader may not write it: read the file alone.
    idx.reset();
    db = nullptr;
    rc = sqlite3_open_v2(FileUri(path, "immutable=1").c_str(), &db, flags, nullptr);
    idx.reset(new Index(path, db, busy));
    if (rc != SQLITE_OK) return idx->Error("cannot open", rc);
    sqlite3_extended_result_codes(db, 1);
    s = idx->Init(mode);
  }
  if (!s.ok()) return s;
  return idx;
}

Status Index::Init(Mode mode) {
  if (mode == Mode::kReadOnly) {
    // Readers (the container hooks at every start, reports) read the
    // B-trees through a mapping of the file: no read() copies into pages
    // of SQLite's own cache, which are new heap pages to fault in for a
    // short-lived process.  Pages still in the WAL are read as before.
    Status s = Exec("PRAGMA mmap_size=1073741824");
    if (!s.ok()) return s;
  }
  // Reading the header is the first thing that touches the file, so a file
  // that is not a database fails here with SQLITE_NOTADB.
  auto ver = Prepare("PRAGMA user_version");
  if (!ver.ok()) return ver.status();
  int rc = sqlite3_step(*ver);
  if (rc != SQLITE_ROW) return Error("reading the schema version", rc);
  int version = sqlite3_column_int(*ver, 0);
  sqlite3_reset(*ver);
  auto app = Prepare("PRAGMA application_id");
  if (!app.ok()) return app.status();
  rc = sqlite3_step(*app);
  if (rc != SQLITE_ROW) return Error("reading the application id", rc);
  int app_id = sqlite3_column_int(*app, 0);
  sqlite3_reset(*app);

  if (version > kSchemaVersion)
    return Status::Unsupported("index " + path_ + ": schema version " + std::to_string(version) +
                               " is newer than this cidctl understands (" + std::to_string(kSchemaVersion) + ")");
  if (app_id != 0 && app_id != kApplicationId)
    return Status::Corruption("index " + path_ + ": an SQLite database, but not a cid index (application_id " +
                              std::to_string(app_id) + ")");
  if (mode == Mode::kReadOnly) {
    if (version == 0) return Status::Corruption("index " + path_ + ": not a cid index (no schema)");
    if (version < kSchemaVersion)
      return Status::Unsupported("index " + path_ + ": made by an older cidctl, its digests are plain SHA-256, " +
                                 "not content ids; run 'cidctl scan' on its roots to hash them again");
    // A listing reads the digest index and the inode and path rows all
    // over: keep their pages (SQLite's default, 2 MiB, re-reads them).
    return Exec("PRAGMA cache_size=-32768");
  }
  if (version == 0 && app_id == 0) {
    // A new file, or an SQLite database someone else made: refuse the latter.
    auto n = Prepare("SELECT count(*) FROM sqlite_master");
    if (!n.ok()) return n.status();
    rc = sqlite3_step(*n);
    if (rc != SQLITE_ROW) return Error("reading the schema", rc);
    int tables = sqlite3_column_int(*n, 0);
    sqlite3_reset(*n);
    if (tables != 0) return Status::Corruption("index " + path_ + ": an SQLite database, but not a cid index");
    // 8 KiB pages (only a new, empty file takes a page size, and only
    // before WAL): a scan's batches touch pages of five B-trees all over,
    // and with twice the rows per page fewer pages are dirtied and written
    // to the WAL per commit.  Side by side, a first scan of /usr + dups
    // 3.00 s against 3.26 s with 4 KiB pages, the three copies 0.708 s
    // against 0.735; the index is the same size, a rescan's memory the same.
    // Indexes made before keep their 4 KiB pages.
    if (Status ps = Exec("PRAGMA page_size=8192"); !ps.ok()) return ps;
  }
  // WAL: readers never block the scanner, and a killed scanner leaves every
  // committed batch intact.  synchronous=NORMAL is durable against process
  // death; only a power cut can lose the last batches, never corrupt.
  Status s = Exec("PRAGMA journal_mode=WAL");
  if (!s.ok()) return s;
  s = Exec("PRAGMA synchronous=NORMAL");
  if (!s.ok()) return s;
  // Checkpoints (each two fdatasyncs, in a writer's commit) every 32 MiB of
  // WAL rather than SQLite's 4 MiB: a scan's many short commits otherwise
  // spend a good part of their time waiting for the disk.
  s = Exec("PRAGMA wal_autocheckpoint=8192");
  if (!s.ok()) return s;
  // A scan's writes touch pages of five B-trees all over for every file:
  // keep them in memory (SQLite's default, 2 MiB, re-reads them from the
  // WAL for a tree of 100,000 files).  A bound, not a per-file cost; a
  // scan lowers it on the connection it only reads with (scanner.cc).
  s = SetCacheKiB(kWriterCacheKiB);
  if (!s.ok()) return s;
  if (version < kSchemaVersion) {  // a new index, or an older schema to upgrade in place
    s = InTransaction([&] {
      // Read again under the write lock: another process may have upgraded
      // it, and written new rows, since.
      int step = sqlite3_step(*ver);
      int now = step == SQLITE_ROW ? sqlite3_column_int(*ver, 0) : -1;
      sqlite3_reset(*ver);
      if (now < 0) return Error("reading the schema version", step);
      if (now >= kSchemaVersion) return Status::OK();
      Status t;
      if (now == 0) {
        t = Exec(kSchema);
        if (t.ok()) t = Exec(kInodeIndexes);
        if (t.ok()) t = Exec(("PRAGMA application_id=" + std::to_string(kApplicationId)).c_str());
      } else {
        // Version 1 had no flags column; tolerate one that has it already.
        auto has = Prepare("SELECT count(*) FROM pragma_table_info('inodes') WHERE name='flags'");
        if (!has.ok()) return has.status();
        int hs = sqlite3_step(*has);
        bool flags = hs == SQLITE_ROW && sqlite3_column_int(*has, 0) > 0;
        sqlite3_reset(*has);
        t = flags ? Exec("CREATE INDEX IF NOT EXISTS inodes_by_size ON inodes(size)") : Exec(kSchema1To2);
        if (t.ok()) t = Exec("DELETE FROM inodes; UPDATE roots SET complete=0;");
      }
      if (t.ok()) t = Exec(("PRAGMA user_version=" + std::to_string(kSchemaVersion)).c_str());
      return t;
    });
    if (!s.ok()) return s;
  }
  // Root signatures (see index.h): created by any writer, in place, so an
  // index of this schema made before them gains the table too.
  s = Exec(kRootSigs);
  if (!s.ok()) return s;
  return AddPartialColumn();
}

// The partial fingerprint column (see index.h) for an index made before
// it: added in place, NULL (not known) in every existing row.
Status Index::AddPartialColumn() {
  auto has = Prepare("SELECT count(*) FROM pragma_table_info('inodes') WHERE name='partial'");
  if (!has.ok()) return has.status();
  auto present = [&]() -> Result<bool> {
    StmtReset r{*has};
    int rc = sqlite3_step(*has);
    if (rc != SQLITE_ROW) return Error("reading the schema", rc);
    return sqlite3_column_int(*has, 0) > 0;
  };
  auto now = present();
  if (!now.ok() || *now) return now.status();
  Status s = InTransaction([&] {
    auto again = present();  // another writer may have added it meanwhile
    if (!again.ok() || *again) return again.status();
    return Exec(
        "ALTER TABLE inodes ADD COLUMN partial INTEGER;"
        "CREATE INDEX IF NOT EXISTS inodes_by_size_partial ON inodes(size, partial);"
        "DROP INDEX IF EXISTS inodes_by_size;");
  });
  // The schema changed under the cached statements: prepare them afresh.
  for (auto& [sql, st] : stmts_) sqlite3_finalize(st);
  for (auto& [sql, st] : scoped_stmts_) sqlite3_finalize(st);
  stmts_.clear();
  return s;
}

Result<std::unique_ptr<Index>> Index::OpenAnother() const {
  IndexOptions o;
  o.busy_timeout_ms = busy_ms_;
  return Open(path_, Mode::kReadWrite, o);
}

Status Index::SetCacheKiB(unsigned kib) {
  return Exec(("PRAGMA cache_size=-" + std::to_string(kib)).c_str());
}

Status Index::InTransaction(const std::function<Status()>& fn) {
  Status s = Exec("BEGIN IMMEDIATE");
  if (!s.ok()) return s;
  s = fn();
  if (!s.ok()) {
    Exec("ROLLBACK");
    return s;
  }
  return Exec("COMMIT");
}

Index::~Index() {
  for (auto& [sql, st] : stmts_) sqlite3_finalize(st);
  for (auto& [sql, st] : scoped_stmts_) sqlite3_finalize(st);
  if (db_) sqlite3_close(db_);
}

Status Index::Exec(const char* sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
  sqlite3_free(err);
  if (rc != SQLITE_OK) return Error(sql, rc);
  return Status::OK();
}

Result<sqlite3_stmt*> Index::Prepare(const char* sql) {
  auto it = stmts_.find(sql);
  if (it != stmts_.end()) return it->second;
  sqlite3_stmt* st = nullptr;
  int rc = sqlite3_prepare_v2(db_, sql, -1, &st, nullptr);
  if (rc != SQLITE_OK) return Error("preparing a query", rc);
  stmts_[sql] = st;
  return st;
}

Status Index::Begin() { return Exec("BEGIN IMMEDIATE"); }
Status Index::BeginRead() { return Exec("BEGIN DEFERRED"); }
Status Index::Commit() { return Exec("COMMIT"); }
Status Index::Rollback() { return Exec("ROLLBACK"); }

Result<int64_t> Index::QueryInt(const char* sql, const char* what) {
  auto st = Prepare(sql);
  if (!st.ok()) return st.status();
  StmtReset r{*st};
  if (int rc = sqlite3_step(*st); rc != SQLITE_ROW) return Error(what, rc);
  return sqlite3_column_int64(*st, 0);
}

Result<uint64_t> Index::HasInodes() {
  auto n = QueryInt("SELECT EXISTS(SELECT 1 FROM inodes)", "looking for inodes");
  if (!n.ok()) return n.status();
  return U(*n);
}

Result<uint64_t> Index::CountInodes() {
  auto n = QueryInt("SELECT count(*) FROM inodes", "counting inodes");
  if (!n.ok()) return n.status();
  return U(*n);
}

Result<int64_t> Index::DataVersion() { return QueryInt("PRAGMA data_version", "reading data_version"); }

Result<bool> Index::DeferInodeIndexes() {
  auto n = HasInodes();
  if (!n.ok()) return n.status();
  if (*n != 0) return false;
  Status s = Exec("DROP INDEX IF EXISTS inodes_by_digest; DROP INDEX IF EXISTS inodes_by_size_partial;");
  if (!s.ok()) return s;
  return true;
}

Result<bool> Index::InodeIndexesMissing() {
  auto n = QueryInt("SELECT count(*) FROM sqlite_master WHERE type='index' AND "
                    "name IN ('inodes_by_digest', 'inodes_by_size_partial')",
                    "reading the schema");
  if (!n.ok()) return n.status();
  return *n != 2;
}

Status Index::EnsureInodeIndexes() {
  auto missing = InodeIndexesMissing();
  if (!missing.ok() || !*missing) return missing.status();
  // SQLite sorts the keys (PRAGMA threads: with a second thread) and
  // writes each page of the new B-trees once.
  Status s = Exec("PRAGMA threads=2");
  if (s.ok()) s = Exec(kInodeIndexes);
  Status t = Exec("PRAGMA threads=0");
  return s.ok() ? t : s;
}

Result<int64_t> Index::AddRoot(const std::string& root) {
  auto ins = Prepare("INSERT INTO roots(path) VALUES(?1) ON CONFLICT(path) DO NOTHING");
  if (!ins.ok()) return ins.status();
  {
    StmtReset r{*ins};
    sqlite3_bind_text(*ins, 1, root.c_str(), -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(*ins);
    if (rc != SQLITE_DONE) return Error("adding a root", rc);
  }
  auto sel = Prepare("SELECT id FROM roots WHERE path=?1");
  if (!sel.ok()) return sel.status();
  StmtReset r{*sel};
  sqlite3_bind_text(*sel, 1, root.c_str(), -1, SQLITE_TRANSIENT);
  int rc = sqlite3_step(*sel);
  if (rc != SQLITE_ROW) return Error("reading a root", rc);
  return sqlite3_column_int64(*sel, 0);
}

Status Index::SetRootScanned(int64_t root_id, bool complete, int64_t when_ns) {
  auto st = Prepare("UPDATE roots SET scanned_ns=?2, complete=?3 WHERE id=?1");
  if (!st.ok()) return st.status();
  StmtReset r{*st};
  sqlite3_bind_int64(*st, 1, root_id);
  sqlite3_bind_int64(*st, 2, when_ns);
  sqlite3_bind_int(*st, 3, complete ? 1 : 0);
  int rc = sqlite3_step(*st);
  if (rc != SQLITE_DONE) return Error("updating a root", rc);
  return Status::OK();
}

Result<std::vector<RootRecord>> Index::Roots() {
  auto st = Prepare("SELECT id, path, scanned_ns, complete FROM roots ORDER BY path");
  if (!st.ok()) return st.status();
  StmtReset r{*st};
  std::vector<RootRecord> out;
  int rc;
  while ((rc = sqlite3_step(*st)) == SQLITE_ROW) {
    RootRecord rr;
    rr.id = sqlite3_column_int64(*st, 0);
    rr.path = reinterpret_cast<const char*>(sqlite3_column_text(*st, 1));
    rr.scanned_ns = sqlite3_column_int64(*st, 2);
    rr.complete = sqlite3_column_int(*st, 3) != 0;
    out.push_back(std::move(rr));
  }
  if (rc != SQLITE_DONE) return Error("listing roots", rc);
  return out;
}

Status Index::SetRootSignature(int64_t root_id, const std::string& signature) {
  auto st = signature.empty() ? Prepare("DELETE FROM root_sigs WHERE root_id=?1")
                              : Prepare("INSERT OR REPLACE INTO root_sigs(root_id, sig) VALUES(?1, ?2)");
  if (!st.ok()) return st.status();
  StmtReset r{*st};
  sqlite3_bind_int64(*st, 1, root_id);
  if (!signature.empty()) sqlite3_bind_text(*st, 2, signature.c_str(), -1, SQLITE_TRANSIENT);
  int rc = sqlite3_step(*st);
  if (rc != SQLITE_DONE) return Error("recording a root's signature", rc);
  return Status::OK();
}

Result<std::optional<RootRecord>> Index::FindRoot(const std::string& root) {
  auto st = Prepare(
      "SELECT r.id, r.path, r.scanned_ns, r.complete, s.sig FROM roots r LEFT JOIN root_sigs s ON s.root_id=r.id "
      "WHERE r.path=?1");
  // An index no writer of this version has opened yet has no root_sigs.
  if (!st.ok()) st = Prepare("SELECT id, path, scanned_ns, complete, NULL FROM roots WHERE path=?1");
  if (!st.ok()) return st.status();
  StmtReset r{*st};
  sqlite3_bind_text(*st, 1, root.c_str(), -1, SQLITE_TRANSIENT);
  int rc = sqlite3_step(*st);
  if (rc == SQLITE_DONE) return std::optional<RootRecord>();
  if (rc != SQLITE_ROW) return Error("reading a root", rc);
  RootRecord rr;
  rr.id = sqlite3_column_int64(*st, 0);
  rr.path = reinterpret_cast<const char*>(sqlite3_column_text(*st, 1));
  rr.scanned_ns = sqlite3_column_int64(*st, 2);
  rr.complete = sqlite3_column_int(*st, 3) != 0;
  if (const unsigned char* sig = sqlite3_column_text(*st, 4)) rr.signature = reinterpret_cast<const char*>(sig);
  return std::optional<RootRecord>(std::move(rr));
}

Status Index::LoadTree(const std::string& root, std::unordered_map<std::string, PathRecord>* out) {
  std::vector<PathRecord> rows;
  Status s = LoadTreeChunk(root, "", UINT32_MAX, &rows);
  if (!s.ok()) return s;
  for (PathRecord& pr : rows) {
    std::string key = pr.path;
    out->emplace(std::move(key), std::move(pr));
  }
  return Status::OK();
}

Status Index::LoadTreeChunk(const std::string& root, const std::string& after, unsigned limit,
                            std::vector<PathRecord>* out) {
  // Paths below root sort between "root/" and "root0" ('0' follows '/').
  auto st = Prepare(
      "SELECT p.path, p.root_id, " CID_INODE_COLS " "
      "FROM paths p JOIN inodes i ON i.dev=p.dev AND i.ino=p.ino "
      "WHERE (p.path=?1 OR (p.path>=?2 AND p.path<?3)) AND p.path>?4 ORDER BY p.path LIMIT ?5");
  if (!st.ok()) return st.status();
  StmtReset r{*st};
  std::string base = root == "/" ? "" : root;
  std::string lo = base + "/", hi = base + "0";
  sqlite3_bind_text(*st, 1, root.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(*st, 2, lo.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(*st, 3, hi.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(*st, 4, after.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(*st, 5, limit);
  int rc;
  while ((rc = sqlite3_step(*st)) == SQLITE_ROW) {
    PathRecord pr;
    pr.path = reinterpret_cast<const char*>(sqlite3_column_text(*st, 0));
    pr.root_id = sqlite3_column_int64(*st, 1);
    pr.inode = ReadInode(*st, 2);
    out->push_back(std::move(pr));
  }
  if (rc != SQLITE_DONE) return Error("loading the tree", rc);
  return Status::OK();
}

Result<std::optional<InodeRecord>> Index::FindInode(uint64_t dev, uint64_t ino) {
  auto st = Prepare("SELECT " CID_INODE_COLS " FROM inodes i WHERE dev=?1 AND ino=?2");
  if (!st.ok()) return st.status();
  StmtReset r{*st};
  sqlite3_bind_int64(*st, 1, S(dev));
  sqlite3_bind_int64(*st, 2, S(ino));
  int rc = sqlite3_step(*st);
  if (rc == SQLITE_DONE) return std::optional<InodeRecord>();
  if (rc != SQLITE_ROW) return Error("looking up an inode", rc);
  return std::optional<InodeRecord>(ReadInode(*st, 0));
}

Result<std::optional<PathRecord>> Index::FindPath(const std::string& path) {
  auto st = Prepare(
      "SELECT p.path, p.root_id, " CID_INODE_COLS " "
      "FROM paths p JOIN inodes i ON i.dev=p.dev AND i.ino=p.ino WHERE p.path=?1");
  if (!st.ok()) return st.status();
  StmtReset r{*st};
  sqlite3_bind_text(*st, 1, path.c_str(), -1, SQLITE_TRANSIENT);
  int rc = sqlite3_step(*st);
  if (rc == SQLITE_DONE) return std::optional<PathRecord>();
  if (rc != SQLITE_ROW) return Error("looking up a path", rc);
  PathRecord pr;
  pr.path = path;
  pr.root_id = sqlite3_column_int64(*st, 1);
  pr.inode = ReadInode(*st, 2);
  return std::optional<PathRecord>(std::move(pr));
}

Result<std::vector<InodeRecord>> Index::FindInodesOfSize(uint64_t size, unsigned limit) {
  auto st = Prepare("SELECT " CID_INODE_COLS_P " FROM inodes i WHERE size=?1 LIMIT ?2");
  if (!st.ok()) return st.status();
  StmtReset r{*st};
  sqlite3_bind_int64(*st, 1, S(size));
  sqlite3_bind_int64(*st, 2, limit);
  std::vector<InodeRecord> out;
  int rc;
  while ((rc = sqlite3_step(*st)) == SQLITE_ROW) out.push_back(ReadInodeWithPartial(*st, 0));
  if (rc != SQLITE_DONE) return Error("looking up inodes by size", rc);
  return out;
}

Result<std::vector<InodeRecord>> Index::FindInodesOfSizeAndPartial(uint64_t size, uint64_t partial, unsigned limit) {
  // Two lookups of (size, partial), each a range of inodes_by_size_partial.
  auto st = Prepare(
      "SELECT * FROM (SELECT " CID_INODE_COLS_P " FROM inodes i WHERE size=?1 AND partial=?2 LIMIT ?3) "
      "UNION ALL SELECT * FROM (SELECT " CID_INODE_COLS_P " FROM inodes i WHERE size=?1 AND partial IS NULL LIMIT ?3)");
  if (!st.ok()) return st.status();
  StmtReset r{*st};
  sqlite3_bind_int64(*st, 1, S(size));
  sqlite3_bind_int64(*st, 2, S(partial));
  sqlite3_bind_int64(*st, 3, limit);
  std::vector<InodeRecord> out;
  int rc;
  while ((rc = sqlite3_step(*st)) == SQLITE_ROW) out.push_back(ReadInodeWithPartial(*st, 0));
  if (rc != SQLITE_DONE) return Error("looking up inodes by size and partial fingerprint", rc);
  return out;
}

Result<std::vector<std::string>> Index::PathsOfInode(uint64_t dev, uint64_t ino, unsigned limit) {
  auto st = Prepare("SELECT path FROM paths WHERE dev=?1 AND ino=?2 ORDER BY path LIMIT ?3");
  if (!st.ok()) return st.status();
  StmtReset r{*st};
  sqlite3_bind_int64(*st, 1, S(dev));
  sqlite3_bind_int64(*st, 2, S(ino));
  sqlite3_bind_int64(*st, 3, limit);
  std::vector<std::string> out;
  int rc;
  while ((rc = sqlite3_step(*st)) == SQLITE_ROW) out.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(*st, 0)));
  if (rc != SQLITE_DONE) return Error("looking up the paths of an inode", rc);
  return out;
}

Status Index::PutInode(const InodeRecord& rec) {
  auto st = Prepare(
      "INSERT OR REPLACE INTO inodes(dev, ino, size, mtime_ns, ctime_ns, digest, flags, partial) "
      "VALUES(?1,?2,?3,?4,?5,?6,?7,?8)");
  if (!st.ok()) return st.status();
  StmtReset r{*st};
  sqlite3_bind_int64(*st, 1, S(rec.dev));
  sqlite3_bind_int64(*st, 2, S(rec.ino));
  sqlite3_bind_int64(*st, 3, S(rec.size));
  sqlite3_bind_int64(*st, 4, rec.mtime_ns);
  sqlite3_bind_int64(*st, 5, rec.ctime_ns);
  // A row recorded without hashing (see ScanOptions::lazy) has an empty digest.
  sqlite3_bind_blob(*st, 6, rec.digest.bytes.data(), rec.hashed ? kDigestSize : 0, SQLITE_TRANSIENT);
  sqlite3_bind_int64(*st, 7, rec.racy ? kFlagRacy : 0);
  if (rec.has_partial) sqlite3_bind_int64(*st, 8, S(rec.partial));
  else sqlite3_bind_null(*st, 8);
  int rc = sqlite3_step(*st);
  if (rc != SQLITE_DONE) return Error("writing an inode", rc);
  return Status::OK();
}

Status Index::PutPath(const std::string& path, int64_t root_id, uint64_t dev, uint64_t ino) {
  auto st = Prepare("INSERT OR REPLACE INTO paths(path, root_id, dev, ino) VALUES(?1,?2,?3,?4)");
  if (!st.ok()) return st.status();
  StmtReset r{*st};
  sqlite3_bind_text(*st, 1, path.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(*st, 2, root_id);
  sqlite3_bind_int64(*st, 3, S(dev));
  sqlite3_bind_int64(*st, 4, S(ino));
  int rc = sqlite3_step(*st);
  if (rc != SQLITE_DONE) return Error("writing a path", rc);
  return Status::OK();
}

Status Index::DeletePath(const std::string& path) {
  auto st = Prepare("DELETE FROM paths WHERE path=?1");
  if (!st.ok()) return st.status();
  StmtReset r{*st};
  sqlite3_bind_text(*st, 1, path.c_str(), -1, SQLITE_TRANSIENT);
  int rc = sqlite3_step(*st);
  if (rc != SQLITE_DONE) return Error("deleting a path", rc);
  return Status::OK();
}

Result<uint64_t> Index::DeleteOrphanInodes() {
  auto st = Prepare(
      "DELETE FROM inodes WHERE NOT EXISTS "
      "(SELECT 1 FROM paths p WHERE p.dev=inodes.dev AND p.ino=inodes.ino)");
  if (!st.ok()) return st.status();
  StmtReset r{*st};
  int rc = sqlite3_step(*st);
  if (rc != SQLITE_DONE) return Error("deleting unreferenced inodes", rc);
  return static_cast<uint64_t>(sqlite3_changes(db_));
}

Result<uint64_t> Index::DeleteInodesIfOrphan(const std::vector<InodeKey>& candidates) {
  auto st = Prepare(
      "DELETE FROM inodes WHERE dev=?1 AND ino=?2 AND NOT EXISTS "
      "(SELECT 1 FROM paths p WHERE p.dev=?1 AND p.ino=?2)");
  if (!st.ok()) return st.status();
  uint64_t n = 0;
  for (const InodeKey& k : candidates) {
    StmtReset r{*st};
    sqlite3_bind_int64(*st, 1, S(k.dev));
    sqlite3_bind_int64(*st, 2, S(k.ino));
    int rc = sqlite3_step(*st);
    if (rc != SQLITE_DONE) return Error("deleting an unreferenced inode", rc);
    n += static_cast<uint64_t>(sqlite3_changes(db_));
  }
  return n;
}

Result<uint64_t> Index::ForgetRoot(const std::string& root) {
  auto sel = Prepare("SELECT id FROM roots WHERE path=?1");
  if (!sel.ok()) return sel.status();
  int64_t id;
  {
    StmtReset r{*sel};
    sqlite3_bind_text(*sel, 1, root.c_str(), -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(*sel);
    if (rc == SQLITE_DONE) return Status::NotFound(root + ": not a scanned root of index " + path_);
    if (rc != SQLITE_ROW) return Error("reading a root", rc);
    id = sqlite3_column_int64(*sel, 0);
  }
  // A chunk per transaction, so readers and other writers are never held
  // up for long.
  auto del = Prepare(
      "DELETE FROM paths WHERE path IN (SELECT path FROM paths WHERE root_id=?1 LIMIT 2000) RETURNING dev, ino");
  if (!del.ok()) return del.status();
  uint64_t removed = 0;
  while (true) {
    Status s = Begin();
    if (!s.ok()) return s;
    std::vector<InodeKey> gone;
    int rc;
    {
      StmtReset r{*del};
      sqlite3_bind_int64(*del, 1, id);
      while ((rc = sqlite3_step(*del)) == SQLITE_ROW)
        gone.push_back(InodeKey{U(sqlite3_column_int64(*del, 0)), U(sqlite3_column_int64(*del, 1))});
    }
    if (rc != SQLITE_DONE) {
      Rollback();
      return Error("forgetting a root's paths", rc);
    }
    auto n = DeleteInodesIfOrphan(gone);
    if (!n.ok()) {
      Rollback();
      return n.status();
    }
    s = Commit();
    if (!s.ok()) return s;
    removed += gone.size();
    if (gone.empty()) break;
  }
  if (Status s = SetRootSignature(id, ""); !s.ok()) return s;
  auto drop = Prepare("DELETE FROM roots WHERE id=?1");
  if (!drop.ok()) return drop.status();
  StmtReset r{*drop};
  sqlite3_bind_int64(*drop, 1, id);
  int rc = sqlite3_step(*drop);
  if (rc != SQLITE_DONE) return Error("forgetting a root", rc);
  return removed;
}

Result<Index::Counts> Index::Count() {
  auto st = Prepare("SELECT (SELECT count(*) FROM roots), (SELECT count(*) FROM paths), (SELECT count(*) FROM inodes)");
  if (!st.ok()) return st.status();
  StmtReset r{*st};
  int rc = sqlite3_step(*st);
  if (rc != SQLITE_ROW) return Error("counting rows", rc);
  Counts c;
  c.roots = U(sqlite3_column_int64(*st, 0));
  c.paths = U(sqlite3_column_int64(*st, 1));
  c.inodes = U(sqlite3_column_int64(*st, 2));
  return c;
}

Status Index::ForEachRootInode(const std::function<void(int64_t, const InodeRecord&)>& fn) {
  auto st = Prepare(
      "SELECT DISTINCT p.root_id, " CID_INODE_COLS " "
      "FROM paths p JOIN inodes i ON i.dev=p.dev AND i.ino=p.ino");
  if (!st.ok()) return st.status();
  StmtReset r{*st};
  int rc;
  while ((rc = sqlite3_step(*st)) == SQLITE_ROW) fn(sqlite3_column_int64(*st, 0), ReadInode(*st, 1));
  if (rc != SQLITE_DONE) return Error("reading inodes", rc);
  return Status::OK();
}

Status Index::ForEachDuplicate(uint64_t min_size,
                               const std::function<void(const InodeRecord&, const std::string&)>& fn) {
  // In one read snapshot: the digest index read in order (it holds the
  // digest, dev and ino: no table row is read), runs of one digest on two
  // inodes or more kept; then each of those inodes' row (size, times) and
  // names (paths_by_inode, in path order).  The join in SQL (a row and a
  // digest lookup per hashed inode, a sorter for the names) was 40% of
  // `cidctl dups`.
  bool own_snapshot = sqlite3_get_autocommit(db_) != 0;
  if (own_snapshot) {
    if (Status s = BeginRead(); !s.ok()) return s;
  }
  struct Dup {
    InodeRecord inode;
    std::vector<std::string> paths;
  };
  std::vector<Dup> dups;
  Status s = [&]() -> Status {
    auto byd = Prepare("SELECT digest, dev, ino FROM inodes WHERE length(digest)=32 ORDER BY digest");
    if (!byd.ok()) return byd.status();
    std::vector<InodeKey> run;
    Digest digest;
    auto flush = [&]() -> Status {
      size_t first = dups.size();
      for (const InodeKey& k : run) {
        auto row = FindInode(k.dev, k.ino);
        if (!row.ok()) return row.status();
        if (row->has_value() && (*row)->size >= min_size && (*row)->hashed && (*row)->digest == digest)
          dups.push_back(Dup{**row, {}});
      }
      if (dups.size() - first < 2) dups.resize(first);
      run.clear();
      return Status::OK();
    };
    {
      StmtReset r{*byd};
      int rc;
      while ((rc = sqlite3_step(*byd)) == SQLITE_ROW) {
        const void* d = sqlite3_column_blob(*byd, 0);
        InodeKey k{U(sqlite3_column_int64(*byd, 1)), U(sqlite3_column_int64(*byd, 2))};
        if (!run.empty() && memcmp(d, digest.bytes.data(), kDigestSize) == 0) {
          run.push_back(k);
          continue;
        }
        if (run.size() > 1) {
          if (Status f = flush(); !f.ok()) return f;
        }
        run.assign(1, k);
        memcpy(digest.bytes.data(), d, kDigestSize);
      }
      if (rc != SQLITE_DONE) return Error("listing duplicates", rc);
    }
    if (run.size() > 1) {
      if (Status f = flush(); !f.ok()) return f;
    }
    for (Dup& d : dups) {
      auto names = PathsOfInode(d.inode.dev, d.inode.ino, UINT32_MAX);
      if (!names.ok()) return names.status();
      d.paths = std::move(*names);
    }
    return Status::OK();
  }();
  if (own_snapshot) {
    Status c = Commit();
    if (s.ok()) s = c;
  }
  if (!s.ok()) return s;
  for (const Dup& d : dups)
    for (const std::string& p : d.paths) fn(d.inode, p);
  return Status::OK();
}

std::string Index::ScopedInodesSql(size_t roots) {
  // The roots as ranges of the paths key, bound from ?2 on: each root
  // itself, and what sorts between "root/" and "root0" ('0' follows '/').
  // A VALUES list, not a temp table: a temp table makes SQLite create the
  // connection's temp database (a B-tree and a cache of its own) at every
  // hook run.  CROSS JOIN fixes the loop order (SQLite keeps it): the
  // ranges of the paths primary key first, then the inode.  Left to
  // itself, the planner walks the whole digest index.
  std::string values;
  for (size_t i = 0; i < 2 * roots; i++) {
    int lo = 2 + 2 * static_cast<int>(i);
    values += (i ? ",(?" : "(?") + std::to_string(lo) + ",?" + std::to_string(lo + 1) + ")";
  }
  if (values.empty()) values = "(NULL,NULL)";  // no roots: no range matches
  return "r(lo, hi) AS (VALUES " + values +
         "), m AS (SELECT i.digest, i.size, i.dev, i.ino FROM r "
         "CROSS JOIN paths p ON p.path>=r.lo AND p.path<r.hi CROSS JOIN inodes i ON i.dev=p.dev AND i.ino=p.ino "
         "WHERE i.size>=?1 AND length(i.digest)=32)";
}

Result<sqlite3_stmt*> Index::PrepareScoped(const std::string& sql, const std::vector<std::string>& roots,
                                           uint64_t min_size) {
  auto it = scoped_stmts_.find(sql);
  sqlite3_stmt* st = nullptr;
  if (it != scoped_stmts_.end()) {
    st = it->second;
  } else {
    int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr);
    if (rc != SQLITE_OK) return Error("preparing a query", rc);
    scoped_stmts_[sql] = st;
  }
  sqlite3_bind_int64(st, 1, S(min_size));
  int n = 2;
  for (const std::string& root : roots) {
    std::string base = root == "/" ? "" : root;
    for (const auto& [lo, hi] : {std::pair{root, root + "\x01"}, std::pair{base + "/", base + "0"}}) {
      sqlite3_bind_text(st, n++, lo.c_str(), static_cast<int>(lo.size()), SQLITE_TRANSIENT);
      sqlite3_bind_text(st, n++, hi.c_str(), static_cast<int>(hi.size()), SQLITE_TRANSIENT);
    }
  }
  return st;
}

Status Index::ForEachDuplicateCountUnder(const std::vector<std::string>& roots, uint64_t min_size,
                                         const std::function<void(uint64_t, uint64_t, uint64_t)>& fn) {
  // Each inode named beneath the roots, with how many inodes hold its
  // content in all (the digest index), grouped here rather than in SQL: a
  // GROUP BY sorts every row through a sorter whose memory grows by
  // realloc, twice the work and page faults of a hash map for the few
  // thousand rows of a container's layers, although the total is then
  // looked up per inode instead of per content.  m names an inode once per
  // path (hard links, a root inside another): each counts once.
  auto st = PrepareScoped("WITH " + ScopedInodesSql(roots.size()) +
                              " SELECT digest, size, dev, ino, "
                              "(SELECT count(*) FROM inodes x WHERE x.digest=m.digest AND length(x.digest)=32) FROM m",
                          roots, min_size);
  if (!st.ok()) return st.status();
  struct Group {
    uint64_t size = 0, total = 0;
    std::vector<InodeKey> here;  // distinct; contents have a handful of inodes
  };
  std::unordered_map<Digest, Group, DigestHash> groups;
  {
    StmtReset r{*st};
    int rc;
    while ((rc = sqlite3_step(*st)) == SQLITE_ROW) {
      uint64_t total = U(sqlite3_column_int64(*st, 4));
      if (total < 2) continue;  // one inode holds it: not a duplicate
      Group& g = groups[Digest::FromBytes(sqlite3_column_blob(*st, 0), kDigestSize)];
      g.size = U(sqlite3_column_int64(*st, 1));
      g.total = total;
      InodeKey key{U(sqlite3_column_int64(*st, 2)), U(sqlite3_column_int64(*st, 3))};
      if (std::find(g.here.begin(), g.here.end(), key) == g.here.end()) g.here.push_back(key);
    }
    if (rc != SQLITE_DONE) return Error("counting duplicates", rc);
  }
  // In digest order, as a listing would be.
  std::vector<std::pair<Digest, const Group*>> sorted;
  sorted.reserve(groups.size());
  for (const auto& [d, g] : groups) sorted.emplace_back(d, &g);
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [d, g] : sorted) fn(g->size, g->here.size(), g->total);
  return Status::OK();
}

Status Index::ForEachDuplicateUnder(const std::vector<std::string>& roots, uint64_t min_size,
                                    const std::function<void(const InodeRecord&, const std::string&)>& fn) {
  auto st = PrepareScoped(
      "WITH " + ScopedInodesSql(roots.size()) +
          ", d AS (SELECT DISTINCT digest FROM m), "
          "g AS (SELECT digest FROM d "
          "  WHERE (SELECT count(*) FROM (SELECT 1 FROM inodes x WHERE x.digest=d.digest AND length(x.digest)=32 LIMIT 2))>1) "
          "SELECT " CID_INODE_COLS ", p.path "
          "FROM g CROSS JOIN inodes i ON i.digest=g.digest AND length(i.digest)=32 "
          "CROSS JOIN paths p ON p.dev=i.dev AND p.ino=i.ino "
          "ORDER BY i.digest, i.dev, i.ino, p.path",
      roots, min_size);
  if (!st.ok()) return st.status();
  StmtReset r{*st};
  int rc;
  while ((rc = sqlite3_step(*st)) == SQLITE_ROW)
    fn(ReadInode(*st, 0), reinterpret_cast<const char*>(sqlite3_column_text(*st, 7)));
  if (rc != SQLITE_DONE) return Error("listing duplicates", rc);
  return Status::OK();
}

}  // namespace cid
