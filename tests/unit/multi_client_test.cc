// The index for several clients: while one scan hashes a large, slow file,
// a second scan (another connection, as cidd and a hook would be) and a
// reader get through without waiting for it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "cid/index.h"
#include "cid/report.h"
#include "cid/scanner.h"
#include "test_util.h"

namespace cid {
namespace {

using test::TempDir;
using test::WriteFile;

TEST(MultiClientTest, ScanHashingALargeFileDoesNotHoldTheIndex) {
  TempDir slow_tree, other_tree, db;
  // The slow scan has small files to record first (opening a write
  // transaction) and then a large file whose reads wait until the others
  // are done (or 20 s), as an 8 GiB file on a slow disk would.
  for (int i = 0; i < 20; i++) WriteFile(slow_tree / ("small" + std::to_string(i)), "small " + std::to_string(i));
  WriteFile(slow_tree / "zz-large", std::string(4 << 20, 'L'));
  for (int i = 0; i < 20; i++) WriteFile(other_tree / ("f" + std::to_string(i)), "other " + std::to_string(i));
  std::string path = db / "index.db";

  std::atomic<bool> others_done{false}, large_started{false};
  Status slow_status;
  ScanStats slow_stats;
  std::thread slow([&] {
    auto index = Index::Open(path, Index::Mode::kReadWrite);
    ASSERT_TRUE(index.ok()) << index.status().ToString();
    ScanOptions o;
    o.workers = 1;
    o.lazy = false;  // every file is read
    o.racy_ns = 0;
    o.hasher.buffer_size = 64 << 10;
    o.engine = [&] {
      return test::NewHookedEngine(NewPreadEngine(4), [&](int, ReadCompletion* c) {
        if (c->res != 64 << 10) return;  // only the large file's reads are slow
        large_started = true;
        for (int i = 0; i < 2000 && !others_done; i++) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      });
    };
    slow_status = ScanTree(index->get(), slow_tree.path(), o, &slow_stats);
  });
  while (!large_started) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // let the slow scan sit in its wait

  IndexOptions short_wait;
  short_wait.busy_timeout_ms = 1000;  // well below the slow file's 20 s
  auto second = Index::Open(path, Index::Mode::kReadWrite, short_wait);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  ScanOptions o;
  o.racy_ns = 0;
  o.lazy = false;
  ScanStats st;
  Status s = ScanTree(second->get(), other_tree.path(), o, &st);
  EXPECT_TRUE(s.ok()) << "a second scan could not write while the first hashed a large file: " << s.ToString();
  EXPECT_EQ(st.hashed, 20u);

  auto reader = Index::Open(path, Index::Mode::kReadOnly, short_wait);
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  auto small = (*reader)->FindPath(slow_tree / "small3");
  ASSERT_TRUE(small.ok()) << small.status().ToString();
  EXPECT_TRUE(small->has_value()) << "the slow scan's finished files were not committed before its wait";
  auto groups = FindDuplicates(reader->get(), 1);
  EXPECT_TRUE(groups.ok()) << groups.status().ToString();
  EXPECT_FALSE(others_done) << "the slow scan finished early: the test proved nothing";

  others_done = true;
  slow.join();
  EXPECT_TRUE(slow_status.ok()) << slow_status.ToString();
  EXPECT_EQ(slow_stats.hashed, 21u);
}

}  // namespace
}  // namespace cid
