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
#include <vector>

namespace cid {

namespace {

struct Entry {
  std::string name;
  unsigned char type;
};

bool Stopped(const WalkCallbacks& cb) { return cb.stop && cb.stop->load(std::memory_order_relaxed); }

Status ReadDir(DIR* d, const std::string& path, std::vector<Entry>* out) {
  errno = 0;
  while (struct dirent* de = readdir(d)) {
    if (de->d_name[0] == '.' && (de->d_name[1] == 0 || (de->d_name[1] == '.' && de->d_name[2] == 0)))
      continue;
    out->push_back(Entry{de->d_name, de->d_type});
    errno = 0;
  }
  if (errno) return Status::FromErrno(path, errno);
  std::sort(out->begin(), out->end(), [](const Entry& a, const Entry& b) { return a.name < b.name; });
  return Status::OK();
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

void WalkDir(int dir_fd, const std::string& path, uint64_t dev, const WalkCallbacks& cb, WalkStats* stats);

// Opens `name` below `parent_fd` without following a symlink and walks it,
// unless it is the root of a pseudo filesystem mounted there.
void Descend(int parent_fd, uint64_t parent_dev, const std::string& name, const std::string& path,
             const WalkCallbacks& cb, WalkStats* stats) {
  int fd = openat(parent_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) < 0) {
    stats->errors++;
    cb.on_error(path, Status::FromErrno(path, errno));
    if (fd >= 0) close(fd);
    return;
  }
  if (st.st_dev != parent_dev && PseudoFsName(fd)) {
    stats->pseudo_fs++;
    close(fd);
    return;
  }
  WalkDir(fd, path, st.st_dev, cb, stats);
}

void WalkDir(int dir_fd, const std::string& path, uint64_t dev, const WalkCallbacks& cb, WalkStats* stats) {
  stats->dirs++;
  DIR* d = fdopendir(dir_fd);
  if (!d) {
    stats->errors++;
    cb.on_error(path, Status::FromErrno(path, errno));
    close(dir_fd);
    return;
  }
  std::vector<Entry> entries;
  Status s = ReadDir(d, path, &entries);
  if (!s.ok()) {  // report, then index what could be listed
    stats->errors++;
    cb.on_error(path, s);
  }
  // The DIR stays open while children are visited, so its fd anchors the
  // *at() calls below: open fds grow with depth, not with width.
  int fd = dirfd(d);
  for (const Entry& e : entries) {
    if (Stopped(cb)) break;
    std::string child = path == "/" ? "/" + e.name : path + "/" + e.name;
    if (e.type == DT_LNK) {
      stats->symlinks++;
      continue;
    }
    if (e.type == DT_CHR || e.type == DT_BLK || e.type == DT_FIFO || e.type == DT_SOCK) {
      stats->special++;
      continue;
    }
    if (e.type == DT_DIR) {
      Descend(fd, dev, e.name, child, cb, stats);
      continue;
    }
    struct stat st;
    if (fstatat(fd, e.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
      if (errno == ENOENT) continue;  // removed since readdir: nothing to index
      stats->errors++;
      cb.on_error(child, Status::FromErrno(child, errno));
      continue;
    }
    if (S_ISREG(st.st_mode)) {
      stats->files++;
      cb.on_file(child, FileStat::From(st));
    } else if (S_ISDIR(st.st_mode)) {  // DT_UNKNOWN filesystems
      Descend(fd, dev, e.name, child, cb, stats);
    } else if (S_ISLNK(st.st_mode)) {
      stats->symlinks++;
    } else {
      stats->special++;
    }
  }
  closedir(d);
}

}  // namespace

Result<std::string> CanonicalPath(const std::string& path) {
  char* p = realpath(path.c_str(), nullptr);
  if (!p) return Status::FromErrno(path, errno);
  std::string out(p);
  free(p);
  return out;
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
  if (const char* fs = PseudoFsName(fd)) {
    close(fd);
    return Status::InvalidArgument(root + ": is on a " + fs + " pseudo filesystem; its files have no stored content");
  }
  WalkDir(fd, root, st.st_dev, cb, stats);
  return Status::OK();
}

}  // namespace cid
