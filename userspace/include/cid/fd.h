// Fd: owns a file descriptor and closes it, as LevelDB's and Abseil's
// scoped handles do.  One class for libcid's files that need one.
#ifndef CID_FD_H_
#define CID_FD_H_

#include <unistd.h>

namespace cid {

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) reset(o.fd_), o.fd_ = -1;
    return *this;
  }
  int get() const { return fd_; }
  void reset(int fd) {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

}  // namespace cid

#endif  // CID_FD_H_
