#include "cid/partial.h"

// XXH3-64 compiled in from libxxhash's header (its documented inline mode):
// the scanner is in every program that may index, the container hooks
// among them, and those link with --as-needed, so a hook run that hashes
// nothing does not load libxxhash at all.  cid-analyze's XXH3-128 still
// comes from the library.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "cid/huge_pages.h"

namespace cid {

void PartialEdges::Add(uint64_t off, const void* data, size_t len) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t end = off + len;
  auto copy = [&](uint64_t lo, uint64_t hi, uint8_t* dst) {  // [lo, hi) of the file to dst[0..)
    uint64_t a = std::max(lo, off), b = std::min(hi, end);
    if (a < b) memcpy(dst + (a - lo), p + (a - off), b - a);
  };
  if (size_ <= kPartialWhole) {
    copy(0, size_, buf_);
    return;
  }
  copy(0, kPartialBlock, buf_);
  copy(size_ - kPartialBlock, size_, buf_ + kPartialBlock);
}

uint64_t PartialEdges::Fingerprint() const {
  return XXH3_64bits(buf_, static_cast<size_t>(std::min(size_, kPartialWhole)));
}

uint64_t PartialFingerprintOf(const void* data, uint64_t size) {
  PartialEdges e;
  e.Reset(size);
  e.Add(0, data, size);
  return e.Fingerprint();
}

// One 2 MiB run (cid/huge_pages.h): the bits are touched all over, and in
// a virtual machine each first touch of a 4 KiB page traps.
SeenFingerprints::SeenFingerprints() {
  len_ = kBits / 8;
  words_ = MapHugeAdvised(&len_);
}

SeenFingerprints::~SeenFingerprints() { UnmapHugeAdvised(words_, len_); }

bool SeenFingerprints::TestAndSet(uint64_t size, uint64_t fingerprint) {
  uint64_t h = (fingerprint ^ (size * 0x9e3779b97f4a7c15ull)) * 0xff51afd7ed558ccdull;
  h ^= h >> 29;
  size_t bit = static_cast<size_t>(h & (kBits - 1));
  auto* words = static_cast<std::atomic<uint64_t>*>(words_);
  uint64_t mask = uint64_t{1} << (bit % 64);
  return (words[bit / 64].fetch_or(mask, std::memory_order_relaxed) & mask) != 0;
}

}  // namespace cid
