#include "cid/partial.h"
#include "cid/scanner.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <array>
#include <fstream>
#include <set>

#include "cid/report.h"
#include "cid/verity.h"
#include "cid/walker.h"
#include "test_util.h"

namespace cid {
namespace {

using test::TempDir;
using test::WriteFile;

class ScannerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto idx = Index::Open(db_ / "index.db", Index::Mode::kReadWrite);
    ASSERT_TRUE(idx.ok()) << idx.status().ToString();
    index_ = std::move(*idx);
  }
  // Files these tests write are only microseconds older than the scan: with
  // the default racy window they would all be hashed twice.  Tests of that
  // rule set racy_ns themselves.
  // These tests count files read: they hash every file unless a test of
  // lazy hashing sets lazy_.
  ScanStats Scan(ScanOptions o = {}) {
    if (o.racy_ns < 0) o.racy_ns = 0;
    if (!lazy_) o.lazy = false;
    ScanStats st;
    o.on_error = [this](const Status& s) { errors_.push_back(s); };
    Status s = ScanTree(index_.get(), tree_.path(), o, &st);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return st;
  }
  std::optional<Digest> DigestOf(const std::string& rel) {
    auto canon = CanonicalPath(tree_ / rel);
    if (!canon.ok()) return std::nullopt;
    auto p = index_->FindPath(*canon);
    if (!p.ok() || !p->has_value()) return std::nullopt;
    return (*p)->inode.digest;
  }

  // As another client's scan of `dir` would: `dir`/`name` recorded by its
  // size alone, on a connection of its own to the index at `index_path`
  // (default: the fixture's).
  void RecordBySizeElsewhere(const std::string& dir, const std::string& name, std::string index_path = "") {
    auto other = Index::Open(index_path.empty() ? index_->path() : index_path, Index::Mode::kReadWrite);
    ASSERT_TRUE(other.ok());
    auto root = CanonicalPath(dir);
    ASSERT_TRUE(root.ok());
    struct stat st;
    ASSERT_EQ(stat((*root + "/" + name).c_str(), &st), 0);
    auto id = (*other)->AddRoot(*root);
    ASSERT_TRUE(id.ok());
    FileStat f = FileStat::From(st);
    InodeRecord r{f.dev, f.ino, f.size, f.mtime_ns, f.ctime_ns, Digest{}};
    r.hashed = false;
    ASSERT_TRUE((*other)->Begin().ok());
    ASSERT_TRUE((*other)->PutInode(r).ok());
    ASSERT_TRUE((*other)->PutPath(*root + "/" + name, *id, f.dev, f.ino).ok());
    ASSERT_TRUE((*other)->Commit().ok());
  }

  TempDir tree_, db_;
  bool lazy_ = false;
  std::unique_ptr<Index> index_;
  std::vector<Status> errors_;
};

// An index of the cidctl before the fs-verity id (schema 1, plain SHA-256
// digests) is upgraded when opened for writing: none of its digests is ever
// found, reported or matched, and the next scan hashes every file again.
TEST_F(ScannerTest, PlainSha256IndexIsRehashedNeverTrusted) {
  WriteFile(tree_ / "a", "same content");
  WriteFile(tree_ / "b", "same content");
  WriteFile(tree_ / "c", "other content");
  ASSERT_EQ(Scan().hashed, 3u);
  std::string path = index_->path();
  index_.reset();
  // Make it what the old cidctl wrote: user_version 1, SHA-256 digests.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  for (const char* content : {"same content", "other content"}) {
    std::string sql = "UPDATE inodes SET digest=X'" + Sha256::Of(content).ToHex() + "' WHERE size=" +
                      std::to_string(strlen(content)) + "; PRAGMA user_version=1;";
    ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  }
  sqlite3_close(db);

  auto ro = Index::Open(path, Index::Mode::kReadOnly);
  ASSERT_FALSE(ro.ok());
  EXPECT_NE(ro.status().message().find("older cidctl"), std::string::npos) << ro.status().message();
  EXPECT_NE(ro.status().message().find("cidctl scan"), std::string::npos) << ro.status().message();

  auto rw = Index::Open(path, Index::Mode::kReadWrite);
  ASSERT_TRUE(rw.ok()) << rw.status().ToString();
  index_ = std::move(*rw);
  EXPECT_FALSE(DigestOf("a").has_value());
  int dup_rows = 0;
  ASSERT_TRUE(index_->ForEachDuplicate(1, [&](const InodeRecord&, const std::string&) { dup_rows++; }).ok());
  EXPECT_EQ(dup_rows, 0);
  auto roots = index_->Roots();
  ASSERT_TRUE(roots.ok());
  ASSERT_EQ(roots->size(), 1u);
  EXPECT_FALSE((*roots)[0].complete);

  ScanStats again = Scan();
  EXPECT_EQ(again.hashed, 3u);
  EXPECT_EQ(again.unchanged, 0u);
  EXPECT_EQ(DigestOf("a"), VerityHasher::Of("same content"));
  EXPECT_EQ(DigestOf("c"), VerityHasher::Of("other content"));
  ASSERT_TRUE(index_->ForEachDuplicate(1, [&](const InodeRecord& r, const std::string&) {
    EXPECT_EQ(r.digest, VerityHasher::Of("same content"));
    dup_rows++;
  }).ok());
  EXPECT_EQ(dup_rows, 2);
  // Upgraded once: read-only opens work again, and a rescan reads nothing.
  EXPECT_TRUE(Index::Open(path, Index::Mode::kReadOnly).ok());
  EXPECT_EQ(Scan().hashed, 0u);
  EXPECT_TRUE(errors_.empty());
}

TEST_F(ScannerTest, RescanReadsOnlyWhatChanged) {
  for (int i = 0; i < 30; i++) WriteFile(tree_ / ("d" + std::to_string(i % 3) + "/f" + std::to_string(i)), "v1-" + std::to_string(i));
  ScanStats first = Scan();
  EXPECT_EQ(first.files, 30u);
  EXPECT_EQ(first.hashed, 30u);
  EXPECT_EQ(first.unchanged, 0u);

  ScanStats second = Scan();
  EXPECT_EQ(second.hashed, 0u);
  EXPECT_EQ(second.unchanged, 30u);

  WriteFile(tree_ / "d1/f1", "v2 with another size");
  ASSERT_EQ(unlink((tree_ / "d2/f2").c_str()), 0);
  WriteFile(tree_ / "new", "brand new");
  ScanStats third = Scan();
  EXPECT_EQ(third.hashed, 2u);  // the changed file and the new one
  EXPECT_EQ(third.removed, 1u);
  EXPECT_EQ(DigestOf("d1/f1"), VerityHasher::Of("v2 with another size"));
  EXPECT_EQ(DigestOf("new"), VerityHasher::Of("brand new"));
  EXPECT_FALSE(DigestOf("d2/f2").has_value());
  EXPECT_TRUE(errors_.empty());
}

// A file whose times are not older than the scan (here: an mtime in the
// future, as a clock step or a 1-second filesystem gives) may change again
// without its times moving: it is hashed again by the next scan, until its
// times fall behind a scan's start.
TEST_F(ScannerTest, RacyCleanFilesAreHashedAgainByTheNextScan) {
  WriteFile(tree_ / "future", "written in the same second as the scan");
  WriteFile(tree_ / "past", "old");
  struct timeval t[2];
  gettimeofday(&t[0], nullptr);
  t[0].tv_sec += 3600;
  t[1] = t[0];
  ASSERT_EQ(utimes((tree_ / "future").c_str(), t), 0);
  ScanOptions o;
  o.racy_ns = -1;  // the default rule
  ScanStats first = Scan(o);
  EXPECT_EQ(first.hashed, 2u);
  EXPECT_GE(first.racy, 1u);
  ScanStats again = Scan(o);
  EXPECT_EQ(again.hashed, 1u) << "a racily clean file was taken as unchanged";
  EXPECT_EQ(again.unchanged, 1u);
  // Rewritten with the same size and times, as a 1-second filesystem shows it.
  WriteFile(tree_ / "future", "WRITTEN IN THE SAME SECOND AS THE SCAN");
  ASSERT_EQ(utimes((tree_ / "future").c_str(), t), 0);
  ScanStats second = Scan(o);
  EXPECT_GE(second.hashed, 1u);
  EXPECT_EQ(DigestOf("future"), VerityHasher::Of("WRITTEN IN THE SAME SECOND AS THE SCAN"));
  // Once its times are in the past, it is clean.
  t[0].tv_sec -= 7200;
  t[1] = t[0];
  ASSERT_EQ(utimes((tree_ / "future").c_str(), t), 0);
  ScanOptions zero;
  zero.racy_ns = 0;
  Scan(zero);
  ScanStats settled = Scan(zero);
  EXPECT_EQ(settled.hashed, 0u);
  EXPECT_EQ(settled.unchanged, 2u);
}

// A file replaced by rename gets a new inode under the same path: the old
// inode's row must go, not accumulate.
TEST_F(ScannerTest, ReplacedFilesLeaveNoOrphanInodeRows) {
  WriteFile(tree_ / "f", "version 1");
  WriteFile(tree_ / "g", "stays");
  Scan();
  for (int v = 2; v <= 4; v++) {
    WriteFile(tree_ / "f.tmp", "version " + std::to_string(v));
    ASSERT_EQ(rename((tree_ / "f.tmp").c_str(), (tree_ / "f").c_str()), 0);
    Scan();
  }
  auto n = index_->Count();
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->paths, 2u);
  EXPECT_EQ(n->inodes, 2u) << "inode rows of replaced files were left behind";
  EXPECT_EQ(DigestOf("f"), VerityHasher::Of("version 4"));
}

// Lazy hashing: only files with a size twin are read; a file of unique size
// is recorded by size and hashed once a second file of its size appears.
// Duplicates found are the same as with every file hashed.
TEST_F(ScannerTest, FilesOfUniqueSizeAreHashedOnlyWhenATwinAppears) {
  lazy_ = true;
  WriteFile(tree_ / "u5", "12345");
  WriteFile(tree_ / "u7", "1234567");
  WriteFile(tree_ / "t9a", "aaaaaaaaa");
  WriteFile(tree_ / "t9b", "bbbbbbbbb");
  WriteFile(tree_ / "d/x", "duplicate!");
  WriteFile(tree_ / "d/y", "duplicate!");
  ScanStats first = Scan();
  EXPECT_EQ(first.hashed, 3u) << "files of unique size, or of unique fingerprint, were hashed";
  // Recorded by size when walked: u5, u7, and t9a and d/x until their twins came.
  EXPECT_EQ(first.deferred, 4u);
  // t9a, recorded by its size, is hashed when t9b comes; t9b is read for
  // its fingerprint (a probe, HashRequest::partial_only), which t9a's is
  // not: it is recorded by size and fingerprint, and not hashed.
  EXPECT_GE(first.partial_unique, 1u);
  auto t9a = index_->FindPath(tree_ / "t9a");
  ASSERT_TRUE(t9a.ok() && t9a->has_value());
  EXPECT_EQ((*t9a)->inode.digest, VerityHasher::Of("aaaaaaaaa"));
  auto t9b = index_->FindPath(tree_ / "t9b");
  ASSERT_TRUE(t9b.ok() && t9b->has_value());
  EXPECT_FALSE((*t9b)->inode.hashed);
  auto by = index_->FindInodesOfSizeAndPartial(9, PartialFingerprintOf("bbbbbbbbb", 9), 4);
  ASSERT_TRUE(by.ok());
  ASSERT_EQ(by->size(), 1u) << "t9b is found by its fingerprint";
  EXPECT_EQ(by->front().ino, (*t9b)->inode.ino);
  auto u7 = index_->FindPath(tree_ / "u7");
  ASSERT_TRUE(u7.ok() && u7->has_value());
  EXPECT_FALSE((*u7)->inode.hashed);
  auto u5 = index_->FindPath(tree_ / "u5");
  ASSERT_TRUE(u5.ok() && u5->has_value());
  EXPECT_FALSE((*u5)->inode.hashed);
  auto groups = FindDuplicates(index_.get(), 1);
  ASSERT_TRUE(groups.ok());
  ASSERT_EQ(groups->size(), 1u);
  EXPECT_EQ(groups->front().digest, VerityHasher::Of("duplicate!"));

  // A second file of u5's size, in another tree: both are hashed now.
  TempDir other;
  WriteFile(other / "copy-of-u5", "12345");
  ScanOptions o;
  o.racy_ns = 0;
  ScanStats st;
  ASSERT_TRUE(ScanTree(index_.get(), other.path(), o, &st).ok());
  EXPECT_EQ(st.hashed, 2u) << "the new file and the earlier one of its size";
  EXPECT_EQ(DigestOf("u5"), VerityHasher::Of("12345"));
  groups = FindDuplicates(index_.get(), 1);
  ASSERT_TRUE(groups.ok());
  EXPECT_EQ(groups->size(), 2u);
  EXPECT_EQ(Scan().hashed, 0u) << "the backfilled row is current";

  // The same index built hashing everything finds the same groups.
  TempDir db2;
  auto all = Index::Open(db2 / "i.db", Index::Mode::kReadWrite);
  ASSERT_TRUE(all.ok());
  ScanOptions everything;
  everything.lazy = false;
  ScanStats a, b;
  ASSERT_TRUE(ScanTree(all->get(), tree_.path(), everything, &a).ok());
  ASSERT_TRUE(ScanTree(all->get(), other.path(), everything, &b).ok());
  EXPECT_EQ(a.hashed, 6u);
  auto want = FindDuplicates(all->get(), 1);
  ASSERT_TRUE(want.ok());
  ASSERT_EQ(want->size(), groups->size());
  for (size_t i = 0; i < want->size(); i++) {
    EXPECT_EQ((*want)[i].digest, (*groups)[i].digest);
    EXPECT_EQ((*want)[i].inodes.size(), (*groups)[i].inodes.size());
  }
}

TEST_F(ScannerTest, RehashReadsEveryFileAgain) {
  for (int i = 0; i < 5; i++) WriteFile(tree_ / ("f" + std::to_string(i)), "v" + std::to_string(i));
  EXPECT_EQ(Scan().hashed, 5u);
  EXPECT_EQ(Scan().hashed, 0u);
  ScanOptions o;
  o.rehash = true;
  ScanStats st = Scan(o);
  EXPECT_EQ(st.hashed, 5u);
  EXPECT_EQ(st.unchanged, 0u);
}

TEST_F(ScannerTest, CachedLargeFilesAreCountedAsMapped) {
  std::string big = test::RandomBytes((3 << 20) + 7, 1), small = "small";
  WriteFile(tree_ / "big", big);
  WriteFile(tree_ / "small", small);
  REQUIRE_CACHESTAT(tree_ / "big");
  ScanOptions map;
  map.hasher.map_min_size = 1 << 20;
  ScanStats st = Scan(map);
  EXPECT_EQ(st.hashed_bytes, big.size() + small.size());
  EXPECT_EQ(st.mapped_bytes, big.size()) << "files under HasherOptions::map_min_size are read";
  EXPECT_EQ(DigestOf("big"), VerityHasher::Of(big));
  EXPECT_EQ(DigestOf("small"), VerityHasher::Of(small));

  // Into a fresh index, with the default options (mapping off): everything is read.
  TempDir db2;
  auto idx2 = Index::Open(db2 / "index.db", Index::Mode::kReadWrite);
  ASSERT_TRUE(idx2.ok()) << idx2.status().ToString();
  ScanOptions o;
  o.lazy = false;
  ScanStats read;
  ASSERT_TRUE(ScanTree(idx2->get(), tree_.path(), o, &read).ok());
  EXPECT_EQ(read.hashed_bytes, big.size() + small.size());
  EXPECT_EQ(read.mapped_bytes, 0u);
}

TEST_F(ScannerTest, SameSizeRewriteIsNoticedByMtime) {
  WriteFile(tree_ / "f", "aaaa");
  struct timeval old[2] = {{1000000000, 0}, {1000000000, 0}};
  ASSERT_EQ(utimes((tree_ / "f").c_str(), old), 0);
  Scan();
  WriteFile(tree_ / "f", "bbbb");
  ScanStats st = Scan();
  EXPECT_EQ(st.hashed, 1u);
  EXPECT_EQ(DigestOf("f"), VerityHasher::Of("bbbb"));
}

TEST_F(ScannerTest, HardlinksCountOnceAndAreNotHashedTwice) {
  WriteFile(tree_ / "a", "shared inode");
  ASSERT_EQ(link((tree_ / "a").c_str(), (tree_ / "b").c_str()), 0);
  ASSERT_EQ(link((tree_ / "a").c_str(), (tree_ / "c").c_str()), 0);
  ScanStats st = Scan();
  EXPECT_EQ(st.files, 3u);
  EXPECT_EQ(st.inodes, 1u);
  EXPECT_EQ(st.hardlinks, 2u);
  EXPECT_EQ(st.hashed, 1u);
  EXPECT_EQ(DigestOf("c"), VerityHasher::Of("shared inode"));
  auto groups = FindDuplicates(index_.get(), 0);
  ASSERT_TRUE(groups.ok());
  EXPECT_TRUE(groups->empty()) << "hardlinks are one inode, not duplicates";
}

TEST_F(ScannerTest, HardlinkIntoAnotherTreeIsNotReadAgain) {
  WriteFile(tree_ / "a", "linked across trees");
  TempDir other;
  ASSERT_EQ(link((tree_ / "a").c_str(), (other / "b").c_str()), 0);  // (link() moves ctime)
  Scan();
  ScanStats st;
  ASSERT_TRUE(ScanTree(index_.get(), other.path(), ScanOptions{}, &st).ok());
  EXPECT_EQ(st.hashed, 0u);
  EXPECT_EQ(st.unchanged, 1u);
  auto p = index_->FindPath(*CanonicalPath(other / "b"));
  ASSERT_TRUE(p.ok() && p->has_value());
  EXPECT_EQ((*p)->inode.digest, VerityHasher::Of("linked across trees"));
}

TEST_F(ScannerTest, InterruptedScanKeepsItsWorkAndTheNextScanContinues) {
  for (int i = 0; i < 400; i++) WriteFile(tree_ / ("f" + std::to_string(i)), "content " + std::to_string(i));
  std::atomic<bool> stop{false};
  std::atomic<int> reads{0};
  ScanOptions o;
  o.workers = 1;
  o.stop = &stop;
  o.batch_writes = 16;
  o.engine = [&] {
    return test::NewHookedEngine(NewPreadEngine(4), [&](int, ReadCompletion*) {
      if (++reads == 100) stop = true;
    });
  };
  ScanStats first = Scan(o);
  EXPECT_TRUE(first.interrupted);
  EXPECT_GT(first.hashed, 0u);
  EXPECT_LT(first.hashed, 400u);

  ScanStats second = Scan();
  EXPECT_FALSE(second.interrupted);
  EXPECT_EQ(second.unchanged, first.hashed) << "work of the interrupted scan was lost";
  EXPECT_EQ(second.hashed + second.unchanged, 400u);
  for (int i = 0; i < 400; i += 37) EXPECT_EQ(DigestOf("f" + std::to_string(i)), VerityHasher::Of("content " + std::to_string(i)));
}

// The first stop ends a scan at the next read, not after the large file
// being hashed: reads after the flag are at most one per file in flight.
TEST_F(ScannerTest, StopAbandonsAFileBeingRead) {
  WriteFile(tree_ / "big", std::string(16 << 20, 'b'));
  std::atomic<bool> stop{false};
  std::atomic<int> reads{0}, after_stop{0};
  ScanOptions o;
  o.workers = 1;
  o.stop = &stop;
  o.hasher.buffer_size = 64 << 10;  // 256 reads
  o.engine = [&] {
    return test::NewHookedEngine(NewPreadEngine(4), [&](int, ReadCompletion*) {
      if (stop) after_stop++;
      if (++reads == 8) stop = true;
    });
  };
  ScanStats st = Scan(o);
  EXPECT_TRUE(st.interrupted);
  EXPECT_EQ(st.hashed, 0u);
  EXPECT_EQ(st.errors, 0u) << "an abandoned file is not an error";
  EXPECT_LE(after_stop.load(), 1) << "the scan read on after the stop";
  EXPECT_FALSE(DigestOf("big").has_value());
}

TEST_F(ScannerTest, FileChangingDuringTheScanIsNotRecorded) {
  WriteFile(tree_ / "b-stable", std::string(300000, 's'));
  WriteFile(tree_ / "a-volatile", std::string(300000, 'v'));
  struct timeval old[2] = {{1000000000, 0}, {1000000000, 0}};
  ASSERT_EQ(utimes((tree_ / "a-volatile").c_str(), old), 0);
  std::string victim = tree_ / "a-volatile";
  ScanOptions o;
  o.workers = 1;
  o.hasher.buffer_size = 65536;
  o.engine = [&] {
    return test::NewHookedEngine(NewPreadEngine(1), [&, done = false](int, ReadCompletion*) mutable {
      if (done) return;
      done = true;
      int fd = open(victim.c_str(), O_WRONLY | O_APPEND);
      ASSERT_GE(fd, 0);
      ASSERT_EQ(write(fd, "x", 1), 1);
      close(fd);
    });
  };
  ScanStats st = Scan(o);
  EXPECT_EQ(st.changed, 1u);
  EXPECT_EQ(st.hashed, 1u);
  ASSERT_EQ(errors_.size(), 1u);
  EXPECT_NE(errors_[0].message().find(victim), std::string::npos) << errors_[0].ToString();
  EXPECT_FALSE(DigestOf("a-volatile").has_value());
  EXPECT_EQ(DigestOf("b-stable"), VerityHasher::Of(std::string(300000, 's')));
  // Once it is quiet, the next scan picks it up.
  ScanStats again = Scan();
  EXPECT_EQ(again.hashed, 1u);
  EXPECT_EQ(DigestOf("a-volatile"), VerityHasher::Of(std::string(300000, 'v') + "x"));
}

TEST_F(ScannerTest, UnreadableFileIsReportedAndOthersAreIndexed) {
  WriteFile(tree_ / "good", "g");
  WriteFile(tree_ / "bad", "b");
  ScanOptions o;
  o.engine = [&] {
    return test::NewHookedEngine(NewPreadEngine(4), [](int, ReadCompletion* c) {
      if (c->res == 1) {  // both files are one byte; fail the first read we see
        static bool failed = false;
        if (!failed) {
          failed = true;
          c->res = -EIO;
        }
      }
    });
  };
  o.workers = 1;
  ScanStats st = Scan(o);
  EXPECT_EQ(st.errors, 1u);
  EXPECT_EQ(st.hashed, 1u);
  ASSERT_EQ(errors_.size(), 1u);
  EXPECT_EQ(errors_[0].err(), EIO);
}

TEST_F(ScannerTest, UnreadableDirectoryKeepsItsIndexedRows) {
  ASSERT_EQ(chmod(tree_.path().c_str(), 0755), 0);
  WriteFile(tree_ / "open/a", "a");
  WriteFile(tree_ / "closed/b", "b");
  Scan();
  ASSERT_TRUE(DigestOf("closed/b").has_value());
  ASSERT_EQ(chmod((tree_ / "closed").c_str(), 0), 0);
  ASSERT_EQ(chmod(db_.path().c_str(), 0777), 0);
  ASSERT_EQ(chmod((db_ / "index.db").c_str(), 0666), 0);
  index_.reset();
  std::string tree = tree_.path(), db = db_ / "index.db";
  int rc = test::RunUnprivileged([&] {
    auto idx = Index::Open(db, Index::Mode::kReadWrite);
    if (!idx.ok()) return 10;
    ScanStats st;
    int errors = 0;
    ScanOptions o;
    o.on_error = [&](const Status&) { errors++; };
    if (!ScanTree(idx->get(), tree, o, &st).ok()) return 11;
    if (errors != 1) return 12;
    if (st.removed != 0) return 13;  // could not look: must not forget it
    return 0;
  });
  EXPECT_EQ(rc, 0);
}

TEST_F(ScannerTest, RescanningAnEnclosingRootTakesThePathsOver) {
  WriteFile(tree_ / "sub/a", "a");
  WriteFile(tree_ / "b", "b");
  ScanStats inner;
  ASSERT_TRUE(ScanTree(index_.get(), tree_ / "sub", ScanOptions{}, &inner).ok());
  ScanStats outer = Scan();
  EXPECT_EQ(outer.hashed, 1u);     // only b is new
  EXPECT_EQ(outer.unchanged, 1u);  // sub/a was indexed by the inner scan
  auto rep = BuildReport(index_.get(), 4096);
  ASSERT_TRUE(rep.ok());
  ASSERT_EQ(rep->trees.size(), 2u);
  for (const auto& t : rep->trees) {
    if (t.root.path == *CanonicalPath(tree_.path())) EXPECT_EQ(t.within.files, 2u);
    else EXPECT_EQ(t.within.files, 0u) << t.root.path;
  }
}

TEST_F(ScannerTest, AnIndexInsideTheTreeIsNotIndexed) {
  WriteFile(tree_ / "f", "f");
  auto idx = Index::Open(tree_ / "idx.db", Index::Mode::kReadWrite);
  ASSERT_TRUE(idx.ok());
  ScanStats st;
  std::vector<Status> errors;
  ScanOptions o;
  o.on_error = [&](const Status& s) { errors.push_back(s); };
  ASSERT_TRUE(ScanTree(idx->get(), tree_.path(), o, &st).ok());
  EXPECT_EQ(st.files, 1u);
  EXPECT_TRUE(errors.empty());
  auto p = (*idx)->FindPath(*CanonicalPath(tree_ / "idx.db"));
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(p->has_value());
}

TEST_F(ScannerTest, CorruptIndexStopsTheScanWithItsName) {
  index_.reset();
  std::string path = db_ / "index.db";
  for (const char* suffix : {"", "-wal", "-shm"}) unlink((path + suffix).c_str());
  WriteFile(path, std::string(4096, '\x7f'));
  auto idx = Index::Open(path, Index::Mode::kReadWrite);
  ASSERT_FALSE(idx.ok());
  EXPECT_NE(idx.status().message().find(path), std::string::npos);
}


// check_only: whether the index describes a tree as it is, answered from a
// read-only connection (a write there would fail), reading no file.
TEST_F(ScannerTest, CheckOnlySaysWhetherTheIndexIsCurrentAndWritesNothing) {
  WriteFile(tree_ / "a", "alpha");
  WriteFile(tree_ / "d/b", "beta");
  auto check = [&](bool trust = false) {
    auto ro = Index::Open(db_ / "index.db", Index::Mode::kReadOnly);
    EXPECT_TRUE(ro.ok()) << ro.status().ToString();
    ScanOptions o;
    o.racy_ns = 0;
    o.check_only = true;
    o.trust_root_signature = trust;
    ScanStats st;
    Status s = ScanTree(ro->get(), tree_.path(), o, &st);
    EXPECT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(st.hashed, 0u);
    return st.current;
  };
  EXPECT_FALSE(check()) << "a root never scanned";
  Scan();
  EXPECT_TRUE(check());
  EXPECT_TRUE(check(true));
  WriteFile(tree_ / "d/b", "BETA!");  // written in place, in a subdirectory
  EXPECT_FALSE(check()) << "a changed file";
  Scan();
  EXPECT_TRUE(check());
  WriteFile(tree_ / "d/new", "new");
  EXPECT_FALSE(check()) << "a new file";
  Scan();
  EXPECT_TRUE(check());
  ASSERT_EQ(unlink((tree_ / "a").c_str()), 0);
  EXPECT_FALSE(check()) << "a file gone (its row is the last one)";
  Scan();
  EXPECT_TRUE(check());
  ASSERT_EQ(rename((tree_ / "d/new").c_str(), (tree_ / "d/renamed").c_str()), 0);
  EXPECT_FALSE(check()) << "a renamed file";
  Scan();
  EXPECT_TRUE(check());
  // A row hashed too close to its scan's start is hashed again: not current.
  WriteFile(tree_ / "d/fresh", "fresh");
  ScanOptions racy;
  racy.racy_ns = 3600ll * 1000000000;
  EXPECT_EQ(Scan(racy).racy, 1u);
  EXPECT_FALSE(check()) << "a racy row";
  // Nothing was ever written by the checks: the last scan's rows stand.
  Scan();
  EXPECT_TRUE(check());
  EXPECT_EQ(DigestOf("d/b"), VerityHasher::Of("BETA!"));
}

// trust_root_signature: a root directory unchanged since its last complete
// scan is taken as is (what committed overlay layers allow); any change of
// the root itself, or a signature recorded within the racy window, walks.
TEST_F(ScannerTest, TrustedRootSignatureSkipsTheWalkUntilTheRootChanges) {
  WriteFile(tree_ / "a", "alpha");
  WriteFile(tree_ / "d/b", "beta");
  auto check = [&](bool trust) {
    ScanOptions o;
    o.racy_ns = 0;
    o.check_only = true;
    o.trust_root_signature = trust;
    ScanStats st;
    EXPECT_TRUE(ScanTree(index_.get(), tree_.path(), o, &st).ok());
    return st.current;
  };
  Scan();
  auto root = index_->FindRoot(tree_.path());
  ASSERT_TRUE(root.ok() && root->has_value());
  EXPECT_FALSE((*root)->signature.empty());
  WriteFile(tree_ / "d/b", "BETA!");
  EXPECT_TRUE(check(true)) << "below an unchanged root, a file written in place is not looked for";
  EXPECT_FALSE(check(false));
  Scan();
  WriteFile(tree_ / "c", "a new name in the root");
  EXPECT_FALSE(check(true)) << "the root directory changed";
  Scan();
  EXPECT_TRUE(check(true));
  // A root whose times are within the racy window of the scan gets no
  // signature, so the next check walks.
  ScanOptions racy;
  racy.racy_ns = 3600ll * 1000000000;
  Scan(racy);
  root = index_->FindRoot(tree_.path());
  ASSERT_TRUE(root.ok() && root->has_value());
  EXPECT_TRUE((*root)->signature.empty());
}

// Duplicates of a set of roots: only the contents with a copy beneath one
// of them (with every copy, wherever it is), never a sibling whose name
// merely starts with a root's; the counting query agrees with the listing.
TEST_F(ScannerTest, DuplicatesUnderRootsListOnlyTheirContents) {
  WriteFile(tree_ / "a/x", "shared by a and b");
  WriteFile(tree_ / "b/x", "shared by a and b");
  WriteFile(tree_ / "a-sibling/y", "shared by a-sibling and c");
  WriteFile(tree_ / "c/y", "shared by a-sibling and c");
  WriteFile(tree_ / "a/z1", "twice in a");
  WriteFile(tree_ / "a/z2", "twice in a");
  Scan();
  std::string a = *CanonicalPath(tree_ / "a");
  auto groups = FindDuplicatesUnder(index_.get(), {a}, 1);
  ASSERT_TRUE(groups.ok()) << groups.status().ToString();
  ASSERT_EQ(groups->size(), 2u);
  std::set<Digest> got;
  for (const auto& g : *groups) {
    got.insert(g.digest);
    EXPECT_EQ(g.inodes.size(), 2u);
  }
  EXPECT_EQ(got, (std::set<Digest>{VerityHasher::Of("shared by a and b"), VerityHasher::Of("twice in a")}));
  uint64_t groups_n = 0, here = 0, total = 0;
  Status s = index_->ForEachDuplicateCountUnder({a}, 1, [&](uint64_t size, uint64_t h, uint64_t t) {
    groups_n++;
    here += h;
    total += t;
    EXPECT_GT(size, 0u);
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(groups_n, 2u);
  EXPECT_EQ(here, 3u) << "a/x, a/z1, a/z2";
  EXPECT_EQ(total, 4u);
  auto all = FindDuplicates(index_.get(), 1);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 3u);
  auto none = FindDuplicatesUnder(index_.get(), {*CanonicalPath(tree_ / "b"), "/nonexistent"}, 1000);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty()) << "min_size applies";
}

// The counting query names each inode once however many of its paths lie
// in the roots (hard links, a root inside another), reads the same on a
// read-only connection (which maps the file), and finds nothing for no
// roots.
TEST_F(ScannerTest, DuplicateCountsCountEachInodeOnce) {
  WriteFile(tree_ / "a/x", "in a twice and in b");
  WriteFile(tree_ / "a/sub/x2", "in a twice and in b");
  ASSERT_EQ(link((tree_ / "a/x").c_str(), (tree_ / "a/sub/x-link").c_str()), 0);
  WriteFile(tree_ / "b/x", "in a twice and in b");
  WriteFile(tree_ / "b/only", "unique");
  Scan();
  std::string a = *CanonicalPath(tree_ / "a"), sub = *CanonicalPath(tree_ / "a/sub");
  auto count = [&](Index* idx, const std::vector<std::string>& roots) {
    std::vector<std::array<uint64_t, 3>> out;
    Status s = idx->ForEachDuplicateCountUnder(roots, 1, [&](uint64_t size, uint64_t here, uint64_t total) {
      out.push_back({size, here, total});
    });
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  };
  using Row = std::vector<std::array<uint64_t, 3>>;
  const uint64_t size = std::string("in a twice and in b").size();
  EXPECT_EQ(count(index_.get(), {a}), (Row{{size, 2, 3}})) << "a/x and its link are one inode";
  EXPECT_EQ(count(index_.get(), {a, sub}), (Row{{size, 2, 3}})) << "a/sub lies in a";
  EXPECT_EQ(count(index_.get(), {sub}), (Row{{size, 2, 3}})) << "x2 and the link to a/x";
  EXPECT_EQ(count(index_.get(), {*CanonicalPath(tree_ / "b")}), (Row{{size, 1, 3}}));
  EXPECT_EQ(count(index_.get(), {"/"}), (Row{{size, 3, 3}}));
  EXPECT_TRUE(count(index_.get(), {}).empty());
  auto ro = Index::Open(db_ / "index.db", Index::Mode::kReadOnly);
  ASSERT_TRUE(ro.ok()) << ro.status().ToString();
  EXPECT_EQ(count(ro->get(), {a, sub}), (Row{{size, 2, 3}}));
  auto listed = FindDuplicatesUnder(ro->get(), {a, sub}, 1);
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].inodes.size(), 3u);
}

// What lxc_hook_test met with lazy hashing (8 duplicates where hashing
// everything said 9), as a regression test: two copies of a tree indexed
// in separate scans as separate roots, and between the scans a service in
// the first copy appends to its log.  Lazy hashing recorded the first log
// by size and hashes it when the second copy's log of that size appears,
// as it is by then: different, so no duplicate.  Hashing everything keeps
// the first log's digest from before the append and reports a duplicate
// that no longer exists (only FindCurrentDuplicates drops it).  Lazy
// hashing was right; the test expected the stale answer.
TEST_F(ScannerTest, LazyHashingAcrossRootsSeesATwinAsItIsNow) {
  auto build = [](const TempDir& root) {
    WriteFile(root / "bin/tool", std::string(3000, 't'));
    WriteFile(root / "usr/lib/libx.so", std::string(5000, 'x'));
    WriteFile(root / "etc/app.conf", "setting=1\n");
    WriteFile(root / "var/log/app.log", "service log, line 1\n");
  };
  TempDir r1, r2;
  build(r1);
  build(r2);
  auto run = [](Index* index, const std::string& root, bool lazy) {
    ScanOptions o;
    o.racy_ns = 0;
    o.lazy = lazy;
    ScanStats st;
    Status s = ScanTree(index, root, o, &st);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return st;
  };
  TempDir d2;
  auto all = Index::Open(d2 / "all.db", Index::Mode::kReadWrite);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(run(index_.get(), r1.path(), true).deferred, 4u) << "every size unique within the first copy";
  EXPECT_EQ(run(all->get(), r1.path(), false).hashed, 4u);
  {
    std::ofstream log(r1 / "var/log/app.log", std::ios::app);
    log << "service log, line 2\n";
  }
  ScanStats second = run(index_.get(), r2.path(), true);
  EXPECT_EQ(second.hashed, 7u) << "the second copy's 3 files with a twin, and the first's 4 recorded by size";
  run(all->get(), r2.path(), false);
  auto lazy = FindDuplicates(index_.get(), 1);
  ASSERT_TRUE(lazy.ok());
  std::set<Digest> got;
  for (const auto& g : *lazy) got.insert(g.digest);
  EXPECT_EQ(got, (std::set<Digest>{VerityHasher::Of(std::string(3000, 't')), VerityHasher::Of(std::string(5000, 'x')),
                                   VerityHasher::Of("setting=1\n")}));
  auto p1 = index_->FindPath(*CanonicalPath(r1 / "var/log/app.log"));
  ASSERT_TRUE(p1.ok() && p1->has_value());
  EXPECT_EQ((*p1)->inode.digest, VerityHasher::Of("service log, line 1\nservice log, line 2\n"));
  // The second log, read for its fingerprint, matched nothing: not hashed.
  auto p2 = index_->FindPath(*CanonicalPath(r2 / "var/log/app.log"));
  ASSERT_TRUE(p2.ok() && p2->has_value());
  EXPECT_FALSE((*p2)->inode.hashed);
  auto stale = FindDuplicates(all->get(), 1);
  ASSERT_TRUE(stale.ok());
  EXPECT_EQ(stale->size(), 4u) << "hashing everything keeps the first log as it was";
  uint64_t dropped = 0;
  auto current = FindCurrentDuplicates(all->get(), 1, &dropped);
  ASSERT_TRUE(current.ok());
  EXPECT_EQ(current->size(), got.size());
  EXPECT_EQ(dropped, 1u);
}

// Batches are applied on a thread of their own while the scan goes on:
// with a batch of a few rows, many are being applied while later files
// look up their size twins, which must find the rows still in flight (as
// well as those committed) or a duplicate would be recorded as unique.
TEST_F(ScannerTest, LookupsSeeTheRowsOfBatchesBeingApplied) {
  TempDir r2;
  const int kFiles = 120;
  auto content = [](int i) {
    // Sizes distinct per i: small (hashed at once), over 8 KiB (partial
    // pass), over 32 KiB (byte comparison).
    size_t size = i % 3 == 0 ? 100 + i : i % 3 == 1 ? 9000 + i : 40000 + i;
    return std::string(size, static_cast<char>('a' + i % 26));
  };
  for (int i = 0; i < kFiles; i++) {
    WriteFile(tree_ / ("d" + std::to_string(i % 7) + "/f" + std::to_string(i)), content(i));
    WriteFile(r2 / ("g" + std::to_string(i)), content(i));
  }
  ScanOptions o;
  o.racy_ns = 0;
  o.batch_writes = 3;
  ScanStats first;
  ASSERT_TRUE(ScanTree(index_.get(), tree_.path(), o, &first).ok());
  EXPECT_EQ(first.deferred, static_cast<uint64_t>(kFiles));
  ScanStats second;
  ASSERT_TRUE(ScanTree(index_.get(), r2.path(), o, &second).ok());
  EXPECT_EQ(second.hashed, 2u * kFiles) << "every file of both trees has a twin";
  auto groups = FindDuplicates(index_.get(), 1);
  ASSERT_TRUE(groups.ok());
  EXPECT_EQ(groups->size(), static_cast<size_t>(kFiles));
  for (int i = 0; i < kFiles; i += 11)
    EXPECT_EQ(DigestOf("d" + std::to_string(i % 7) + "/f" + std::to_string(i)), VerityHasher::Of(content(i)));
  // Everything is committed when ScanTree returns: another connection sees it.
  auto other = Index::Open(index_->path(), Index::Mode::kReadOnly);
  ASSERT_TRUE(other.ok());
  auto n = (*other)->Count();
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->paths, 2u * kFiles);
  EXPECT_EQ(n->inodes, 2u * kFiles);
}

// A first scan into a new index answers its lookups from the rows it wrote
// itself, in memory, while nobody else writes.  Another client writing
// meanwhile ends that, and its rows are seen: here a row recorded by size
// alone, by another client, of a file the scan has a twin of.
TEST_F(ScannerTest, FirstScanSeesRowsAnotherClientWroteMeanwhile) {
  lazy_ = true;
  TempDir elsewhere;
  const std::string content(5000, 'z');
  WriteFile(elsewhere / "twin", content);
  for (int i = 0; i < 40; i++) WriteFile(tree_ / ("a" + std::to_string(100 + i)), std::string(100 + i, 'x'));
  WriteFile(tree_ / "z-twin", content);  // walked last, after 40 batches
  bool written = false;
  ScanOptions o;
  o.batch_writes = 1;
  // Called on the scan's thread at its first file: the index was new then.
  o.on_progress = [&](const ScanProgress&) {
    if (written) return;
    written = true;
    RecordBySizeElsewhere(elsewhere.path(), "twin");
  };
  ScanStats scanned = Scan(o);
  ASSERT_TRUE(written);
  EXPECT_EQ(scanned.hashed, 2u) << "the scan's file and the other client's twin";
  auto missing = index_->InodeIndexesMissing();
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(*missing) << "built when the scan stopped writing alone, or at its end";
  auto groups = FindDuplicates(index_.get(), 1);
  ASSERT_TRUE(groups.ok());
  ASSERT_EQ(groups->size(), 1u);
  EXPECT_EQ(groups->front().digest, VerityHasher::Of(content));
  EXPECT_EQ(groups->front().inodes.size(), 2u);
}

// While OwnRows answer a first scan's lookups, the overlays of the buffered
// rows are not kept; once another client writes, they are built from the
// buffered writes.  Twins walked 16 files apart: when the scan notices the
// other client (at a batch, some way into the walk), the rows of files
// whose twins come next are often buffered still, and every pair must be
// found.  Run a few times: where the walk is when the write is noticed varies.
TEST_F(ScannerTest, FirstScanGivingUpOwnRowsStillSeesItsBufferedRows) {
  const int kPairs = 600;
  for (int run = 0; run < 4; run++) {
    TempDir tree, elsewhere, db;
    auto idx = Index::Open(db / "i.db", Index::Mode::kReadWrite);
    ASSERT_TRUE(idx.ok());
    const std::string content(5000, 'z');
    WriteFile(elsewhere / "twin", content);
    for (int i = 0; i < kPairs; i++) {  // g1000/a1000 ... a1015, then b1000 ... b1015
      std::string g = "g" + std::to_string(1000 + i / 16) + "/", n = std::to_string(1000 + i);
      std::string c(100 + i, static_cast<char>('a' + i % 26));
      WriteFile(tree / (g + "a" + n), c);
      WriteFile(tree / (g + "b" + n), c);
    }
    bool written = false;
    ScanOptions o;
    o.racy_ns = 0;
    o.batch_writes = 1000;
    o.on_progress = [&](const ScanProgress&) {
      if (written) return;
      written = true;
      RecordBySizeElsewhere(elsewhere.path(), "twin", (*idx)->path());
    };
    ScanStats st;
    ASSERT_TRUE(ScanTree(idx->get(), tree.path(), o, &st).ok());
    ASSERT_TRUE(written);
    auto groups = FindDuplicates(idx->get(), 1);
    ASSERT_TRUE(groups.ok());
    EXPECT_EQ(groups->size(), static_cast<size_t>(kPairs)) << "run " << run;
    for (const auto& g : *groups) EXPECT_EQ(g.inodes.size(), 2u) << g.digest.ToString();
  }
}

// The scans of one run (a ScanSession) hand the rows in memory on from
// root to root, and the next root takes them only if the index still has
// exactly those inode rows: a row another client added in between is seen.
TEST_F(ScannerTest, NextRootOfARunSeesRowsAnotherClientAddedInBetween) {
  lazy_ = true;
  TempDir second, elsewhere;
  const std::string content(6000, 'q');
  WriteFile(tree_ / "a", "first root, unique size");
  WriteFile(tree_ / "b", std::string(7000, 'b'));
  WriteFile(second / "b-copy", std::string(7000, 'b'));
  WriteFile(second / "twin", content);
  WriteFile(elsewhere / "twin", content);
  ScanSession session;
  ScanOptions o;
  o.session = &session;
  Scan(o);
  ASSERT_NE(session.own, nullptr) << "the first root's rows are handed on";
  // Another client records a file by size alone, between the two roots.
  RecordBySizeElsewhere(elsewhere.path(), "twin");
  ScanStats st2;
  o.racy_ns = 0;
  ASSERT_TRUE(ScanTree(index_.get(), second.path(), o, &st2).ok());
  EXPECT_EQ(st2.hashed, 4u) << "both copies of b, and the twin here and the other client's";
  auto groups = FindDuplicates(index_.get(), 1);
  ASSERT_TRUE(groups.ok());
  EXPECT_EQ(groups->size(), 2u);
  // With nobody writing in between, the rows go on to the next root.
  TempDir third;
  WriteFile(third / "b-again", std::string(7000, 'b'));
  ScanStats st3;
  ASSERT_TRUE(ScanTree(index_.get(), third.path(), o, &st3).ok());
  EXPECT_EQ(st3.hashed, 1u);
  groups = FindDuplicates(index_.get(), 1);
  ASSERT_TRUE(groups.ok());
  ASSERT_EQ(groups->size(), 2u);
  EXPECT_EQ(groups->front().inodes.size(), 3u) << "b's three copies";
}

// A first scan into an empty index loads without the inode indexes (by
// digest, by size and fingerprint) and builds them once at its end; every
// other scan builds them if they are missing, as a first scan killed
// before its end leaves them.
TEST_F(ScannerTest, FirstScanBuildsTheInodeIndexesAtItsEnd) {
  lazy_ = true;
  for (int i = 0; i < 40; i++) WriteFile(tree_ / ("f" + std::to_string(i)), std::string(100 + i % 20, 'x'));
  std::optional<bool> missing_during;
  ScanOptions o;
  o.batch_writes = 1;
  // Called on the scan's thread at its first file, and at its end.
  o.on_progress = [&](const ScanProgress&) {
    if (missing_during) return;
    auto other = Index::Open(index_->path(), Index::Mode::kReadOnly);
    ASSERT_TRUE(other.ok());
    auto m = (*other)->InodeIndexesMissing();
    ASSERT_TRUE(m.ok());
    missing_during = *m;
  };
  ScanStats st = Scan(o);
  EXPECT_EQ(st.hashed, 40u);
  ASSERT_TRUE(missing_during.has_value());
  EXPECT_TRUE(*missing_during) << "left out while the first scan loads";
  auto m = index_->InodeIndexesMissing();
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE(*m) << "built at its end";
  // A rescan into a non-empty index keeps them.
  WriteFile(tree_ / "g", std::string(100, 'x'));
  Scan();
  m = index_->InodeIndexesMissing();
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE(*m);
  auto groups = FindDuplicates(index_.get(), 1);
  ASSERT_TRUE(groups.ok());
  EXPECT_EQ(groups->size(), 20u);
}

// The digest index holds hashed rows only; an index made with the digest
// index of every row (before it) lists the same duplicates, under roots too.
TEST_F(ScannerTest, DigestIndexOfHashedRowsOnlyListsWhatTheFullOneDid) {
  lazy_ = true;
  for (int i = 0; i < 30; i++) WriteFile(tree_ / ("f" + std::to_string(i)), std::string(100 + i % 3, 'a' + i % 3));
  Scan();
  auto sql = [&](const char* q) {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open(index_->path().c_str(), &db), SQLITE_OK);
    std::string out;
    sqlite3_stmt* st = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, q, -1, &st, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
    while (sqlite3_step(st) == SQLITE_ROW) {  // the last column (a plan's detail)
      const unsigned char* t = sqlite3_column_text(st, sqlite3_column_count(st) - 1);
      out += (t ? reinterpret_cast<const char*>(t) : "") + std::string("\n");
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return out;
  };
  EXPECT_NE(sql("SELECT sql FROM sqlite_master WHERE name='inodes_by_digest'").find("WHERE length(digest)=32"),
            std::string::npos);
  EXPECT_NE(sql("EXPLAIN QUERY PLAN SELECT count(*) FROM inodes x WHERE x.digest=x'00' AND length(x.digest)=32")
                .find("inodes_by_digest"),
            std::string::npos);
  auto now = FindDuplicates(index_.get(), 1);
  ASSERT_TRUE(now.ok());
  ASSERT_EQ(now->size(), 3u);
  std::vector<std::string> roots = {*CanonicalPath(tree_.path())};
  std::vector<std::string> under;
  ASSERT_TRUE(index_->ForEachDuplicateUnder(roots, 1, [&](const InodeRecord& r, const std::string& p) {
    under.push_back(r.digest.ToHex() + " " + p);
  }).ok());
  EXPECT_EQ(under.size(), 30u);
  sql("DROP INDEX inodes_by_digest");
  sql("CREATE INDEX inodes_by_digest ON inodes(digest)");
  auto before = FindDuplicates(index_.get(), 1);
  ASSERT_TRUE(before.ok());
  ASSERT_EQ(before->size(), now->size());
  for (size_t i = 0; i < now->size(); i++) EXPECT_EQ((*before)[i].digest, (*now)[i].digest);
  std::vector<std::string> under_before;
  ASSERT_TRUE(index_->ForEachDuplicateUnder(roots, 1, [&](const InodeRecord& r, const std::string& p) {
    under_before.push_back(r.digest.ToHex() + " " + p);
  }).ok());
  EXPECT_EQ(under_before, under);
}

TEST_F(ScannerTest, ScanRebuildsTheInodeIndexesAKilledFirstScanLeftOut) {
  lazy_ = true;
  TempDir elsewhere;
  WriteFile(elsewhere / "twin", std::string(5000, 'z'));
  WriteFile(tree_ / "twin", std::string(5000, 'z'));
  // What a first scan killed after its first batch leaves: rows, no indexes.
  ASSERT_TRUE(index_->Begin().ok());
  auto d = index_->DeferInodeIndexes();
  ASSERT_TRUE(d.ok() && *d);
  ASSERT_TRUE(index_->Commit().ok());
  RecordBySizeElsewhere(elsewhere.path(), "twin");
  auto m = index_->InodeIndexesMissing();
  ASSERT_TRUE(m.ok() && *m);
  // Readers see every row without them (slower, never wrong).
  ScanStats st = Scan();
  EXPECT_EQ(st.hashed, 2u) << "this tree's twin, and the other's recorded by size";
  m = index_->InodeIndexesMissing();
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE(*m) << "the next scan built them";
  auto groups = FindDuplicates(index_.get(), 1);
  ASSERT_TRUE(groups.ok());
  ASSERT_EQ(groups->size(), 1u);
  // An index with rows is never stripped of them.
  ASSERT_TRUE(index_->Begin().ok());
  d = index_->DeferInodeIndexes();
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(*d);
  ASSERT_TRUE(index_->Commit().ok());
}

// A first scan of several roots (one run, a ScanSession) builds the
// indexes when the run ends (ScanSession::Finish), or, if the run stops
// before, the next scan does.
TEST_F(ScannerTest, RunOfSeveralRootsBuildsTheInodeIndexesAtFinish) {
  lazy_ = true;
  TempDir second;
  WriteFile(tree_ / "a", std::string(7000, 'b'));
  WriteFile(second / "a-copy", std::string(7000, 'b'));
  ScanSession session;
  ScanOptions o;
  o.session = &session;
  Scan(o);
  ASSERT_NE(session.own, nullptr);
  auto m = index_->InodeIndexesMissing();
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(*m) << "the run goes on with its rows in memory";
  ScanStats st2;
  o.racy_ns = 0;
  ASSERT_TRUE(ScanTree(index_.get(), second.path(), o, &st2).ok());
  EXPECT_EQ(st2.hashed, 2u);
  ASSERT_TRUE(session.Finish(index_.get()).ok());
  m = index_->InodeIndexesMissing();
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE(*m);
  ASSERT_TRUE(session.Finish(index_.get()).ok()) << "twice is harmless";
}

}  // namespace
}  // namespace cid
