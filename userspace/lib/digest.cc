#include "cid/digest.h"

#include <openssl/evp.h>

#include <cstdlib>
#include <cstring>

namespace cid {

namespace {
const EVP_MD* Sha256Md() {
  // Fetched once: EVP_MD_fetch avoids a provider lookup per file.
  static const EVP_MD* md = [] {
    EVP_MD* m = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    return m ? static_cast<const EVP_MD*>(m) : EVP_sha256();
  }();
  return md;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

std::string Digest::ToHex() const {
  static const char kHex[] = "0123456789abcdef";
  std::string out(kDigestSize * 2, '0');
  for (size_t i = 0; i < kDigestSize; i++) {
    out[2 * i] = kHex[bytes[i] >> 4];
    out[2 * i + 1] = kHex[bytes[i] & 15];
  }
  return out;
}

Result<Digest> Digest::Parse(std::string_view text, DigestKind* kind) {
  std::string_view hex = text;
  DigestKind k = DigestKind::kVerity;
  if (hex.starts_with(kDigestPrefix)) {
    hex.remove_prefix(kDigestPrefix.size());
  } else if (hex.starts_with(kPlainSha256Prefix)) {
    if (!kind)
      return Status::InvalidArgument("'" + std::string(text) +
                                     "' is a plain SHA-256 of an older cidctl, not a content id "
                                     "(fsverity-sha256:<64 hex digits>); scan again to get one");
    hex.remove_prefix(kPlainSha256Prefix.size());
    k = DigestKind::kPlainSha256;
  }
  if (hex.size() != kDigestSize * 2)
    return Status::InvalidArgument("not a content id (want fsverity-sha256:<64 hex digits>): '" +
                                   std::string(text) + "'");
  Digest d;
  for (size_t i = 0; i < kDigestSize; i++) {
    int hi = HexValue(hex[2 * i]), lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return Status::InvalidArgument("not a hex digit in digest '" + std::string(text) + "'");
    d.bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  if (kind) *kind = k;
  return d;
}

Digest Digest::FromBytes(const void* data, size_t len) {
  if (len != kDigestSize) abort();
  Digest d;
  memcpy(d.bytes.data(), data, kDigestSize);
  return d;
}

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_) abort();
  Reset();
}

Sha256::~Sha256() { EVP_MD_CTX_free(ctx_); }

void Sha256::Reset() {
  if (EVP_DigestInit_ex(ctx_, Sha256Md(), nullptr) != 1) abort();
}

void Sha256::Update(const void* data, size_t len) {
  if (len && EVP_DigestUpdate(ctx_, data, len) != 1) abort();
}

Digest Sha256::Finish() {
  Digest d;
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx_, d.bytes.data(), &len) != 1 || len != kDigestSize) abort();
  Reset();
  return d;
}

Digest Sha256::Of(std::string_view data) {
  Sha256 h;
  h.Update(data.data(), data.size());
  return h.Finish();
}

}  // namespace cid
