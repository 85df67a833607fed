#include "cid/layers.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "test_util.h"

namespace cid {
namespace {

using test::TempDir;
using test::WriteFile;
using V = std::vector<std::string>;

TEST(SplitLowerdir, ColonsEscapesAndDataLayers) {
  EXPECT_EQ(*SplitLowerdir("/a:/b:/c"), (V{"/a", "/b", "/c"}));
  EXPECT_EQ(*SplitLowerdir("/a\\:b:/c"), (V{"/a:b", "/c"}));
  EXPECT_EQ(*SplitLowerdir("/a\\,b"), (V{"/a,b"}));
  EXPECT_EQ(*SplitLowerdir("/a\\\\b"), (V{"/a\\b"}));
  EXPECT_EQ(*SplitLowerdir("/a:/b::/data"), (V{"/a", "/b", "/data"}));
  EXPECT_EQ(*SplitLowerdir("l/AAA:l/BBB"), (V{"l/AAA", "l/BBB"}));
}

TEST(SplitLowerdir, RefusesWhatOverlayfsRefuses) {
  for (const char* bad : {"", ":/a", "/a:", "/a::", "/a\\", "/a:::/b"}) {
    auto r = SplitLowerdir(bad);
    EXPECT_FALSE(r.ok()) << "'" << bad << "'";
    if (!r.ok()) {
      EXPECT_NE(r.status().message().find("lowerdir"), std::string::npos);
    }
  }
}

TEST(SplitMountOptions, EscapedCommasStayInTheValue) {
  auto o = SplitMountOptions("rw,lowerdir=/x\\,y:/z,upperdir=/u,workdir=/w,uuid=on");
  ASSERT_EQ(o.size(), 5u);
  EXPECT_EQ(o[0], (std::pair<std::string, std::string>{"rw", ""}));
  EXPECT_EQ(o[1], (std::pair<std::string, std::string>{"lowerdir", "/x\\,y:/z"}));
  EXPECT_EQ(o[2].second, "/u");
}

class MountinfoTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& text) {
    WriteFile(dir_ / "mountinfo", text);
    return dir_ / "mountinfo";
  }
  TempDir dir_;
};

TEST_F(MountinfoTest, FindsTheVisibleOverlayAtTheTarget) {
  std::string mi = Write(
      "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n"
      "48 22 0:39 / /c/merged rw - tmpfs tmpfs rw\n"
      "49 48 0:40 / /c/merged rw - overlay overlay rw,lowerdir=/s/l/A:/s/c\\134\\054x\\134:y/diff,upperdir=/s/u,"
      "workdir=/s/w\n"
      "50 22 0:41 / /d/merged rw - overlay overlay rw,lowerdir+=/one,lowerdir+=/two,datadir+=/data\n");
  auto m = FindOverlayMount(mi, "/c/merged");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->lowers, (V{"/s/l/A", "/s/c,x:y/diff"}));
  EXPECT_EQ(m->upper, "/s/u");
  EXPECT_EQ(m->work, "/s/w");
  auto d = FindOverlayMount(mi, "/d/merged");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->lowers, (V{"/one", "/two", "/data"}));
  EXPECT_TRUE(d->upper.empty());
  auto all = ListOverlayMounts(mi);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 2u);
}

TEST_F(MountinfoTest, NotMountedOrNotOverlay) {
  std::string mi = Write("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n48 22 0:39 / /t rw - tmpfs tmpfs rw\n");
  auto none = FindOverlayMount(mi, "/nowhere");
  ASSERT_FALSE(none.ok());
  EXPECT_TRUE(none.status().IsNotFound());
  auto tmpfs = FindOverlayMount(mi, "/t");
  ASSERT_FALSE(tmpfs.ok());
  EXPECT_EQ(tmpfs.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(tmpfs.status().message().find("tmpfs mount, not overlay"), std::string::npos);
  auto missing = FindOverlayMount(dir_ / "no-such-file", "/t");
  EXPECT_FALSE(missing.ok());
}

class ResolveLayerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    test::MakeDirs(st_ / "overlay/l");
    test::MakeDirs(st_ / "overlay/abc/diff");
    test::MakeDirs(outside_ / "etc");
    ASSERT_EQ(symlink("../abc/diff", (st_ / "overlay/l/AAA").c_str()), 0);
    ASSERT_EQ(symlink((outside_ / "etc").c_str(), (st_ / "overlay/l/BAD").c_str()), 0);
    real_ = *CanonicalPathOf(st_ / "overlay/abc/diff");
  }
  static Result<std::string> CanonicalPathOf(const std::string& p) {
    char buf[PATH_MAX];
    if (!realpath(p.c_str(), buf)) return Status::FromErrno(p, errno);
    return std::string(buf);
  }
  TempDir st_, outside_;
  std::string real_;
};

TEST_F(ResolveLayerTest, ShortLinksInsideTheStorage) {
  auto r = ResolveLayer(st_ / "overlay/l/AAA", "");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, real_);
  auto rel = ResolveLayer("l/AAA", st_ / "overlay");
  ASSERT_TRUE(rel.ok()) << rel.status().ToString();
  EXPECT_EQ(*rel, real_);
}

TEST_F(ResolveLayerTest, LinksOutOfTheStorageAreRefused) {
  auto r = ResolveLayer(st_ / "overlay/l/BAD", "");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(r.status().message().find("outside the storage root"), std::string::npos) << r.status().ToString();
  auto rooted = ResolveLayer(outside_ / "etc", st_ / "overlay");
  ASSERT_FALSE(rooted.ok());
  EXPECT_EQ(rooted.status().code(), Status::Code::kInvalidArgument);
  auto relative = ResolveLayer("l/AAA", "");
  ASSERT_FALSE(relative.ok());
  EXPECT_EQ(relative.status().code(), Status::Code::kInvalidArgument);
  // A symlink elsewhere, with no storage root to check it against.
  ASSERT_EQ(symlink((st_ / "overlay/abc").c_str(), (outside_ / "link").c_str()), 0);
  auto unbounded = ResolveLayer(outside_ / "link/diff", "");
  ASSERT_FALSE(unbounded.ok());
  EXPECT_EQ(unbounded.status().code(), Status::Code::kInvalidArgument);
}

TEST_F(ResolveLayerTest, MissingOrNotADirectory) {
  auto gone = ResolveLayer(st_ / "overlay/nope/diff", "");
  ASSERT_FALSE(gone.ok());
  EXPECT_TRUE(gone.status().IsNotFound());
  WriteFile(st_ / "overlay/file", "x");
  auto file = ResolveLayer(st_ / "overlay/file", "");
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().err(), ENOTDIR);
}

TEST(LayerRegistry, RemembersEachLayerOnceAndForgetsGoneOnes) {
  TempDir d;
  test::MakeDirs(d / "a");
  test::MakeDirs(d / "b");
  std::string reg = d / "lower-layers";
  auto none = KnownLayers(reg);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  ASSERT_TRUE(RememberLayers(reg, {d / "a", d / "b"}).ok());
  ASSERT_TRUE(RememberLayers(reg, {d / "b", d / "gone"}).ok());
  EXPECT_EQ(test::ReadFile(reg), d / "a" + "\n" + d / "b" + "\n" + d / "gone" + "\n");
  EXPECT_EQ(*KnownLayers(reg), (V{d / "a", d / "b"}));
  // Listed is enough, gone or not: nothing is appended twice.
  ASSERT_TRUE(RememberLayers(reg, {d / "gone", d / "a", d / "a"}).ok());
  EXPECT_EQ(test::ReadFile(reg), d / "a" + "\n" + d / "b" + "\n" + d / "gone" + "\n");
  // A last line without its newline (written by hand) is still a line.
  WriteFile(reg, d / "a" + "\n" + d / "b");
  ASSERT_TRUE(RememberLayers(reg, {d / "b", d / "c"}).ok());
  EXPECT_EQ(test::ReadFile(reg), d / "a" + "\n" + d / "b" + "\n" + d / "c" + "\n");
}

TEST(PathBeneath, ComponentWise) {
  EXPECT_TRUE(PathBeneath("/a/b", "/a"));
  EXPECT_TRUE(PathBeneath("/a", "/a"));
  EXPECT_FALSE(PathBeneath("/ab", "/a"));
  EXPECT_FALSE(PathBeneath("/a", "/a/b"));
  EXPECT_TRUE(PathBeneath("/x", "/"));
}

}  // namespace
}  // namespace cid
