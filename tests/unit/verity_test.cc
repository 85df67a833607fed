#include "cid/verity.h"

#include <gtest/gtest.h>
#include <stdio.h>
#include <sys/wait.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "test_util.h"

namespace cid {
namespace {

using test::TempDir;

// Known answers from `fsverity digest --hash-alg=sha256 --block-size=4096`
// (fsverity-utils 1.5), so the tree is checked even where the tool is absent.
TEST(VerityTest, KnownAnswers) {
  EXPECT_EQ(VerityHasher::Of("").ToHex(), "3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95");
  EXPECT_EQ(VerityHasher::Of("abc").ToHex(), "700b6bd8510f0b4f9bac8b9cf0459151a1c4a99f467892bb4bd289a67df8e19c");
  // 245 blocks: two hash blocks at the first level.
  EXPECT_EQ(VerityHasher::Of(std::string(1000000, 'a')).ToHex(),
            "50049eeefec9385017816e55c0783638f225a3938338cbd673ce9ee8bc977100");
  // 129 blocks of zeros.
  EXPECT_EQ(VerityHasher::Of(std::string(129 * 4096, '\0')).ToHex(),
            "2331d9bc1bfa1c8c1a2272b1bc04acca57ec879136c554d313b45b77b94f326e");
}

// `fsverity digest` of a file as bare hex, or "" (with *err) if it failed.
std::string ToolDigest(const std::string& path, std::string* err) {
  std::string cmd = "fsverity digest --hash-alg=sha256 --block-size=4096 '" + path + "' 2>&1";
  FILE* f = popen(cmd.c_str(), "r");
  if (!f) {
    *err = "popen failed";
    return "";
  }
  std::string out;
  char buf[256];
  while (fgets(buf, sizeof(buf), f)) out += buf;
  int status = pclose(f);
  const std::string prefix = "sha256:";
  if (status != 0 || out.compare(0, prefix.size(), prefix) != 0 || out.size() < prefix.size() + 64) {
    *err = cmd + ": " + out;
    return "";
  }
  return out.substr(prefix.size(), 64);
}

// Random bytes, eight per draw: the 64 MiB cases stay quick.
std::string Random(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    memcpy(s.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return s;
}

bool HaveTool() { return system("command -v fsverity >/dev/null 2>&1") == 0; }

// Feeds data in pieces of random length: single bytes, pieces around the
// block size, and large runs, so splits fall inside, on and across blocks.
Digest SplitHash(VerityHasher* h, const std::string& data, unsigned seed) {
  std::mt19937 rng(seed);
  size_t off = 0;
  while (off < data.size()) {
    size_t n;
    switch (rng() % 4) {
      case 0: n = 1 + rng() % 64; break;
      case 1: n = 4096 - 8 + rng() % 17; break;
      case 2: n = 1 + rng() % (3 * 4096); break;
      default: n = 1 + rng() % (1 << 20); break;
    }
    n = std::min(n, data.size() - off);
    h->Update(data.data() + off, n);
    off += n;
  }
  EXPECT_EQ(h->size(), data.size());
  return h->Final();
}

// The sizes where the tree changes shape: no block, a partial block, one
// block, one more byte, a full first hash level (128 blocks) and one past
// it, and a third level (16385 blocks).
TEST(VerityTest, MatchesFsverityTool) {
  if (!HaveTool()) GTEST_SKIP() << "fsverity (Debian package fsverity) is not installed";
  const std::vector<size_t> sizes = {0,        1,         4095,          4096,          4097,
                                     8191,     8192,      128 * 4096,    128 * 4096 + 1, 129 * 4096,
                                     16384 * 4096, 16385 * 4096};
  TempDir dir;
  VerityHasher h;  // reused across files: Final resets it
  for (size_t size : sizes) {
    SCOPED_TRACE("size " + std::to_string(size));
    std::string data = Random(size, static_cast<unsigned>(size) + 1);
    std::string path = dir / ("f" + std::to_string(size));
    test::WriteFile(path, data);
    std::string err;
    std::string want = ToolDigest(path, &err);
    ASSERT_FALSE(want.empty()) << err;
    EXPECT_EQ(VerityHasher::Of(data).ToHex(), want);
    for (unsigned seed = 1; seed <= 3; seed++) EXPECT_EQ(SplitHash(&h, data, seed).ToHex(), want) << "split seed " << seed;
    remove(path.c_str());
  }
}

// Random sizes and random splits, against the tool.
TEST(VerityTest, RandomSizesAndSplits) {
  if (!HaveTool()) GTEST_SKIP() << "fsverity (Debian package fsverity) is not installed";
  TempDir dir;
  std::mt19937 rng(20261202);
  VerityHasher h;
  for (int i = 0; i < 12; i++) {
    size_t size = rng() % (600 * 4096);
    SCOPED_TRACE("size " + std::to_string(size));
    std::string data = Random(size, rng());
    std::string path = dir / "f";
    test::WriteFile(path, data);
    std::string err;
    std::string want = ToolDigest(path, &err);
    ASSERT_FALSE(want.empty()) << err;
    EXPECT_EQ(SplitHash(&h, data, rng()).ToHex(), want);
  }
}

TEST(VerityTest, FinalResets) {
  VerityHasher h;
  h.Update("some earlier file", 17);
  h.Final();
  EXPECT_EQ(h.size(), 0u);
  std::string data = Random(3 * 4096 + 7, 5);
  h.Update(data.data(), data.size());
  EXPECT_EQ(h.Final(), VerityHasher::Of(data));
  h.Update("abc", 3);
  h.Reset();
  EXPECT_EQ(h.Final(), VerityHasher::Of(""));
}

// The id is not the plain SHA-256, and it depends on the size: trailing
// zeros inside the last block change it although the padded tree is the same.
TEST(VerityTest, DiffersFromPlainSha256AndCoversTheSize) {
  EXPECT_NE(VerityHasher::Of("abc"), Sha256::Of("abc"));
  EXPECT_NE(VerityHasher::Of("abc"), VerityHasher::Of(std::string("abc\0", 4)));
  EXPECT_NE(VerityHasher::Of(""), VerityHasher::Of(std::string(1, '\0')));
}

}  // namespace
}  // namespace cid
