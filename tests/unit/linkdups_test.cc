#include "cid/linkdups.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "cid/scanner.h"
#include "cid/share.h"
#include "cid/walker.h"
#include "test_util.h"

namespace cid {
namespace {

using test::ReadFile;
using test::TempDir;
using test::WriteFile;

ino_t Ino(const std::string& p) {
  struct stat st;
  EXPECT_EQ(lstat(p.c_str(), &st), 0) << p;
  return st.st_ino;
}

void SetMtime(const std::string& p, time_t t) {
  timespec ts[2] = {{t, 0}, {t, 0}};
  ASSERT_EQ(utimensat(AT_FDCWD, p.c_str(), ts, AT_SYMLINK_NOFOLLOW), 0) << p;
}

class LinkDupsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto idx = Index::Open(db_ / "index.db", Index::Mode::kReadWrite);
    ASSERT_TRUE(idx.ok()) << idx.status().ToString();
    index_ = std::move(*idx);
    a_ = *CanonicalPath(Dir("a"));
    b_ = *CanonicalPath(Dir("b"));
    up_ = *CanonicalPath(Dir("upper"));
  }
  std::string Dir(const std::string& name) {
    test::MakeDirs(root_ / name);
    return root_ / name;
  }
  // Same bytes in both layers, same metadata unless told otherwise.
  void Pair(const std::string& name, const std::string& data) {
    WriteFile(a_ + "/" + name, data);
    WriteFile(b_ + "/" + name, data);
    SetMtime(a_ + "/" + name, 1700000000);
    SetMtime(b_ + "/" + name, 1700000000);
  }
  void ScanAll() {
    for (const auto& t : {a_, b_, up_}) {
      ScanStats st;
      ASSERT_TRUE(ScanTree(index_.get(), t, ScanOptions{}, &st).ok());
    }
  }
  LinkStats Link(bool dry_run = false) {
    LinkOptions o;
    o.layers = {a_, b_};
    o.journal = db_ / "hardlinks.journal";
    o.dry_run = dry_run;
    o.on_error = [](const Status& s) { ADD_FAILURE() << s.ToString(); };
    LinkStats st;
    Status s = LinkDuplicates(index_.get(), o, &st);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return st;
  }

  TempDir root_, db_;
  std::string a_, b_, up_;
  std::unique_ptr<Index> index_;
};

TEST_F(LinkDupsTest, LinksOnlyWhereEverythingMatchesAndUndoRestores) {
  Pair("same", "identical bytes and metadata");
  Pair("mode", "identical bytes, other mode");
  ASSERT_EQ(chmod((b_ + "/mode").c_str(), 0600), 0);
  Pair("mtime", "identical bytes, other mtime");
  SetMtime(b_ + "/mtime", 1600000000);
  // Another owner: only root can give a file away.
  bool owners = geteuid() == 0;
  if (owners) {
    Pair("owner", "identical bytes, other owner");
    ASSERT_EQ(chown((b_ + "/owner").c_str(), 65534, 65534), 0);
  }
  Pair("upper", "also in a writable layer, hard-linked there");
  ASSERT_EQ(link((b_ + "/upper").c_str(), (up_ + "/upper").c_str()), 0);
  bool xattrs = setxattr((a_ + "/same").c_str(), "user.probe", "1", 1, 0) == 0;
  if (xattrs) {
    ASSERT_EQ(removexattr((a_ + "/same").c_str(), "user.probe"), 0);
    Pair("xattr", "identical bytes, other xattr");
    ASSERT_EQ(setxattr((b_ + "/xattr").c_str(), "user.cid-test", "b", 1, 0), 0);
  }
  ScanAll();

  LinkStats dry = Link(/*dry_run=*/true);
  EXPECT_EQ(dry.linked, 1u);
  EXPECT_NE(Ino(a_ + "/same"), Ino(b_ + "/same"));

  LinkStats st = Link();
  EXPECT_EQ(st.linked, 1u);
  EXPECT_EQ(st.linked_bytes, std::string("identical bytes and metadata").size());
  EXPECT_EQ(st.differ, 4u + (xattrs ? 2u : 0u) + (owners ? 2u : 0u));  // two copies per content left alone
  EXPECT_EQ(st.outside, 1u);
  EXPECT_EQ(st.errors, 0u);
  EXPECT_EQ(Ino(a_ + "/same"), Ino(b_ + "/same"));
  for (const char* n : {"mode", "mtime", "upper"}) EXPECT_NE(Ino(a_ + "/" + n), Ino(b_ + "/" + n)) << n;
  if (owners) {
    EXPECT_NE(Ino(a_ + "/owner"), Ino(b_ + "/owner"));
  }
  if (xattrs) {
    EXPECT_NE(Ino(a_ + "/xattr"), Ino(b_ + "/xattr"));
  }
  EXPECT_EQ(Ino(b_ + "/upper"), Ino(up_ + "/upper"));  // the writable layer's inode untouched

  // Undo: own inodes again, with the same bytes, mode and mtime.
  UndoStats u;
  Status s = UndoLinks(db_ / "hardlinks.journal", [](const Status& e) { ADD_FAILURE() << e.ToString(); }, &u);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(u.restored, 1u);
  EXPECT_NE(Ino(a_ + "/same"), Ino(b_ + "/same"));
  EXPECT_EQ(ReadFile(b_ + "/same"), "identical bytes and metadata");
  struct stat sa, sb;
  ASSERT_EQ(lstat((a_ + "/same").c_str(), &sa), 0);
  ASSERT_EQ(lstat((b_ + "/same").c_str(), &sb), 0);
  EXPECT_EQ(sa.st_mode, sb.st_mode);
  EXPECT_EQ(sb.st_mtim.tv_sec, 1700000000);
  EXPECT_EQ(access((db_ / "hardlinks.journal").c_str(), F_OK), -1);  // renamed aside
  UndoStats again;
  EXPECT_TRUE(UndoLinks(db_ / "hardlinks.journal", [](const Status&) {}, &again).IsNotFound());
}

TEST_F(LinkDupsTest, ContentChangedSinceIndexedIsNotLinked) {
  Pair("f", "version one of the bytes");
  ScanAll();
  // Same size, same mtime, other bytes: only the byte comparison sees it.
  WriteFile(b_ + "/f", "version two of the bytes");
  SetMtime(b_ + "/f", 1700000000);
  LinkStats st = Link();
  EXPECT_EQ(st.linked, 0u);
  EXPECT_NE(Ino(a_ + "/f"), Ino(b_ + "/f"));
  EXPECT_EQ(ReadFile(b_ + "/f"), "version two of the bytes");
}

TEST_F(LinkDupsTest, UndoCleansUpAnInterruptedRun) {
  Pair("f", "bytes");
  // A run killed after link(2) to the temporary name, before rename(2).
  std::string tmp = b_ + "/.cid-link.1.0";
  ASSERT_EQ(link((a_ + "/f").c_str(), tmp.c_str()), 0);
  WriteFile(db_ / "hardlinks.journal", "{\"op\":\"link\",\"target\":\"" + b_ + "/f\",\"source\":\"" + a_ +
                                           "/f\",\"tmp\":\"" + tmp + "\",\"dev\":1,\"ino\":" +
                                           std::to_string(Ino(b_ + "/f")) + "}\n{\"op\":\"li");
  UndoStats u;
  Status s = UndoLinks(db_ / "hardlinks.journal", [](const Status& e) { ADD_FAILURE() << e.ToString(); }, &u);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(u.removed_tmp, 1u);
  EXPECT_EQ(u.restored, 0u);
  EXPECT_EQ(access(tmp.c_str(), F_OK), -1);
  EXPECT_NE(Ino(a_ + "/f"), Ino(b_ + "/f"));
}

TEST_F(LinkDupsTest, ShareReportCountsDuplicatesOfTheLayersOnly) {
  Pair("f", "twenty bytes of data");
  WriteFile(up_ + "/g", "only in the upper dir");
  ScanAll();
  ShareOptions o;  // kReport
  ShareStats st;
  ASSERT_TRUE(ShareDuplicates(index_.get(), {b_}, o, &st).ok());
  EXPECT_EQ(st.groups, 1u);
  EXPECT_EQ(st.files, 1u);
  EXPECT_EQ(st.duplicated_bytes, 20u);
  ShareStats both;
  ASSERT_TRUE(ShareDuplicates(index_.get(), {a_, b_}, o, &both).ok());
  EXPECT_EQ(both.files, 2u);
  EXPECT_EQ(both.duplicated_bytes, 20u);  // one of the two copies stays
  EXPECT_EQ(both.tagged, 0u);
}

}  // namespace
}  // namespace cid
