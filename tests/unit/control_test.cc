#include "cid/control.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <thread>

#include "cid/hasher.h"
#include "cid/throttle.h"
#include "test_util.h"

namespace cid {
namespace {

using test::TempDir;

// A one-shot server: reads a line, answers with `answer` (nothing if empty).
// With read_first false it answers at once and closes without reading, as
// cidd refuses a peer that SO_PEERCRED says is not root.
class OneShotServer {
 public:
  OneShotServer(const std::string& path, std::string answer, bool read_first = true) : answer_(std::move(answer)) {
    fd_ = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path.c_str());
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    EXPECT_EQ(listen(fd_, 1), 0);
    thread_ = std::thread([this, read_first] {
      int c = accept(fd_, nullptr, nullptr);
      if (read_first) {
        char buf[256];
        ssize_t n = read(c, buf, sizeof(buf));
        got_ = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
      }
      if (!answer_.empty()) {
        EXPECT_EQ(write(c, answer_.data(), answer_.size()), static_cast<ssize_t>(answer_.size()));
      }
      close(c);
    });
  }
  ~OneShotServer() {
    thread_.join();
    close(fd_);
  }
  const std::string& got() const { return got_; }

 private:
  int fd_;
  std::string answer_, got_;
  std::thread thread_;
};

TEST(ControlRequest, NobodyListening) {
  TempDir d;
  auto r = ControlRequest(d / "none.sock", "{}", 1000);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsNotFound());
  EXPECT_NE(r.status().message().find("cidd is not running"), std::string::npos);
}

TEST(ControlRequest, OneLineEachWay) {
  TempDir d;
  Result<std::string> r = Status::IoError("unset");
  {
    OneShotServer s(d / "s.sock", "{\"ok\":true}\n");
    r = ControlRequest(d / "s.sock", "{\"op\":\"state\"}", 5000);
    EXPECT_EQ(s.got(), "{\"op\":\"state\"}\n");
  }
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "{\"ok\":true}");
}

// The server answers and closes before it has read the request (cidd's
// refusal of a non-root peer): the client must report that answer, not
// EPIPE from the rest of its request.  The request is larger than the
// socket buffers, so the client is still sending when the server closes.
TEST(ControlRequest, AnswerBeforeTheRequestWasRead) {
  TempDir d;
  Result<std::string> r = Status::IoError("unset");
  {
    OneShotServer s(d / "s.sock", "{\"ok\":false,\"error\":\"permission denied\"}\n", /*read_first=*/false);
    r = ControlRequest(d / "s.sock", "{\"op\":\"enqueue\",\"pad\":\"" + std::string(8 << 20, 'x') + "\"}", 5000);
  }
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "{\"ok\":false,\"error\":\"permission denied\"}");
}

TEST(ControlRequest, ClosedWithoutAnswer) {
  TempDir d;
  Result<std::string> r = Status::IoError("unset");
  {
    OneShotServer s(d / "s.sock", "");
    r = ControlRequest(d / "s.sock", "{}", 5000);
  }
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("without an answer"), std::string::npos);
}

TEST(Throttle, EveryByteGoesThroughTheBudgetedEngine) {
  TempDir d;
  std::string data = test::RandomBytes(3 << 20, 7);
  test::WriteFile(d / "f", data);
  ThrottleCounters counters;
  // A budget generous enough to cost no time: this checks accounting, not pace.
  auto factory = ThrottledEngineFactory([] { return NewPreadEngine(4); }, HashBudget{100, 1e6}, &counters);
  FileHasher throttled(factory(), HasherOptions{});
  FileHasher plain(NewPreadEngine(4), HasherOptions{});
  HashOutcome a = throttled.HashPath(d / "f");
  HashOutcome b = plain.HashPath(d / "f");
  ASSERT_TRUE(a.status.ok()) << a.status.ToString();
  EXPECT_EQ(a.digest, b.digest);
  EXPECT_EQ(a.mapped_bytes, 0u);  // never hashed from a mapping, which would bypass the budget
  EXPECT_EQ(counters.bytes_read.load(), data.size());
}

}  // namespace
}  // namespace cid
