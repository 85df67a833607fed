// Content ids: a file's fs-verity digest (SHA-256 Merkle tree over 4 KiB
// blocks, see cid/verity.h; what `fsverity digest` prints and what the
// kernel's CID_IOC_TAG computes), written "fsverity-sha256:<64 lowercase
// hex>".  SHA-256 goes through OpenSSL's EVP interface, which picks SHA-NI
// or AVX2 code where the CPU has it; libcrypto is loaded when first needed.
#ifndef CID_DIGEST_H_
#define CID_DIGEST_H_

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "cid/status.h"

struct evp_md_ctx_st;

namespace cid {

constexpr size_t kDigestSize = 32;
constexpr std::string_view kDigestPrefix = "fsverity-sha256:";
// Before the fs-verity id, content ids were the plain SHA-256 of the file,
// written "sha256:<hex>".  Recognised, never taken for a content id.
constexpr std::string_view kPlainSha256Prefix = "sha256:";

enum class DigestKind { kVerity, kPlainSha256 };

struct Digest {
  std::array<uint8_t, kDigestSize> bytes{};

  std::string ToHex() const;
  std::string ToString() const { return std::string(kDigestPrefix) + ToHex(); }
  // Accepts "fsverity-sha256:<hex>" or bare hex (64 digits, either case).
  // "sha256:<hex>" (an old plain SHA-256 id) is refused, unless kind is
  // given: then it is parsed and *kind says which it was.
  static Result<Digest> Parse(std::string_view text, DigestKind* kind = nullptr);
  static Digest FromBytes(const void* data, size_t len);  // len must be kDigestSize

  auto operator<=>(const Digest&) const = default;
};

struct DigestHash {
  size_t operator()(const Digest& d) const {
    size_t h;
    static_assert(sizeof(h) <= kDigestSize);
    __builtin_memcpy(&h, d.bytes.data(), sizeof(h));
    return h;
  }
};

// Whether SHA-256 can be taken: libcrypto is loaded (dlopen) when the first
// Sha256 is made, and a program that cannot load it aborts there with the
// reason.  Anything that must report that instead (scans do) asks here
// first; the answer is the same for the life of the process.
Status Sha256Available();

namespace digest_internal {
// Loads `soname` as Sha256 loads libcrypto, and says whether it would do
// (for tests of the failure message).
Status ProbeCrypto(const char* soname);
}  // namespace digest_internal

// Streaming SHA-256.  Not copyable; one per thread.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Reset();
  void Update(const void* data, size_t len);
  Digest Finish();  // also resets

  static Digest Of(std::string_view data);

 private:
  evp_md_ctx_st* ctx_;
};

}  // namespace cid

#endif  // CID_DIGEST_H_
