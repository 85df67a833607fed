// cidd: keeps the index and the tags current without anyone running a
// command.  It works through a persistent queue of trees (container layers
// the hooks handed over, trees given on the command line), hashing within a
// CPU and I/O budget at idle priority, tags every duplicated file on a
// patched kernel (report only on a stock one; hard links where a hook asked
// for them), re-tags at start what the index says is duplicated (tags last
// one boot), answers the hooks and cidctl on a unix socket, and writes
// Prometheus metrics for node_exporter's textfile collector.
//
// Threads: the main thread serves the socket; one worker thread owns the
// index and does all hashing, tagging and linking.  The state database is
// opened in SQLite's serialized mode and used from both.  The snapshot the
// socket answers from is guarded by mu_.
//
// Exit status: 0 stopped by SIGTERM/SIGINT (or --once done), 1 error,
// 2 usage, 3 another cidd holds the state.
#include <fcntl.h>
#include <getopt.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <poll.h>
#include <pthread.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <chrono>
#include <cinttypes>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cid/control.h"
#include "cid/fd.h"
#include "cid/index.h"
#include "cid/kernel.h"
#include "cid/layers.h"
#include "cid/linkdups.h"
#include "cid/policy.h"
#include "cid/report.h"
#include "cid/scanner.h"
#include "cid/share.h"
#include "cid/throttle.h"
#include "cid/walker.h"
#include "common/hook_util.h"
#include "oci/oci_hook.h"
#include "state.h"
#include "watch.h"

namespace cid {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int kExitOk = 0, kExitError = 1, kExitUsage = 2, kExitRunning = 3;

std::atomic<bool> g_stop{false};
std::atomic<bool> g_hup{false};

void OnStop(int) { g_stop = true; }
void OnHup(int) { g_hup = true; }

constexpr char kUsage[] =
    "usage: cidd [OPTIONS] [TREE...]\n"
    "\n"
    "Index container layers and trees, tag their duplicated files (patched\n"
    "kernel) and report what sharing saves.  TREEs are queued at start.\n"
    "\n"
    "  --index FILE          index (default as cidctl: /var/lib/cid/index.db; CID_INDEX)\n"
    "  --state FILE          cidd's queue and containers (default: cidd.db beside the index)\n"
    "  --socket PATH         control socket (default /run/cid/cidd.sock; CID_SOCKET)\n"
    "  --metrics-dir DIR     write DIR/cid.prom (Prometheus text) atomically\n"
    "  --metrics-interval S  rewrite it at least every S seconds (default 15)\n"
    "  --cpu-percent P       hashing uses at most P% of one CPU (default 50; 0: no limit)\n"
    "  --io-mbps N           hashing reads at most N MB/s (default 0: no limit)\n"
    "  --no-idle             keep normal CPU and I/O priority (default: nice 19, idle I/O class)\n"
    "  --min-size N          ignore contents smaller than N bytes (default 1)\n"
    "  --once                work through the queue, then exit (no socket)\n"
    "  --watch DIR           a layer store without hooks (/var/lib/docker/overlay2,\n"
    "                        /var/lib/containers/storage/overlay): index every\n"
    "                        DIR/<id>/diff as it appears (inotify) and at every rescan\n"
    "  --rescan-interval S   rescan watched stores every S seconds (default 600); a\n"
    "                        layer a hook found indexed and shared is walked again\n"
    "                        at most this often\n"
    "  --help\n"
    "\n"
    "Signals: SIGTERM/SIGINT stop (the tree being indexed stays queued and\n"
    "resumes at the next start); SIGHUP re-tags and rewrites the metrics.\n"
    "Exit status: 0 stopped, 1 error, 2 usage, 3 another cidd holds the state.\n";

struct Config {
  std::string index;
  std::string state;
  std::string socket;
  std::string metrics_dir;
  int metrics_interval = 15;
  HashBudget budget{50, 0};
  bool idle = true;
  uint64_t min_size = 1;
  bool once = false;
  std::vector<std::string> trees;
  std::vector<std::string> watch;  // layer stores to watch (Docker overlay2, ...)
  int rescan_interval = 600;
};

void Log(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void Log(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "cidd: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
}

Status MakeDir(const std::string& dir, mode_t mode) {
  if (dir.empty() || dir == "/" || dir == ".") return Status::OK();
  struct stat st;
  if (stat(dir.c_str(), &st) == 0) return Status::OK();
  Status s = MakeDir(ParentDir(dir), mode);
  if (!s.ok()) return s;
  if (mkdir(dir.c_str(), mode) < 0 && errno != EEXIST) return Status::FromErrno(dir, errno);
  return Status::OK();
}

// Prometheus label values: backslash, double quote and newline escaped.
std::string Label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

// The hashing thread's CPU and I/O priority: nice 19, I/O class idle.
void IdlePriority() {
  pid_t tid = static_cast<pid_t>(syscall(SYS_gettid));
  if (setpriority(PRIO_PROCESS, static_cast<id_t>(tid), 19) < 0) Log("warning: nice 19: %s", strerror(errno));
  constexpr int kIoprioWhoProcess = 1, kIoprioClassIdle = 3, kIoprioClassShift = 13;
  if (syscall(SYS_ioprio_set, kIoprioWhoProcess, tid, kIoprioClassIdle << kIoprioClassShift) < 0) {
    Log("warning: idle I/O class: %s", strerror(errno));
  }
}

class Daemon {
 public:
  explicit Daemon(Config c) : c_(std::move(c)) {}
  ~Daemon() {
    if (listen_fd_ >= 0) {
      close(listen_fd_);
      unlink(c_.socket.c_str());
    }
    if (lock_fd_ >= 0) close(lock_fd_);
  }
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  int Run() {
    if (int rc = Lock(); rc != kExitOk) return rc;
    auto state = StateDb::Open(c_.state);
    if (!state.ok()) {
      Log("%s", state.status().message().c_str());
      return kExitError;
    }
    state_ = std::move(*state);
    for (const auto& t : c_.trees) {
      auto canon = CanonicalPath(t);
      if (!canon.ok()) {
        Log("%s", canon.status().message().c_str());
        return kExitError;
      }
      auto added = state_->Enqueue(*canon, "", false, false);
      if (!added.ok()) {
        Log("%s", added.status().message().c_str());
        return kExitError;
      }
    }
    if (!c_.once) {
      if (Status s = Listen(); !s.ok()) {
        Log("%s", s.message().c_str());
        return kExitError;
      }
    }
    std::thread worker([this] { Worker(); });
    std::thread watcher;
    if (!c_.once && !c_.watch.empty()) {
      watcher = std::thread([this] {
        LayerWatcher w(c_.watch, std::chrono::seconds(c_.rescan_interval), std::chrono::seconds(2),
                       [this](const std::string& layer, bool writable) {
                         auto canon = CanonicalPath(layer);
                         if (!canon.ok()) return;
                         auto added = state_->Enqueue(*canon, "", false, writable);
                         if (added.ok() && *added) Wake();
                       });
        w.Run(&g_stop);
      });
    }
    if (!c_.once) {
      sd_notifyf(0, "READY=1\nSTATUS=listening on %s\nMAINPID=%d", c_.socket.c_str(), getpid());
      Serve();
      sd_notify(0, "STOPPING=1");
    }
    worker.join();
    if (watcher.joinable()) watcher.join();
    return worker_failed_ ? kExitError : kExitOk;
  }

 private:
  // One cidd per state database: an flock'ed file beside it holds our pid.
  int Lock() {
    std::string path = c_.state + ".lock";
    if (Status s = MakeDir(ParentDir(path), 0755); !s.ok()) {
      Log("%s", s.message().c_str());
      return kExitError;
    }
    lock_fd_ = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock_fd_ < 0) {
      Log("lock %s: %s", path.c_str(), strerror(errno));
      return kExitError;
    }
    if (flock(lock_fd_, LOCK_EX | LOCK_NB) < 0) {
      char pid[32] = "";
      ssize_t n = pread(lock_fd_, pid, sizeof(pid) - 1, 0);
      if (n > 0) pid[n] = 0;
      while (n > 0 && (pid[n - 1] == '\n')) pid[--n] = 0;
      Log("another cidd (pid %s) is running with %s; not starting a second one", n > 0 ? pid : "?",
          c_.state.c_str());
      return kExitRunning;
    }
    std::string me = std::to_string(getpid()) + "\n";
    if (ftruncate(lock_fd_, 0) < 0 || pwrite(lock_fd_, me.data(), me.size(), 0) < 0) {
      Log("lock %s: %s", path.c_str(), strerror(errno));
    }
    return kExitOk;
  }

  Status Listen() {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (c_.socket.size() >= sizeof(addr.sun_path)) return Status::InvalidArgument("socket " + c_.socket + ": path too long");
    if (Status s = MakeDir(ParentDir(c_.socket), 0755); !s.ok()) return s;
    memcpy(addr.sun_path, c_.socket.c_str(), c_.socket.size() + 1);
    listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd_ < 0) return Status::FromErrno("socket", errno);
    unlink(c_.socket.c_str());  // we hold the lock: whatever is there is stale
    mode_t old = umask(0177);
    int rc = bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    umask(old);
    if (rc < 0) return Status::FromErrno("socket " + c_.socket + ": bind", errno);
    if (listen(listen_fd_, 64) < 0) return Status::FromErrno("socket " + c_.socket + ": listen", errno);
    return Status::OK();
  }

  void Serve() {
    while (!g_stop) {
      if (g_hup) Wake();
      pollfd p{listen_fd_, POLLIN, 0};
      int n = poll(&p, 1, 250);
      if (n <= 0) continue;
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      if (!HandleConnection(fd)) close(fd);
    }
    Wake();
    // Hook runs hold `this`: they end within their budget.
    std::unique_lock<std::mutex> l(hooks_mu_);
    hooks_cv_.wait(l, [this] { return hook_threads_ == 0; });
  }

  static void Reply(int fd, const json& j) {
    std::string s = j.dump() + "\n";
    SendAll(fd, s.data(), s.size());
  }

  static bool SendAll(int fd, const char* p, size_t len) {
    while (len > 0) {
      ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      p += n;
      len -= static_cast<size_t>(n);
    }
    return true;
  }

  // Reads one request and answers it.  Returns true if the connection was
  // handed to a thread (an "oci-hook" run), which then closes it.
  bool HandleConnection(int fd) {
    ucred cred{};
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || (cred.uid != 0 && cred.uid != geteuid())) {
      Reply(fd, {{"ok", false}, {"error", "permission denied: only root may talk to cidd"}});
      return false;
    }
    timeval tv{2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    std::string line;
    std::vector<Fd> fds;  // passed with the request (cid-oci-hook: its mount namespace and cwd)
    char buf[4096];
    while (line.find('\n') == std::string::npos && line.size() < (1u << 20)) {
      iovec iov{buf, sizeof(buf)};
      alignas(cmsghdr) char control[CMSG_SPACE(4 * sizeof(int))];
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
      if (n <= 0) break;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
          int passed;
          memcpy(&passed, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
          fds.emplace_back(passed);
        }
      }
      line.append(buf, static_cast<size_t>(n));
    }
    size_t nl = line.find('\n');
    std::string rest = nl == std::string::npos ? "" : line.substr(nl + 1);
    line = line.substr(0, nl);
    json req = json::parse(line, nullptr, false);
    if (req.is_object() && req.value("op", "") == "oci-hook") return StartHook(fd, std::move(req), std::move(rest), std::move(fds));
    Reply(fd, Handle(req));
    return false;
  }

  json Handle(const json& req) {
    if (req.is_discarded() || !req.is_object() || !req.contains("op") || !req["op"].is_string()) {
      return {{"ok", false}, {"error", "not a request: want one JSON object with \"op\" on one line"}};
    }
    std::string op = req["op"];
    if (op == "state") {
      std::lock_guard<std::mutex> l(mu_);
      json s = snapshot_;
      s["ok"] = true;
      return s;
    }
    if (op == "metrics") {
      std::lock_guard<std::mutex> l(mu_);
      return {{"ok", true}, {"text", metrics_}};
    }
    if (op == "domain") {
      std::string name = req.value("name", "");
      if (name.empty() || name.size() > 64) return {{"ok", false}, {"error", "domain: want a name of 1-64 bytes"}};
      auto id = state_->DomainId(name);
      if (!id.ok()) return {{"ok", false}, {"error", id.status().message()}};
      return {{"ok", true}, {"id", *id}};
    }
    if (op == "enqueue") return Enqueue(req);
    return {{"ok", false}, {"error", "unknown op '" + op + "' (enqueue, domain, state, metrics, oci-hook)"}};
  }

  // ---- OCI hook runs for cid-oci-hook --------------------------------------
  //
  // {"op":"oci-hook","args":[ARGV...],"env":{NAME:VALUE...},"state_bytes":N}
  // on one line, then the N bytes of the state the runtime gave the hook,
  // with two descriptors (SCM_RIGHTS): the hook's mount namespace and its
  // working directory.  The hook (oci_hook.h) runs in a thread of its own
  // that has entered both, so every path resolves as in the hook's process;
  // the answer is {"exit":N,"ok":true,"stderr_bytes":E,"stdout_bytes":O},
  // then its stdout and stderr.  {"ok":false,...}: cid-oci-hook runs
  // cid-oci-hook-standalone instead.

  static constexpr int kMaxHookThreads = 16;
  static constexpr size_t kMaxState = (16u << 20) + 1;

  bool StartHook(int fd, json req, std::string state, std::vector<Fd> fds) {
    auto refuse = [fd](const std::string& why) {
      Reply(fd, {{"ok", false}, {"error", "oci-hook: " + why}});
      return false;
    };
    if (fds.size() != 2) return refuse("want two descriptors (mount namespace, working directory)");
    if (!req.contains("args") || !req["args"].is_array() || req["args"].empty()) return refuse("no \"args\" array");
    for (const auto& a : req["args"])
      if (!a.is_string()) return refuse("\"args\" must hold strings");
    if (req.contains("env") && (!req["env"].is_object() ||
                                std::any_of(req["env"].begin(), req["env"].end(), [](const json& v) { return !v.is_string(); })))
      return refuse("\"env\" must map names to strings");
    if (!req.contains("state_bytes") || !req["state_bytes"].is_number_unsigned() || req["state_bytes"].get<uint64_t>() > kMaxState)
      return refuse("no \"state_bytes\" (at most 16 MiB)");
    {
      std::lock_guard<std::mutex> l(hooks_mu_);
      if (hook_threads_ >= kMaxHookThreads) return refuse("busy: " + std::to_string(kMaxHookThreads) + " hook runs already");
      hook_threads_++;
    }
    std::thread([this, fd, req = std::move(req), state = std::move(state), fds = std::move(fds)]() mutable {
      RunHook(fd, req, std::move(state), fds[0].get(), fds[1].get());
      close(fd);
      fds.clear();
      std::lock_guard<std::mutex> l(hooks_mu_);
      hook_threads_--;
      hooks_cv_.notify_all();
    }).detach();
    return true;
  }

  void RunHook(int fd, const json& req, std::string state, int ns_fd, int cwd_fd) {
    pthread_setname_np(pthread_self(), "cidd-oci-hook");
    auto refuse = [fd](const std::string& why) { Reply(fd, {{"ok", false}, {"error", "oci-hook: " + why}}); };
    size_t want = req["state_bytes"].get<size_t>();
    char buf[65536];
    while (state.size() < want) {
      ssize_t n = recv(fd, buf, std::min(sizeof(buf), want - state.size()), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return refuse("the state ends early (" + std::to_string(state.size()) + " of " + std::to_string(want) + " bytes)");
      state.append(buf, static_cast<size_t>(n));
    }
    if (state.size() > want) return refuse("more bytes than \"state_bytes\"");
    // This thread alone: its own root and cwd, then the hook's mount
    // namespace (setns needs a thread whose fs is not shared) and cwd.
    if (unshare(CLONE_FS) < 0) return refuse(std::string("unshare(CLONE_FS): ") + strerror(errno));
    struct stat theirs, ours;
    if (fstat(ns_fd, &theirs) < 0 || stat("/proc/thread-self/ns/mnt", &ours) < 0)
      return refuse(std::string("mount namespace: ") + strerror(errno));
    if ((theirs.st_dev != ours.st_dev || theirs.st_ino != ours.st_ino) && setns(ns_fd, CLONE_NEWNS) < 0)
      return refuse(std::string("cannot enter the hook's mount namespace: ") + strerror(errno));
    if (fchdir(cwd_fd) < 0) return refuse(std::string("cannot enter the hook's working directory: ") + strerror(errno));

    std::map<std::string, std::string> env;
    if (req.contains("env"))
      for (auto it = req["env"].begin(); it != req["env"].end(); ++it) env[it.key()] = it.value().get<std::string>();
    std::vector<std::string> args = req["args"].get<std::vector<std::string>>();
    char *out_text = nullptr, *err_text = nullptr;
    size_t out_len = 0, err_len = 0;
    OciHookIo io;
    io.ran_in = "cidd";
    io.index_cache = &hook_index_;
    io.out = open_memstream(&out_text, &out_len);
    io.err = open_memstream(&err_text, &err_len);
    if (!io.out || !io.err) {
      if (io.out) fclose(io.out);
      if (io.err) fclose(io.err);
      free(out_text);
      free(err_text);
      return refuse(std::string("open_memstream: ") + strerror(errno));
    }
    io.getenv = [&env](const char* name) -> const char* {
      auto it = env.find(name);
      return it == env.end() ? nullptr : it->second.c_str();
    };
    // The hook's requests to cidd (enqueue, domain) are answered here.
    io.control = [this](const std::string&, const std::string& request, int) -> Result<std::string> {
      return Handle(json::parse(request, nullptr, false)).dump();
    };
    int code = 1;
    try {
      code = RunOciHook(args, &state, io);
    } catch (const std::exception& e) {
      fprintf(io.err, "cid-oci-hook: in cidd: %s\n", e.what());
    }
    fclose(io.out);
    fclose(io.err);
    json head = {{"ok", true}, {"exit", code}, {"stdout_bytes", out_len}, {"stderr_bytes", err_len}};
    std::string h = head.dump() + "\n";
    if (SendAll(fd, h.data(), h.size()) && SendAll(fd, out_text, out_len)) SendAll(fd, err_text, err_len);
    free(out_text);
    free(err_text);
  }

  json Enqueue(const json& req) {
    if (!req.contains("paths") || !req["paths"].is_array()) return {{"ok", false}, {"error", "enqueue: no \"paths\" array"}};
    std::vector<std::string> paths;
    for (const auto& p : req["paths"]) {
      if (!p.is_string() || p.get<std::string>().empty() || p.get<std::string>()[0] != '/') {
        return {{"ok", false}, {"error", "enqueue: every path must be an absolute path string"}};
      }
      auto canon = CanonicalPath(p.get<std::string>());
      if (!canon.ok()) return {{"ok", false}, {"error", canon.status().message()}};
      paths.push_back(*canon);
    }
    std::string domain = req.contains("domain") && req["domain"].is_string() ? req["domain"].get<std::string>() : "";
    bool hardlink = req.value("hardlink", false);
    bool writable = req.value("writable", false);
    std::optional<ContainerRow> c;
    if (req.contains("container") && req["container"].is_string()) {
      c = ContainerRow{req["container"],
                       req.contains("name") && req["name"].is_string() ? req["name"].get<std::string>() : "", domain,
                       paths};
    }
    // "shared": the hook found every layer indexed and shared its
    // duplicates itself.  What remains for cidd is the walk that checks a
    // trusted root signature; a layer walked within --rescan-interval is
    // not walked again for every container started from it.
    std::vector<std::string> queue = paths;
    if (req.value("shared", false)) {
      std::lock_guard<std::mutex> l(mu_);
      auto now = Clock::now();
      queue.erase(std::remove_if(queue.begin(), queue.end(),
                                 [&](const std::string& p) {
                                   auto w = walked_.find(p);
                                   return w != walked_.end() && now - w->second < std::chrono::seconds(c_.rescan_interval);
                                 }),
                  queue.end());
    }
    // One transaction: the hook waits for this answer at container start.
    auto added = state_->Announce(c ? &*c : nullptr, queue, domain, hardlink, writable);
    if (!added.ok()) return {{"ok", false}, {"error", added.status().message()}};
    Wake();
    return {{"ok", true}, {"queued", *added}};
  }

  void Wake() {
    std::lock_guard<std::mutex> l(mu_);
    wake_ = true;
    cv_.notify_all();
  }

  // ---- worker ------------------------------------------------------------

  void Worker() {
    if (c_.idle) IdlePriority();
    auto index = Index::Open(c_.index, Index::Mode::kReadWrite);
    if (!index.ok()) {
      Log("%s", index.status().message().c_str());
      worker_failed_ = true;
      g_stop = true;
      return;
    }
    index_ = std::move(*index);
    kernel_ = KernelHasNamedMerging();
    Log("index %s, state %s, kernel %s", c_.index.c_str(), c_.state.c_str(),
        kernel_ ? "with named merging: tagging" : "without named merging: report only");
    if (kernel_) Retag();
    Refresh();
    auto last_refresh = Clock::now();
    while (!g_stop) {
      if (g_hup.exchange(false)) {
        Log("SIGHUP: re-tagging and rewriting metrics");
        if (kernel_) Retag();
        Refresh();
      }
      auto item = state_->Next();
      if (!item.ok()) {
        Log("%s", item.status().message().c_str());
        Sleep(std::chrono::seconds(1));
        continue;
      }
      if (!item->has_value()) {
        if (c_.once) break;
        if (Clock::now() - last_refresh > std::chrono::seconds(c_.metrics_interval)) {
          Refresh();
          last_refresh = Clock::now();
        }
        sd_notify(0, "STATUS=idle");
        Sleep(std::chrono::seconds(c_.metrics_interval));
        continue;
      }
      Process(**item);
      Refresh();
      last_refresh = Clock::now();
    }
  }

  void Sleep(std::chrono::milliseconds d) {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, d, [this] { return wake_ || g_stop || g_hup; });
    wake_ = false;
  }

  void Process(const QueueItem& item) {
    sd_notifyf(0, "STATUS=indexing %s", item.path.c_str());
    ScanOptions so;
    so.workers = 1;  // the budget is per hashing thread
    if (c_.budget.limited()) {
      so.engine = ThrottledEngineFactory(DefaultEngineFactory(ScanOptions::kDefaultQueueDepth), c_.budget, &counters_);
    }
    so.stop = &g_stop;
    uint64_t errors = 0;
    so.on_error = [&](const Status&) { errors++; };
    ScanStats st;
    Status s = ScanTree(index_.get(), item.path, so, &st);
    if (!s.ok()) {
      if (s.IsBusy()) {
        Log("%s; retrying later", s.message().c_str());
        (void)state_->Retry(item.id);
        Sleep(std::chrono::seconds(1));
      } else if (s.IsNotFound() || item.attempts >= 2) {
        Log("%s; dropped from the queue", s.message().c_str());
        (void)state_->Done(item.id);
      } else {
        Log("%s; will retry", s.message().c_str());
        (void)state_->Retry(item.id);
      }
      return;
    }
    if (st.interrupted) return;  // stays queued; the next start resumes it
    hashed_bytes_ += st.hashed_bytes;
    hash_seconds_ += st.seconds;
    Log("%s: %" PRIu64 " files, %" PRIu64 " hashed, %" PRIu64 " unchanged, %" PRIu64 " errors, %.2f s",
        st.root.c_str(), st.files, st.hashed, st.unchanged, errors, st.seconds);
    ShareOptions sh;
    sh.mode = kernel_ ? ShareMode::kTag : item.hardlink ? ShareMode::kHardlink : ShareMode::kReport;
    sh.min_size = c_.min_size;
    sh.stop = &g_stop;
    sh.journal = DefaultJournalPath(c_.index);
    sh.on_error = [](const Status& e) { Log("%s", e.message().c_str()); };
    TreePolicy policy;
    policy.root = st.root;
    if (item.writable) {
      sh.mode = kernel_ ? ShareMode::kTag : ShareMode::kReport;  // never hard-link a writable tree
      sh.only_within = true;
      sh.eligible = [&policy](const std::string& p) { return policy.Eligible(p); };
    }
    if (sh.mode == ShareMode::kHardlink) sh.link_layers = LinkableLayers(DefaultLayerRegistryPath(c_.index), {st.root}, {}, "");
    if (!item.domain.empty() && sh.mode == ShareMode::kTag) {
      auto id = state_->DomainId(item.domain);
      if (!id.ok()) {
        Log("%s", id.status().message().c_str());
        return;
      }
      sh.domain = *id;
    }
    ShareStats ss;
    s = ShareDuplicates(index_.get(), {st.root}, sh, &ss);
    if (!s.ok()) Log("%s: %s", st.root.c_str(), s.message().c_str());
    if (ss.stopped) return;
    tagged_[st.root] = ss.tagged;
    (void)state_->Done(item.id);
    std::lock_guard<std::mutex> l(mu_);
    walked_[item.path] = Clock::now();
  }

  // Tags last one boot: tag again what the index says is duplicated.  A
  // file that changed since it was indexed is queued for a rescan, never
  // tagged with a digest the kernel would refuse.  Trees the hooks never
  // saw as read-only overlay layers count as writable: only what
  // TreePolicy allows is tagged there, and only their own files.
  void Retag() {
    auto roots = index_->Roots();
    if (!roots.ok()) {
      Log("%s", roots.status().message().c_str());
      return;
    }
    std::map<std::string, std::string> domain_of;  // layer -> domain name
    if (auto cs = state_->Containers(); cs.ok()) {
      for (const auto& c : *cs)
        for (const auto& l : c.layers)
          if (!c.domain.empty()) domain_of[l] = c.domain;
    }
    std::vector<std::string> read_only;
    if (auto known = KnownLayers(DefaultLayerRegistryPath(c_.index)); known.ok()) read_only = *known;
    auto is_read_only = [&](const std::string& p) {
      return std::find(read_only.begin(), read_only.end(), p) != read_only.end();
    };
    // Read-only layers together per domain; each writable tree on its own.
    std::map<std::string, std::vector<std::string>> by_domain;
    std::vector<std::string> writable;
    for (const auto& r : *roots) {
      if (is_read_only(r.path)) by_domain[domain_of.count(r.path) ? domain_of[r.path] : ""].push_back(r.path);
      else writable.push_back(r.path);
    }
    std::set<std::string> rescan;
    uint64_t tagged = 0, stale = 0;
    auto run = [&](const std::vector<std::string>& layers, const std::string& domain, const TreePolicy* policy) {
      ShareOptions sh;
      sh.mode = ShareMode::kTag;
      sh.min_size = c_.min_size;
      sh.stop = &g_stop;
      if (!domain.empty()) {
        auto id = state_->DomainId(domain);
        if (!id.ok()) return;
        sh.domain = *id;
      }
      if (policy) {
        sh.only_within = true;
        sh.eligible = [policy](const std::string& p) { return policy->Eligible(p); };
      }
      sh.on_error = [](const Status& e) { Log("re-tag: %s", e.message().c_str()); };
      sh.on_stale = [&](const std::string& path) {
        for (const auto& l : layers)
          if (PathBeneath(path, l)) rescan.insert(l);
      };
      ShareStats ss;
      Status s = ShareDuplicates(index_.get(), layers, sh, &ss);
      if (!s.ok()) Log("re-tag: %s", s.message().c_str());
      tagged += ss.tagged;
      stale += ss.stale;
    };
    for (const auto& [domain, layers] : by_domain) run(layers, domain, nullptr);
    for (const auto& w : writable) {
      TreePolicy policy;
      policy.root = w;
      run({w}, domain_of.count(w) ? domain_of[w] : "", &policy);
    }
    for (const auto& l : rescan) {
      (void)state_->Enqueue(l, domain_of.count(l) ? domain_of[l] : "", false, !is_read_only(l));
    }
    Log("re-tag: %" PRIu64 " files tagged, %" PRIu64 " changed since indexed (%zu trees queued for a rescan)", tagged,
        stale, rescan.size());
  }

  // ---- snapshot and metrics ---------------------------------------------

  void Refresh() {
    uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    auto rep = BuildReport(index_.get(), page);
    if (!rep.ok()) {
      Log("metrics: %s", rep.status().message().c_str());
      return;
    }
    json snap;
    std::map<std::string, std::string> kstats;
    uint64_t kernel_tagged = 0;
    if (kernel_) {
      for (const auto& [k, v] : ReadKernelStats()) kstats[k] = v;
      if (kstats.count("tagged_inodes")) kernel_tagged = strtoull(kstats["tagged_inodes"].c_str(), nullptr, 10);
    }
    uint64_t our_tagged = 0;
    for (const auto& [l, n] : tagged_) our_tagged += n;
    const Summary& t = rep->total;
    snap["totals"] = {{"files", t.files},
                      {"bytes", t.bytes},
                      {"distinct_contents", t.distinct_contents},
                      {"duplicated_bytes", t.duplicated_bytes},
                      {"saved_bytes", t.saved_pages() * page},
                      {"tagged_files", kernel_ ? kernel_tagged : our_tagged}};
    json layers = json::array();
    std::map<std::string, const TreeSummary*> by_path;
    for (const auto& tr : rep->trees) {
      by_path[tr.root.path] = &tr;
      layers.push_back({{"path", tr.root.path},
                        {"files", tr.within.files},
                        {"bytes", tr.within.bytes},
                        {"duplicated_bytes", tr.within.duplicated_bytes},
                        {"also_elsewhere_bytes", tr.also_elsewhere_bytes},
                        {"tagged_files", tagged_.count(tr.root.path) ? tagged_[tr.root.path] : 0}});
    }
    snap["layers"] = layers;
    json containers = json::array();
    if (auto cs = state_->Containers(); cs.ok()) {
      for (const auto& c : *cs) {
        uint64_t files = 0, bytes = 0, dup = 0, tg = 0;
        for (const auto& l : c.layers) {
          auto it = by_path.find(l);
          if (it == by_path.end()) continue;
          files += it->second->within.files;
          bytes += it->second->within.bytes;
          dup += it->second->within.duplicated_bytes + it->second->also_elsewhere_bytes;
          tg += tagged_.count(l) ? tagged_[l] : 0;
        }
        containers.push_back({{"id", c.id}, {"name", c.name}, {"domain", c.domain}, {"layers", c.layers},
                              {"files", files}, {"bytes", bytes}, {"duplicated_bytes", dup}, {"tagged_files", tg}});
      }
    }
    snap["containers"] = containers;
    json queue = json::array();
    if (auto q = state_->Queue(); q.ok())
      for (const auto& i : *q) queue.push_back({{"path", i.path}, {"attempts", i.attempts}});
    snap["queue"] = queue;
    snap["queue_length"] = queue.size();
    snap["kernel_named_merging"] = kernel_;
    snap["kernel"] = kstats;
    double rate = hash_seconds_ > 0 ? static_cast<double>(hashed_bytes_) / hash_seconds_ : 0;
    snap["hashing"] = {{"bytes_total", hashed_bytes_.load()}, {"seconds_total", hash_seconds_}, {"bytes_per_second", rate},
                       {"budget_cpu_percent", c_.budget.cpu_percent}, {"budget_io_mbps", c_.budget.io_mbps},
                       {"throttled_seconds_total", static_cast<double>(counters_.sleep_us.load()) / 1e6}};
    snap["index"] = c_.index;
    snap["pid"] = getpid();
    std::string text = Metrics(snap);
    {
      std::lock_guard<std::mutex> l(mu_);
      snapshot_ = std::move(snap);
      metrics_ = text;
    }
    if (!c_.metrics_dir.empty()) WriteMetrics(text);
  }

  static std::string Metrics(const json& s) {
    std::string out;
    auto metric = [&](const char* name, const char* type, const char* help) {
      out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
    };
    auto value = [&](const std::string& series, double v) {
      char buf[64];
      snprintf(buf, sizeof(buf), " %.17g\n", v);
      out += series + buf;
    };
    auto num = [](const json& j, const char* k) { return j.contains(k) ? j[k].get<double>() : 0.0; };
    // One unlabelled series each: (name, type, help, object, key).
    const json& t = s["totals"];
    const json& h = s["hashing"];
    struct Plain {
      const char *name, *type, *help;
      const json* from;
      const char* key;
    };
    const Plain plain[] = {
        {"cid_files", "gauge", "Inodes in the index.", &t, "files"},
        {"cid_distinct_contents", "gauge", "Distinct file contents (SHA-256) in the index.", &t, "distinct_contents"},
        {"cid_duplicated_bytes", "gauge", "Bytes stored beyond the first copy of each content.", &t, "duplicated_bytes"},
        {"cid_saved_bytes", "gauge", "Page cache one copy per content saves if every copy is cached whole.", &t,
         "saved_bytes"},
        {"cid_tagged_files", "gauge", "Files tagged for named merging (the kernel's count where it has one).", &t,
         "tagged_files"},
        {"cid_queue_length", "gauge", "Trees waiting to be indexed.", &s, "queue_length"},
        {"cid_hashed_bytes_total", "counter", "Bytes hashed since cidd started.", &h, "bytes_total"},
        {"cid_hash_throughput_bytes_per_second", "gauge", "Bytes hashed per second of indexing, since start.", &h,
         "bytes_per_second"},
    };
    for (const auto& p : plain) {
      metric(p.name, p.type, p.help);
      value(p.name, num(*p.from, p.key));
    }
    metric("cid_kernel_named_merging", "gauge", "1 if the running kernel has named merging (/sys/kernel/mm/cid).");
    value("cid_kernel_named_merging", s["kernel_named_merging"].get<bool>() ? 1 : 0);
    bool first = true;
    for (const auto& [k, v] : s["kernel"].items()) {
      char* end;
      std::string str = v.get<std::string>();
      double d = strtod(str.c_str(), &end);
      if (end == str.c_str() || *end) continue;
      if (first) metric("cid_kernel_stat", "gauge", "Figures from /sys/kernel/mm/cid, by file name.");
      first = false;
      value("cid_kernel_stat{name=\"" + Label(k) + "\"}", d);
    }
    metric("cid_layer_files", "gauge", "Inodes per indexed layer or tree.");
    for (const auto& l : s["layers"]) value("cid_layer_files{layer=\"" + Label(l["path"]) + "\"}", num(l, "files"));
    metric("cid_layer_bytes", "gauge", "Bytes per indexed layer or tree.");
    for (const auto& l : s["layers"]) value("cid_layer_bytes{layer=\"" + Label(l["path"]) + "\"}", num(l, "bytes"));
    metric("cid_layer_shared_elsewhere_bytes", "gauge", "Bytes of a layer whose content another tree also has.");
    for (const auto& l : s["layers"])
      value("cid_layer_shared_elsewhere_bytes{layer=\"" + Label(l["path"]) + "\"}", num(l, "also_elsewhere_bytes"));
    metric("cid_layer_tagged_files", "gauge", "Files cidd tagged for a layer's duplicates (here and their twins).");
    for (const auto& l : s["layers"])
      value("cid_layer_tagged_files{layer=\"" + Label(l["path"]) + "\"}", num(l, "tagged_files"));
    auto clabels = [](const json& c) {
      return "{container=\"" + Label(c["id"]) + "\",name=\"" + Label(c["name"]) + "\"}";
    };
    metric("cid_container_files", "gauge", "Inodes in a container's lower layers.");
    for (const auto& c : s["containers"]) value("cid_container_files" + clabels(c), num(c, "files"));
    metric("cid_container_duplicated_bytes", "gauge", "Bytes of a container's layers duplicated in its layers or elsewhere.");
    for (const auto& c : s["containers"]) value("cid_container_duplicated_bytes" + clabels(c), num(c, "duplicated_bytes"));
    return out;
  }

  void WriteMetrics(const std::string& text) {
    std::string tmp = c_.metrics_dir + "/.cid.prom.tmp", dst = c_.metrics_dir + "/cid.prom";
    int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
      Log("metrics %s: %s", tmp.c_str(), strerror(errno));
      return;
    }
    bool ok = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && fsync(fd) == 0;
    int err = errno;
    close(fd);
    if (!ok || rename(tmp.c_str(), dst.c_str()) < 0) {
      Log("metrics %s: %s", dst.c_str(), strerror(ok ? errno : err));
      unlink(tmp.c_str());
    }
  }

  const Config c_;
  int lock_fd_ = -1;
  int listen_fd_ = -1;
  std::unique_ptr<StateDb> state_;
  std::unique_ptr<Index> index_;            // worker thread only
  bool kernel_ = false;                     // worker thread only
  std::map<std::string, uint64_t> tagged_;  // layer -> files tagged; worker thread only
  ThrottleCounters counters_;
  std::atomic<uint64_t> hashed_bytes_{0};
  double hash_seconds_ = 0;  // worker thread only
  std::atomic<bool> worker_failed_{false};

  ReadIndexCache hook_index_;  // the hook runs' reader of the index (hook_util.h)
  std::mutex hooks_mu_;
  std::condition_variable hooks_cv_;
  int hook_threads_ = 0;  // guarded by hooks_mu_: OCI hook runs in progress

  std::mutex mu_;
  std::condition_variable cv_;
  bool wake_ = false;     // guarded by mu_
  std::map<std::string, Clock::time_point> walked_;  // guarded by mu_: trees Process finished, when
  json snapshot_;         // guarded by mu_
  std::string metrics_;   // guarded by mu_
};

bool ParseNumber(const char* s, double min, double max, double* out) {
  char* end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || v < min || v > max) return false;
  *out = v;
  return true;
}

int Main(int argc, char** argv) {
  Config c;
  const char* env_index = getenv("CID_INDEX");
  c.index = env_index && *env_index ? env_index : DefaultIndexPath();
  c.socket = DefaultSocketPath();
  enum { kIndex = 1000, kState, kSocket, kMetricsDir, kInterval, kCpu, kIo, kNoIdle, kMinSize, kOnce, kWatch, kRescan };
  const option opts[] = {{"index", required_argument, nullptr, kIndex},
                         {"state", required_argument, nullptr, kState},
                         {"socket", required_argument, nullptr, kSocket},
                         {"metrics-dir", required_argument, nullptr, kMetricsDir},
                         {"metrics-interval", required_argument, nullptr, kInterval},
                         {"cpu-percent", required_argument, nullptr, kCpu},
                         {"io-mbps", required_argument, nullptr, kIo},
                         {"no-idle", no_argument, nullptr, kNoIdle},
                         {"min-size", required_argument, nullptr, kMinSize},
                         {"once", no_argument, nullptr, kOnce},
                         {"watch", required_argument, nullptr, kWatch},
                         {"rescan-interval", required_argument, nullptr, kRescan},
                         {"help", no_argument, nullptr, 'h'},
                         {nullptr, 0, nullptr, 0}};
  opterr = 0;
  int o;
  while ((o = getopt_long(argc, argv, "h", opts, nullptr)) != -1) {
    double v = 0;
    bool good = true;
    switch (o) {
      case 'h': printf("%s", kUsage); return kExitOk;
      case kIndex: c.index = optarg; break;
      case kState: c.state = optarg; break;
      case kSocket: c.socket = optarg; break;
      case kMetricsDir: c.metrics_dir = optarg; break;
      case kInterval: good = ParseNumber(optarg, 1, 86400, &v); c.metrics_interval = static_cast<int>(v); break;
      case kCpu: good = ParseNumber(optarg, 0, 100, &c.budget.cpu_percent); break;
      case kIo: good = ParseNumber(optarg, 0, 1e6, &c.budget.io_mbps); break;
      case kNoIdle: c.idle = false; break;
      case kMinSize: good = ParseNumber(optarg, 1, 1e18, &v); c.min_size = static_cast<uint64_t>(v); break;
      case kOnce: c.once = true; break;
      case kWatch: c.watch.push_back(optarg); break;
      case kRescan: good = ParseNumber(optarg, 1, 86400 * 7, &v); c.rescan_interval = static_cast<int>(v); break;
      default:
        fprintf(stderr, "cidd: unknown option or missing value: %s (see --help)\n", argv[optind - 1]);
        return kExitUsage;
    }
    if (!good) {
      fprintf(stderr, "cidd: bad value for %s: '%s'\n", argv[optind - 1], optarg);
      return kExitUsage;
    }
  }
  for (int i = optind; i < argc; i++) c.trees.push_back(argv[i]);
  if (c.state.empty()) c.state = ParentDir(c.index) + "/cidd.db";
  if (!c.metrics_dir.empty()) {
    struct stat st;
    if (stat(c.metrics_dir.c_str(), &st) < 0 || !S_ISDIR(st.st_mode)) {
      fprintf(stderr, "cidd: --metrics-dir %s: not a directory\n", c.metrics_dir.c_str());
      return kExitUsage;
    }
  }
  struct sigaction sa {};
  sa.sa_handler = OnStop;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  sa.sa_handler = OnHup;
  sigaction(SIGHUP, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  Daemon d(std::move(c));
  return d.Run();
}

}  // namespace
}  // namespace cid

int main(int argc, char** argv) {
  try {
    return cid::Main(argc, argv);
  } catch (const std::bad_alloc&) {
    fprintf(stderr, "cidd: out of memory\n");
    return 1;
  }
}
