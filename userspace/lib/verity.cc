#include "cid/verity.h"

#include <cstdlib>
#include <cstring>

namespace cid {

namespace {

constexpr size_t kHashesPerBlock = kVerityBlockSize / kDigestSize;  // 128

// struct fsverity_descriptor (include/uapi/linux/fsverity.h), little endian.
struct VerityDescriptor {
  uint8_t version;         // 1
  uint8_t hash_algorithm;  // FS_VERITY_HASH_ALG_SHA256 = 1
  uint8_t log_blocksize;   // 12: 4096-byte blocks
  uint8_t salt_size;       // 0
  uint32_t sig_size;       // 0
  uint64_t data_size;      // le64
  uint8_t root_hash[64];   // SHA-256's 32 bytes, zero-padded
  uint8_t salt[32];
  uint8_t reserved[144];
};
static_assert(sizeof(VerityDescriptor) == 256);
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "data_size is written as le64");

}  // namespace

VerityHasher::VerityHasher() { Reset(); }
VerityHasher::~VerityHasher() = default;

void VerityHasher::Reset() {
  for (Level& l : levels_) {
    l.fill = 0;
    l.hashed = 0;
  }
  size_ = 0;
  sha_.Reset();
}

VerityHasher::Level& VerityHasher::At(size_t level) {
  if (level >= kMaxLevels) abort();  // more than 2^64 bytes
  Level& l = levels_[level];
  if (!l.block) l.block = std::make_unique<uint8_t[]>(kVerityBlockSize);
  return l;
}

void VerityHasher::HashBlock(const uint8_t* block, size_t level) {
  sha_.Update(block, kVerityBlockSize);
  Digest d = sha_.Finish();
  At(level).hashed++;
  Level& up = At(level + 1);
  memcpy(up.block.get() + up.fill, d.bytes.data(), kDigestSize);
  up.fill += kDigestSize;
  if (up.fill == kVerityBlockSize) {
    up.fill = 0;
    HashBlock(up.block.get(), level + 1);
  }
}

void VerityHasher::Update(const void* data, size_t len) {
  const auto* p = static_cast<const uint8_t*>(data);
  size_ += len;
  Level& data_level = At(0);
  if (data_level.fill) {
    size_t take = std::min(len, kVerityBlockSize - data_level.fill);
    memcpy(data_level.block.get() + data_level.fill, p, take);
    data_level.fill += take;
    p += take;
    len -= take;
    if (data_level.fill < kVerityBlockSize) return;
    data_level.fill = 0;
    HashBlock(data_level.block.get(), 0);
  }
  // Whole blocks are hashed where they lie, without a copy.
  for (; len >= kVerityBlockSize; p += kVerityBlockSize, len -= kVerityBlockSize) HashBlock(p, 0);
  if (len) {
    memcpy(At(0).block.get(), p, len);
    At(0).fill = len;
  }
}

Digest VerityHasher::Final() {
  VerityDescriptor desc{};
  desc.version = 1;
  desc.hash_algorithm = 1;
  desc.log_blocksize = 12;
  desc.data_size = size_;
  if (size_ != 0) {
    // Pad and hash each level's unfinished block, from the data upwards,
    // until a level was a single block: its hash, the only one in the level
    // above, is the root hash.
    for (size_t level = 0;; level++) {
      Level& l = At(level);
      if (l.fill) {
        memset(l.block.get() + l.fill, 0, kVerityBlockSize - l.fill);
        l.fill = 0;
        HashBlock(l.block.get(), level);
      }
      if (l.hashed == 1) {
        static_assert(kHashesPerBlock > 1);
        memcpy(desc.root_hash, At(level + 1).block.get(), kDigestSize);
        break;
      }
    }
  }
  sha_.Update(&desc, sizeof(desc));
  Digest d = sha_.Finish();
  Reset();
  return d;
}

Digest VerityHasher::Of(std::string_view data) {
  VerityHasher h;
  h.Update(data.data(), data.size());
  return h.Final();
}

}  // namespace cid
