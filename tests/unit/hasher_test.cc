#include "cid/hasher.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>

#include "cid/verity.h"
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

// What the hooks read their config and lists with (no iostreams).
TEST(ReadSmallFileTest, WholeFileOrTheReason) {
  TempDir d;
  std::string big(20000, 'x');  // more than one read's buffer
  WriteFile(d / "big", big);
  auto got = ReadSmallFile(d / "big");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, big);
  WriteFile(d / "empty", "");
  EXPECT_EQ(*ReadSmallFile(d / "empty"), "");
  auto missing = ReadSmallFile(d / "missing");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().err(), ENOENT);
  EXPECT_NE(missing.status().message().find(d / "missing"), std::string::npos) << missing.status().ToString();
  auto too_big = ReadSmallFile(d / "big", 10000);
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ(too_big.status().err(), EFBIG);
  auto dir = ReadSmallFile(d.path());
  ASSERT_FALSE(dir.ok());
  EXPECT_EQ(dir.status().err(), EISDIR);
}

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
    EXPECT_EQ(o.digest, VerityHasher::Of(data)) << "size " << size;
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
    want[i] = VerityHasher::Of(data);
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

// Hashing from mappings needs cachestat(2) (Linux 6.5) to tell what is
// cached; without it everything is read, and these tests skip.

HasherOptions MapOptions() {
  HasherOptions opt;
  opt.buffer_size = 64 << 10;
  opt.map_min_size = 1 << 20;
  opt.map_window = 1 << 20;
  return opt;
}

TEST_P(HasherTest, CachedFileIsHashedFromMappingsWithTheSameDigest) {
  const size_t size = (5 << 20) + 123;  // five windows and a bit
  std::string data = test::RandomBytes(size, 5);
  std::string path = dir_ / "cached";
  WriteFile(path, data);
  REQUIRE_CACHESTAT(path);
  FileHasher h(std::move(engine_), MapOptions());
  HashOutcome o = h.HashPath(path);
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  EXPECT_EQ(o.digest, VerityHasher::Of(data));
  EXPECT_EQ(o.mapped_bytes, size);
}

TEST_P(HasherTest, WindowsNotInTheCacheAreReadTheRestMapped) {
  const size_t size = (4 << 20) + 5;
  std::string data = test::RandomBytes(size, 4);
  std::string path = dir_ / "partly";
  WriteFile(path, data);
  REQUIRE_CACHESTAT(path);
  // Drop the file from the page cache, then read back all but the second
  // window (without readahead, which would bring that in too).
  int fd = open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(fdatasync(fd), 0);
  ASSERT_EQ(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
  ASSERT_EQ(posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM), 0);
  std::string buf(size, '\0');
  ASSERT_EQ(pread(fd, buf.data(), 1 << 20, 0), 1 << 20);
  ASSERT_EQ(pread(fd, buf.data(), size - (2 << 20), 2 << 20), static_cast<ssize_t>(size - (2 << 20)));
  EXPECT_FALSE(RangeCached(fd, 1 << 20, 1 << 20)) << "POSIX_FADV_DONTNEED left the second window cached";
  EXPECT_TRUE(RangeCached(fd, 0, 1 << 20)) << "the first window was read back";
  EXPECT_TRUE(RangeCached(fd, 2 << 20, size - (2 << 20))) << "the windows after the second were read back";
  close(fd);
  ASSERT_FALSE(HasFailure()) << "set-up: the page cache is not as the test needs it";
  FileHasher h(std::move(engine_), MapOptions());
  HashOutcome o = h.HashPath(path);
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  EXPECT_EQ(o.digest, VerityHasher::Of(data));
  EXPECT_EQ(o.mapped_bytes, size - (1 << 20)) << "windows before and after the dropped one come from mappings";
}

TEST_P(HasherTest, MapMinSizeZeroReadsEverything) {
  std::string data = test::RandomBytes(3 << 20, 3);
  std::string path = dir_ / "read";
  WriteFile(path, data);
  HasherOptions opt = MapOptions();
  opt.map_min_size = 0;
  FileHasher h(std::move(engine_), opt);
  HashOutcome o = h.HashPath(path);
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  EXPECT_EQ(o.digest, VerityHasher::Of(data));
  EXPECT_EQ(o.mapped_bytes, 0u);
}

// Hashes a 4 MiB file written long ago from mappings (1 MiB windows),
// calling change() once the second window was found cached, before the
// run of cached windows is mapped.
HashOutcome HashMappedWhileChanging(std::unique_ptr<ReadEngine> engine, const std::string& path,
                                    const std::function<void()>& change) {
  WriteFile(path, std::string(4 << 20, 'm'));
  Age(path);
  FileHasher h(test::NewHookedEngine(std::move(engine), [](int, ReadCompletion*) {},
                                     [&](int n, uint64_t) {
                                       if (n == 1) change();
                                     }),
               MapOptions());
  return h.HashPath(path);
}

TEST_P(HasherTest, FileTruncatedUnderTheMappingIsNotRecorded) {
  std::string path = dir_ / "shrinks-mapped";
  WriteFile(path, "probe");
  REQUIRE_CACHESTAT(path);
  // The first two windows are mapped, now past the new end: hashing the
  // second page of the second window raises SIGBUS, which must end this
  // hash as changed, not the process.
  HashOutcome o = HashMappedWhileChanging(std::move(engine_), path,
                                          [&] { ASSERT_EQ(truncate(path.c_str(), (1 << 20) + 1000), 0); });
  EXPECT_TRUE(o.status.IsChanged()) << o.status.ToString();
  EXPECT_NE(o.status.message().find("shrank"), std::string::npos) << o.status.ToString();
  EXPECT_EQ(o.mapped_bytes, 0u) << "the fault came before the mapping was hashed to its end";
  sigset_t blocked;
  ASSERT_EQ(pthread_sigmask(SIG_BLOCK, nullptr, &blocked), 0);
  EXPECT_FALSE(sigismember(&blocked, SIGBUS)) << "SIGBUS left blocked after the jump out of the handler";

  // The hasher goes on: the next file is hashed from mappings again.
  std::string data = test::RandomBytes(2 << 20, 2);
  WriteFile(dir_ / "next", data);
  FileHasher h(MakeEngine(GetParam()), MapOptions());
  o = h.HashPath(dir_ / "next");
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  EXPECT_EQ(o.digest, VerityHasher::Of(data));
  EXPECT_EQ(o.mapped_bytes, data.size());
}

TEST_P(HasherTest, FileRewrittenUnderTheMappingIsNotRecorded) {
  std::string path = dir_ / "rewritten-mapped";
  WriteFile(path, "probe");
  REQUIRE_CACHESTAT(path);
  HashOutcome o = HashMappedWhileChanging(std::move(engine_), path, [&] {
    int fd = open(path.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(pwrite(fd, "b", 1, 0), 1);  // in the window already hashed; size unchanged, mtime moves
    close(fd);
  });
  EXPECT_TRUE(o.status.IsChanged()) << o.status.ToString();
}

TEST_P(HasherTest, FileGrowingUnderTheMappingIsNotRecorded) {
  std::string path = dir_ / "grows-mapped";
  WriteFile(path, "probe");
  REQUIRE_CACHESTAT(path);
  HashOutcome o = HashMappedWhileChanging(std::move(engine_), path, [&] {
    int fd = open(path.c_str(), O_WRONLY | O_APPEND);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, "more", 4), 4);
    close(fd);
  });
  EXPECT_TRUE(o.status.IsChanged()) << o.status.ToString();
}

INSTANTIATE_TEST_SUITE_P(Engines, HasherTest, ::testing::Values(Engine::kUring, Engine::kPread),
                         [](const auto& info) { return info.param == Engine::kUring ? "uring" : "pread"; });

// > 4 GiB and sparse: offsets above 2^32 must be read and hashed in order.
// Expected digest from `fsverity digest` on the same file (head, zeros, tail).
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
  EXPECT_EQ(o.digest.ToString(), "fsverity-sha256:b5a62cc25d0081530dcaf750aab53a93b7ad2f5e399f74e6847aa57a27e4e5f6");
  EXPECT_EQ(o.st.size, kSize);
  // Drop the 4 GiB of cached zero pages now rather than at unlink.
  int fd = open(path.c_str(), O_RDONLY);
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  close(fd);
}

// The hasher's SIGBUS handler takes only faults in its own mappings.  Each
// case runs in a fresh process ("threadsafe" death tests re-execute the
// binary), where the handler is installed by the first mapped hash.
class HasherSigbusDeathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    WriteFile(dir_ / "cached", std::string(2 << 20, 'c'));
    REQUIRE_CACHESTAT(dir_ / "cached");
  }
  // In the child: hashes the cached file; exits 3 unless from mappings.
  void HashMappedOrExit(bool want_mapped = true) {
    FileHasher h(NewPreadEngine(4), MapOptions());
    HashOutcome o = h.HashPath(dir_ / "cached");
    if (!o.status.ok() || o.digest != VerityHasher::Of(std::string(2 << 20, 'c'))) _exit(2);
    if ((o.mapped_bytes == 2u << 20) != want_mapped) _exit(3);
  }
  // In the child: touches a page past the end of a mapping of its own.
  void ForeignFault() {
    std::string path = dir_ / "foreign";
    WriteFile(path, std::string(8192, 'f'));
    int fd = open(path.c_str(), O_RDWR);
    void* p = mmap(nullptr, 8192, PROT_READ, MAP_SHARED, fd, 0);
    if (fd < 0 || p == MAP_FAILED || ftruncate(fd, 0) != 0) _exit(4);
    volatile char c = static_cast<const char*>(p)[4096];
    (void)c;
    _exit(5);  // not reached: the access raises SIGBUS
  }
  TempDir dir_;
};

TEST_F(HasherSigbusDeathTest, AFaultElsewhereStillKillsTheProcess) {
#if defined(__SANITIZE_ADDRESS__)
  // AddressSanitizer's handler was there first: it reports the fault and exits 1.
  EXPECT_EXIT(
      {
        HashMappedOrExit();
        ForeignFault();
      },
      ::testing::ExitedWithCode(1), "BUS");
#else
  EXPECT_EXIT(
      {
        HashMappedOrExit();
        ForeignFault();
      },
      ::testing::KilledBySignal(SIGBUS), "");
#endif
}

void ExitFortyTwo(int) { _exit(42); }

TEST_F(HasherSigbusDeathTest, AFaultElsewhereGoesToTheProgramsOwnHandler) {
  EXPECT_EXIT(
      {
        struct sigaction sa {};
        sa.sa_handler = ExitFortyTwo;
        sigaction(SIGBUS, &sa, nullptr);
        HashMappedOrExit();
        ForeignFault();
      },
      ::testing::ExitedWithCode(42), "");
}

TEST_F(HasherSigbusDeathTest, AHandlerInstalledLaterTurnsMappingOff) {
  EXPECT_EXIT(
      {
        HashMappedOrExit();
        struct sigaction sa {};
        sa.sa_handler = ExitFortyTwo;
        sigaction(SIGBUS, &sa, nullptr);
        HashMappedOrExit(/*want_mapped=*/false);
        _exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST(HashPoolTest, WorkersHashEveryRequestOnce) {
  TempDir dir;
  std::map<uint64_t, Digest> want;
  HashPool pool(2, DefaultEngineFactory(16), HasherOptions{});
  for (int i = 0; i < 200; i++) {
    std::string data = test::RandomBytes(i * 311, i);
    std::string path = dir / std::to_string(i);
    WriteFile(path, data);
    want[i] = VerityHasher::Of(data);
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

// The hashing threads run nicer than the thread that made the pool
// (HasherOptions::nice_below), relative to it and at most 19; the caller
// itself is left as it was.
TEST(HashPoolTest, WorkersRunNicerThanTheirMaker) {
  int mine = CurrentThreadNice();
  ASSERT_GE(mine, -20);
  for (int below : {5, 0, 40}) {
    std::mutex mu;
    std::vector<int> seen;
    EngineFactory factory = [&] {
      std::lock_guard<std::mutex> l(mu);
      seen.push_back(CurrentThreadNice());
      return NewPreadEngine(4);
    };
    HasherOptions o;
    o.nice_below = below;
    {
      HashPool pool(2, factory, o);
      pool.Close();
      std::vector<HashOutcome> out;
      while (pool.Take(&out, true)) out.clear();
    }
    ASSERT_EQ(seen.size(), 2u);
    for (int n : seen) EXPECT_EQ(n, std::min(19, mine + below)) << "nice_below " << below;
    EXPECT_EQ(CurrentThreadNice(), mine);
  }
}

TEST(EngineTest, FallbackWhenUringDisabled) {
  setenv("CID_NO_URING", "1", 1);
  auto e = DefaultEngineFactory(4)();
  unsetenv("CID_NO_URING");
  EXPECT_STREQ(e->name(), "pread");
}

}  // namespace
}  // namespace cid
