// Target selection for cid-analyze: pids, cgroup directories, podman
// containers (through `podman inspect`), and every user process.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "cid/analyze.h"

namespace cid::analyze {
namespace {

constexpr unsigned kPfKthread = 0x00200000;  // include/linux/sched.h

bool ProcExists(pid_t pid) {
  struct stat st;
  return stat(("/proc/" + std::to_string(pid)).c_str(), &st) == 0;
}

// Fields of /proc/PID/stat after the ")" that closes comm: state is [0],
// ppid [1], flags [6].
bool StatFields(pid_t pid, std::vector<std::string>* out) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return false;
  size_t close = line.rfind(')');
  if (close == std::string::npos) return false;
  std::istringstream rest(line.substr(close + 1));
  out->clear();
  std::string f;
  while (rest >> f) out->push_back(f);
  return out->size() > 6;
}

std::vector<pid_t> AllPids() {
  std::vector<pid_t> pids;
  DIR* d = opendir("/proc");
  if (!d) return pids;
  while (struct dirent* e = readdir(d)) {
    char* end;
    long v = strtol(e->d_name, &end, 10);
    if (*end == 0 && v > 0) pids.push_back(static_cast<pid_t>(v));
  }
  closedir(d);
  return pids;
}

// pid and every descendant, through PPid.
std::vector<pid_t> WithDescendants(pid_t root) {
  std::multimap<pid_t, pid_t> children;
  std::vector<std::string> f;
  for (pid_t p : AllPids()) {
    if (StatFields(p, &f)) children.emplace(static_cast<pid_t>(atol(f[1].c_str())), p);
  }
  std::vector<pid_t> out{root};
  for (size_t i = 0; i < out.size(); i++) {
    auto [b, e] = children.equal_range(out[i]);
    for (auto it = b; it != e; ++it) out.push_back(it->second);
  }
  return out;
}

// Runs argv, returns its stdout; *rc gets the exit status (-1 if it could not run).
std::string RunCapture(const std::vector<std::string>& argv, int* rc, std::string* err_out) {
  int out[2], err[2];
  *rc = -1;
  if (pipe2(out, O_CLOEXEC) != 0) return {};
  if (pipe2(err, O_CLOEXEC) != 0) {
    close(out[0]);
    close(out[1]);
    return {};
  }
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    dup2(err[1], 2);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, 0);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  std::string s, e;
  char buf[4096];
  // podman's stderr is small; read stdout to the end, then stderr.
  for (ssize_t n; (n = read(out[0], buf, sizeof(buf))) > 0;) s.append(buf, n);
  for (ssize_t n; (n = read(err[0], buf, sizeof(buf))) > 0;) e.append(buf, n);
  close(out[0]);
  close(err[0]);
  int st = 0;
  if (pid > 0 && waitpid(pid, &st, 0) == pid) *rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  if (err_out) *err_out = e;
  return s;
}

TargetResult Fail(TargetError e, Status s) {
  TargetResult r;
  r.error = e;
  r.status = std::move(s);
  return r;
}

}  // namespace

bool IsKernelThread(pid_t pid) {
  std::vector<std::string> f;
  if (!StatFields(pid, &f)) return false;
  return strtoul(f[6].c_str(), nullptr, 10) & kPfKthread;
}

TargetResult TargetsFromPids(const std::vector<pid_t>& pids) {
  TargetResult r;
  for (pid_t p : pids) {
    if (p <= 0 || !ProcExists(p))
      return Fail(TargetError::kNotFound, Status::NotFound("pid " + std::to_string(p) + ": no such process"));
    if (IsKernelThread(p))
      return Fail(TargetError::kKernelThread,
                  Status::InvalidArgument("pid " + std::to_string(p) +
                                          " is a kernel thread: it has no user memory to analyze"));
    if (p == getpid())
      return Fail(TargetError::kOther, Status::InvalidArgument("pid " + std::to_string(p) +
                                                                " is cid-analyze itself"));
    r.targets.push_back({p, ""});
  }
  return r;
}

TargetResult TargetsFromCgroup(const std::string& dir) {
  struct stat st;
  if (stat(dir.c_str(), &st) != 0)
    return Fail(TargetError::kNotFound, Status::FromErrno("cgroup " + dir, errno));
  if (!S_ISDIR(st.st_mode) || access((dir + "/cgroup.procs").c_str(), R_OK) != 0)
    return Fail(TargetError::kNotFound, Status::NotFound("cgroup " + dir + ": not a cgroup directory (no cgroup.procs)"));
  TargetResult r;
  std::set<pid_t> seen;
  size_t kthreads = 0;
  std::vector<std::string> dirs{dir};
  for (size_t i = 0; i < dirs.size(); i++) {
    std::ifstream procs(dirs[i] + "/cgroup.procs");
    for (long p; procs >> p;) {
      pid_t pid = static_cast<pid_t>(p);
      if (pid == getpid() || !seen.insert(pid).second) continue;
      if (IsKernelThread(pid)) {
        kthreads++;
        continue;
      }
      r.targets.push_back({pid, ""});
    }
    if (DIR* d = opendir(dirs[i].c_str())) {
      while (struct dirent* e = readdir(d)) {
        if (e->d_type == DT_DIR && strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
          dirs.push_back(dirs[i] + "/" + e->d_name);
      }
      closedir(d);
    }
  }
  if (kthreads) r.notes.push_back("cgroup " + dir + ": " + std::to_string(kthreads) + " kernel threads skipped");
  return r;
}

TargetResult TargetsFromContainer(const std::string& name, const std::vector<std::string>& podman_args) {
  std::vector<std::string> argv{"podman"};
  argv.insert(argv.end(), podman_args.begin(), podman_args.end());
  argv.insert(argv.end(), {"inspect", "--type", "container", "--format", "{{.State.Pid}}", name});
  int rc;
  std::string err;
  std::string out = RunCapture(argv, &rc, &err);
  if (rc == -1 || rc == 127)
    return Fail(TargetError::kOther, Status::Unsupported("container " + name + ": cannot run podman"));
  if (rc != 0) {
    while (!err.empty() && err.back() == '\n') err.pop_back();
    return Fail(TargetError::kNotFound, Status::NotFound("container " + name + ": no such container (podman: " + err + ")"));
  }
  long pid = atol(out.c_str());
  if (pid <= 0 || !ProcExists(static_cast<pid_t>(pid)))
    return Fail(TargetError::kNotFound, Status::NotFound("container " + name + ": not running"));
  TargetResult r;
  for (pid_t p : WithDescendants(static_cast<pid_t>(pid))) {
    if (p != getpid() && !IsKernelThread(p)) r.targets.push_back({p, name});
  }
  return r;
}

TargetResult AllUserProcesses() {
  TargetResult r;
  size_t kthreads = 0;
  for (pid_t p : AllPids()) {
    if (p == getpid()) continue;
    if (IsKernelThread(p)) {
      kthreads++;
      continue;
    }
    r.targets.push_back({p, "", /*best_effort=*/true});
  }
  r.notes.push_back(std::to_string(kthreads) + " kernel threads skipped");
  return r;
}

}  // namespace cid::analyze
