// fs-verity file digests, computed in userspace as the kernel computes them
// (Documentation/filesystems/fsverity.rst; what `fsverity digest
// --hash-alg=sha256 --block-size=4096 FILE` prints): a SHA-256 Merkle tree
// over 4096-byte blocks without salt, and the SHA-256 of the 256-byte
// fsverity_descriptor that holds its root hash and the file size.
//
//  - Level 0 is the data: 4096-byte blocks, the last one zero-padded.
//  - Each level above holds the SHA-256 of every block of the level below,
//    packed 128 to a 4096-byte block, the last block zero-padded.
//  - Levels are added until one holds a single block; the root hash is the
//    SHA-256 of that block.  A file of at most 4096 bytes has no hash level:
//    its root hash is the hash of its one (padded) data block.  An empty
//    file's root hash is all zeros.
//  - The file digest is SHA-256 of struct fsverity_descriptor {version 1,
//    hash_algorithm 1 (SHA-256), log_blocksize 12, salt_size 0, sig_size 0,
//    data_size le64, root_hash[64] (zero-padded), salt[32], reserved[144]}.
//
// VerityHasher streams: Update() takes the bytes in any split and keeps one
// pending 4096-byte block per tree level (at most nine for any file size),
// never the list of all leaf hashes.
#ifndef CID_VERITY_H_
#define CID_VERITY_H_

#include <cstddef>
#include <cstdint>
#include <array>
#include <memory>
#include <string_view>

#include "cid/digest.h"

namespace cid {

constexpr size_t kVerityBlockSize = 4096;

// Streaming fs-verity SHA-256 file digest.  Not copyable; one per thread.
class VerityHasher {
 public:
  VerityHasher();
  ~VerityHasher();
  VerityHasher(const VerityHasher&) = delete;
  VerityHasher& operator=(const VerityHasher&) = delete;

  void Reset();
  void Update(const void* data, size_t len);
  Digest Final();  // also resets

  uint64_t size() const { return size_; }  // bytes given since the last reset

  static Digest Of(std::string_view data);

 private:
  // A block of the tree not yet full: level 0 holds data, level n >= 1
  // holds the hashes of level n-1's blocks.
  struct Level {
    std::unique_ptr<uint8_t[]> block;
    size_t fill = 0;      // bytes of block in use
    uint64_t hashed = 0;  // this level's blocks hashed so far
  };

  // A 2^64-byte file has 2^52 data blocks and eight hash levels above
  // them; the last entry takes the root's hash.
  static constexpr size_t kMaxLevels = 10;

  Level& At(size_t level);  // allocates the level's block on first use
  // Hashes one whole block of `level` and adds its hash to level + 1,
  // hashing that block in turn when it is full.
  void HashBlock(const uint8_t* block, size_t level);

  Sha256 sha_;
  std::array<Level, kMaxLevels> levels_;  // fixed, so references stay valid
  uint64_t size_ = 0;
};

}  // namespace cid

#endif  // CID_VERITY_H_
