#include "cid/walker.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#include "cid/safe_open.h"

namespace cid {

namespace {

struct Entry {
  std::string name;
  unsigned char type;
  std::optional<struct stat> st;  // where d_type was DT_UNKNOWN
  // What the entry's paths sort as: a directory's contents sort as "name/...".
  bool operator<(const Entry& o) const {
    size_t n = std::min(name.size(), o.name.size());
    int c = memcmp(name.data(), o.name.data(), n);
    if (c != 0) return c < 0;
    auto at = [n](const Entry& e) -> int {
      if (e.name.size() > n) return static_cast<unsigned char>(e.name[n]);
      return e.type == DT_DIR ? '/' : -1;  // a file "x" comes before anything longer
    };
    return at(*this) < at(o);
  }
};

bool Stopped(const WalkCallbacks& cb) { return cb.stop && cb.stop->load(std::memory_order_relaxed); }

// Lists the directory open as fd, whole (with getdents64 into buf, not
// through a DIR: fdopendir's fstat and two fcntls were three system calls
// more per directory, 52,000 in a walk of /usr); entries of unknown type (d_type
// DT_UNKNOWN) are stat'ed here, since their order depends on whether they
// are directories.
Status ReadDir(int fd, const std::string& path, std::vector<char>* buf, std::vector<Entry>* out) {
  Status s;
  while (true) {
    ssize_t n = getdents64(fd, buf->data(), buf->size());
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINVAL && buf->size() < (1u << 20)) {  // an entry larger than the buffer
        buf->resize(buf->size() * 2);
        continue;
      }
      s = Status::FromErrno(path, errno);
      break;
    }
    for (ssize_t off = 0; off < n;) {
      const auto* de = reinterpret_cast<const struct dirent64*>(buf->data() + off);
      off += de->d_reclen;
      if (de->d_name[0] == '.' && (de->d_name[1] == 0 || (de->d_name[1] == '.' && de->d_name[2] == 0)))
        continue;
      out->push_back(Entry{de->d_name, de->d_type, std::nullopt});
    }
  }
  for (Entry& e : *out) {
    if (e.type != DT_UNKNOWN) continue;
    struct stat st;
    if (fstatat(fd, e.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
      e.st = st;
      e.type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : S_ISLNK(st.st_mode) ? DT_LNK : DT_FIFO;
    }
  }
  std::sort(out->begin(), out->end());
  return s;
}

// Filesystems whose files are not stored content: their sizes lie (0 for
// /proc files that are not empty), and hashing them means nothing.
const char* PseudoFsName(int fd) {
  struct statfs sf;
  if (fstatfs(fd, &sf) < 0) return nullptr;
  switch (static_cast<unsigned long>(sf.f_type)) {
    case PROC_SUPER_MAGIC: return "proc";
    case SYSFS_MAGIC: return "sysfs";
    case DEVPTS_SUPER_MAGIC: return "devpts";
    case DEBUGFS_MAGIC: return "debugfs";
    case TRACEFS_MAGIC: return "tracefs";
    case SECURITYFS_MAGIC: return "securityfs";
    case CGROUP_SUPER_MAGIC: return "cgroup";
    case CGROUP2_SUPER_MAGIC: return "cgroup2";
    case BPF_FS_MAGIC: return "bpf";
    case PSTOREFS_MAGIC: return "pstore";
    case EFIVARFS_MAGIC: return "efivarfs";
    default: return nullptr;
  }
}

class Walker {
 public:
  Walker(int root_fd, const std::string& root, const WalkCallbacks& cb, WalkStats* stats)
      : root_fd_(root_fd), root_(root), cb_(cb), stats_(stats), budget_(std::max(1u, cb.max_open_dirs)) {}

  // Walks the directory open as fd (closes it).
  void WalkDir(int fd, const std::string& path, const struct stat& dst);

 private:
  void Descend(int parent_fd, uint64_t parent_dev, const std::string& name, const std::string& path);
  std::string Rel(const std::string& path) const {
    return path.substr(root_ == "/" ? 1 : root_.size() + 1);
  }
  void Error(const std::string& path, const Status& s) {
    stats_->errors++;
    cb_.on_error(path, s);
  }

  const int root_fd_;
  const std::string& root_;
  const WalkCallbacks& cb_;
  WalkStats* stats_;
  const unsigned budget_;
  unsigned open_ = 0;  // directories open now
  std::vector<char> dirents_ = std::vector<char>(32 << 10);  // ReadDir's, one directory at a time
};

// Opens `name` below `parent_fd` without following a symlink and walks it,
// unless it is the root of a pseudo filesystem mounted there.
void Walker::Descend(int parent_fd, uint64_t parent_dev, const std::string& name, const std::string& path) {
  int fd = openat(parent_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) < 0) {
    Error(path, Status::FromErrno(path, errno));
    if (fd >= 0) close(fd);
    return;
  }
  if (st.st_dev != parent_dev && PseudoFsName(fd)) {
    stats_->pseudo_fs++;
    close(fd);
    return;
  }
  WalkDir(fd, path, st);
}

void Walker::WalkDir(int fd, const std::string& path, const struct stat& dst) {
  stats_->dirs++;
  open_++;
  std::vector<Entry> entries;
  Status s = ReadDir(fd, path, &dirents_, &entries);
  if (!s.ok()) Error(path, s);  // report, then index what could be listed
  for (const Entry& e : entries) {
    if (Stopped(cb_)) break;
    std::string child = path == "/" ? "/" + e.name : path + "/" + e.name;
    if (e.type == DT_LNK) {
      stats_->symlinks++;
      continue;
    }
    if (e.type == DT_CHR || e.type == DT_BLK || e.type == DT_FIFO || e.type == DT_SOCK) {
      stats_->special++;
      continue;
    }
    if (e.type == DT_DIR) {
      if (open_ < budget_) {
        Descend(fd, dst.st_dev, e.name, child);
        continue;
      }
      // Over budget: open the child, let this directory go, and find it
      // again beneath the root afterwards.
      int cfd = openat(fd, e.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      int cerr = errno;
      close(fd);
      fd = -1;
      open_--;
      struct stat cst;
      if (cfd < 0 || fstat(cfd, &cst) < 0) {
        Error(child, Status::FromErrno(child, cfd < 0 ? cerr : errno));
        if (cfd >= 0) close(cfd);
      } else if (cst.st_dev != dst.st_dev && PseudoFsName(cfd)) {
        stats_->pseudo_fs++;
        close(cfd);
      } else {
        WalkDir(cfd, child, cst);
      }
      fd = path == root_ ? fcntl(root_fd_, F_DUPFD_CLOEXEC, 0) : OpenBeneath(root_fd_, Rel(path), O_RDONLY | O_DIRECTORY);
      if (fd < 0 && path == root_) fd = -errno;
      struct stat now;
      if (fd < 0 || fstat(fd, &now) < 0 || now.st_dev != dst.st_dev || now.st_ino != dst.st_ino) {
        Error(path, fd < 0 ? Status::FromErrno(path, -fd)
                           : Status::Changed(path + ": replaced by another directory during the walk"));
        if (fd >= 0) close(fd);
        return;
      }
      open_++;
      continue;
    }
    struct stat st;
    if (e.st) {
      st = *e.st;
    } else if (fstatat(fd, e.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
      if (errno == ENOENT) continue;  // removed since readdir: nothing to index
      Error(child, Status::FromErrno(child, errno));
      continue;
    }
    if (S_ISREG(st.st_mode)) {
      stats_->files++;
      cb_.on_file(child, FileStat::From(st));
    } else if (S_ISDIR(st.st_mode)) {  // became a directory since readdir: its place in the order is gone
      Error(child, Status::Changed(child + ": replaced by a directory during the walk; scan again"));
    } else if (S_ISLNK(st.st_mode)) {
      stats_->symlinks++;
    } else {
      stats_->special++;
    }
  }
  if (fd >= 0) {
    close(fd);
    open_--;
  }
}

}  // namespace

Result<std::string> CanonicalPath(const std::string& path) {
  char* p = realpath(path.c_str(), nullptr);
  if (!p) return Status::FromErrno(path, errno);
  std::string out(p);
  free(p);
  return out;
}

Status WalkFd(int root_fd, const std::string& root, const WalkCallbacks& cb, WalkStats* stats) {
  struct stat st;
  if (fstat(root_fd, &st) < 0) return Status::FromErrno(root, errno);
  if (!S_ISDIR(st.st_mode)) return Status::InvalidArgument(root + ": not a directory");
  if (const char* fs = PseudoFsName(root_fd))
    return Status::InvalidArgument(root + ": is on a " + fs + " pseudo filesystem; its files have no stored content");
  int fd = fcntl(root_fd, F_DUPFD_CLOEXEC, 0);  // WalkDir closes its fd; the caller keeps root_fd
  if (fd < 0) return Status::FromErrno(root, errno);
  // Rewinding matters: a dup shares the directory offset with root_fd.
  lseek(fd, 0, SEEK_SET);
  Walker w(root_fd, root, cb, stats);
  w.WalkDir(fd, root, st);
  return Status::OK();
}

Status Walk(const std::string& root, const WalkCallbacks& cb, WalkStats* stats) {
  struct stat st;
  if (lstat(root.c_str(), &st) < 0) return Status::FromErrno(root, errno);
  if (S_ISLNK(st.st_mode)) {
    stats->symlinks++;
    return Status::InvalidArgument(root + ": is a symbolic link; symlinks are never followed");
  }
  if (S_ISREG(st.st_mode)) {
    stats->files++;
    cb.on_file(root, FileStat::From(st));
    return Status::OK();
  }
  if (!S_ISDIR(st.st_mode)) {
    stats->special++;
    return Status::InvalidArgument(root + ": not a regular file or directory");
  }
  int fd = open(root.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(root, errno);
  Status s = WalkFd(fd, root, cb, stats);
  close(fd);
  return s;
}

}  // namespace cid
