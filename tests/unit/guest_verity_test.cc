// The in-guest tests (tests/vm/guest/common.c, C, linked statically into the
// QEMU guest) check the digest the kernel reports against their own
// fs-verity digest.  That code cannot be checked in the guest against
// anything but the kernel it is meant to check, so it is checked here, on
// the host, against `fsverity digest` and libcid's VerityHasher.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cid/verity.h"
#include "test_util.h"

// From tests/vm/guest/common.h (not includable from C++: it defines
// _GNU_SOURCE itself).
extern "C" {
void fill_pattern(void* buf, uint64_t off, size_t len, uint64_t seed);
void verity_pattern(uint64_t seed, uint64_t size, uint8_t out[32]);
int verity_digest_fd(int fd, uint8_t out[32]);
}

namespace cid {
namespace {

std::string Hex(const uint8_t d[32]) { return Digest::FromBytes(d, kDigestSize).ToHex(); }

TEST(GuestVerityTest, MatchesLibcidAndTheTool) {
  const bool tool = system("command -v fsverity >/dev/null 2>&1") == 0;
  test::TempDir dir;
  const uint64_t seed = 0x5eed;
  for (uint64_t size : {0ul, 1ul, 4095ul, 4096ul, 4097ul, 128 * 4096ul, 128 * 4096ul + 1, 129 * 4096ul,
                        16385 * 4096ul}) {
    SCOPED_TRACE("size " + std::to_string(size));
    std::string data(size, '\0');
    fill_pattern(data.data(), 0, size, seed);
    uint8_t from_pattern[32], from_fd[32];
    verity_pattern(seed, size, from_pattern);
    const std::string want = VerityHasher::Of(data).ToHex();
    EXPECT_EQ(Hex(from_pattern), want);

    std::string path = dir / "f";
    test::WriteFile(path, data);
    int fd = open(path.c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    EXPECT_EQ(verity_digest_fd(fd, from_fd), 0);
    close(fd);
    EXPECT_EQ(Hex(from_fd), want);
    if (tool) {
      std::string cmd = "fsverity digest --hash-alg=sha256 --block-size=4096 " + path;
      FILE* f = popen(cmd.c_str(), "r");
      ASSERT_NE(f, nullptr);
      char line[256] = {};
      ASSERT_NE(fgets(line, sizeof(line), f), nullptr);
      pclose(f);
      EXPECT_EQ(std::string(line).substr(0, 7 + 64), "sha256:" + want);
    }
  }
  if (!tool) GTEST_SKIP() << "checked against libcid only: fsverity (Debian package fsverity) is not installed";
}

}  // namespace
}  // namespace cid
