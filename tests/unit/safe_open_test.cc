// Safe opens: files of a scanned tree are opened beneath its root, never
// through a symlink, at any depth and path length, with a bounded number
// of directory fds.
#include "cid/safe_open.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>

#include "cid/index.h"
#include "cid/scanner.h"
#include "cid/walker.h"
#include "test_util.h"

namespace cid {
namespace {

using test::TempDir;
using test::WriteFile;

// Names of files inotify saw opened in the watched directory.
std::vector<std::string> OpenedNames(int ifd) {
  std::vector<std::string> names;
  alignas(struct inotify_event) char buf[4096];
  ssize_t n;
  while ((n = read(ifd, buf, sizeof(buf))) > 0) {
    for (char* p = buf; p < buf + n;) {
      auto* ev = reinterpret_cast<struct inotify_event*>(p);
      if ((ev->mask & IN_OPEN) && ev->len) names.push_back(ev->name);
      p += sizeof(*ev) + ev->len;
    }
  }
  return names;
}

TEST(SafeOpenTest, OpenBeneathRefusesSymlinksAndEscapes) {
  TempDir d, outside;
  WriteFile(outside / "x", "outside");
  WriteFile(d / "in/x", "inside");
  ASSERT_EQ(symlink(outside.path().c_str(), (d / "link").c_str()), 0);
  int root = OpenRootDir(d.path());
  ASSERT_GE(root, 0) << strerror(-root);
  int fd = OpenBeneath(root, "in/x", O_RDONLY);
  EXPECT_GE(fd, 0);
  if (fd >= 0) close(fd);
  EXPECT_EQ(OpenBeneath(root, "link/x", O_RDONLY), -ELOOP);
  EXPECT_EQ(OpenBeneath(root, "../" + outside.path().substr(outside.path().rfind('/') + 1) + "/x", O_RDONLY), -EXDEV);
  EXPECT_EQ(OpenBeneath(root, outside / "x", O_RDONLY), -EINVAL);
  close(root);
  EXPECT_EQ(OpenRootDir(d / "link"), -ELOOP);
}

// The race: a directory of the tree is replaced by a symlink to
// another tree after the walk listed it and before its file is opened.
// Today's scan opened the file outside (a FIFO there was opened); it must
// not be opened at all.
TEST(SafeOpenTest, DirectorySwappedForASymlinkMidScanIsNotFollowed) {
  TempDir tree, outside, db;
  WriteFile(tree / "a", "first file, read while d is swapped");
  WriteFile(tree / "d/f", "inside");
  WriteFile(outside / "d/f", "outside");
  ASSERT_EQ(unlink((outside / "d/f").c_str()), 0);
  ASSERT_EQ(mkfifo((outside / "d/f").c_str(), 0644), 0);
  int outside_watch = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  ASSERT_GE(outside_watch, 0);
  ASSERT_GE(inotify_add_watch(outside_watch, (outside / "d").c_str(), IN_OPEN), 0);
  // Tells when the walk has finished listing d (its fd is closed).
  int walk_watch = inotify_init1(IN_CLOEXEC);
  ASSERT_GE(walk_watch, 0);
  ASSERT_GE(inotify_add_watch(walk_watch, (tree / "d").c_str(), IN_CLOSE_NOWRITE), 0);

  auto index = Index::Open(db / "index.db", Index::Mode::kReadWrite);
  ASSERT_TRUE(index.ok());
  ScanOptions o;
  o.workers = 1;
  o.lazy = false;  // every file is read
  o.hasher.files_in_flight = 1;
  std::vector<Status> errors;
  o.on_error = [&](const Status& s) { errors.push_back(s); };
  std::string d = tree / "d", moved = tree / "d.moved", target = outside / "d";
  o.engine = [&] {
    return test::NewHookedEngine(NewPreadEngine(1), [&, done = false](int, ReadCompletion*) mutable {
      if (done) return;
      done = true;
      struct pollfd p = {walk_watch, POLLIN, 0};
      ASSERT_EQ(poll(&p, 1, 10000), 1) << "the walk never closed " << d;
      ASSERT_EQ(rename(d.c_str(), moved.c_str()), 0);
      ASSERT_EQ(symlink(target.c_str(), d.c_str()), 0);
    });
  };
  ScanStats st;
  Status s = ScanTree(index->get(), tree.path(), o, &st);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(OpenedNames(outside_watch), std::vector<std::string>{}) << "a file outside the scanned tree was opened";
  EXPECT_EQ(st.hashed, 1u);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].message().find(tree / "d/f"), std::string::npos) << errors[0].ToString();
  auto row = (*index)->FindPath(tree / "d/f");
  ASSERT_TRUE(row.ok());
  EXPECT_FALSE(row->has_value());
  close(outside_watch);
  close(walk_watch);
}

// A tree deeper than the fd limit allows directories open at once, with
// paths longer than PATH_MAX: the walk and the hashing both get through.
TEST(SafeOpenTest, DeepTreeUnderALowFdLimitAndPathsLongerThanPathMax) {
  TempDir tree, db;
  std::string rel;
  const std::string name(120, 'n');
  int fd = open(tree.path().c_str(), O_RDONLY | O_DIRECTORY);
  ASSERT_GE(fd, 0);
  for (int i = 0; i < 100; i++) {  // 100 levels of 121 bytes: about 12 KiB of path
    ASSERT_EQ(mkdirat(fd, name.c_str(), 0755), 0);
    int next = openat(fd, name.c_str(), O_RDONLY | O_DIRECTORY);
    ASSERT_GE(next, 0);
    close(fd);
    fd = next;
    rel += name + "/";
    if (i == 60 || i == 99) {
      int f = openat(fd, "leaf", O_WRONLY | O_CREAT, 0644);
      ASSERT_GE(f, 0);
      ASSERT_EQ(write(f, "deep", 4), 4);
      close(f);
    }
  }
  close(fd);
  std::string deepest = tree.path() + "/" + rel + "leaf";
  ASSERT_GT(deepest.size(), static_cast<size_t>(PATH_MAX));
  std::string index_path = db / "index.db";
  std::string root = tree.path();
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    struct rlimit rl = {64, 64};
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) _exit(10);
    auto index = Index::Open(index_path, Index::Mode::kReadWrite);
    if (!index.ok()) _exit(11);
    ScanOptions o;
    o.workers = 2;
    o.lazy = false;  // every file is read
    o.on_error = [](const Status& s) { fprintf(stderr, "scan error: %s\n", s.ToString().c_str()); };
    ScanStats st;
    Status s = ScanTree(index->get(), root, o, &st);
    if (!s.ok()) {
      fprintf(stderr, "%s\n", s.ToString().c_str());
      _exit(12);
    }
    if (st.errors != 0) _exit(13);
    _exit(st.hashed == 2 ? 0 : 14);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0) << "10 setrlimit, 11 index, 12 scan failed, 13 errors, 14 not both hashed";
  auto index = Index::Open(index_path, Index::Mode::kReadOnly);
  ASSERT_TRUE(index.ok());
  auto row = (*index)->FindPath(deepest);
  ASSERT_TRUE(row.ok());
  ASSERT_TRUE(row->has_value());
  EXPECT_EQ((*row)->inode.digest, VerityHasher::Of("deep"));
}

TEST(SafeOpenTest, WalkReportsFilesInPathOrder) {
  TempDir d;
  for (const char* p : {"x/b", "x.txt", "x0", "x/a/z", "w", "x-", "y/x"}) WriteFile(d / p, "1");
  std::vector<std::string> seen;
  WalkCallbacks cb;
  cb.on_file = [&](const std::string& p, const FileStat&) { seen.push_back(p); };
  cb.on_error = [](const std::string&, const Status&) {};
  WalkStats ws;
  ASSERT_TRUE(Walk(d.path(), cb, &ws).ok());
  std::vector<std::string> sorted = seen;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(seen, sorted);
  EXPECT_EQ(seen.size(), 7u);
}

}  // namespace
}  // namespace cid
