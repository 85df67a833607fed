/* XXH3-128 of one 4 KiB page with AVX2, compiled in from libxxhash's header
 * (its documented inline mode; this file alone is built with -mavx2).
 * Debian's libxxhash.so is built for baseline x86-64, SSE2: on this
 * project's 2-core test machine its XXH3 of a page took 0.41 us, this one
 * 0.14 us, the same hash.  analyze_snapshot.cc calls it only where the CPU
 * has AVX2.  C, so no C++ inline function compiled for AVX2 can be chosen
 * by the linker for callers on other CPUs. */
#define XXH_INLINE_ALL
#include <stdint.h>
#include <xxhash.h>

void cid_analyze_hash_page_avx2(const void* page, uint64_t out[2]) {
  XXH128_hash_t h = XXH3_128bits(page, 4096);
  out[0] = h.low64;
  out[1] = h.high64;
}
