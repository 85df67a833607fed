#include "watch.h"

#include <dirent.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>

namespace cid {

namespace {

using Clock = std::chrono::steady_clock;

bool IsDir(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool EndsWith(const std::string& s, const char* tail) {
  size_t n = strlen(tail);
  return s.size() >= n && s.compare(s.size() - n, n, tail) == 0;
}

}  // namespace

void LayerWatcher::Consider(const std::string& root, const std::string& name) {
  if (name.empty() || name[0] == '.' || name == "l" || EndsWith(name, "-init")) return;
  std::string diff = root + "/" + name + "/diff";
  if (!IsDir(diff)) return;
  announce_(diff, IsDir(root + "/" + name + "-init"));
}

void LayerWatcher::RescanAll() {
  for (const auto& root : roots_) {
    DIR* d = opendir(root.c_str());
    if (!d) continue;
    while (dirent* e = readdir(d)) Consider(root, e->d_name);
    closedir(d);
  }
}

void LayerWatcher::Run(const std::atomic<bool>* stop) {
  int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) fprintf(stderr, "cidd: inotify: %s; only periodic rescans\n", strerror(errno));
  std::map<int, std::string> watches;  // wd -> root
  auto add_watches = [&] {
    if (fd < 0) return;
    for (const auto& r : roots_) {
      bool have = false;
      for (const auto& [wd, root] : watches) have |= root == r;
      if (have) continue;
      int wd = inotify_add_watch(fd, r.c_str(), IN_CREATE | IN_MOVED_TO | IN_ONLYDIR);
      if (wd >= 0) watches[wd] = r;
    }
  };
  add_watches();
  RescanAll();
  auto last_rescan = Clock::now();
  std::map<std::pair<std::string, std::string>, Clock::time_point> pending;  // (root, name) -> seen
  alignas(inotify_event) char buf[16384];
  while (!stop->load()) {
    if (fd >= 0) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 250) > 0) {
        ssize_t n;
        while ((n = read(fd, buf, sizeof(buf))) > 0) {
          for (char* q = buf; q < buf + n;) {
            auto* ev = reinterpret_cast<inotify_event*>(q);
            q += sizeof(inotify_event) + ev->len;
            auto w = watches.find(ev->wd);
            if (w == watches.end() || !ev->len || !(ev->mask & IN_ISDIR)) continue;
            pending[{w->second, ev->name}] = Clock::now();
          }
        }
      }
    } else {
      usleep(250000);
    }
    auto now = Clock::now();
    for (auto it = pending.begin(); it != pending.end();) {
      if (now - it->second < settle_) {
        ++it;
        continue;
      }
      Consider(it->first.first, it->first.second);
      it = pending.erase(it);
    }
    if (now - last_rescan >= rescan_) {
      add_watches();  // roots created since start
      RescanAll();
      last_rescan = now;
    }
  }
  if (fd >= 0) close(fd);
}

}  // namespace cid
