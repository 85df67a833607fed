// The partial pass: same-size files split by their first and last 4 KiB
// before any is hashed whole (cid/partial.h, ScanOptions::lazy).
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <map>
#include <set>

#include "cid/hasher.h"
#include "cid/partial.h"
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

TEST(PartialEdgesTest, CoversHeadAndTailInAnySplit) {
  for (size_t size : {size_t{0}, size_t{1}, size_t{4096}, size_t{8192}, size_t{8193}, size_t{50000}}) {
    std::string data = RandomBytes(size, static_cast<unsigned>(size) + 1);
    uint64_t whole = PartialFingerprintOf(data.data(), size);
    for (size_t piece : {size_t{1}, size_t{100}, size_t{4095}, size_t{65536}}) {
      PartialEdges e;
      e.Reset(size);
      for (size_t off = 0; off < size; off += piece) e.Add(off, data.data() + off, std::min(piece, size - off));
      EXPECT_EQ(e.Fingerprint(), whole) << size << " in pieces of " << piece;
    }
    if (size > kPartialWhole) {
      std::string middle = data;
      middle[size / 2] ^= 1;  // outside both edges
      EXPECT_EQ(PartialFingerprintOf(middle.data(), size), whole);
      std::string head = data;
      head[0] ^= 1;
      EXPECT_NE(PartialFingerprintOf(head.data(), size), whole);
      std::string tail = data;
      tail[size - 1] ^= 1;
      EXPECT_NE(PartialFingerprintOf(tail.data(), size), whole);
    } else if (size > 0) {
      std::string any = data;
      any[size / 2] ^= 1;  // a small file is covered whole
      EXPECT_NE(PartialFingerprintOf(any.data(), size), whole);
    }
  }
}

TEST(PartialHasherTest, PartialOnlyReadsTheEdgesAndGivesNoDigest) {
  TempDir dir;
  std::string big = RandomBytes(300000, 7), small = RandomBytes(5000, 8);
  WriteFile(dir / "big", big);
  WriteFile(dir / "small", small);
  unsigned reads = 0;
  uint64_t bytes = 0;
  auto engine = test::NewHookedEngine(NewPreadEngine(4), [&](int, ReadCompletion* c) {
    reads++;
    if (c->res > 0) bytes += static_cast<uint64_t>(c->res);
  });
  FileHasher h(std::move(engine), HasherOptions{});
  int dfd = OpenRootDir(*CanonicalPath(dir.path()));
  ASSERT_GE(dfd, 0);
  std::vector<HashOutcome> outs;
  std::vector<HashRequest> reqs;
  for (const char* name : {"big", "small"}) {
    HashRequest r{dir / name, FileStat{}, 0};
    r.dir_fd = dfd;
    r.rel = name;
    r.partial_only = true;
    reqs.push_back(r);
  }
  size_t next = 0;
  h.Run(
      [&](HashRequest* r, bool) {
        if (next == reqs.size()) return false;
        *r = reqs[next++];
        return true;
      },
      [&](HashOutcome&& o) { outs.push_back(std::move(o)); });
  close(dfd);
  ASSERT_EQ(outs.size(), 2u);
  std::map<std::string, HashOutcome*> by;
  for (auto& o : outs) by[o.path] = &o;
  HashOutcome& b = *by[dir / "big"];
  ASSERT_TRUE(b.status.ok()) << b.status.ToString();
  EXPECT_TRUE(b.partial_only);
  EXPECT_EQ(b.partial, PartialFingerprintOf(big.data(), big.size()));
  HashOutcome& s = *by[dir / "small"];
  ASSERT_TRUE(s.status.ok()) << s.status.ToString();
  EXPECT_FALSE(s.partial_only) << "a file the pass would read whole is hashed whole";
  EXPECT_EQ(s.digest, VerityHasher::Of(small));
  EXPECT_EQ(s.partial, PartialFingerprintOf(small.data(), small.size()));
  EXPECT_EQ(bytes, 2 * kPartialBlock + small.size()) << "only the big file's edges were read";
}

TEST(SeenFingerprintsTest, SaysSeenForEveryPairSetBefore) {
  SeenFingerprints seen;
  auto pair = [](uint64_t i) { return std::make_pair(100 + i % 7000, i * 0x2545f4914f6cdd1dull); };
  EXPECT_FALSE(seen.TestAndSet(pair(0).first, pair(0).second)) << "an empty table has seen nothing";
  unsigned false_seen = 0;
  for (uint64_t i = 1; i < 20000; i++) false_seen += seen.TestAndSet(pair(i).first, pair(i).second);
  for (uint64_t i = 0; i < 20000; i++) EXPECT_TRUE(seen.TestAndSet(pair(i).first, pair(i).second)) << i;
  for (uint64_t i = 20000; i < 40000; i++) false_seen += seen.TestAndSet(pair(i).first, pair(i).second);
  EXPECT_LT(false_seen, 100u) << "a hint that is mostly right: about 1 in 800 with 20,000 pairs set";
}

// With HasherOptions::seen, a partial request for a small file is a
// probe: read whole once, fingerprinted, and hashed from that read only if
// its (size, fingerprint) was taken before; the first of two twins is not.
TEST(PartialHasherTest, SmallFileIsHashedInItsProbeOnlyIfItsFingerprintWasSeen) {
  for (uint64_t map_min : {uint64_t{0}, uint64_t{1}}) {  // 1: a mapping for every file that may have one
    SCOPED_TRACE("map_min_size " + std::to_string(map_min));
    TempDir dir;
    std::string a = RandomBytes(3000, 1), other = RandomBytes(3000, 2);
    WriteFile(dir / "a1", a);
    WriteFile(dir / "a2", a);
    WriteFile(dir / "other", other);
    WriteFile(dir / "a3", a);
    unsigned reads = 0;
    auto engine = test::NewHookedEngine(NewPreadEngine(4), [&](int, ReadCompletion*) { reads++; });
    SeenFingerprints seen;
    HasherOptions ho;
    ho.seen = &seen;
    ho.files_in_flight = 1;  // in order: a1 is probed before a2
    ho.map_min_size = map_min;
    FileHasher h(std::move(engine), ho);
    int dfd = OpenRootDir(*CanonicalPath(dir.path()));
    ASSERT_GE(dfd, 0);
    std::vector<HashOutcome> outs;
    std::vector<std::string> names = {"a1", "a2", "other", "a3"};
    size_t next = 0;
    h.Run(
        [&](HashRequest* r, bool) {
          if (next == names.size()) return false;
          *r = HashRequest{dir / names[next], FileStat{}, 0};
          r->dir_fd = dfd;
          r->rel = names[next++];
          r->partial_only = true;
          return true;
        },
        [&](HashOutcome&& o) { outs.push_back(std::move(o)); });
    close(dfd);
    ASSERT_EQ(outs.size(), 4u);
    for (const auto& o : outs) {
      ASSERT_TRUE(o.status.ok()) << o.status.ToString();
      EXPECT_EQ(o.partial, PartialFingerprintOf(o.path.back() == 'r' ? other.data() : a.data(), 3000)) << o.path;
    }
    EXPECT_TRUE(outs[0].partial_only) << "a1: nothing of its fingerprint seen before, not hashed";
    EXPECT_EQ(outs[0].digest, Digest{});
    EXPECT_FALSE(outs[1].partial_only) << "a2: a1's fingerprint seen, hashed from the probe's read";
    EXPECT_EQ(outs[1].digest, VerityHasher::Of(a));
    EXPECT_TRUE(outs[2].partial_only) << "other: same size, another fingerprint";
    EXPECT_FALSE(outs[3].partial_only);
    EXPECT_EQ(outs[3].digest, VerityHasher::Of(a));
    EXPECT_EQ(reads, 4u) << "one read each";
  }
}

class PartialScanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto idx = Index::Open(db_ / "index.db", Index::Mode::kReadWrite);
    ASSERT_TRUE(idx.ok()) << idx.status().ToString();
    index_ = std::move(*idx);
  }
  ScanStats Scan(const std::string& root, bool lazy = true, Index* index = nullptr) {
    ScanOptions o;
    o.racy_ns = 0;  // the files are microseconds old: not racy for these tests
    o.lazy = lazy;
    o.on_error = [](const Status& s) { ADD_FAILURE() << s.ToString(); };
    ScanStats st;
    Status s = ScanTree(index ? index : index_.get(), root, o, &st);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return st;
  }
  InodeRecord Row(const std::string& path) {
    auto p = index_->FindPath(*CanonicalPath(path));
    EXPECT_TRUE(p.ok() && p->has_value()) << path;
    if (!p.ok() || !p->has_value()) return {};
    // FindPath leaves the fingerprint out; the size lookup has it.
    auto rows = index_->FindInodesOfSize((*p)->inode.size, 1000);
    EXPECT_TRUE(rows.ok());
    for (const auto& r : *rows)
      if (r.dev == (*p)->inode.dev && r.ino == (*p)->inode.ino) return r;
    ADD_FAILURE() << path << " not found by size";
    return {};
  }
  // Groups as sets of sorted path lists, to compare two indexes.
  static std::set<std::vector<std::string>> Groups(Index* index) {
    auto g = FindDuplicates(index, 1);
    EXPECT_TRUE(g.ok());
    std::set<std::vector<std::string>> out;
    for (const auto& grp : *g) {
      std::vector<std::string> paths;
      for (const auto& in : grp.inodes) paths.insert(paths.end(), in.paths.begin(), in.paths.end());
      std::sort(paths.begin(), paths.end());
      out.insert(paths);
    }
    return out;
  }

  TempDir tree_, db_;
  std::unique_ptr<Index> index_;
};

// Same size, different first 4 KiB: fingerprinted, never hashed whole,
// recorded with the fingerprint; a later twin of one of them gets exactly
// that one hashed, and a rescan takes no fingerprint again.
TEST_F(PartialScanTest, SameSizeGroupIsSplitByThePartialPass) {
  const size_t n = 20000;
  std::string a = RandomBytes(n, 1), b = RandomBytes(n, 2), c = RandomBytes(n, 3);
  WriteFile(tree_ / "a", a);
  WriteFile(tree_ / "b", b);
  WriteFile(tree_ / "c", c);
  ScanStats st = Scan(tree_.path());
  EXPECT_EQ(st.hashed, 0u) << "no two share their first and last 4 KiB";
  EXPECT_EQ(st.fingerprinted, 3u);
  EXPECT_EQ(st.partial_unique, 3u);
  for (const char* f : {"a", "b", "c"}) {
    InodeRecord r = Row(tree_ / f);
    EXPECT_FALSE(r.hashed) << f;
    EXPECT_TRUE(r.has_partial) << f;
  }
  EXPECT_EQ(Row(tree_ / "b").partial, PartialFingerprintOf(b.data(), n));
  EXPECT_TRUE(FindDuplicates(index_.get(), 1)->empty());

  ScanStats again = Scan(tree_.path());
  EXPECT_EQ(again.fingerprinted, 0u) << "the fingerprints are in the index";
  EXPECT_EQ(again.hashed, 0u);
  EXPECT_EQ(again.unchanged, 3u);

  TempDir other;
  WriteFile(other / "copy-of-b", b);
  ScanStats o = Scan(other.path());
  EXPECT_EQ(o.fingerprinted, 1u) << "only the new file's fingerprint is taken";
  EXPECT_EQ(o.hashed, 2u) << "the new file and b, whose fingerprint it shares";
  EXPECT_TRUE(Row(tree_ / "b").hashed);
  EXPECT_FALSE(Row(tree_ / "a").hashed);
  EXPECT_FALSE(Row(tree_ / "c").hashed);
  auto groups = FindDuplicates(index_.get(), 1);
  ASSERT_TRUE(groups.ok());
  ASSERT_EQ(groups->size(), 1u);
  EXPECT_EQ(groups->front().digest, VerityHasher::Of(b));
  EXPECT_EQ(groups->front().inodes.size(), 2u);
}

// Same size, same first and last 4 KiB, different in the middle: the
// fingerprints agree, so both are hashed whole, and they are no duplicates.
TEST_F(PartialScanTest, MatchingFingerprintsDifferingLaterAreHashedAndKeptApart) {
  std::string x = RandomBytes(3 * 4096 + 100, 4), y = x;
  y[6000] ^= 0x55;
  WriteFile(tree_ / "x", x);
  WriteFile(tree_ / "y", y);
  ScanStats st = Scan(tree_.path());
  EXPECT_EQ(st.fingerprinted, 2u);
  EXPECT_EQ(st.hashed, 2u);
  EXPECT_EQ(Row(tree_ / "x").digest, VerityHasher::Of(x));
  EXPECT_EQ(Row(tree_ / "y").digest, VerityHasher::Of(y));
  EXPECT_EQ(Row(tree_ / "x").partial, Row(tree_ / "y").partial);
  EXPECT_TRUE(FindDuplicates(index_.get(), 1)->empty());
}

// A multiply-linked inode is fingerprinted and hashed once, however many
// names it has, and its names group as one inode.
TEST_F(PartialScanTest, HardlinksAreFingerprintedAndHashedOnce) {
  std::string h = RandomBytes(30000, 5), other = RandomBytes(30000, 6);
  WriteFile(tree_ / "h1", h);
  ASSERT_EQ(link((tree_ / "h1").c_str(), (tree_ / "h2").c_str()), 0);
  ASSERT_EQ(link((tree_ / "h1").c_str(), (tree_ / "h3").c_str()), 0);
  WriteFile(tree_ / "other", other);
  ScanStats st = Scan(tree_.path());
  EXPECT_EQ(st.inodes, 2u);
  EXPECT_EQ(st.hardlinks, 2u);
  EXPECT_EQ(st.fingerprinted, 2u) << "one per inode";
  EXPECT_EQ(st.hashed, 0u);
  WriteFile(tree_ / "z-copy", h);
  st = Scan(tree_.path());
  EXPECT_EQ(st.fingerprinted, 1u);
  EXPECT_EQ(st.hashed, 2u) << "the copy and the linked inode, once";
  auto groups = FindDuplicates(index_.get(), 1);
  ASSERT_TRUE(groups.ok());
  ASSERT_EQ(groups->size(), 1u);
  ASSERT_EQ(groups->front().inodes.size(), 2u);
  size_t names = 0;
  for (const auto& in : groups->front().inodes) names += in.paths.size();
  EXPECT_EQ(names, 4u);
}

// Files that share a head, a tail, both, or everything, in several trees:
// the lazy scan with its partial pass finds exactly the groups that hashing
// every file finds.
TEST_F(PartialScanTest, SameGroupsAsHashingEverything) {
  TempDir t2;
  std::string base = RandomBytes(40000, 9);
  for (int i = 0; i < 24; i++) {
    std::string v = base;
    if (i % 4 == 1) v[0] ^= static_cast<char>(i);                 // head differs
    if (i % 4 == 2) v[v.size() - 1] ^= static_cast<char>(i);      // tail differs
    if (i % 4 == 3) v[20000] ^= static_cast<char>(i % 8 + 1);     // middle differs (some alike)
    const TempDir& t = i % 2 ? t2 : tree_;
    WriteFile(t / ("f" + std::to_string(i)), v);
    WriteFile(t / ("s" + std::to_string(i)), RandomBytes(9000 + static_cast<size_t>(i % 3), static_cast<unsigned>(i % 5)));
  }
  Scan(tree_.path());
  Scan(t2.path());
  TempDir db2;
  auto all = Index::Open(db2 / "i.db", Index::Mode::kReadWrite);
  ASSERT_TRUE(all.ok());
  Scan(tree_.path(), false, all->get());
  Scan(t2.path(), false, all->get());
  auto want = Groups(all->get());
  EXPECT_FALSE(want.empty());
  EXPECT_EQ(Groups(index_.get()), want);
}

// An index made before the fingerprint column: readers use it as it is, the
// first writer adds the column, and its rows count as "not known".
// Small files of a few sizes, many of them twins, in an order that has
// probes of twins racing on both hashing threads (HashRequest::partial_only):
// a run of several roots (its first root hashes small files at once), one
// root at a time (every small file probed), and a root scanned again after
// new twins came, all find the groups hashing everything finds.
TEST_F(PartialScanTest, ProbedSmallFilesGiveTheSameGroupsAsHashingEverything) {
  TempDir t2, t3;
  std::vector<std::string> contents;
  for (int c = 0; c < 40; c++) contents.push_back(RandomBytes(100 + static_cast<size_t>(c % 4) * 3000, 100 + c));
  unsigned seed = 1;
  auto pick = [&] {
    seed = seed * 1103515245 + 12345;
    return (seed >> 16) % contents.size();
  };
  for (int i = 0; i < 150; i++) {
    const TempDir& t = i % 3 == 0 ? tree_ : i % 3 == 1 ? t2 : t3;
    WriteFile(t / ("d" + std::to_string(i % 5) + "/f" + std::to_string(i)), contents[pick()]);
  }
  TempDir db2, db3, db4;
  auto all = Index::Open(db2 / "i.db", Index::Mode::kReadWrite);
  ASSERT_TRUE(all.ok());
  for (const TempDir* t : {&tree_, &t2, &t3}) Scan(t->path(), false, all->get());
  auto want = Groups(all->get());
  ASSERT_GE(want.size(), 20u);

  // One root at a time, into the fixture's index.
  for (const TempDir* t : {&tree_, &t2, &t3}) Scan(t->path());
  EXPECT_EQ(Groups(index_.get()), want) << "one root at a time";

  // One run of three roots.
  auto run = Index::Open(db3 / "i.db", Index::Mode::kReadWrite);
  ASSERT_TRUE(run.ok());
  ScanSession session;
  session.roots = 3;
  for (const TempDir* t : {&tree_, &t2, &t3}) {
    ScanOptions o;
    o.racy_ns = 0;
    o.session = &session;
    ScanStats st;
    ASSERT_TRUE(ScanTree(run->get(), t->path(), o, &st).ok());
  }
  ASSERT_TRUE(session.Finish(run->get()).ok());
  EXPECT_EQ(Groups(run->get()), want) << "one run of three roots";

  // A root alone, then twins of its files elsewhere.
  auto later = Index::Open(db4 / "i.db", Index::Mode::kReadWrite);
  ASSERT_TRUE(later.ok());
  Scan(t3.path(), true, later->get());
  Scan(tree_.path(), true, later->get());
  Scan(t2.path(), true, later->get());
  EXPECT_EQ(Groups(later->get()), want) << "in another order";
}

TEST_F(PartialScanTest, IndexWithoutTheColumnGetsItFromAWriter) {
  WriteFile(tree_ / "a", RandomBytes(20000, 1));
  WriteFile(tree_ / "b", RandomBytes(20000, 2));
  Scan(tree_.path(), false);
  index_.reset();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((db_ / "index.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "DROP INDEX inodes_by_size_partial; ALTER TABLE inodes DROP COLUMN partial;"
                         "CREATE INDEX inodes_by_size ON inodes(size);",
                         nullptr, nullptr, nullptr),
            SQLITE_OK)
      << sqlite3_errmsg(db);
  sqlite3_close(db);
  {
    auto ro = Index::Open(db_ / "index.db", Index::Mode::kReadOnly);
    ASSERT_TRUE(ro.ok()) << ro.status().ToString();
    auto p = (*ro)->FindPath(*CanonicalPath(tree_ / "a"));
    ASSERT_TRUE(p.ok() && p->has_value()) << p.status().ToString();
    EXPECT_TRUE((*p)->inode.hashed);
  }
  auto rw = Index::Open(db_ / "index.db", Index::Mode::kReadWrite);
  ASSERT_TRUE(rw.ok()) << rw.status().ToString();
  index_ = std::move(*rw);
  EXPECT_FALSE(Row(tree_ / "a").has_partial);
  TempDir other;
  WriteFile(other / "c", RandomBytes(20000, 3));
  ScanStats st = Scan(other.path());
  EXPECT_EQ(st.hashed, 1u) << "a twin of unknown fingerprint may match: hashed";
  EXPECT_TRUE(FindDuplicates(index_.get(), 1)->empty());
}

}  // namespace
}  // namespace cid
