#include "cid/control.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace cid {

namespace {

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// Waits for `events` on fd until deadline; ETIMEDOUT when it passes.
int WaitFd(int fd, short events, int64_t deadline) {
  for (;;) {
    int left = static_cast<int>(deadline - NowMs());
    if (left <= 0) return ETIMEDOUT;
    pollfd p{fd, events, 0};
    int n = poll(&p, 1, left);
    if (n > 0) return 0;
    if (n < 0 && errno != EINTR) return errno;
  }
}

}  // namespace

std::string DefaultSocketPath() {
  const char* s = getenv("CID_SOCKET");
  return s && *s ? s : kDefaultSocket;
}

Result<std::string> ControlRequest(const std::string& socket_path, const std::string& request, int timeout_ms) {
  const std::string what = "cidd socket " + socket_path;
  const char* const kRefused = " (not allowed? only root may talk to cidd)";
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path)) return Status::InvalidArgument(what + ": path too long");
  memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Status::FromErrno(what, errno);
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  int64_t deadline = NowMs() + timeout_ms;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0) {
    if (errno == ENOENT || errno == ECONNREFUSED) {
      return Status::NotFound(what + ": cidd is not running (" + strerror(errno) + ")");
    }
    if (errno != EINPROGRESS && errno != EAGAIN) return Status::FromErrno(what, errno);
    if (int e = WaitFd(fd, POLLOUT, deadline)) return Status::FromErrno(what + ": connect", e);
  }
  std::string out = request + "\n";
  size_t off = 0;
  while (off < out.size()) {
    ssize_t n = send(fd, out.data() + off, out.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (int e = WaitFd(fd, POLLOUT, deadline)) return Status::FromErrno(what + ": send", e);
    } else if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
      // cidd answers a peer it refuses (SO_PEERCRED) at once and closes
      // without reading: its answer is waiting below, and says why.
      break;
    } else {
      return Status::FromErrno(what + ": send", errno);
    }
  }
  std::string in;
  char buf[4096];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n > 0) {
      in.append(buf, static_cast<size_t>(n));
      size_t nl = in.find('\n');
      if (nl != std::string::npos) return in.substr(0, nl);
      if (in.size() > (64u << 20)) return Status::Corruption(what + ": answer longer than 64 MiB");
    } else if (n == 0) {
      return Status::IoError(what + ": cidd closed the connection without an answer" + (in.empty() ? kRefused : ""));
    } else if (errno == EAGAIN || errno == EINTR) {
      if (int e = WaitFd(fd, POLLIN, deadline)) return Status::FromErrno(what + ": waiting for an answer", e);
    } else if (errno == ECONNRESET && in.empty()) {
      return Status::IoError(what + ": cidd closed the connection without an answer" + kRefused);
    } else {
      return Status::FromErrno(what + ": recv", errno);
    }
  }
}

}  // namespace cid
