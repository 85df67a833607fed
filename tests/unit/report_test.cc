#include "cid/report.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace cid {
namespace {

class ReportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto idx = Index::Open(dir_ / "i.db", Index::Mode::kReadWrite);
    ASSERT_TRUE(idx.ok());
    index_ = std::move(*idx);
    r1_ = *index_->AddRoot("/t1");
    r2_ = *index_->AddRoot("/t2");
  }
  void Put(int64_t root, const std::string& path, uint64_t ino, uint64_t size, const std::string& content) {
    InodeRecord r;
    r.dev = 1;
    r.ino = ino;
    r.size = size;
    r.digest = Sha256::Of(content);
    ASSERT_TRUE(index_->PutInode(r).ok());
    ASSERT_TRUE(index_->PutPath(path, root, 1, ino).ok());
  }
  test::TempDir dir_;
  std::unique_ptr<Index> index_;
  int64_t r1_ = 0, r2_ = 0;
};

TEST_F(ReportTest, CountsPagesPerFileAndDuplicatesAcrossTrees) {
  // libc: 3 inodes (two trees; tree 1 holds it twice), 5000 bytes = 2 pages each.
  Put(r1_, "/t1/libc", 1, 5000, "libc");
  Put(r1_, "/t1/libc-copy", 2, 5000, "libc");
  Put(r2_, "/t2/libc", 3, 5000, "libc");
  Put(r2_, "/t2/libc-link", 3, 5000, "libc");  // hardlink: same inode
  // unique files.
  Put(r1_, "/t1/only1", 4, 1, "u1");
  Put(r2_, "/t2/only2", 5, 8192, "u2");
  auto rep = BuildReport(index_.get(), 4096);
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  const Summary& t = rep->total;
  EXPECT_EQ(t.files, 5u);
  EXPECT_EQ(t.bytes, 3 * 5000u + 1 + 8192);
  EXPECT_EQ(t.distinct_contents, 3u);
  EXPECT_EQ(t.duplicated_bytes, 2 * 5000u);
  EXPECT_EQ(t.cache_pages, 3 * 2u + 1 + 2);
  EXPECT_EQ(t.shared_cache_pages, 2u + 1 + 2);
  EXPECT_EQ(t.saved_pages(), 4u);

  ASSERT_EQ(rep->trees.size(), 2u);
  EXPECT_EQ(rep->trees[0].root.path, "/t1");
  EXPECT_EQ(rep->trees[0].within.files, 3u);
  EXPECT_EQ(rep->trees[0].within.duplicated_bytes, 5000u);
  EXPECT_EQ(rep->trees[0].within.saved_pages(), 2u);
  EXPECT_EQ(rep->trees[0].also_elsewhere_bytes, 2 * 5000u);
  EXPECT_EQ(rep->trees[1].within.files, 2u);
  EXPECT_EQ(rep->trees[1].within.duplicated_bytes, 0u);
  EXPECT_EQ(rep->trees[1].also_elsewhere_bytes, 5000u);
}

TEST_F(ReportTest, DuplicateGroupsExcludeHardlinksAndHonourMinSize) {
  Put(r1_, "/t1/big-a", 1, 1 << 20, "big");
  Put(r2_, "/t2/big-b", 2, 1 << 20, "big");
  Put(r2_, "/t2/big-b2", 2, 1 << 20, "big");  // hardlink of big-b
  Put(r1_, "/t1/small-a", 3, 10, "small");
  Put(r1_, "/t1/small-b", 4, 10, "small");
  Put(r1_, "/t1/solo", 5, 10, "solo");
  Put(r1_, "/t1/solo-link", 5, 10, "solo");
  auto all = FindDuplicates(index_.get(), 1);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].digest, Sha256::Of("big"));  // largest first
  EXPECT_EQ((*all)[0].inodes.size(), 2u);
  EXPECT_EQ((*all)[0].duplicated_bytes(), 1u << 20);
  EXPECT_EQ((*all)[0].inodes[1].paths, (std::vector<std::string>{"/t2/big-b", "/t2/big-b2"}));
  auto big = FindDuplicates(index_.get(), 1 << 20);
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(big->size(), 1u);
}

}  // namespace
}  // namespace cid
