#include "cid/walker.h"

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>

#include <cstring>
#include <unistd.h>

#include <map>
#include <set>

#include "test_util.h"

namespace cid {
namespace {

using test::TempDir;
using test::WriteFile;

struct Collected {
  std::map<std::string, FileStat> files;
  std::vector<Status> errors;
  WalkStats stats;
  Status status;
};

Collected WalkAll(const std::string& root) {
  Collected c;
  WalkCallbacks cb;
  cb.on_file = [&](const std::string& p, const FileStat& st) { c.files[p] = st; };
  cb.on_error = [&](const std::string&, const Status& s) { c.errors.push_back(s); };
  c.status = Walk(root, cb, &c.stats);
  return c;
}

TEST(WalkerTest, FindsRegularFilesInNestedDirectories) {
  TempDir d;
  WriteFile(d / "a", "1");
  WriteFile(d / "x/b", "22");
  WriteFile(d / "x/y/z/c", "");
  Collected c = WalkAll(d.path());
  ASSERT_TRUE(c.status.ok());
  EXPECT_EQ(c.files.size(), 3u);
  EXPECT_EQ(c.files[d / "x/b"].size, 2u);
  EXPECT_EQ(c.files[d / "x/y/z/c"].size, 0u);  // empty files are files
  EXPECT_EQ(c.stats.dirs, 4u);
}

TEST(WalkerTest, NeverFollowsSymlinks) {
  TempDir d, outside;
  WriteFile(outside / "secret", "s");
  WriteFile(d / "real", "r");
  ASSERT_EQ(symlink(outside.path().c_str(), (d / "dirlink").c_str()), 0);
  ASSERT_EQ(symlink((d / "real").c_str(), (d / "filelink").c_str()), 0);
  ASSERT_EQ(symlink("loop", (d / "loop").c_str()), 0);
  Collected c = WalkAll(d.path());
  ASSERT_TRUE(c.status.ok());
  EXPECT_EQ(c.files.size(), 1u);
  EXPECT_TRUE(c.files.count(d / "real"));
  EXPECT_EQ(c.stats.symlinks, 3u);
  EXPECT_TRUE(c.errors.empty());
  // A symlink given as the root is refused, not followed.
  Collected r = WalkAll(d / "dirlink");
  EXPECT_FALSE(r.status.ok());
  EXPECT_TRUE(r.files.empty());
}

TEST(WalkerTest, SkipsSpecialFiles) {
  TempDir d;
  WriteFile(d / "f", "f");
  ASSERT_EQ(mkfifo((d / "fifo").c_str(), 0644), 0);
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string sp = d / "sock";
  ASSERT_LT(sp.size(), sizeof(addr.sun_path));
  strcpy(addr.sun_path, sp.c_str());
  ASSERT_EQ(bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  if (geteuid() == 0) {
    ASSERT_EQ(mknod((d / "null").c_str(), S_IFCHR | 0600, makedev(1, 3)), 0);
  }
  Collected c = WalkAll(d.path());
  close(s);
  ASSERT_TRUE(c.status.ok());
  EXPECT_EQ(c.files.size(), 1u);
  EXPECT_EQ(c.stats.special, geteuid() == 0 ? 3u : 2u);
}

TEST(WalkerTest, HardlinksAreReportedPerPathWithTheSameInode) {
  TempDir d;
  WriteFile(d / "one", "same inode");
  ASSERT_EQ(link((d / "one").c_str(), (d / "two").c_str()), 0);
  Collected c = WalkAll(d.path());
  ASSERT_EQ(c.files.size(), 2u);
  EXPECT_EQ(c.files[d / "one"].ino, c.files[d / "two"].ino);
  EXPECT_EQ(c.files[d / "one"].nlink, 2u);
}

TEST(WalkerTest, UnreadableDirectoryIsReportedAndTheWalkGoesOn) {
  TempDir d;
  ASSERT_EQ(chmod(d.path().c_str(), 0755), 0);
  WriteFile(d / "a/visible", "v");
  WriteFile(d / "locked/hidden", "h");
  WriteFile(d / "z/visible", "v");
  ASSERT_EQ(chmod((d / "locked").c_str(), 0), 0);
  int rc = test::RunUnprivileged([&] {
    Collected c = WalkAll(d.path());
    if (!c.status.ok()) return 1;
    if (c.files.size() != 2) return 2;                // both visible files, not the hidden one
    if (c.errors.size() != 1 || c.stats.errors != 1) return 3;
    const Status& e = c.errors[0];
    if (e.err() != EACCES) return 4;                 // errno kept
    if (e.message().find(d / "locked") == std::string::npos) return 5;  // path named
    if (e.message().find("Permission denied") == std::string::npos) return 6;
    return 0;
  });
  EXPECT_EQ(rc, 0);
}

TEST(WalkerTest, RootMayBeAFileAndMissingRootIsAnError) {
  TempDir d;
  WriteFile(d / "only", "o");
  Collected c = WalkAll(d / "only");
  ASSERT_TRUE(c.status.ok());
  EXPECT_EQ(c.files.size(), 1u);
  Collected m = WalkAll(d / "missing");
  EXPECT_TRUE(m.status.IsNotFound());
  EXPECT_NE(m.status.message().find(d / "missing"), std::string::npos);
}

TEST(WalkerTest, PseudoFilesystemsAreNotEntered) {
  Collected p = WalkAll("/proc");
  ASSERT_FALSE(p.status.ok());
  EXPECT_NE(p.status.message().find("proc pseudo filesystem"), std::string::npos) << p.status.ToString();
  EXPECT_TRUE(p.files.empty());

  TempDir d;
  WriteFile(d / "real", "r");
  test::MakeDirs(d / "proc");
  if (mount("proc", (d / "proc").c_str(), "proc", 0, nullptr) != 0)
    GTEST_SKIP() << "cannot mount proc here: " << strerror(errno);
  Collected c = WalkAll(d.path());
  umount2((d / "proc").c_str(), MNT_DETACH);
  ASSERT_TRUE(c.status.ok());
  EXPECT_EQ(c.files.size(), 1u);
  EXPECT_EQ(c.stats.pseudo_fs, 1u);
}

TEST(WalkerTest, StopFlagEndsTheWalk) {
  TempDir d;
  for (int i = 0; i < 50; i++) WriteFile(d / ("f" + std::to_string(i)), "x");
  std::atomic<bool> stop{false};
  int seen = 0;
  WalkCallbacks cb;
  cb.on_file = [&](const std::string&, const FileStat&) {
    if (++seen == 10) stop = true;
  };
  cb.on_error = [](const std::string&, const Status&) {};
  cb.stop = &stop;
  WalkStats st;
  ASSERT_TRUE(Walk(d.path(), cb, &st).ok());
  EXPECT_EQ(seen, 10);
}

}  // namespace
}  // namespace cid
