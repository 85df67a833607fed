// The partial fingerprint: a cheap first pass that splits files of the same
// size before any of them is hashed whole (as rmlint, jdupes and fclones
// compare a first block).  It is XXH3-64 (libxxhash) of a file's first and
// last kPartialBlock bytes, or of the whole file when it has at most
// kPartialWhole bytes.  Two files whose fingerprints differ cannot have the
// same content; two whose fingerprints agree may still differ, so it is
// only ever a filter: duplicates are decided by the content id (the
// fs-verity digest), never by this.
#ifndef CID_PARTIAL_H_
#define CID_PARTIAL_H_

#include <cstddef>
#include <cstdint>

namespace cid {

constexpr uint64_t kPartialBlock = 4096;
constexpr uint64_t kPartialWhole = 2 * kPartialBlock;

// Collects the bytes the fingerprint covers from a file of `size` bytes fed
// in any pieces (each at its offset), then fingerprints them.
class PartialEdges {
 public:
  void Reset(uint64_t size) { size_ = size; }
  // Takes what of [off, off + len) the fingerprint covers.
  void Add(uint64_t off, const void* data, size_t len);
  uint64_t Fingerprint() const;

  // Where the pass reads: [0, HeadLen) and, for files over kPartialWhole,
  // [TailOff, size).
  static uint64_t HeadLen(uint64_t size) { return size <= kPartialWhole ? size : kPartialBlock; }
  static uint64_t TailOff(uint64_t size) { return size - kPartialBlock; }

 private:
  uint64_t size_ = 0;
  // head at [0, kPartialBlock), tail at [kPartialBlock, kPartialWhole); a
  // file of at most kPartialWhole bytes lies here whole.
  alignas(64) uint8_t buf_[kPartialWhole];
};

// The fingerprint of a whole file's bytes (tests, one-off callers).
uint64_t PartialFingerprintOf(const void* data, uint64_t size);

// The (size, fingerprint) pairs the hashing threads of one scan have taken,
// as bits in a table shared by them without locks: a hint, never a
// verdict.  TestAndSet answers true for every pair set before (no false
// "new"), and sometimes for one that was not (two pairs on one bit: one in
// about 170 while the table holds 100,000 pairs, more beyond).  See
// HashRequest::partial_only for what a hashing thread does with it.
class SeenFingerprints {
 public:
  SeenFingerprints();
  ~SeenFingerprints();
  SeenFingerprints(const SeenFingerprints&) = delete;
  SeenFingerprints& operator=(const SeenFingerprints&) = delete;
  // Sets the pair's bit; returns whether it was set already.
  bool TestAndSet(uint64_t size, uint64_t fingerprint);

 private:
  static constexpr size_t kBits = size_t{1} << 24;  // 2 MiB, one huge page
  size_t len_ = 0;
  void* words_ = nullptr;  // kBits / 64 std::atomic<uint64_t>, zeroed
};

}  // namespace cid

#endif  // CID_PARTIAL_H_
