// Content ids: the SHA-256 of a file's whole content, written
// "sha256:<64 lowercase hex>".  Hashing goes through OpenSSL's EVP
// interface, which picks SHA-NI or AVX2 code where the CPU has it.
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
constexpr std::string_view kDigestPrefix = "sha256:";

struct Digest {
  std::array<uint8_t, kDigestSize> bytes{};

  std::string ToHex() const;
  std::string ToString() const { return std::string(kDigestPrefix) + ToHex(); }
  // Accepts "sha256:<hex>" or bare hex (64 digits, either case).
  static Result<Digest> Parse(std::string_view text);
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
