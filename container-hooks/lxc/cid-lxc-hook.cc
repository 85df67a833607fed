// cid-lxc-hook: an LXC hook (lxc.hook.pre-start or lxc.hook.mount) for
// full-distro containers on writable root filesystems.  LXC runs it as
//   cid-lxc-hook [OPTIONS] NAME lxc TYPE
// with LXC_ROOTFS_PATH in the environment.  It indexes the rootfs within a
// budget (the rest goes to cidd) and, on a patched kernel, tags the
// rootfs's duplicated files that the writable-tree policy allows
// (cid/policy.h); on a stock kernel it reports what it would tag.  It never
// hard-links: the rootfs is writable.  A rootfs written later just loses
// those tags.
//
// Stages other than pre-start and mount are ignored (exit 0).  Failures
// never block the container unless --fail-closed; then each has its own
// exit status (see kUsage).
#include <getopt.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cinttypes>
#include <climits>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cid/control.h"
#include "cid/index.h"
#include "cid/kernel.h"
#include "cid/layers.h"
#include "cid/policy.h"
#include "cid/share.h"
#include "cid/walker.h"
#include "common/hook_util.h"

namespace cid {
namespace {

using json = nlohmann::json;

enum Exit {
  kOk = 0,
  kUsage = 2,
  kNoRootfsEnv = 10,   // LXC_ROOTFS_PATH unset or empty
  kBadRootfs = 11,     // the rootfs is missing or not a directory
  kUnsupported = 12,   // a rootfs backend other than a directory
  kIndexFailed = 16,
  kShareFailed = 18,
};

constexpr char kUsageText[] =
    "usage: cid-lxc-hook [OPTIONS] NAME lxc TYPE\n"
    "\n"
    "LXC hook for writable rootfs (lxc.hook.pre-start or lxc.hook.mount; LXC\n"
    "appends NAME lxc TYPE and sets LXC_ROOTFS_PATH).  Indexes the rootfs within\n"
    "the budget, hands the rest to cidd, and on a patched kernel tags its\n"
    "duplicated files that the policy allows: not modified in the last\n"
    "--min-age seconds, not excluded, and included or an ELF file.\n"
    "\n"
    "  --index FILE      index (default as cidctl; also CID_INDEX)\n"
    "  --socket PATH     cidd's socket (default /run/cid/cidd.sock; also CID_SOCKET)\n"
    "  --budget-ms N     synchronous budget (default 200)\n"
    "  --cidd-timeout-ms N  how long to wait for cidd to take the rest (default 500)\n"
    "  --include GLOB    tag files matching GLOB (relative to the rootfs, '*'\n"
    "                    crosses '/'); repeatable, the first replaces the defaults\n"
    "                    usr/* lib/* lib64/* bin/* sbin/* opt/* *.so *.so.* *.py\n"
    "                    *.pyc *.pm *.rb\n"
    "  --exclude GLOB    never tag files matching GLOB; repeatable, the first\n"
    "                    replaces the defaults var/* etc/* home/* root/* tmp/*\n"
    "                    run/* srv/*\n"
    "  --min-age S       skip files modified in the last S seconds (default 600)\n"
    "  --log FILE        append a JSON summary line per run\n"
    "  --fail-closed     exit non-zero on failure (LXC then refuses to start)\n"
    "  --quiet           no summary on stderr\n"
    "\n"
    "Exit status (with --fail-closed): 0 done or stage ignored, 2 usage,\n"
    "10 LXC_ROOTFS_PATH unset, 11 rootfs missing or not a directory, 12 rootfs\n"
    "backend not a directory, 16 index failed, 18 tagging failed.\n";

struct Options {
  std::string index;
  std::string socket;
  long budget_ms = 200;
  long cidd_timeout_ms = 500;
  std::optional<std::vector<std::string>> include, exclude;
  long min_age = 600;
  std::string log;
  bool fail_closed = false;
  bool quiet = false;
};

int Run(const Options& o, const std::string& name, const std::string& type) {
  json summary = {{"hook", "cid-lxc-hook"}, {"container", name}, {"stage", type}};
  auto finish = [&](Exit code, const std::string& msg) {
    if (code != kOk) {
      summary["error"] = msg;
      summary["exit"] = code;
      fprintf(stderr, "cid-lxc-hook: %s: %s%s\n", name.c_str(), msg.c_str(),
              o.fail_closed ? "" : " (container not blocked; --fail-closed would refuse it)");
    }
    if (!o.log.empty()) {
      if (FILE* f = fopen(o.log.c_str(), "a")) {
        fprintf(f, "%s\n", summary.dump().c_str());
        fclose(f);
      }
    }
    return o.fail_closed ? code : kOk;
  };
  const char* env = getenv("LXC_ROOTFS_PATH");
  if (!env || !*env) return finish(kNoRootfsEnv, "LXC_ROOTFS_PATH is not set (run me as an LXC hook)");
  std::string rootfs = env;
  if (rootfs.rfind("dir:", 0) == 0) rootfs = rootfs.substr(4);
  if (rootfs.empty() || rootfs[0] != '/') {
    return finish(kUnsupported, "rootfs " + std::string(env) + ": only directory rootfs (dir:PATH or PATH) are handled");
  }
  struct stat st;
  if (stat(rootfs.c_str(), &st) < 0) return finish(kBadRootfs, "rootfs " + rootfs + ": " + strerror(errno));
  if (!S_ISDIR(st.st_mode)) return finish(kBadRootfs, "rootfs " + rootfs + ": not a directory");
  auto canon = CanonicalPath(rootfs);
  if (!canon.ok()) return finish(kBadRootfs, "rootfs " + canon.status().message());
  rootfs = *canon;
  summary["rootfs"] = rootfs;

  std::string index_path = o.index.empty() ? DefaultIndexPath() : o.index;
  std::atomic<bool> stop{false};
  Deadline deadline(std::chrono::milliseconds(o.budget_ms), &stop);
  IndexRun run = IndexTrees(index_path, {rootfs}, /*lower_layers=*/false, &stop);
  if (!run.error.ok()) return finish(run.index_failed ? kIndexFailed : kBadRootfs, run.error.message());
  bool pending = run.indexed == 0;
  summary["indexed"] = !pending;
  summary["files_hashed"] = run.hashed;
  summary["index_written"] = run.wrote;

  bool kernel = KernelHasNamedMerging();
  TreePolicy policy;
  policy.root = rootfs;
  if (o.include) policy.include = *o.include;
  if (o.exclude) policy.exclude = *o.exclude;
  policy.min_age_s = o.min_age;
  ShareStats ss;
  if (!pending) {
    ShareOptions sh;
    sh.mode = kernel ? ShareMode::kTag : ShareMode::kReport;
    sh.only_within = true;
    sh.eligible = [&policy](const std::string& p) { return policy.Eligible(p); };
    sh.stop = &stop;
    sh.on_error = [](const Status& s) { fprintf(stderr, "cid-lxc-hook: %s\n", s.message().c_str()); };
    Status s = ShareDuplicates(run.index, {rootfs}, sh, &ss);
    if (!s.ok()) return finish(kShareFailed, s.message());
    pending = ss.stopped;
  }
  summary["mode"] = kernel ? "tag" : "report";
  summary["duplicated_files"] = ss.files;
  summary["duplicated_bytes"] = ss.duplicated_bytes;
  summary["eligible"] = ss.eligible;
  summary["ineligible"] = ss.ineligible;
  summary["tagged"] = ss.tagged;
  summary["pending"] = pending;
  json req = {{"op", "enqueue"}, {"container", "lxc:" + name}, {"name", name}, {"paths", {rootfs}}, {"writable", true}};
  auto answer = ControlRequest(o.socket, req.dump(), static_cast<int>(o.cidd_timeout_ms));
  summary["cidd"] = answer.ok();
  if (!answer.ok() && pending) {
    fprintf(stderr, "cid-lxc-hook: %s: %s; did only what fits in %ld ms, the rest waits for the next start\n",
            name.c_str(), answer.status().message().c_str(), o.budget_ms);
  }
  if (!o.quiet) {
    fprintf(stderr,
            "cid-lxc-hook: %s: %s: %" PRIu64 " duplicated files (%" PRIu64 " bytes), %" PRIu64 " %s by policy, %" PRIu64
            " left alone%s\n",
            name.c_str(), rootfs.c_str(), ss.files, ss.duplicated_bytes, kernel ? ss.tagged : ss.eligible,
            kernel ? "tagged" : "would be tagged", ss.ineligible,
            pending ? (answer.ok() ? "; the rest handed to cidd" : "; the rest left undone") : "");
  }
  return finish(kOk, "");
}

int Main(int argc, char** argv) {
  Options o;
  const char* ix = getenv("CID_INDEX");
  o.index = ix && *ix ? ix : "";
  o.socket = DefaultSocketPath();
  enum { kIndex = 1000, kSocket, kBudget, kCiddTimeout, kInclude, kExclude, kMinAge, kLog, kFailClosed, kQuiet };
  const option opts[] = {{"index", required_argument, nullptr, kIndex},
                         {"socket", required_argument, nullptr, kSocket},
                         {"budget-ms", required_argument, nullptr, kBudget},
                         {"cidd-timeout-ms", required_argument, nullptr, kCiddTimeout},
                         {"include", required_argument, nullptr, kInclude},
                         {"exclude", required_argument, nullptr, kExclude},
                         {"min-age", required_argument, nullptr, kMinAge},
                         {"log", required_argument, nullptr, kLog},
                         {"fail-closed", no_argument, nullptr, kFailClosed},
                         {"quiet", no_argument, nullptr, kQuiet},
                         {"help", no_argument, nullptr, 'h'},
                         {nullptr, 0, nullptr, 0}};
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, "h", opts, nullptr)) != -1) {
    bool good = true;
    switch (c) {
      case 'h': printf("%s", kUsageText); return kOk;
      case kIndex: o.index = optarg; break;
      case kSocket: o.socket = optarg; break;
      case kBudget: good = ParseLong(optarg, 0, 600000, &o.budget_ms); break;
      case kCiddTimeout: good = ParseLong(optarg, 1, 600000, &o.cidd_timeout_ms); break;
      case kInclude:
        if (!o.include) o.include.emplace();
        o.include->push_back(optarg);
        break;
      case kExclude:
        if (!o.exclude) o.exclude.emplace();
        o.exclude->push_back(optarg);
        break;
      case kMinAge: good = ParseLong(optarg, 0, LONG_MAX, &o.min_age); break;
      case kLog: o.log = optarg; break;
      case kFailClosed: o.fail_closed = true; break;
      case kQuiet: o.quiet = true; break;
      default:
        fprintf(stderr, "cid-lxc-hook: unknown option or missing value: %s (see --help)\n", argv[optind - 1]);
        return kUsage;
    }
    if (!good) {
      fprintf(stderr, "cid-lxc-hook: bad value for %s: '%s'\n", argv[optind - 1], optarg);
      return kUsage;
    }
  }
  if (argc - optind != 3 || std::string(argv[optind + 1]) != "lxc") {
    fprintf(stderr, "cid-lxc-hook: want the arguments LXC passes: NAME lxc TYPE (see --help)\n");
    return kUsage;
  }
  std::string name = argv[optind], type = argv[optind + 2];
  if (type != "pre-start" && type != "mount") return kOk;  // nothing to do at other stages
  return Run(o, name, type);
}

}  // namespace
}  // namespace cid

int main(int argc, char** argv) {
  try {
    return cid::Main(argc, argv);
  } catch (const std::bad_alloc&) {
    fprintf(stderr, "cid-lxc-hook: out of memory\n");
    return 1;
  }
}
