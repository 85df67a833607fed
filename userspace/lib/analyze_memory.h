// Memory helpers shared by analyze_snapshot.cc and analyze_figures.cc.
#ifndef CID_LIB_ANALYZE_MEMORY_H_
#define CID_LIB_ANALYZE_MEMORY_H_

#include <sys/mman.h>

#include <cstdint>
#include <vector>

namespace cid::analyze {

// Asks for transparent huge pages behind a large array (where THP is
// "madvise"): with 4 KiB pages, faulting in a snapshot's own per-frame
// arrays cost about a tenth of its time (page faults are dear in a VM).
template <class T>
void HugeHint(const std::vector<T>& v) {
  constexpr uintptr_t kHuge = 2 << 20;
  uintptr_t b = reinterpret_cast<uintptr_t>(v.data()), e = b + v.capacity() * sizeof(T);
  uintptr_t lo = (b + kHuge - 1) & ~(kHuge - 1), hi = e & ~(kHuge - 1);
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
}

// A vector of n value-initialized elements, behind huge pages where it is large.
template <class T>
std::vector<T> HugeVector(size_t n) {
  std::vector<T> v;
  v.reserve(n);
  HugeHint(v);
  v.resize(n);
  return v;
}

}  // namespace cid::analyze

#endif  // CID_LIB_ANALYZE_MEMORY_H_
