#include "cid/layers.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <libmount/libmount.h>
#include <limits.h>
#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <memory>

#include "cid/io.h"

namespace cid {

namespace {

struct TableFree {
  void operator()(libmnt_table* t) const { mnt_unref_table(t); }
};
struct IterFree {
  void operator()(libmnt_iter* i) const { mnt_free_iter(i); }
};

Result<std::string> RealPath(const std::string& path, const std::string& what) {
  char buf[PATH_MAX];
  if (!realpath(path.c_str(), buf)) return Status::FromErrno(what, errno);
  return std::string(buf);
}

// The lexically normalised absolute path: no "//", "/./", trailing "/".
std::string Lexical(const std::string& path) {
  std::string out;
  size_t i = 0;
  while (i < path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    std::string part = path.substr(i, j - i);
    if (part == "..") {
      size_t slash = out.rfind('/');
      out.erase(slash == std::string::npos ? 0 : slash);
    } else if (!part.empty() && part != ".") {
      out += "/" + part;
    }
    i = j + 1;
  }
  return out.empty() ? "/" : out;
}

}  // namespace

bool PathBeneath(std::string_view path, std::string_view dir) {
  if (dir == "/") return !path.empty() && path[0] == '/';
  if (path.size() < dir.size() || path.compare(0, dir.size(), dir) != 0) return false;
  return path.size() == dir.size() || path[dir.size()] == '/';
}

std::vector<std::pair<std::string, std::string>> SplitMountOptions(std::string_view opts) {
  std::vector<std::pair<std::string, std::string>> out;
  std::string cur;
  auto flush = [&] {
    if (cur.empty()) return;
    size_t eq = cur.find('=');
    if (eq == std::string::npos) out.emplace_back(cur, "");
    else out.emplace_back(cur.substr(0, eq), cur.substr(eq + 1));
    cur.clear();
  };
  for (size_t i = 0; i < opts.size(); i++) {
    if (opts[i] == '\\' && i + 1 < opts.size()) {
      cur += opts[i];
      cur += opts[++i];
    } else if (opts[i] == ',') {
      flush();
    } else {
      cur += opts[i];
    }
  }
  flush();
  return out;
}

Result<std::vector<std::string>> SplitLowerdir(std::string_view v) {
  std::vector<std::string> layers;
  std::string cur;
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument("lowerdir '" + std::string(v) + "': " + why);
  };
  for (size_t i = 0; i < v.size(); i++) {
    char c = v[i];
    if (c == '\\') {
      if (i + 1 == v.size()) return bad("ends in a lone backslash");
      cur += v[++i];  // overlayfs drops the backslash of any escaped character
    } else if (c == ':') {
      if (cur.empty()) return bad("empty layer");
      layers.push_back(std::move(cur));
      cur.clear();
      if (i + 1 < v.size() && v[i + 1] == ':') i++;  // "::": data-only layers follow
      if (i + 1 == v.size()) return bad("trailing ':'");
    } else {
      cur += c;
    }
  }
  if (cur.empty()) return bad("empty layer");
  layers.push_back(std::move(cur));
  return layers;
}

namespace {

using Table = std::unique_ptr<libmnt_table, TableFree>;

Result<Table> ParseTable(const std::string& mountinfo) {
  Table tb(mnt_new_table());
  if (!tb) return Status::FromErrno(mountinfo, ENOMEM);
  int rc = mnt_table_parse_file(tb.get(), mountinfo.c_str());
  if (rc != 0) return Status::FromErrno("mount table " + mountinfo, rc < 0 ? -rc : EINVAL);
  return tb;
}

Result<OverlayMount> ParseOverlay(libmnt_fs* fs) {
  OverlayMount m;
  const char* t = mnt_fs_get_target(fs);
  m.target = t ? t : "";
  const char* opts = mnt_fs_get_fs_options(fs);
  for (auto& [n, val] : SplitMountOptions(opts ? opts : "")) {
    if (n == "lowerdir") {
      auto split = SplitLowerdir(val);
      if (!split.ok()) return Status::InvalidArgument(m.target + ": " + split.status().message());
      for (auto& l : *split) m.lowers.push_back(std::move(l));
    } else if (n == "lowerdir+" || n == "datadir+") {
      m.lowers.push_back(val);
    } else if (n == "upperdir") {
      m.upper = val;
    } else if (n == "workdir") {
      m.work = val;
    }
  }
  if (m.lowers.empty()) return Status::InvalidArgument(m.target + ": overlay mount without lowerdir");
  return m;
}

}  // namespace

Result<OverlayMount> FindOverlayMount(const std::string& mountinfo, const std::string& target) {
  auto tb = ParseTable(mountinfo);
  if (!tb.ok()) return tb.status();
  std::unique_ptr<libmnt_iter, IterFree> it(mnt_new_iter(MNT_ITER_BACKWARD));
  libmnt_fs* fs = nullptr;
  while (mnt_table_next_fs(tb->get(), it.get(), &fs) == 0) {
    const char* t = mnt_fs_get_target(fs);
    if (!t || target != t) continue;
    const char* type = mnt_fs_get_fstype(fs);
    if (!type || std::string_view(type) != "overlay") {
      return Status::InvalidArgument(target + ": is a " + (type ? type : "(unknown)") +
                                     " mount, not overlay: no layers to share");
    }
    return ParseOverlay(fs);
  }
  return Status::NotFound(target + ": no mount there in " + mountinfo + " (is the container's rootfs mounted?)");
}

Result<std::vector<OverlayMount>> ListOverlayMounts(const std::string& mountinfo) {
  auto tb = ParseTable(mountinfo);
  if (!tb.ok()) return tb.status();
  std::unique_ptr<libmnt_iter, IterFree> it(mnt_new_iter(MNT_ITER_FORWARD));
  std::vector<OverlayMount> out;
  libmnt_fs* fs = nullptr;
  while (mnt_table_next_fs(tb->get(), it.get(), &fs) == 0) {
    const char* type = mnt_fs_get_fstype(fs);
    if (!type || std::string_view(type) != "overlay") continue;
    auto m = ParseOverlay(fs);
    if (m.ok()) out.push_back(std::move(*m));
  }
  return out;
}

std::string ParentDir(const std::string& p) {
  size_t s = p.rfind('/');
  if (s == std::string::npos) return ".";
  return s == 0 ? "/" : p.substr(0, s);
}

std::string DefaultLayerRegistryPath(const std::string& index_path) { return ParentDir(index_path) + "/lower-layers"; }

Status RememberLayers(const std::string& file, const std::vector<std::string>& layers) {
  // Only whether ours are listed: KnownLayers would stat every layer the
  // host ever had, at every container start.
  std::string listed = "\n";  // every line between newlines
  if (auto text = ReadSmallFile(file); text.ok()) listed += *text;
  else if (text.status().err() != ENOENT) return Status::FromErrno("layer registry " + file, text.status().err());
  bool unterminated = listed.back() != '\n';  // a last line written by hand
  if (unterminated) listed += '\n';
  std::string add;
  for (const auto& l : layers) {
    if (listed.find("\n" + l + "\n") != std::string::npos) continue;
    if (l.find('\n') != std::string::npos) continue;  // cannot be listed; never linked
    add += l + "\n";
    listed += l + "\n";
  }
  if (add.empty()) return Status::OK();
  if (unterminated) add = "\n" + add;
  int fd = open(file.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno("layer registry " + file, errno);
  ssize_t n = write(fd, add.data(), add.size());
  int err = errno;
  close(fd);
  if (n != static_cast<ssize_t>(add.size())) return Status::FromErrno("layer registry " + file, n < 0 ? err : EIO);
  return Status::OK();
}

Result<std::vector<std::string>> KnownLayers(const std::string& file) {
  std::vector<std::string> out;
  std::ifstream in(file);
  if (!in) {
    if (errno == ENOENT) return out;
    return Status::FromErrno("layer registry " + file, errno);
  }
  std::string line;
  struct stat st;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] != '/') continue;
    if (std::find(out.begin(), out.end(), line) != out.end()) continue;
    if (stat(line.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) out.push_back(line);
  }
  return out;
}

std::vector<std::string> LinkableLayers(const std::string& registry, const std::vector<std::string>& ours,
                                        const std::vector<OverlayMount>& also, const std::string& storage_root) {
  std::vector<std::string> out = ours;
  if (auto known = KnownLayers(registry); known.ok()) {
    for (const auto& l : *known)
      if (std::find(out.begin(), out.end(), l) == out.end()) out.push_back(l);
  }
  std::vector<OverlayMount> mounts = also;
  if (auto all = ListOverlayMounts("/proc/self/mountinfo"); all.ok()) mounts.insert(mounts.end(), all->begin(), all->end());
  std::vector<std::string> writable;
  for (const auto& m : mounts) {
    for (const std::string& d : {m.upper, m.work}) {
      if (d.empty() || (d[0] != '/' && storage_root.empty())) continue;
      char buf[PATH_MAX];
      if (realpath((d[0] == '/' ? d : storage_root + "/" + d).c_str(), buf)) writable.push_back(buf);
    }
  }
  std::erase_if(out, [&](const std::string& l) {
    return std::any_of(writable.begin(), writable.end(),
                       [&](const std::string& w) { return PathBeneath(l, w) || PathBeneath(w, l); });
  });
  return out;
}

Result<std::string> ResolveLayer(const std::string& layer, const std::string& storage_root) {
  std::string path = layer;
  if (path.empty() || path[0] != '/') {
    if (storage_root.empty()) {
      return Status::InvalidArgument("layer " + layer + ": a relative path, and no storage root to resolve it in");
    }
    path = storage_root + "/" + layer;
  }
  std::string bound;
  if (!storage_root.empty()) {
    auto b = RealPath(storage_root, "storage root " + storage_root);
    if (!b.ok()) return b.status();
    bound = *b;
  } else if (size_t l = path.find("/l/"); l != std::string::npos) {
    auto b = RealPath(path.substr(0, l), "layer " + layer);
    if (!b.ok()) return b.status();
    bound = *b;
  }
  auto real = RealPath(path, "layer " + layer);
  if (!real.ok()) return real.status();
  if (!bound.empty()) {
    if (!PathBeneath(*real, bound)) {
      return Status::InvalidArgument("layer " + layer + ": leads to " + *real + ", outside the storage root " + bound +
                                     " (a symlink out of the storage)");
    }
  } else if (*real != Lexical(path)) {
    return Status::InvalidArgument("layer " + layer + ": goes through a symlink (to " + *real +
                                   ") and no storage root is known to check it against");
  }
  // Readable: the first entries of the directory, into a small buffer
  // (readdir's 32 KiB one has the file system list a whole large layer
  // directory at every container start).
  int fd = open(real->c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno("layer " + layer + " (" + *real + ")", errno);
  alignas(8) char buf[512];
  ssize_t n = getdents64(fd, buf, sizeof(buf));
  int err = errno;
  close(fd);
  if (n < 0) return Status::FromErrno("layer " + layer + " (" + *real + ")", err);
  return *real;
}

}  // namespace cid
