#include "cid/policy.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cstring>

#include "cid/layers.h"

namespace cid {

namespace {

bool AnyMatch(const std::vector<std::string>& patterns, const std::string& rel) {
  for (const auto& p : patterns)
    if (fnmatch(p.c_str(), rel.c_str(), 0) == 0) return true;
  return false;
}

bool IsElf(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOATIME);
  if (fd < 0) fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return false;
  char magic[4];
  bool elf = pread(fd, magic, 4, 0) == 4 && memcmp(magic, "\x7f" "ELF", 4) == 0;
  close(fd);
  return elf;
}

}  // namespace

bool TreePolicy::Eligible(const std::string& path) const {
  if (!PathBeneath(path, root) || path.size() <= root.size() + 1) return false;
  std::string rel = path.substr(root == "/" ? 1 : root.size() + 1);
  struct stat st;
  if (lstat(path.c_str(), &st) < 0 || !S_ISREG(st.st_mode)) return false;
  if (time(nullptr) - st.st_mtime < min_age_s) return false;
  if (AnyMatch(exclude, rel)) return false;
  return AnyMatch(include, rel) || IsElf(path);
}

}  // namespace cid
