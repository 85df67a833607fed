#include "cid/fd.h"
#include "cid/linkdups.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "cid/json.h"
#include "cid/layers.h"
#include "cid/report.h"

namespace cid {

namespace {


// Every extended attribute of an open file, sorted by name.
Result<std::map<std::string, std::string>> Xattrs(int fd, const std::string& path) {
  std::map<std::string, std::string> out;
  ssize_t n = flistxattr(fd, nullptr, 0);
  if (n < 0) {
    if (errno == ENOTSUP) return out;
    return Status::FromErrno(path + ": listxattr", errno);
  }
  std::string names(static_cast<size_t>(n), '\0');
  n = flistxattr(fd, names.data(), names.size());
  if (n < 0) return Status::FromErrno(path + ": listxattr", errno);
  names.resize(static_cast<size_t>(n));
  for (size_t i = 0; i < names.size();) {
    std::string name = names.c_str() + i;
    i += name.size() + 1;
    ssize_t v = fgetxattr(fd, name.c_str(), nullptr, 0);
    if (v < 0) return Status::FromErrno(path + ": getxattr " + name, errno);
    std::string value(static_cast<size_t>(v), '\0');
    v = fgetxattr(fd, name.c_str(), value.data(), value.size());
    if (v < 0) return Status::FromErrno(path + ": getxattr " + name, errno);
    value.resize(static_cast<size_t>(v));
    out[name] = value;
  }
  return out;
}

Result<int> OpenFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return Status::FromErrno(path, errno);
  return fd;
}

// Byte-for-byte equality of two open files of equal size.
Result<bool> SameBytes(int a, int b, uint64_t size, const std::string& pa) {
  std::vector<char> ba(1 << 20), bb(1 << 20);
  for (uint64_t off = 0; off < size;) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(ba.size(), size - off));
    ssize_t na = pread(a, ba.data(), want, static_cast<off_t>(off));
    ssize_t nb = pread(b, bb.data(), want, static_cast<off_t>(off));
    if (na < 0 || nb < 0) return Status::FromErrno(pa + ": read", errno);
    if (na != static_cast<ssize_t>(want) || nb != na) return false;  // shrank under us
    if (memcmp(ba.data(), bb.data(), want) != 0) return false;
    off += want;
  }
  return true;
}

struct Candidate {
  std::string path;  // a name beneath the layers
  struct stat st;
  std::string key;   // what must be equal for linking: dev, mode, owner, mtime, size, xattrs
};

Status AppendJournal(int fd, const std::string& journal, const std::string& line) {
  std::string l = line + "\n";
  if (write(fd, l.data(), l.size()) != static_cast<ssize_t>(l.size())) return Status::FromErrno(journal, errno);
  if (fdatasync(fd) < 0) return Status::FromErrno(journal + ": fdatasync", errno);
  return Status::OK();
}

std::string TmpName(const std::string& target, const char* what) {
  static unsigned counter = 0;
  return ParentDir(target) + "/.cid-" + what + "." + std::to_string(getpid()) + "." + std::to_string(counter++);
}

// Replaces `target` (whose inode is old) by a hard link to `source`.
Status Replace(int jfd, const std::string& journal, const Candidate& source, const Candidate& target) {
  std::string tmp = TmpName(target.path, "link");
  JsonWriter begin;
  begin.BeginObject().String("op", "link").String("target", target.path).String("source", source.path)
      .String("tmp", tmp).Uint("dev", target.st.st_dev).Uint("ino", target.st.st_ino).EndObject();
  Status s = AppendJournal(jfd, journal, begin.str());
  if (!s.ok()) return s;
  auto finish = [&](const char* op) {
    JsonWriter end;
    end.BeginObject().String("op", op).String("target", target.path).EndObject();
    return AppendJournal(jfd, journal, end.str());
  };
  if (link(source.path.c_str(), tmp.c_str()) < 0) {
    Status err = Status::FromErrno(target.path + ": link from " + source.path, errno);
    Status j = finish("abort");
    return j.ok() ? err : j;
  }
  struct stat now;
  if (lstat(target.path.c_str(), &now) < 0 || now.st_ino != target.st.st_ino ||
      now.st_mtim.tv_sec != target.st.st_mtim.tv_sec || now.st_mtim.tv_nsec != target.st.st_mtim.tv_nsec || now.st_ctim.tv_sec != target.st.st_ctim.tv_sec ||
      now.st_ctim.tv_nsec != target.st.st_ctim.tv_nsec) {
    unlink(tmp.c_str());
    Status j = finish("abort");
    return j.ok() ? Status::Changed(target.path + ": changed while being linked; left alone") : j;
  }
  if (rename(tmp.c_str(), target.path.c_str()) < 0) {
    Status err = Status::FromErrno(target.path + ": rename", errno);
    unlink(tmp.c_str());
    Status j = finish("abort");
    return j.ok() ? err : j;
  }
  return finish("done");
}

// A new inode at `target` holding a copy of `source` with its mode, owner,
// times and xattrs.
Status CopyOut(const std::string& source, const std::string& target) {
  auto in = OpenFile(source);
  if (!in.ok()) return in.status();
  Fd src(*in);
  struct stat st;
  if (fstat(src.get(), &st) < 0) return Status::FromErrno(source, errno);
  auto xattrs = Xattrs(src.get(), source);
  if (!xattrs.ok()) return xattrs.status();
  std::string tmp = TmpName(target, "undo");
  Fd out(open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (out.get() < 0) return Status::FromErrno(tmp, errno);
  auto fail = [&](const std::string& what, int err) {
    unlink(tmp.c_str());
    return Status::FromErrno(tmp + ": " + what, err);
  };
  std::vector<char> buf(1 << 20);
  for (;;) {
    ssize_t n = read(src.get(), buf.data(), buf.size());
    if (n < 0) return fail("read " + source, errno);
    if (n == 0) break;
    if (write(out.get(), buf.data(), static_cast<size_t>(n)) != n) return fail("write", errno);
  }
  for (const auto& [name, value] : *xattrs) {
    if (fsetxattr(out.get(), name.c_str(), value.data(), value.size(), 0) < 0) return fail("setxattr " + name, errno);
  }
  if (fchown(out.get(), st.st_uid, st.st_gid) < 0) return fail("chown", errno);
  if (fchmod(out.get(), st.st_mode & 07777) < 0) return fail("chmod", errno);
  timespec times[2] = {st.st_atim, st.st_mtim};
  if (futimens(out.get(), times) < 0) return fail("utimens", errno);
  if (fsync(out.get()) < 0) return fail("fsync", errno);
  if (rename(tmp.c_str(), target.c_str()) < 0) return fail("rename to " + target, errno);
  return Status::OK();
}

}  // namespace

std::string DefaultJournalPath(const std::string& index_path) { return ParentDir(index_path) + "/hardlinks.journal"; }

Status LinkDuplicates(Index* index, const LinkOptions& o, LinkStats* stats) {
  auto report = [&](const Status& s) {
    stats->errors++;
    if (o.on_error) o.on_error(s);
  };
  auto beneath = [&](const std::string& p) {
    return std::any_of(o.layers.begin(), o.layers.end(), [&](const std::string& l) { return PathBeneath(p, l); });
  };
  auto groups = FindDuplicatesUnder(index, o.layers, 1);
  if (!groups.ok()) return groups.status();
  Fd jfd;
  if (!o.dry_run) {
    int fd = open(o.journal.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return Status::FromErrno("journal " + o.journal, errno);
    jfd.reset(fd);
  }
  for (const auto& g : *groups) {
    if (o.stop && o.stop->load()) {
      stats->stopped = true;
      break;
    }
    std::vector<Candidate> cands;
    for (const auto& in : g.inodes) {
      bool inside = std::all_of(in.paths.begin(), in.paths.end(), beneath);
      bool any = std::any_of(in.paths.begin(), in.paths.end(), beneath);
      if (!any) continue;
      if (!inside) {
        stats->outside++;
        continue;
      }
      for (const auto& p : in.paths) {
        Candidate c{p, {}, {}};
        if (lstat(p.c_str(), &c.st) < 0) {
          if (errno != ENOENT) report(Status::FromErrno(p, errno));
          stats->stale++;
          continue;
        }
        if (!S_ISREG(c.st.st_mode) || c.st.st_dev != in.dev || c.st.st_ino != in.ino ||
            static_cast<uint64_t>(c.st.st_size) != g.size) {
          stats->stale++;
          continue;
        }
        auto fd = OpenFile(p);
        if (!fd.ok()) {
          report(fd.status());
          continue;
        }
        Fd f(*fd);
        auto x = Xattrs(f.get(), p);
        if (!x.ok()) {
          report(x.status());
          continue;
        }
        char head[160];
        snprintf(head, sizeof(head), "%ju/%o/%u/%u/%jd.%09ld/", static_cast<uintmax_t>(c.st.st_dev), c.st.st_mode,
                 c.st.st_uid, c.st.st_gid, static_cast<intmax_t>(c.st.st_mtim.tv_sec), c.st.st_mtim.tv_nsec);
        c.key = head;
        for (const auto& [k, v] : *x) c.key += k + '\0' + v + '\0';
        cands.push_back(std::move(c));
      }
    }
    if (cands.size() < 2) continue;
    stats->groups++;
    // Buckets of equal metadata; within one, every name goes to the inode
    // with the most names already (the first such on a tie).
    std::map<std::string, std::vector<const Candidate*>> buckets;
    for (const auto& c : cands) buckets[c.key].push_back(&c);
    for (const auto& [key, members] : buckets) {
      const Candidate* source = members[0];
      for (const Candidate* m : members)
        if (m->st.st_nlink > source->st.st_nlink) source = m;
      for (const Candidate* m : members) {
        if (m->st.st_ino == source->st.st_ino) continue;
        auto fa = OpenFile(source->path);
        auto fb = OpenFile(m->path);
        if (!fa.ok() || !fb.ok()) {
          report(!fa.ok() ? fa.status() : fb.status());
          continue;
        }
        Fd a(*fa), b(*fb);
        auto same = SameBytes(a.get(), b.get(), g.size, m->path);
        if (!same.ok()) {
          report(same.status());
          continue;
        }
        if (!*same) {
          stats->stale++;
          continue;
        }
        if (!o.dry_run) {
          Status s = Replace(jfd.get(), o.journal, *source, *m);
          if (!s.ok()) {
            if (s.IsChanged()) stats->stale++;
            else report(s);
            continue;
          }
        }
        stats->linked++;
        stats->linked_bytes += g.size;
      }
    }
    // Copies whose metadata differ from every other copy were not linked.
    for (const auto& [key, members] : buckets)
      if (members.size() == 1 && buckets.size() > 1) stats->differ++;
  }
  return Status::OK();
}

Status UndoLinks(const std::string& journal, const std::function<void(const Status&)>& on_error, UndoStats* stats) {
  std::ifstream in(journal);
  if (!in) {
    if (access(journal.c_str(), F_OK) < 0 && errno == ENOENT) return Status::NotFound("journal " + journal + ": none (nothing was linked)");
    return Status::FromErrno("journal " + journal, errno);
  }
  struct Entry {
    std::string target, source, tmp;
    uint64_t dev = 0, ino = 0;
    std::string state = "begun";
  };
  std::vector<Entry> entries;
  std::map<std::string, size_t> open;  // target -> entry not yet finished
  std::string line;
  size_t lineno = 0;
  while (std::getline(in, line)) {
    lineno++;
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || !j.contains("op") || !j.contains("target")) {
      if (in.peek() == EOF) break;  // a torn last line: the change it announced never started
      return Status::Corruption("journal " + journal + ":" + std::to_string(lineno) + ": not a journal entry");
    }
    std::string op = j.value("op", ""), target = j.value("target", "");
    if (op == "link") {
      Entry e;
      e.target = target;
      e.source = j.value("source", "");
      e.tmp = j.value("tmp", "");
      e.dev = j.value("dev", uint64_t{0});
      e.ino = j.value("ino", uint64_t{0});
      open[target] = entries.size();
      entries.push_back(std::move(e));
    } else if (auto it = open.find(target); it != open.end()) {
      entries[it->second].state = op;
      open.erase(it);
    }
  }
  uint64_t errors_before = stats->errors;
  for (auto e = entries.rbegin(); e != entries.rend(); ++e) {
    struct stat src, tgt, tmp;
    bool have_src = lstat(e->source.c_str(), &src) == 0;
    if (!e->tmp.empty() && lstat(e->tmp.c_str(), &tmp) == 0) {
      if (have_src && tmp.st_ino == src.st_ino && tmp.st_dev == src.st_dev) {
        if (unlink(e->tmp.c_str()) == 0) stats->removed_tmp++;
      }
    }
    if (e->state == "abort") {
      stats->untouched++;
      continue;
    }
    if (lstat(e->target.c_str(), &tgt) < 0) {
      if (errno == ENOENT) {
        stats->untouched++;  // the layer or file is gone since
        continue;
      }
      stats->errors++;
      on_error(Status::FromErrno(e->target, errno));
      continue;
    }
    if (!have_src || tgt.st_ino != src.st_ino || tgt.st_dev != src.st_dev || tgt.st_ino == e->ino) {
      stats->untouched++;  // not (or no longer) a link to the source
      continue;
    }
    Status s = CopyOut(e->target, e->target);
    if (!s.ok()) {
      stats->errors++;
      on_error(s);
      continue;
    }
    stats->restored++;
  }
  if (stats->errors != errors_before) {
    return Status::IoError("journal " + journal + ": " + std::to_string(stats->errors - errors_before) +
                           " names could not be restored; the journal is kept, run the undo again");
  }
  std::string done = journal + ".undone." + std::to_string(time(nullptr));
  if (rename(journal.c_str(), done.c_str()) < 0) return Status::FromErrno("journal " + journal + ": rename", errno);
  return Status::OK();
}

}  // namespace cid
