#include "cid/kernel.h"

#include <gtest/gtest.h>
#include <linux/cid.h>

#include "test_util.h"

namespace cid {
namespace {

TEST(KernelTest, UapiLayoutIsWhatUserspaceAssumes) {
  EXPECT_EQ(sizeof(cid_tag{}.digest), kDigestSize);
  EXPECT_EQ(CID_DIGEST_SIZE, static_cast<int>(kDigestSize));
}

TEST(KernelTest, ErrnoMessagesArePlain) {
  test::TempDir fake;  // exists: the kernel "has" the feature
  std::string none = fake / "absent";
  EXPECT_NE(IoctlErrorMessage("/f", "tag", ENOTTY).find("lacks named merging"), std::string::npos);
  EXPECT_NE(IoctlErrorMessage("/f", "tag", EINVAL, none).find("lacks named merging"), std::string::npos);
  EXPECT_EQ(IoctlErrorMessage("/f", "tag", EINVAL, fake.path()).find("lacks named merging"), std::string::npos);
  EXPECT_NE(IoctlErrorMessage("/f", "tag", EPERM).find("CAP_SYS_ADMIN"), std::string::npos);
  EXPECT_NE(IoctlErrorMessage("/f", "tag", ETXTBSY).find("open for writing"), std::string::npos);
  EXPECT_NE(IoctlErrorMessage("/f", "tag", EOPNOTSUPP).find("tmpfs"), std::string::npos);
  EXPECT_NE(IoctlErrorMessage("/f", "tag", EBADMSG).find("expected digest"), std::string::npos);
  EXPECT_NE(IoctlErrorMessage("/f", "tag", EINTR).find("interrupted"), std::string::npos);
  EXPECT_EQ(IoctlErrorMessage("/some/path", "tag", EIO).rfind("/some/path: tag: ", 0), 0u);
}

TEST(KernelTest, TagOnAKernelWithoutTheFeatureSaysSoPlainly) {
  if (KernelHasNamedMerging()) GTEST_SKIP() << "this kernel has named merging (tested in tests/vm)";
  test::TempDir d;
  test::WriteFile(d / "f", "content");
  auto r = TagFile(d / "f", TagRequest{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kUnsupported) << r.status().ToString();
  EXPECT_NE(r.status().message().find("lacks named merging"), std::string::npos) << r.status().ToString();
  EXPECT_NE(r.status().message().find(d / "f"), std::string::npos);
  auto q = QueryFile(d / "f");
  ASSERT_FALSE(q.ok());
  EXPECT_NE(q.status().message().find("lacks named merging"), std::string::npos) << q.status().ToString();
}

TEST(KernelTest, TagRefusesSymlinks) {
  test::TempDir d;
  test::WriteFile(d / "f", "content");
  ASSERT_EQ(symlink((d / "f").c_str(), (d / "l").c_str()), 0);
  auto r = TagFile(d / "l", TagRequest{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("symbolic link"), std::string::npos);
}

TEST(KernelTest, StatsReadsWhateverFilesExist) {
  test::TempDir d;
  test::WriteFile(d / "enabled", "1\n");
  test::WriteFile(d / "pages_sharing", "42\n");
  test::WriteFile(d / "unrelated", "x\n");
  auto stats = ReadKernelStats(d.path());
  ASSERT_EQ(stats.size(), 2u);
  EXPECT_EQ(stats[0], (std::pair<std::string, std::string>("enabled", "1")));
  EXPECT_EQ(stats[1], (std::pair<std::string, std::string>("pages_sharing", "42")));
  EXPECT_TRUE(KernelHasNamedMerging(d.path()));
  EXPECT_FALSE(KernelHasNamedMerging(d / "nope"));
}

}  // namespace
}  // namespace cid
