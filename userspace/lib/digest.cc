#include "cid/digest.h"

#include <dlfcn.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace cid {

// libcrypto is loaded when SHA-256 is first needed, not when the program
// starts: most runs of the container hooks hash nothing, and mapping and
// relocating libcrypto (about 21,000 relocations, each page of them a
// copy-on-write fault) was the largest single part of their start-up
// (container-hooks/README.md, "Start-up").  The soname is the one the
// headers were built for.
namespace {

#define CID_STR2(x) #x
#define CID_STR(x) CID_STR2(x)
constexpr char kLibcryptoSoname[] = "libcrypto.so." CID_STR(OPENSSL_SHLIB_VERSION);
#undef CID_STR
#undef CID_STR2

// The libcrypto functions libcid uses, resolved from one dlopen.
struct CryptoApi {
  decltype(&EVP_MD_fetch) md_fetch;
  decltype(&EVP_sha256) sha256;
  decltype(&EVP_MD_CTX_new) ctx_new;
  decltype(&EVP_MD_CTX_free) ctx_free;
  decltype(&EVP_DigestInit_ex) init;
  decltype(&EVP_DigestUpdate) update;
  decltype(&EVP_DigestFinal_ex) finish;
  const EVP_MD* md;  // SHA-256, fetched once: EVP_MD_fetch avoids a provider lookup per file
};

struct LoadedCrypto {
  CryptoApi api{};
  Status status;
};

LoadedCrypto Load(const char* soname) {
  LoadedCrypto out;
  // Never closed: the digests and contexts made from it live until exit.
  void* h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char* e = dlerror();
    out.status = Status::Unsupported(std::string("cannot load ") + soname + " for SHA-256: " + (e ? e : "dlopen failed") +
                                     " (is OpenSSL's libcrypto installed?)");
    return out;
  }
  bool all = true;
  auto sym = [&](auto* fn, const char* name) {
    void* p = dlsym(h, name);
    if (!p) all = false;
    *fn = reinterpret_cast<std::remove_reference_t<decltype(*fn)>>(p);
  };
  CryptoApi& a = out.api;
  sym(&a.md_fetch, "EVP_MD_fetch");
  sym(&a.sha256, "EVP_sha256");
  sym(&a.ctx_new, "EVP_MD_CTX_new");
  sym(&a.ctx_free, "EVP_MD_CTX_free");
  sym(&a.init, "EVP_DigestInit_ex");
  sym(&a.update, "EVP_DigestUpdate");
  sym(&a.finish, "EVP_DigestFinal_ex");
  if (!all) {
    out.status = Status::Unsupported(std::string(soname) + ": lacks the EVP digest functions (not OpenSSL 3's libcrypto?)");
    return out;
  }
  EVP_MD* m = a.md_fetch(nullptr, "SHA256", nullptr);
  a.md = m ? static_cast<const EVP_MD*>(m) : a.sha256();
  if (!a.md) out.status = Status::Unsupported(std::string(soname) + ": no SHA-256 digest");
  return out;
}

const LoadedCrypto& Crypto() {
  static const LoadedCrypto loaded = Load(kLibcryptoSoname);
  return loaded;
}

// For hashing itself: a program that must not stop here checks
// Sha256Available() before it hashes.
const CryptoApi& Api() {
  const LoadedCrypto& c = Crypto();
  if (!c.status.ok()) {
    fprintf(stderr, "cid: %s\n", c.status.message().c_str());
    abort();
  }
  return c.api;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

Status Sha256Available() { return Crypto().status; }

namespace digest_internal {
Status ProbeCrypto(const char* soname) { return Load(soname).status; }
}  // namespace digest_internal

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

Sha256::Sha256() : ctx_(Api().ctx_new()) {
  if (!ctx_) abort();
  Reset();
}

Sha256::~Sha256() { Api().ctx_free(ctx_); }

void Sha256::Reset() {
  const CryptoApi& a = Api();
  if (a.init(ctx_, a.md, nullptr) != 1) abort();
}

void Sha256::Update(const void* data, size_t len) {
  if (len && Api().update(ctx_, data, len) != 1) abort();
}

Digest Sha256::Finish() {
  Digest d;
  unsigned int len = 0;
  if (Api().finish(ctx_, d.bytes.data(), &len) != 1 || len != kDigestSize) abort();
  Reset();
  return d;
}

Digest Sha256::Of(std::string_view data) {
  Sha256 h;
  h.Update(data.data(), data.size());
  return h.Finish();
}

}  // namespace cid
