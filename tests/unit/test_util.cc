#include "test_util.h"

#include <ftw.h>
#include <stdlib.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace cid::test {

TempDir::TempDir() {
  const char* base = getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/cid-unit-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back(0);
  if (!mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
  path_ = buf.data();
}

TempDir::~TempDir() {
  // Restore permissions tests took away, then remove depth-first.
  nftw(path_.c_str(), [](const char* p, const struct stat* st, int type, struct FTW*) {
    if (type == FTW_D || type == FTW_DNR) chmod(p, 0755);
    (void)st;
    return 0;
  }, 32, FTW_PHYS);
  nftw(path_.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { return remove(p) < 0 ? 0 : 0; }, 32,
       FTW_DEPTH | FTW_PHYS);
}

void MakeDirs(const std::string& path) {
  for (size_t i = 1; i <= path.size(); i++)
    if (i == path.size() || path[i] == '/') mkdir(path.substr(0, i).c_str(), 0755);
}

void WriteFile(const std::string& path, const std::string& data) {
  MakeDirs(path.substr(0, path.rfind('/')));
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string RandomBytes(size_t n, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i++) s[i] = static_cast<char>(rng());
  return s;
}

int RunUnprivileged(const std::function<int()>& fn) {
  pid_t pid = fork();
  if (pid == 0) {
    if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) _exit(125);
    _exit(fn());
  }
  int status = 0;
  if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

namespace {
class HookedEngine final : public ReadEngine {
 public:
  HookedEngine(std::unique_ptr<ReadEngine> base, std::function<void(int, ReadCompletion*)> hook,
               std::function<void(int, uint64_t)> cached_hook)
      : base_(std::move(base)), hook_(std::move(hook)), cached_hook_(std::move(cached_hook)) {}
  Status Submit(int fd, void* buf, uint32_t len, uint64_t off, uint64_t tag) override {
    return base_->Submit(fd, buf, len, off, tag);
  }
  Status Wait(std::vector<ReadCompletion>* out) override {
    size_t first = out->size();
    Status s = base_->Wait(out);
    for (size_t i = first; i < out->size(); i++) hook_(n_++, &(*out)[i]);
    return s;
  }
  unsigned depth() const override { return base_->depth(); }
  const char* name() const override { return "hooked"; }
  bool Cached(int fd, uint64_t off, uint64_t len) override {
    if (!cached_hook_) return false;
    bool cached = base_->Cached(fd, off, len);
    cached_hook_(cached_n_++, off);
    return cached;
  }

 private:
  std::unique_ptr<ReadEngine> base_;
  std::function<void(int, ReadCompletion*)> hook_;
  std::function<void(int, uint64_t)> cached_hook_;
  int n_ = 0;
  int cached_n_ = 0;
};
}  // namespace

std::unique_ptr<ReadEngine> NewHookedEngine(std::unique_ptr<ReadEngine> base,
                                            std::function<void(int n, ReadCompletion* c)> hook,
                                            std::function<void(int n, uint64_t off)> cached_hook) {
  return std::make_unique<HookedEngine>(std::move(base), std::move(hook), std::move(cached_hook));
}

int CachestatErrno(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return errno;
  uint64_t nr_cache = 0;
  int err = Cachestat(fd, 0, 1, &nr_cache);
  close(fd);
  return err;
}

}  // namespace cid::test
