// Byte comparison instead of hashing (HashRequest::twin,
// ScanOptions::compare_min): a file equal byte for byte to an inode with a
// current digest is given that digest; any difference, or a twin that is
// not the version its row describes, has the file hashed on its own.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>

#include "cid/hasher.h"
#include "cid/report.h"
#include "cid/safe_open.h"
#include "cid/scanner.h"
#include "cid/verity.h"
#include "cid/walker.h"
#include "test_util.h"

namespace cid {
namespace {

using test::RandomBytes;
using test::TempDir;
using test::WriteFile;

FileStat StatOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(lstat(path.c_str(), &st), 0) << path;
  return FileStat::From(st);
}

// A digest no file has: proof that an outcome's digest came from the twin.
Digest Marker() {
  Digest d;
  d.bytes.fill(0xab);
  return d;
}

class CompareHasherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dfd_ = OpenRootDir(*CanonicalPath(dir_.path()));
    ASSERT_GE(dfd_, 0);
  }
  void TearDown() override { close(dfd_); }

  HashRequest Request(const std::string& file, const std::string& twin, const Digest& twin_digest) {
    HashRequest r{dir_ / file, StatOf(dir_ / file), 0};
    r.dir_fd = dfd_;
    r.rel = file;
    HashRequest::Twin t;
    t.dir_fd = dfd_;
    t.rel = twin;
    t.path = dir_ / twin;
    t.st = StatOf(dir_ / twin);
    t.digest = twin_digest;
    r.twin = t;
    return r;
  }
  // Runs one request through a hasher whose engine calls hook before
  // each completion.
  HashOutcome Run(HashRequest req, std::function<void(int, ReadCompletion*)> hook = [](int, ReadCompletion*) {}) {
    HasherOptions o;
    o.buffer_size = 64 << 10;  // several reads per file, so a hook can act between them
    FileHasher h(test::NewHookedEngine(NewPreadEngine(4), hook), o);
    bool given = false;
    HashOutcome out;
    h.Run(
        [&](HashRequest* r, bool) {
          if (given) return false;
          given = true;
          *r = req;
          return true;
        },
        [&](HashOutcome&& o) { out = std::move(o); });
    return out;
  }

  // A hook that writes `bytes` at `off` of `path` before the first read
  // completes, late enough for its times to move even on coarse clocks.
  static std::function<void(int, ReadCompletion*)> WriteAtFirstRead(std::string path, off_t off, std::string bytes) {
    return [path, off, bytes, done = false](int, ReadCompletion*) mutable {
      if (done) return;
      done = true;
      usleep(20000);
      int fd = open(path.c_str(), O_WRONLY);
      ASSERT_GE(fd, 0);
      ASSERT_EQ(pwrite(fd, bytes.data(), bytes.size(), off), static_cast<ssize_t>(bytes.size()));
      close(fd);
    };
  }

  TempDir dir_;
  int dfd_ = -1;
};

TEST_F(CompareHasherTest, EqualBytesGetTheTwinsDigestWithoutHashing) {
  std::string data = RandomBytes(300000, 1);
  WriteFile(dir_ / "a", data);
  WriteFile(dir_ / "b", data);
  HashOutcome o = Run(Request("b", "a", Marker()));
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  EXPECT_TRUE(o.compared);
  EXPECT_EQ(o.digest, Marker()) << "the twin's digest, taken as it is";
  EXPECT_EQ(o.partial, PartialFingerprintOf(data.data(), data.size()));
}

TEST_F(CompareHasherTest, AByteDifferingInTheMiddleHasTheFileHashedOnItsOwn) {
  std::string a = RandomBytes(300000, 2), b = a;
  b[150001] ^= 1;
  WriteFile(dir_ / "a", a);
  WriteFile(dir_ / "b", b);
  HashOutcome o = Run(Request("b", "a", Marker()));
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  EXPECT_FALSE(o.compared);
  EXPECT_EQ(o.digest, VerityHasher::Of(b));
  EXPECT_EQ(o.partial, PartialFingerprintOf(b.data(), b.size()));
}

TEST_F(CompareHasherTest, ATwinThatIsNotTheVersionItsRowDescribesIsNotUsed) {
  std::string data = RandomBytes(100000, 3);
  WriteFile(dir_ / "a", data);
  WriteFile(dir_ / "b", data);
  HashRequest r = Request("b", "a", Marker());
  r.twin->st.mtime_ns -= 1000000000;  // the row is of an older version
  HashOutcome o = Run(r);
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  EXPECT_FALSE(o.compared);
  EXPECT_EQ(o.digest, VerityHasher::Of(data));
  // A twin that is gone, or of another size, the same.
  r = Request("b", "a", Marker());
  r.twin->rel = "missing";
  o = Run(r);
  EXPECT_FALSE(o.compared);
  EXPECT_EQ(o.digest, VerityHasher::Of(data));
}

// The twin is rewritten (same size, same bytes up to where the comparison
// got) after the comparison began: its stat moved, so its digest is not
// given; the file is hashed on its own.
TEST_F(CompareHasherTest, ATwinChangingDuringTheComparisonIsNotTrusted) {
  std::string data = RandomBytes(300000, 4);
  WriteFile(dir_ / "a", data);
  WriteFile(dir_ / "b", data);
  // The same bytes: only the times move.
  HashOutcome o = Run(Request("b", "a", Marker()), WriteAtFirstRead(dir_ / "a", 0, data.substr(0, 10)));
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  EXPECT_FALSE(o.compared);
  EXPECT_EQ(o.digest, VerityHasher::Of(data)) << "hashed from its own bytes";
}

// The file itself changes during the comparison: not recorded at all, as
// when it changes while hashed.
TEST_F(CompareHasherTest, AFileChangingDuringTheComparisonIsNotRecorded) {
  std::string data = RandomBytes(300000, 5);
  WriteFile(dir_ / "a", data);
  WriteFile(dir_ / "b", data);
  HashOutcome o = Run(Request("b", "a", Marker()), WriteAtFirstRead(dir_ / "b", 200000, "x"));
  EXPECT_TRUE(o.status.IsChanged()) << o.status.ToString();
  EXPECT_FALSE(o.compared);
}

class CompareScanTest : public ::testing::Test {
 protected:
  ScanStats Scan(Index* index, const std::string& root, uint64_t compare_min) {
    ScanOptions o;
    o.racy_ns = 0;  // the files are microseconds old: not racy for these tests
    o.compare_min = compare_min;
    o.on_error = [](const Status& s) { ADD_FAILURE() << s.ToString(); };
    ScanStats st;
    Status s = ScanTree(index, root, o, &st);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return st;
  }
  static std::unique_ptr<Index> Open(const std::string& path) {
    auto idx = Index::Open(path, Index::Mode::kReadWrite);
    EXPECT_TRUE(idx.ok()) << idx.status().ToString();
    return idx.ok() ? std::move(*idx) : nullptr;
  }
  // Every indexed path's digest (hashed rows only).
  static std::map<std::string, Digest> Digests(Index* index) {
    std::map<std::string, Digest> out;
    auto g = FindDuplicates(index, 1);
    EXPECT_TRUE(g.ok());
    for (const auto& grp : *g)
      for (const auto& in : grp.inodes)
        for (const auto& p : in.paths) out[p] = grp.digest;
    return out;
  }
};

// Three trees of the same files, some of which differ from their twins in
// the middle (same size, head and tail): the comparing scan finds the same
// digests for every file as one that hashes every file, and each is the
// digest of the file's own bytes.
TEST_F(CompareScanTest, SameDigestsAsHashingEveryFile) {
  TempDir t1, t2, t3, db;
  std::map<std::string, std::string> content;  // path -> bytes
  for (int i = 0; i < 12; i++) {
    std::string base = RandomBytes(40000 + static_cast<size_t>(i) * 5000, static_cast<unsigned>(i) + 10);
    for (int t = 0; t < 3; t++) {
      std::string v = base;
      if (i % 3 == 1 && t == 1) v[v.size() / 2] ^= 0x40;  // the middle copy differs in the middle
      if (i % 3 == 2 && t == 2) v[v.size() / 3] ^= 0x01;  // the last one does
      const TempDir& dir = t == 0 ? t1 : t == 1 ? t2 : t3;
      std::string p = dir / ("f" + std::to_string(i));
      WriteFile(p, v);
      content[*CanonicalPath(p)] = v;
    }
  }
  auto cmp = Open(db / "cmp.db");
  auto all = Open(db / "all.db");
  ScanStats s1 = Scan(cmp.get(), t1.path(), 32 << 10);
  ScanStats s2 = Scan(cmp.get(), t2.path(), 32 << 10);
  ScanStats s3 = Scan(cmp.get(), t3.path(), 32 << 10);
  for (const TempDir* t : {&t1, &t2, &t3}) Scan(all.get(), t->path(), 0);
  EXPECT_EQ(s1.compared, 0u) << "nothing to compare with yet";
  EXPECT_EQ(s2.compared, 8u) << "of each equal pair one is hashed, the other compared with it";
  // The third copies: compared with a hashed twin; where the first two
  // differ, the one picked may be the other content, and then it is hashed.
  EXPECT_GE(s3.compared, 4u);
  EXPECT_LE(s3.compared, 8u);
  auto want = Digests(all.get());
  EXPECT_EQ(Digests(cmp.get()), want);
  for (const auto& [path, d] : want) EXPECT_EQ(d, VerityHasher::Of(content[path])) << path;
  auto groups = FindDuplicates(cmp.get(), 1);
  ASSERT_TRUE(groups.ok());
  EXPECT_EQ(groups->size(), 12u);
}

// Below compare_min, or with it 0, nothing is compared.
TEST_F(CompareScanTest, SmallFilesAndCompareOffAreHashed) {
  TempDir t1, t2, db;
  std::string small = RandomBytes(20000, 1), big = RandomBytes(70000, 2);
  for (const TempDir* t : {&t1, &t2}) {
    WriteFile(*t / "small", small);
    WriteFile(*t / "big", big);
  }
  auto idx = Open(db / "i.db");
  Scan(idx.get(), t1.path(), 32 << 10);
  ScanStats s = Scan(idx.get(), t2.path(), 32 << 10);
  EXPECT_EQ(s.compared, 1u) << "only the big one";
  EXPECT_EQ(s.compared_bytes, big.size());
  TempDir t3;
  WriteFile(t3 / "big", big);
  s = Scan(idx.get(), t3.path(), 0);
  EXPECT_EQ(s.compared, 0u);
  EXPECT_EQ(s.hashed, 1u);
  auto groups = FindDuplicates(idx.get(), 1);
  ASSERT_TRUE(groups.ok());
  ASSERT_EQ(groups->size(), 2u);
  for (const auto& g : *groups)
    EXPECT_EQ(g.digest, VerityHasher::Of(g.size == big.size() ? big : small));
}

}  // namespace
}  // namespace cid
