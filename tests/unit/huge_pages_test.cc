// cid/huge_pages.h: 2 MiB-aligned runs advised for transparent huge pages,
// and the memory resource a first scan's rows live in.
#include "cid/huge_pages.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory_resource>
#include <string>
#include <unordered_map>

namespace cid {
namespace {

constexpr size_t kHuge = 2 << 20;

// The VmFlags line of the mapping that starts at p, from /proc/self/smaps.
std::string VmFlagsOf(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  char start[32];
  snprintf(start, sizeof start, "%lx-", static_cast<unsigned long>(reinterpret_cast<uintptr_t>(p)));
  std::string line;
  bool in = false;
  while (std::getline(smaps, line)) {
    if (line.rfind(start, 0) == 0) in = true;
    else if (in && line.rfind("VmFlags:", 0) == 0) return line;
  }
  return "";
}

TEST(HugePagesTest, RunsAreAlignedRoundedWritableAndAdvised) {
  for (size_t want : {size_t{1}, kHuge - 1, kHuge, kHuge + 1, 5 * kHuge + 4096}) {
    size_t len = want;
    void* p = MapHugeAdvised(&len);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % kHuge, 0u) << want;
    EXPECT_EQ(len % kHuge, 0u) << want;
    EXPECT_GE(len, want);
    EXPECT_LT(len - want, kHuge);
    memset(p, 0xa5, len);  // every byte of the run is ours
    EXPECT_EQ(static_cast<unsigned char*>(p)[len - 1], 0xa5);
    // MADV_HUGEPAGE shows as "hg" in the mapping's VmFlags (on a kernel
    // with transparent huge pages; without, the advice is refused).
    std::string flags = VmFlagsOf(p);
    ASSERT_FALSE(flags.empty()) << "no mapping starts at the run";
    if (access("/sys/kernel/mm/transparent_hugepage/enabled", F_OK) == 0) {
      EXPECT_NE(flags.find(" hg"), std::string::npos) << flags;
    }
    UnmapHugeAdvised(p, want);  // the length asked for: rounded the same way
    EXPECT_EQ(VmFlagsOf(p), "") << "the run was not unmapped";
  }
}

TEST(HugePagesTest, MonotonicArenaOverHugeRunsHoldsContainers) {
  HugePageResource huge;
  std::pmr::monotonic_buffer_resource arena(4 << 20, &huge);
  std::pmr::unordered_map<uint64_t, std::pmr::vector<uint64_t>> m(&arena);
  for (uint64_t i = 0; i < 200000; i++) m[i % 5000].push_back(i);
  ASSERT_EQ(m.size(), 5000u);
  for (uint64_t k = 0; k < 5000; k++) {
    const auto& v = m.at(k);
    ASSERT_EQ(v.size(), 40u);
    for (size_t j = 0; j < v.size(); j++) ASSERT_EQ(v[j], k + 5000 * j);
    EXPECT_EQ(v.get_allocator().resource(), &arena);
  }
  // Allocations of any alignment up to a page come back aligned.
  for (size_t align : {1, 8, 64, 4096}) {
    void* p = arena.allocate(100, align);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % align, 0u) << align;
  }
}

}  // namespace
}  // namespace cid
