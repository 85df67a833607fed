#include "state.h"

#include <nlohmann/json.hpp>

namespace cid {

namespace {

constexpr int kBusyTimeoutMs = 5000;

class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) { rc_ = sqlite3_prepare_v2(db, sql, -1, &s_, nullptr); }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  bool ok() const { return rc_ == SQLITE_OK; }
  Stmt& Text(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Int(int i, int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  int Step() { return sqlite3_step(s_); }
  int64_t ColInt(int i) { return sqlite3_column_int64(s_, i); }
  std::string ColText(int i) {
    const unsigned char* t = sqlite3_column_text(s_, i);
    return t ? reinterpret_cast<const char*>(t) : "";
  }

 private:
  sqlite3_stmt* s_ = nullptr;
  int rc_;
};

}  // namespace

Status StateDb::Error(const char* what) const {
  std::string msg = "cidd state " + path_ + ": " + what + ": " + sqlite3_errmsg(db_);
  int rc = sqlite3_errcode(db_) & 0xff;
  if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) return Status::Busy(msg);
  if (rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB) return Status::Corruption(msg);
  return Status::IoError(msg);
}

Status StateDb::Exec(const char* sql) {
  if (sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) != SQLITE_OK) return Error(sql);
  return Status::OK();
}

Result<std::unique_ptr<StateDb>> StateDb::Open(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                           nullptr);
  std::unique_ptr<StateDb> s(new StateDb(path, db));
  if (rc != SQLITE_OK) return s->Error("cannot open");
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  // synchronous=NORMAL: in WAL mode a commit survives the process (kill -9
  // loses nothing), and only a power cut can take the last commits since a
  // checkpoint.  What those hold comes back by itself: the queue entries and
  // container rows of containers started in those seconds (their layers are
  // handed over again at the next start, and the watcher's rescan finds
  // them), and domain ids, which only tags use and tags do not outlive a
  // boot.  FULL put an fdatasync in every hook run's answer: 1 ms on an
  // idle disk, over 100 ms behind other writers (strace -T, the test VM).
  for (const char* sql : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL",
                          "CREATE TABLE IF NOT EXISTS queue(id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL "
                          "UNIQUE, domain TEXT NOT NULL DEFAULT '', hardlink INTEGER NOT NULL DEFAULT 0, "
                          "writable INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0)",
                          "CREATE TABLE IF NOT EXISTS containers(id TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '', "
                          "domain TEXT NOT NULL DEFAULT '', layers TEXT NOT NULL)",
                          "CREATE TABLE IF NOT EXISTS domains(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL "
                          "UNIQUE)"}) {
    Status st = s->Exec(sql);
    if (!st.ok()) {
      if (st.IsCorruption()) return Status::Corruption(st.message() + " (move it aside; cidd starts a new one)");
      return st;
    }
  }
  return s;
}

StateDb::~StateDb() { sqlite3_close(db_); }

Result<bool> StateDb::Enqueue(const std::string& path, const std::string& domain, bool hardlink, bool writable) {
  std::lock_guard<std::mutex> l(mu_);
  return EnqueueLocked(path, domain, hardlink, writable);
}

Result<bool> StateDb::EnqueueLocked(const std::string& path, const std::string& domain, bool hardlink,
                                    bool writable) {
  Stmt s(db_, "INSERT OR IGNORE INTO queue(path, domain, hardlink, writable) VALUES(?, ?, ?, ?)");
  if (!s.ok()) return Error("enqueue");
  s.Text(1, path).Text(2, domain).Int(3, hardlink).Int(4, writable);
  if (s.Step() != SQLITE_DONE) return Error("enqueue");
  return sqlite3_changes(db_) > 0;
}

Result<std::optional<QueueItem>> StateDb::Next() {
  std::lock_guard<std::mutex> l(mu_);
  Stmt s(db_, "SELECT id, path, domain, hardlink, writable, attempts FROM queue ORDER BY id LIMIT 1");
  if (!s.ok()) return Error("queue");
  int rc = s.Step();
  if (rc == SQLITE_DONE) return std::optional<QueueItem>();
  if (rc != SQLITE_ROW) return Error("queue");
  return std::optional<QueueItem>(QueueItem{s.ColInt(0), s.ColText(1), s.ColText(2), s.ColInt(3) != 0,
                                            s.ColInt(4) != 0, static_cast<int>(s.ColInt(5))});
}

Status StateDb::Done(int64_t id) {
  std::lock_guard<std::mutex> l(mu_);
  Stmt s(db_, "DELETE FROM queue WHERE id = ?");
  if (!s.ok() || s.Int(1, id).Step() != SQLITE_DONE) return Error("dequeue");
  return Status::OK();
}

Status StateDb::Retry(int64_t id) {
  std::lock_guard<std::mutex> l(mu_);
  // A new id puts it at the end of the queue.
  Stmt s(db_, "UPDATE queue SET attempts = attempts + 1, id = (SELECT MAX(id) + 1 FROM queue) WHERE id = ?");
  if (!s.ok() || s.Int(1, id).Step() != SQLITE_DONE) return Error("requeue");
  return Status::OK();
}

Result<std::vector<QueueItem>> StateDb::Queue() {
  std::lock_guard<std::mutex> l(mu_);
  Stmt s(db_, "SELECT id, path, domain, hardlink, writable, attempts FROM queue ORDER BY id");
  if (!s.ok()) return Error("queue");
  std::vector<QueueItem> out;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW)
    out.push_back({s.ColInt(0), s.ColText(1), s.ColText(2), s.ColInt(3) != 0, s.ColInt(4) != 0,
                   static_cast<int>(s.ColInt(5))});
  if (rc != SQLITE_DONE) return Error("queue");
  return out;
}

Status StateDb::PutContainer(const ContainerRow& c) {
  std::lock_guard<std::mutex> l(mu_);
  return PutContainerLocked(c);
}

Result<uint64_t> StateDb::Announce(const ContainerRow* c, const std::vector<std::string>& paths,
                                   const std::string& domain, bool hardlink, bool writable) {
  std::lock_guard<std::mutex> l(mu_);
  Status s = Exec("BEGIN IMMEDIATE");
  if (!s.ok()) return s;
  uint64_t added = 0;
  if (c) s = PutContainerLocked(*c);
  for (size_t i = 0; s.ok() && i < paths.size(); i++) {
    auto r = EnqueueLocked(paths[i], domain, hardlink, writable);
    if (!r.ok()) s = r.status();
    else added += *r;
  }
  if (s.ok()) s = Exec("COMMIT");
  if (!s.ok()) {
    Exec("ROLLBACK");
    return s;
  }
  return added;
}

Status StateDb::PutContainerLocked(const ContainerRow& c) {
  Stmt s(db_, "INSERT OR REPLACE INTO containers(id, name, domain, layers) VALUES(?, ?, ?, ?)");
  if (!s.ok()) return Error("container");
  s.Text(1, c.id).Text(2, c.name).Text(3, c.domain).Text(4, nlohmann::json(c.layers).dump());
  if (s.Step() != SQLITE_DONE) return Error("container");
  return Status::OK();
}

Result<std::vector<ContainerRow>> StateDb::Containers() {
  std::lock_guard<std::mutex> l(mu_);
  Stmt s(db_, "SELECT id, name, domain, layers FROM containers ORDER BY id");
  if (!s.ok()) return Error("containers");
  std::vector<ContainerRow> out;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) {
    ContainerRow c{s.ColText(0), s.ColText(1), s.ColText(2), {}};
    auto layers = nlohmann::json::parse(s.ColText(3), nullptr, false);
    if (layers.is_array())
      for (const auto& l : layers)
        if (l.is_string()) c.layers.push_back(l.get<std::string>());
    out.push_back(std::move(c));
  }
  if (rc != SQLITE_DONE) return Error("containers");
  return out;
}

Result<uint32_t> StateDb::DomainId(const std::string& name) {
  std::lock_guard<std::mutex> l(mu_);
  {
    Stmt ins(db_, "INSERT OR IGNORE INTO domains(name) VALUES(?)");
    if (!ins.ok() || ins.Text(1, name).Step() != SQLITE_DONE) return Error("domain");
  }
  Stmt s(db_, "SELECT id FROM domains WHERE name = ?");
  if (!s.ok() || s.Text(1, name).Step() != SQLITE_ROW) return Error("domain");
  return static_cast<uint32_t>(s.ColInt(0));
}

}  // namespace cid
