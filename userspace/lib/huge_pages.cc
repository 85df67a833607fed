#include "cid/huge_pages.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>

namespace cid {

namespace {
constexpr size_t kHuge = 2 << 20;
size_t RoundUp(size_t n) { return (n + kHuge - 1) / kHuge * kHuge; }
}  // namespace

void* MapHugeAdvised(size_t* len) {
  *len = RoundUp(*len);
  // Map one huge page more and trim it off both ends to the alignment.
  void* p = mmap(nullptr, *len + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) abort();
  uintptr_t a = reinterpret_cast<uintptr_t>(p), b = (a + kHuge - 1) & ~uintptr_t{kHuge - 1};
  if (b > a) munmap(p, b - a);
  if (a + *len + kHuge > b + *len) munmap(reinterpret_cast<void*>(b + *len), a + *len + kHuge - (b + *len));
  madvise(reinterpret_cast<void*>(b), *len, MADV_HUGEPAGE);
  return reinterpret_cast<void*>(b);
}

void UnmapHugeAdvised(void* p, size_t len) {
  if (p) munmap(p, RoundUp(len));
}

void* HugePageResource::do_allocate(size_t bytes, size_t) {
  return MapHugeAdvised(&bytes);  // 2 MiB-aligned: any alignment asked for
}

void HugePageResource::do_deallocate(void* p, size_t bytes, size_t) { UnmapHugeAdvised(p, bytes); }

}  // namespace cid
