// Helpers shared by the unit tests: private temp dirs, files, fault engines.
#ifndef CID_TESTS_UNIT_TEST_UTIL_H_
#define CID_TESTS_UNIT_TEST_UTIL_H_

#include <cerrno>
#include <cstring>
#include <functional>
#include <memory>
#include <string>

#include "cid/io.h"

namespace cid::test {

// A private directory removed (recursively) at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

void WriteFile(const std::string& path, const std::string& data);  // creates parent dirs
std::string ReadFile(const std::string& path);
std::string RandomBytes(size_t n, unsigned seed);
void MakeDirs(const std::string& path);

// 0 if cachestat(2) answers for path, else the errno it failed with
// (ENOSYS: the kernel predates it, Linux 6.5).
int CachestatErrno(const std::string& path);

// Runs fn in a child process as uid/gid 65534 when we are root (so
// permission bits apply), else in a child as ourselves.  Returns fn's
// result, or -1 if the child died.
int RunUnprivileged(const std::function<int()>& fn);

// A ReadEngine wrapping another; before each completion is returned,
// hook(completion_number, completion&) may change the file or the result.
// Without cached_hook it says no range is cached, so every byte is read and
// passes the hook.  With it, Cached() asks the base engine, then calls
// cached_hook(call_number, off), which may change the file before the
// hasher maps the window at off.
std::unique_ptr<ReadEngine> NewHookedEngine(std::unique_ptr<ReadEngine> base,
                                            std::function<void(int n, ReadCompletion* c)> hook,
                                            std::function<void(int n, uint64_t off)> cached_hook = nullptr);

}  // namespace cid::test

// Hashing from mappings needs cachestat(2): a test of it is skipped on a
// kernel without the call and fails where the call refuses the file.
#define REQUIRE_CACHESTAT(path)                                                              \
  do {                                                                                       \
    int cachestat_err_ = ::cid::test::CachestatErrno(path);                                 \
    if (cachestat_err_ == ENOSYS) GTEST_SKIP() << "no cachestat(2) in this kernel (before 6.5)"; \
    ASSERT_EQ(cachestat_err_, 0) << "cachestat(2) on " << (path) << ": " << strerror(cachestat_err_); \
  } while (0)

#endif  // CID_TESTS_UNIT_TEST_UTIL_H_
