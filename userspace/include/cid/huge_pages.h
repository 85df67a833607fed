#ifndef CID_HUGE_PAGES_H_
#define CID_HUGE_PAGES_H_

#include <cstddef>
#include <memory_resource>

namespace cid {

// Anonymous memory in 2 MiB-aligned runs advised MADV_HUGEPAGE.  In a
// virtual machine whose every first touch of a 4 KiB page traps to the
// hypervisor (the test machine: 20-40 us a page, against 0.3 us per 4 KiB
// of a huge page) memory that a scan fills once, such as its read
// buffers and the rows it keeps, costs a trap per 4 KiB from malloc and
// one per 2 MiB from here.  Where transparent huge pages are off the
// advice is ignored and nothing else changes.  *len is rounded up to
// whole 2 MiB; aborts if the memory cannot be mapped, as operator new
// would throw.
void* MapHugeAdvised(size_t* len);
void UnmapHugeAdvised(void* p, size_t len);

// A memory resource over MapHugeAdvised runs, for a
// std::pmr::monotonic_buffer_resource upstream: each allocation is a run
// of its own, released on deallocate.
class HugePageResource : public std::pmr::memory_resource {
 private:
  void* do_allocate(size_t bytes, size_t alignment) override;
  void do_deallocate(void* p, size_t bytes, size_t alignment) override;
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override { return this == &other; }
};

}  // namespace cid

#endif  // CID_HUGE_PAGES_H_
