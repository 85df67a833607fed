#include "cid/index.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_util.h"

namespace cid {
namespace {

using test::TempDir;

InodeRecord Rec(uint64_t ino, const std::string& content, uint64_t dev = 7) {
  InodeRecord r;
  r.dev = dev;
  r.ino = ino;
  r.size = content.size();
  r.mtime_ns = 1000 + static_cast<int64_t>(ino);
  r.ctime_ns = 2000 + static_cast<int64_t>(ino);
  r.digest = Sha256::Of(content);
  return r;
}

TEST(IndexTest, CreatesDirectoryAndPersistsRows) {
  TempDir dir;
  std::string path = dir / "sub/dir/index.db";
  {
    auto idx = Index::Open(path, Index::Mode::kReadWrite);
    ASSERT_TRUE(idx.ok()) << idx.status().ToString();
    ASSERT_TRUE((*idx)->Begin().ok());
    auto root = (*idx)->AddRoot("/r");
    ASSERT_TRUE(root.ok());
    ASSERT_TRUE((*idx)->PutInode(Rec(1, "one")).ok());
    ASSERT_TRUE((*idx)->PutPath("/r/a", *root, 7, 1).ok());
    ASSERT_TRUE((*idx)->PutPath("/r/b", *root, 7, 1).ok());  // a hardlink
    ASSERT_TRUE((*idx)->Commit().ok());
  }
  auto idx = Index::Open(path, Index::Mode::kReadOnly);
  ASSERT_TRUE(idx.ok()) << idx.status().ToString();
  auto in = (*idx)->FindInode(7, 1);
  ASSERT_TRUE(in.ok());
  ASSERT_TRUE(in->has_value());
  EXPECT_EQ((*in)->digest, Sha256::Of("one"));
  EXPECT_EQ((*in)->mtime_ns, 1001);
  auto p = (*idx)->FindPath("/r/b");
  ASSERT_TRUE(p.ok() && p->has_value());
  EXPECT_EQ((*p)->inode.ino, 1u);
}

TEST(IndexTest, LargeDeviceAndInodeNumbersRoundTrip) {
  TempDir dir;
  auto idx = Index::Open(dir / "i.db", Index::Mode::kReadWrite);
  ASSERT_TRUE(idx.ok());
  InodeRecord r = Rec(~0ull - 1, "big", ~0ull);
  r.size = 5ull << 30;
  ASSERT_TRUE((*idx)->PutInode(r).ok());
  auto got = (*idx)->FindInode(~0ull, ~0ull - 1);
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->size, 5ull << 30);
}

TEST(IndexTest, LoadTreeTakesOnlyPathsBelowTheRoot) {
  TempDir dir;
  auto idx = Index::Open(dir / "i.db", Index::Mode::kReadWrite);
  ASSERT_TRUE(idx.ok());
  auto root = (*idx)->AddRoot("/t/a");
  ASSERT_TRUE(root.ok());
  ASSERT_TRUE((*idx)->PutInode(Rec(1, "x")).ok());
  for (const char* p : {"/t/a/1", "/t/a/sub/2", "/t/ab/3", "/t/a0", "/t/b/4"})
    ASSERT_TRUE((*idx)->PutPath(p, *root, 7, 1).ok());
  std::unordered_map<std::string, PathRecord> tree;
  ASSERT_TRUE((*idx)->LoadTree("/t/a", &tree).ok());
  EXPECT_EQ(tree.size(), 2u);
  EXPECT_TRUE(tree.count("/t/a/1"));
  EXPECT_TRUE(tree.count("/t/a/sub/2"));
}

TEST(IndexTest, OrphanInodesAreDeleted) {
  TempDir dir;
  auto idx = Index::Open(dir / "i.db", Index::Mode::kReadWrite);
  ASSERT_TRUE(idx.ok());
  ASSERT_TRUE((*idx)->PutInode(Rec(1, "kept")).ok());
  ASSERT_TRUE((*idx)->PutInode(Rec(2, "orphan")).ok());
  ASSERT_TRUE((*idx)->PutPath("/k", 1, 7, 1).ok());
  auto n = (*idx)->DeleteOrphanInodes();
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1u);
  auto gone = (*idx)->FindInode(7, 2);
  ASSERT_TRUE(gone.ok());
  EXPECT_FALSE(gone->has_value());
}

// Opens read-only and reads every row: the first error either step gives.
Status OpenAndReadAll(const std::string& path) {
  auto idx = Index::Open(path, Index::Mode::kReadOnly);
  if (!idx.ok()) return idx.status();
  return (*idx)->ForEachRootInode([](int64_t, const InodeRecord&) {});
}

TEST(IndexTest, GarbageFileIsReportedAsCorruptWithItsPath) {
  TempDir dir;
  std::string path = dir / "index.db";
  test::WriteFile(path, std::string(8192, 'Z'));
  for (auto mode : {Index::Mode::kReadWrite, Index::Mode::kReadOnly}) {
    auto idx = Index::Open(path, mode);
    ASSERT_FALSE(idx.ok());
    EXPECT_TRUE(idx.status().IsCorruption()) << idx.status().ToString();
    EXPECT_NE(idx.status().message().find(path), std::string::npos) << idx.status().ToString();
  }
  EXPECT_EQ(test::ReadFile(path), std::string(8192, 'Z')) << "a bad index must not be overwritten";
}

TEST(IndexTest, DamagedPagesAreReportedAsCorrupt) {
  TempDir dir;
  std::string path = dir / "index.db";
  {
    auto idx = Index::Open(path, Index::Mode::kReadWrite);
    ASSERT_TRUE(idx.ok());
    ASSERT_TRUE((*idx)->Begin().ok());
    for (uint64_t i = 0; i < 3000; i++) {
      ASSERT_TRUE((*idx)->PutInode(Rec(i, std::to_string(i))).ok());
      ASSERT_TRUE((*idx)->PutPath("/some/fairly/long/path/name/" + std::to_string(i), 1, 7, i).ok());
    }
    ASSERT_TRUE((*idx)->Commit().ok());
  }
  // Checkpointed on close: the rows are in the main file.  Scribble over
  // everything after the header page.
  std::string data = test::ReadFile(path);
  ASSERT_GT(data.size(), 40000u);
  for (size_t i = 4096; i < data.size(); i++) data[i] = static_cast<char>(i * 31);
  test::WriteFile(path, data);
  Status s = OpenAndReadAll(path);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find(path), std::string::npos);
}

namespace {
int PageSizeOf(const std::string& path) {
  sqlite3* db;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) return -1;
  sqlite3_stmt* st = nullptr;
  int size = -1;
  if (sqlite3_prepare_v2(db, "PRAGMA page_size", -1, &st, nullptr) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
    size = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return size;
}
}  // namespace

// A new index takes 8 KiB pages; one made with 4 KiB pages (before) keeps
// them and works as before.
TEST(IndexTest, NewIndexHas8KiBPagesAnOlderOneKeepsItsOwn) {
  TempDir dir;
  std::string path = dir / "index.db";
  auto fill = [&](uint64_t from) {
    auto idx = Index::Open(path, Index::Mode::kReadWrite);
    ASSERT_TRUE(idx.ok()) << idx.status().ToString();
    ASSERT_TRUE((*idx)->Begin().ok());
    for (uint64_t i = from; i < from + 500; i++) {
      ASSERT_TRUE((*idx)->PutInode(Rec(i, std::to_string(i))).ok());
      ASSERT_TRUE((*idx)->PutPath("/r/" + std::to_string(i), 1, 7, i).ok());
    }
    ASSERT_TRUE((*idx)->Commit().ok());
  };
  fill(0);
  EXPECT_EQ(PageSizeOf(path), 8192);

  // Rewrite it with 4 KiB pages, as an index made before was.
  sqlite3* db;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA journal_mode=DELETE; PRAGMA page_size=4096; VACUUM; PRAGMA journal_mode=WAL",
                         nullptr, nullptr, nullptr),
            SQLITE_OK)
      << sqlite3_errmsg(db);
  sqlite3_close(db);
  ASSERT_EQ(PageSizeOf(path), 4096);
  fill(500);
  EXPECT_EQ(PageSizeOf(path), 4096) << "an existing index was rewritten";
  auto idx = Index::Open(path, Index::Mode::kReadOnly);
  ASSERT_TRUE(idx.ok()) << idx.status().ToString();
  for (uint64_t i : {0u, 499u, 500u, 999u}) {
    auto in = (*idx)->FindInode(7, i);
    ASSERT_TRUE(in.ok() && in->has_value()) << i;
    EXPECT_EQ((*in)->digest, Sha256::Of(std::to_string(i))) << i;
  }
}

TEST(IndexTest, ForeignSqliteDatabaseIsRefused) {
  TempDir dir;
  std::string path = dir / "other.db";
  sqlite3* db;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "CREATE TABLE t(x)", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto idx = Index::Open(path, Index::Mode::kReadWrite);
  ASSERT_FALSE(idx.ok());
  EXPECT_NE(idx.status().message().find("not a cid index"), std::string::npos) << idx.status().ToString();
}

TEST(IndexTest, LockedIndexSaysSo) {
  TempDir dir;
  std::string path = dir / "index.db";
  auto idx = Index::Open(path, Index::Mode::kReadWrite);
  ASSERT_TRUE(idx.ok());
  sqlite3* other;
  ASSERT_EQ(sqlite3_open(path.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN EXCLUSIVE; INSERT INTO roots(path) VALUES('/x')", nullptr, nullptr, nullptr),
            SQLITE_OK);
  Status s = (*idx)->Begin();
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(s.IsBusy()) << s.ToString();
  EXPECT_NE(s.message().find(path), std::string::npos);
  EXPECT_NE(s.message().find("locked"), std::string::npos);
  sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(other);
  EXPECT_TRUE((*idx)->Begin().ok());
  EXPECT_TRUE((*idx)->Rollback().ok());
}

TEST(IndexTest, UnwritableLocationNamesTheFile) {
  TempDir dir;
  test::WriteFile(dir / "file", "x");
  std::string path = dir / "file/index.db";  // parent is not a directory
  auto idx = Index::Open(path, Index::Mode::kReadWrite);
  ASSERT_FALSE(idx.ok());
  EXPECT_NE(idx.status().message().find(path), std::string::npos) << idx.status().ToString();
}

TEST(IndexTest, ReadOnlyDirectoryIsAnErrorForUnprivilegedUsers) {
  TempDir dir;
  test::MakeDirs(dir / "ro");
  ASSERT_EQ(chmod((dir / "ro").c_str(), 0555), 0);
  ASSERT_EQ(chmod(dir.path().c_str(), 0755), 0);
  std::string path = dir / "ro/index.db";
  int rc = test::RunUnprivileged([&] {
    auto idx = Index::Open(path, Index::Mode::kReadWrite);
    if (idx.ok()) return 1;
    return idx.status().message().find(path) != std::string::npos ? 0 : 2;
  });
  EXPECT_EQ(rc, 0);
}

TEST(IndexTest, NewerSchemaIsRefusedNotRewritten) {
  TempDir dir;
  std::string path = dir / "future.db";
  { ASSERT_TRUE(Index::Open(path, Index::Mode::kReadWrite).ok()); }
  sqlite3* db;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version=99", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto idx = Index::Open(path, Index::Mode::kReadWrite);
  ASSERT_FALSE(idx.ok());
  EXPECT_NE(idx.status().message().find("schema version 99"), std::string::npos) << idx.status().ToString();
  EXPECT_NE(idx.status().message().find(path), std::string::npos);
}

TEST(IndexTest, TruncatedIndexIsReportedAsDamaged) {
  TempDir dir;
  std::string path = dir / "index.db";
  {
    auto idx = Index::Open(path, Index::Mode::kReadWrite);
    ASSERT_TRUE(idx.ok());
    ASSERT_TRUE((*idx)->PutInode(Rec(1, "x")).ok());
  }
  std::string data = test::ReadFile(path);
  ASSERT_GT(data.size(), 100u);
  test::WriteFile(path, data.substr(0, 100));  // a header, and nothing behind it
  Status s = OpenAndReadAll(path);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find(path), std::string::npos) << s.ToString();
}

TEST(IndexTest, DefaultPathFollowsXdgForUsers) {
  if (geteuid() == 0) {
    EXPECT_EQ(DefaultIndexPath(), "/var/lib/cid/index.db");
    return;
  }
  setenv("XDG_STATE_HOME", "/x/state", 1);
  EXPECT_EQ(DefaultIndexPath(), "/x/state/cid/index.db");
  unsetenv("XDG_STATE_HOME");
}

TEST(IndexTest, MissingIndexInReadOnlyModeSuggestsAScan) {
  TempDir dir;
  auto idx = Index::Open(dir / "none.db", Index::Mode::kReadOnly);
  ASSERT_FALSE(idx.ok());
  EXPECT_TRUE(idx.status().IsNotFound());
  EXPECT_NE(idx.status().message().find("cidctl scan"), std::string::npos);
}

}  // namespace
}  // namespace cid

namespace cid {
namespace {

// Read-only commands open the index read-only: a user who may read the
// index but not write its directory (a non-root reader of root's index,
// a read-only mount) can still list duplicates, with or without a writer's
// -wal and -shm next to it.
TEST(IndexTest, ReaderWithoutWriteAccessToTheDirectoryCanRead) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to make a directory the reader cannot write";
  TempDir dir;
  ASSERT_EQ(chmod(dir.path().c_str(), 0755), 0);
  std::string path = dir / "index.db";
  {
    auto idx = Index::Open(path, Index::Mode::kReadWrite);
    ASSERT_TRUE(idx.ok()) << idx.status().ToString();
    ASSERT_TRUE((*idx)->Begin().ok());
    ASSERT_TRUE((*idx)->PutInode(InodeRecord{1, 2, 3, 4, 5, Sha256::Of("x")}).ok());
    ASSERT_TRUE((*idx)->PutPath("/t/x", 1, 1, 2).ok());
    ASSERT_TRUE((*idx)->Commit().ok());
  }
  auto read_as_nobody = [&] {
    return test::RunUnprivileged([&] {
      auto idx = Index::Open(path, Index::Mode::kReadOnly);
      if (!idx.ok()) {
        fprintf(stderr, "%s\n", idx.status().ToString().c_str());
        return 1;
      }
      auto p = (*idx)->FindPath("/t/x");
      if (!p.ok()) {
        fprintf(stderr, "%s\n", p.status().ToString().c_str());
        return 2;
      }
      return p->has_value() && (*p)->inode.digest == Sha256::Of("x") ? 0 : 3;
    });
  };
  EXPECT_EQ(read_as_nobody(), 0) << "closed index, directory not writable";
  // With a writer holding it open (its -wal and -shm exist, owned by root).
  auto writer = Index::Open(path, Index::Mode::kReadWrite);
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->FindInode(1, 2).ok());
  EXPECT_EQ(read_as_nobody(), 0) << "index held open by a writer";
}

}  // namespace
}  // namespace cid
