#include "cid/digest.h"

#include <gtest/gtest.h>

#include <string>

namespace cid {
namespace {

// FIPS 180-2 / NIST CSRC examples.
TEST(DigestTest, KnownAnswers) {
  EXPECT_EQ(Sha256::Of("").ToHex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256::Of("abc").ToHex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256::Of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq").ToHex(),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Sha256::Of(std::string(1000000, 'a')).ToHex(),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

// libcrypto is loaded on first use; where it cannot be, the error names the
// library and says why, rather than abort in the middle of a scan.
TEST(DigestTest, LibcryptoLoadedOnDemand) {
  EXPECT_TRUE(Sha256Available().ok()) << Sha256Available().ToString();
  Status missing = digest_internal::ProbeCrypto("libcid-test-no-such-crypto.so.0");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.code(), Status::Code::kUnsupported);
  EXPECT_NE(missing.message().find("libcid-test-no-such-crypto.so.0"), std::string::npos) << missing.ToString();
  // A library that loads but is not libcrypto.
  Status wrong = digest_internal::ProbeCrypto("libsqlite3.so.0");
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.message().find("EVP"), std::string::npos) << wrong.ToString();
}

TEST(DigestTest, StreamingEqualsOneShot) {
  std::string data;
  for (int i = 0; i < 100000; i++) data += static_cast<char>(i * 7);
  Sha256 h;
  for (size_t off = 0; off < data.size(); off += 997) h.Update(data.data() + off, std::min<size_t>(997, data.size() - off));
  EXPECT_EQ(h.Finish(), Sha256::Of(data));
  // Finish resets: the same object hashes the next input from scratch.
  h.Update("abc", 3);
  EXPECT_EQ(h.Finish(), Sha256::Of("abc"));
}

TEST(DigestTest, ParseRoundTrip) {
  Digest d = Sha256::Of("round trip");
  EXPECT_EQ(d.ToString(), "fsverity-sha256:" + d.ToHex());
  auto p = Digest::Parse(d.ToString());
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(*p, d);
  std::string upper = d.ToHex();
  for (char& c : upper) c = static_cast<char>(toupper(c));
  auto q = Digest::Parse(upper);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(*q, d);
}

TEST(DigestTest, ParseRejectsBadInput) {
  EXPECT_FALSE(Digest::Parse("").ok());
  EXPECT_FALSE(Digest::Parse("sha256:abc").ok());
  EXPECT_FALSE(Digest::Parse("md5:" + std::string(64, '0')).ok());
  auto bad = Digest::Parse("fsverity-sha256:" + std::string(63, '0') + "g");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("hex"), std::string::npos);
}

// Ids of cidctl before the fs-verity id were "sha256:<hex>", the plain
// SHA-256 of the file: recognised as such, never taken for a content id.
TEST(DigestTest, PlainSha256IdsAreRecognisedNotTrusted) {
  const std::string old = "sha256:" + Sha256::Of("abc").ToHex();
  auto refused = Digest::Parse(old);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("plain SHA-256"), std::string::npos) << refused.status().message();
  DigestKind kind = DigestKind::kVerity;
  auto p = Digest::Parse(old, &kind);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(kind, DigestKind::kPlainSha256);
  EXPECT_EQ(*p, Sha256::Of("abc"));
  auto q = Digest::Parse(p->ToString(), &kind);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(kind, DigestKind::kVerity);
}

}  // namespace
}  // namespace cid
