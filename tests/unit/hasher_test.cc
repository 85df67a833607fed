#include "cid/hasher.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <map>

#include "test_util.h"

namespace cid {
namespace {

using test::TempDir;
using test::WriteFile;

// Files in these tests were written long ago: a write during the hash must
// move mtime even on filesystems with coarse timestamps.
void Age(const std::string& path) {
  struct timeval tv[2] = {{1000000000, 0}, {1000000000, 0}};
  ASSERT_EQ(utimes(path.c_str(), tv), 0);
}

enum class Engine { kUring, kPread };

std::unique_ptr<ReadEngine> MakeEngine(Engine e) {
  if (e == Engine::kPread) return NewPreadEngine(8);
  auto r = NewUringEngine(8);
  return r.ok() ? std::move(*r) : nullptr;
}

class HasherTest : public ::testing::TestWithParam<Engine> {
 protected:
  void SetUp() override {
    engine_ = MakeEngine(GetParam());
    if (!engine_) GTEST_SKIP() << "io_uring refused here";
  }
  std::unique_ptr<ReadEngine> engine_;
  TempDir dir_;
};

TEST_P(HasherTest, SizesAroundBufferAndPageBoundaries) {
  HasherOptions opt;
  opt.buffer_size = 64 << 10;
  FileHasher h(std::move(engine_), opt);
  for (size_t size : {size_t{0}, size_t{1}, size_t{4095}, size_t{4096}, size_t{65535}, size_t{65536}, size_t{65537},
                      size_t{3 << 20} + 17}) {
    std::string data = test::RandomBytes(size, static_cast<unsigned>(size));
    std::string path = dir_ / ("f" + std::to_string(size));
    WriteFile(path, data);
    HashOutcome o = h.HashPath(path);
    ASSERT_TRUE(o.status.ok()) << o.status.ToString();
    EXPECT_EQ(o.digest, Sha256::Of(data)) << "size " << size;
    EXPECT_EQ(o.st.size, size);
  }
}

TEST_P(HasherTest, ManyFilesInFlightKeepTheirOwnDigests) {
  HasherOptions opt;
  opt.buffer_size = 4096;  // several reads per file, interleaved across files
  opt.files_in_flight = 6;
  FileHasher h(std::move(engine_), opt);
  std::map<uint64_t, Digest> want;
  std::vector<HashRequest> reqs;
  for (int i = 0; i < 40; i++) {
    std::string data = test::RandomBytes(1000 * i + 13, i);
    std::string path = dir_ / ("m" + std::to_string(i));
    WriteFile(path, data);
    want[i] = Sha256::Of(data);
    reqs.push_back(HashRequest{path, {}, static_cast<uint64_t>(i)});
  }
  size_t next = 0;
  std::map<uint64_t, Digest> got;
  h.Run(
      [&](HashRequest* r, bool) {
        if (next == reqs.size()) return false;
        *r = reqs[next++];
        return true;
      },
      [&](HashOutcome&& o) {
        ASSERT_TRUE(o.status.ok()) << o.status.ToString();
        got[o.id] = o.digest;
      });
  EXPECT_EQ(got, want);
}

// Hashes a 1 MiB file written long ago in 128 KiB reads, calling change()
// when read number `at` completes, as a concurrent writer would.
HashOutcome HashWhileChanging(std::unique_ptr<ReadEngine> engine, const std::string& path, int at,
                              const std::function<void()>& change) {
  WriteFile(path, std::string(1 << 20, 'x'));
  Age(path);
  HasherOptions opt;
  opt.buffer_size = 128 << 10;
  FileHasher h(test::NewHookedEngine(std::move(engine),
                                     [&](int n, ReadCompletion*) {
                                       if (n == at) change();
                                     }),
               opt);
  return h.HashPath(path);
}

TEST_P(HasherTest, FileGrowingWhileHashedIsNotRecorded) {
  std::string path = dir_ / "grows";
  HashOutcome o = HashWhileChanging(std::move(engine_), path, 2, [&] {
    int fd = open(path.c_str(), O_WRONLY | O_APPEND);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, "more", 4), 4);
    close(fd);
  });
  EXPECT_TRUE(o.status.IsChanged()) << o.status.ToString();
  EXPECT_NE(o.status.message().find(path), std::string::npos);
}

TEST_P(HasherTest, FileRewrittenInPlaceWithSameSizeIsNotRecorded) {
  std::string path = dir_ / "rewritten";
  HashOutcome o = HashWhileChanging(std::move(engine_), path, 1, [&] {
    int fd = open(path.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(pwrite(fd, "b", 1, 0), 1);  // size unchanged; mtime moves
    close(fd);
  });
  EXPECT_TRUE(o.status.IsChanged()) << o.status.ToString();
}

TEST_P(HasherTest, FileTruncatedWhileHashedIsNotRecorded) {
  std::string path = dir_ / "shrinks";
  HashOutcome o = HashWhileChanging(std::move(engine_), path, 0, [&] { ASSERT_EQ(truncate(path.c_str(), 1000), 0); });
  EXPECT_TRUE(o.status.IsChanged()) << o.status.ToString();
}

TEST_P(HasherTest, ReadErrorNamesPathAndErrno) {
  std::string path = dir_ / "eio";
  WriteFile(path, std::string(100000, 'e'));
  FileHasher h(test::NewHookedEngine(std::move(engine_), [](int, ReadCompletion* c) { c->res = -EIO; }),
               HasherOptions{});
  HashOutcome o = h.HashPath(path);
  ASSERT_FALSE(o.status.ok());
  EXPECT_EQ(o.status.err(), EIO);
  EXPECT_NE(o.status.message().find(path), std::string::npos);
  EXPECT_NE(o.status.message().find("Input/output error"), std::string::npos);
}

TEST_P(HasherTest, MissingFileAndSymlinkAreErrors) {
  FileHasher h(std::move(engine_), HasherOptions{});
  HashOutcome o = h.HashPath(dir_ / "absent");
  EXPECT_TRUE(o.status.IsNotFound());
  WriteFile(dir_ / "target", "t");
  ASSERT_EQ(symlink((dir_ / "target").c_str(), (dir_ / "link").c_str()), 0);
  o = h.HashPath(dir_ / "link");
  EXPECT_FALSE(o.status.ok()) << "symlinks must not be followed";
  EXPECT_EQ(o.status.err(), ELOOP);
}

INSTANTIATE_TEST_SUITE_P(Engines, HasherTest, ::testing::Values(Engine::kUring, Engine::kPread),
                         [](const auto& info) { return info.param == Engine::kUring ? "uring" : "pread"; });

// > 4 GiB and sparse: offsets above 2^32 must be read and hashed in order.
// Expected digest from `sha256sum` on the same file (head, zeros, tail).
TEST(HasherLargeTest, SparseFileLargerThan4GiB) {
  TempDir dir;
  std::string path = dir / "sparse";
  const uint64_t kSize = (4ull << 30) + 8192 + 5;
  std::string tail = "tail-data";
  {
    int fd = open(path.c_str(), O_CREAT | O_WRONLY, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(pwrite(fd, "head", 4, 0), 4);
    ASSERT_EQ(pwrite(fd, tail.data(), tail.size(), kSize - tail.size()), static_cast<ssize_t>(tail.size()));
    close(fd);
  }
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  ASSERT_EQ(static_cast<uint64_t>(st.st_size), kSize);
  EXPECT_LT(st.st_blocks * 512, 1 << 20) << "not sparse here; the test still holds, only slower";
  HasherOptions opt;
  opt.buffer_size = 1 << 20;
  FileHasher h(DefaultEngineFactory(8)(), opt);
  HashOutcome o = h.HashPath(path);
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  EXPECT_EQ(o.digest.ToString(), "sha256:1c9aab5e01e5b5cffd9a4445194ca2f86a8460ef48fbb080f547b86b618fd649");
  EXPECT_EQ(o.st.size, kSize);
  // Drop the 4 GiB of cached zero pages now rather than at unlink.
  int fd = open(path.c_str(), O_RDONLY);
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  close(fd);
}

TEST(HashPoolTest, WorkersHashEveryRequestOnce) {
  TempDir dir;
  std::map<uint64_t, Digest> want;
  HashPool pool(2, DefaultEngineFactory(16), HasherOptions{});
  for (int i = 0; i < 200; i++) {
    std::string data = test::RandomBytes(i * 311, i);
    std::string path = dir / std::to_string(i);
    WriteFile(path, data);
    want[i] = Sha256::Of(data);
    pool.Add(HashRequest{path, {}, static_cast<uint64_t>(i)});
  }
  pool.Close();
  std::map<uint64_t, Digest> got;
  std::vector<HashOutcome> out;
  while (true) {
    bool more = pool.Take(&out, true);
    for (auto& o : out) {
      ASSERT_TRUE(o.status.ok()) << o.status.ToString();
      EXPECT_TRUE(got.emplace(o.id, o.digest).second) << "reported twice: " << o.id;
    }
    out.clear();
    if (!more) break;
  }
  EXPECT_EQ(got, want);
}

TEST(EngineTest, FallbackWhenUringDisabled) {
  setenv("CID_NO_URING", "1", 1);
  auto e = DefaultEngineFactory(4)();
  unsetenv("CID_NO_URING");
  EXPECT_STREQ(e->name(), "pread");
}

}  // namespace
}  // namespace cid
