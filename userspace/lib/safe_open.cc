#include "cid/safe_open.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>

namespace cid {

namespace {

constexpr uint64_t kResolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;

int Openat2(int dir_fd, const std::string& rel, int flags, uint64_t resolve) {
  struct open_how how {};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.resolve = resolve;
  int fd;
  do {
    fd = static_cast<int>(syscall(SYS_openat2, dir_fd, rel.c_str(), &how, sizeof(how)));
  } while (fd < 0 && errno == EAGAIN);  // a rename raced the lookup
  return fd < 0 ? -errno : fd;
}

}  // namespace

int OpenBeneath(int dir_fd, std::string_view rel, int flags) {
  if (rel.empty() || rel.front() == '/') return -EINVAL;
  // openat2 takes at most PATH_MAX - 1 bytes: walk longer paths a run of
  // whole components at a time, each run beneath the directory before it.
  constexpr size_t kMax = PATH_MAX - 1;
  int cur = dir_fd;
  while (rel.size() > kMax) {
    size_t cut = rel.rfind('/', kMax);
    if (cut == std::string_view::npos || cut == 0) {
      if (cur != dir_fd) close(cur);
      return -ENAMETOOLONG;  // a single name longer than PATH_MAX
    }
    int next = Openat2(cur, std::string(rel.substr(0, cut)), O_PATH | O_DIRECTORY, kResolve);
    if (cur != dir_fd) close(cur);
    if (next < 0) return next;
    cur = next;
    rel.remove_prefix(cut + 1);
  }
  int fd = Openat2(cur, std::string(rel), flags, kResolve);
  if (cur != dir_fd) close(cur);
  return fd;
}

int OpenRootDir(const std::string& path) {
  if (path.empty() || path.front() != '/') return -EINVAL;
  if (path == "/") {
    int fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
  }
  int slash = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (slash < 0) return -errno;
  int fd = OpenBeneath(slash, std::string_view(path).substr(1), O_RDONLY | O_DIRECTORY);
  close(slash);
  return fd;
}

Result<int> OpenFileBeneath(int dir_fd, std::string_view rel, const std::string& path, const FileStat& expect,
                            FileStat* out, bool keep_nonblock) {
  int flags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK;
  int fd = OpenBeneath(dir_fd, rel, flags | O_NOATIME);
  if (fd == -EPERM) fd = OpenBeneath(dir_fd, rel, flags);  // O_NOATIME: only the owner may
  if (fd < 0) {
    if (fd == -ELOOP || fd == -EXDEV)
      return Status::WithErrno(path + ": a symbolic link or a path outside the scanned tree on the way; not opened",
                               -fd);
    return Status::FromErrno(path, -fd);
  }
  struct stat st;
  if (fstat(fd, &st) < 0) {
    int e = errno;
    close(fd);
    return Status::FromErrno(path, e);
  }
  FileStat fs = FileStat::From(st);
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return Status::Changed(path + ": no longer a regular file");
  }
  if (expect.ino != 0 && (expect.dev != fs.dev || expect.ino != fs.ino)) {
    close(fd);
    return Status::Changed(path + ": replaced by another file since it was listed");
  }
  // io_uring honours O_NONBLOCK on regular files (EAGAIN instead of waiting
  // for the disk): clear it again.
  if (!keep_nonblock && fcntl(fd, F_SETFL, O_RDONLY) < 0) {
    int e = errno;
    close(fd);
    return Status::FromErrno(path, e);
  }
  if (out) *out = fs;
  return fd;
}

RootFds::RootFds(std::vector<std::string> roots) : roots_(std::move(roots)) {
  std::sort(roots_.begin(), roots_.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
}

RootFds::~RootFds() {
  for (auto& [dir, fd] : fds_)
    if (fd >= 0) close(fd);
}

Result<int> RootFds::Fd(const std::string& dir) {
  auto it = fds_.find(dir);
  if (it == fds_.end()) it = fds_.emplace(dir, OpenRootDir(dir)).first;
  if (it->second < 0) return Status::FromErrno("scanned root " + dir, -it->second);
  return it->second;
}

Result<std::pair<int, std::string>> RootFds::Resolve(const std::string& path) {
  for (const std::string& root : roots_) {
    if (path == root) {  // a root that is a file: open it from its parent
      size_t slash = path.rfind('/');
      if (slash == std::string::npos || slash + 1 == path.size()) break;
      auto fd = Fd(slash == 0 ? "/" : path.substr(0, slash));
      if (!fd.ok()) return fd.status();
      return std::make_pair(*fd, path.substr(slash + 1));
    }
    bool below = root == "/" ? path.size() > 1 && path[0] == '/'
                             : path.size() > root.size() && path.compare(0, root.size(), root) == 0 &&
                                   path[root.size()] == '/';
    if (!below) continue;
    auto fd = Fd(root);
    if (!fd.ok()) return fd.status();
    return std::make_pair(*fd, path.substr(root == "/" ? 1 : root.size() + 1));
  }
  return Status::NotFound(path + ": not below any scanned root");
}

}  // namespace cid
