// The OCI hook's work (see oci_hook.h): the state and config.json read, the
// overlay layers found, indexed within the budget, their duplicates shared
// or reported, the rest handed to cidd.  cid-oci-hook-standalone runs it in
// its own process, cidd in a thread of its own for cid-oci-hook (the
// client).
//
// It never blocks a container: on bad input it says what is wrong on stderr
// and exits 0, unless --fail-closed, where each kind of failure has its own
// exit status (listed in kUsage).
#include "oci/oci_hook.h"

#include <getopt.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <climits>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cid/control.h"
#include "cid/index.h"
#include "cid/io.h"
#include "cid/kernel.h"
#include "cid/layers.h"
#include "cid/linkdups.h"
#include "cid/scanner.h"
#include "cid/share.h"
#include "cid/walker.h"
#include "common/hook_util.h"

namespace cid {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

enum Exit {
  kOk = 0,
  kUsage = 2,
  kBadState = 10,       // state JSON on stdin malformed, truncated or incomplete
  kNoBundle = 11,       // bundle directory or its config.json missing/unreadable
  kBadConfig = 12,      // config.json malformed or without root.path
  kNotOverlay = 13,     // rootfs missing, not mounted, or not an overlay
  kBadLayer = 14,       // a lower layer missing or unreadable
  kLayerEscapes = 15,   // a lower layer path leads out of the storage root
  kIndexFailed = 16,    // the index cannot be opened or written
  kBadAnnotation = 17,  // io.cid.* annotation with a bad value
  kShareFailed = 18,    // tagging or hard-linking failed as a whole
};

constexpr char kUsageText[] =
    "usage: cid-oci-hook [OPTIONS] < STATE.json\n"
    "\n"
    "OCI runtime hook (createRuntime or prestart): reads the container state on\n"
    "stdin and the bundle's config.json, finds the overlay layers of the rootfs\n"
    "(in /proc/PID/mountinfo of the state's pid), indexes every lower layer and\n"
    "tags their duplicated files (patched kernel), hard-links them (--hardlink,\n"
    "stock kernel) or reports them.  Work beyond the budget goes to cidd.\n"
    "\n"
    "cid-oci-hook, what hooks.d runs, hands each run to cidd when cidd is\n"
    "running (it runs the hook in a thread that enters the caller's mount\n"
    "namespace and working directory); otherwise, or if cidd cannot, it runs\n"
    "cid-oci-hook-standalone, the same hook in a process of its own.  Both\n"
    "take these options and give these exit statuses.\n"
    "\n"
    "  --index FILE        index database (default as cidctl: /var/lib/cid/index.db;\n"
    "                      also CID_INDEX)\n"
    "  --socket PATH       cidd's socket (default /run/cid/cidd.sock; also CID_SOCKET)\n"
    "  --budget-ms N       synchronous time budget (default 200; also CID_HOOK_BUDGET_MS)\n"
    "  --cidd-timeout-ms N how long to wait for cidd to take the rest (default 500)\n"
    "  --hardlink          stock kernel: hard-link duplicated files across read-only\n"
    "                      lower layers when content, mode, owner, mtime and xattrs\n"
    "                      all match (journalled; 'cidctl unlink-dups --undo')\n"
    "  --journal FILE      hard-link journal (default: hardlinks.journal beside the index)\n"
    "  --storage-root DIR  layers must resolve beneath DIR (default: the directory\n"
    "                      holding podman's l/ links)\n"
    "  --mountinfo FILE    mount table to read (default /proc/PID/mountinfo)\n"
    "  --min-size N        ignore contents smaller than N bytes (default 1)\n"
    "  --log FILE          append a JSON summary line per run to FILE\n"
    "  --fail-closed       exit non-zero on failure (the runtime then refuses to\n"
    "                      start the container); default: report and exit 0\n"
    "  --quiet             no summary on stderr (errors are still printed)\n"
    "\n"
    "Annotations: io.cid.merge=false skips the container; io.cid.domain=NAME\n"
    "shares only with containers of the same domain (ids kept by cidd).\n"
    "\n"
    "Exit status with --fail-closed: 0 done or skipped, 2 usage, 10 bad state\n"
    "JSON, 11 bundle or config.json missing, 12 bad config.json, 13 rootfs not an\n"
    "overlay mount, 14 layer unreadable, 15 layer outside the storage root,\n"
    "16 index failed, 17 bad io.cid annotation, 18 sharing failed.\n";

struct Options {
  std::string index;
  std::string socket;
  int budget_ms = 200;
  int cidd_timeout_ms = 500;
  bool hardlink = false;
  std::string journal;
  std::string storage_root;
  std::string mountinfo;
  uint64_t min_size = 1;
  std::string log;
  bool fail_closed = false;
  bool quiet = false;
};

struct Failure {
  Exit code;
  std::string msg;
};

const char* EnvOr(const OciHookIo& io, const char* name, const char* def) {
  const char* v = io.getenv ? io.getenv(name) : nullptr;
  return v && *v ? v : def;
}

bool ValidDomainName(const std::string& d) {
  if (d.empty() || d.size() > 64) return false;
  for (char c : d)
    if (!isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') return false;
  return true;
}

// What the hook learnt from the state and config.json.
struct Container {
  std::string id;
  std::string bundle;
  long pid = 0;
  std::string rootfs;
  std::map<std::string, std::string> annotations;
};

void MergeAnnotations(const json& obj, std::map<std::string, std::string>* out) {
  if (!obj.is_object()) return;
  for (auto it = obj.begin(); it != obj.end(); ++it)
    if (it.value().is_string()) (*out)[it.key()] = it.value().get<std::string>();
}

std::optional<Failure> ReadContainer(const std::string& state_text, Container* c) {
  if (state_text.find_first_not_of(" \t\r\n") == std::string::npos) {
    return Failure{kBadState, "state JSON on stdin: empty (the runtime passes the container state there)"};
  }
  json state = json::parse(state_text, nullptr, /*allow_exceptions=*/false);
  if (state.is_discarded()) {
    return Failure{kBadState, "state JSON on stdin: malformed or truncated (" + std::to_string(state_text.size()) +
                                  " bytes)"};
  }
  if (!state.is_object()) return Failure{kBadState, "state JSON on stdin: not an object"};
  for (const char* field : {"id", "bundle"}) {
    if (!state.contains(field) || !state[field].is_string() || state[field].get<std::string>().empty()) {
      return Failure{kBadState, std::string("state JSON on stdin: no \"") + field + "\" string"};
    }
  }
  c->id = state["id"].get<std::string>();
  c->bundle = state["bundle"].get<std::string>();
  if (state.contains("pid")) {
    if (!state["pid"].is_number_integer() || state["pid"].get<long>() < 0) {
      return Failure{kBadState, "state JSON on stdin: \"pid\" is not a process id"};
    }
    c->pid = state["pid"].get<long>();
  }
  struct stat st;
  if (stat(c->bundle.c_str(), &st) < 0) {
    return Failure{kNoBundle, "bundle " + c->bundle + ": " + strerror(errno)};
  }
  if (!S_ISDIR(st.st_mode)) return Failure{kNoBundle, "bundle " + c->bundle + ": not a directory"};
  std::string config_path = c->bundle + "/config.json";
  auto config_text = ReadSmallFile(config_path);
  if (!config_text.ok()) return Failure{kNoBundle, config_text.status().message()};
  json config = json::parse(*config_text, nullptr, false);
  if (config.is_discarded() || !config.is_object()) {
    return Failure{kBadConfig, config_path + ": malformed JSON"};
  }
  if (!config.contains("root") || !config["root"].is_object() || !config["root"].contains("path") ||
      !config["root"]["path"].is_string() || config["root"]["path"].get<std::string>().empty()) {
    return Failure{kBadConfig, config_path + ": no root.path"};
  }
  std::string root = config["root"]["path"].get<std::string>();
  c->rootfs = root[0] == '/' ? root : c->bundle + "/" + root;
  if (config.contains("annotations")) MergeAnnotations(config["annotations"], &c->annotations);
  if (state.contains("annotations")) MergeAnnotations(state["annotations"], &c->annotations);
  return std::nullopt;
}

class Hook {
 public:
  Hook(Options o, const OciHookIo& io) : o_(std::move(o)), io_(io) {}

  int Run(const std::string& state_text) {
    start_ = Clock::now();
    summary_["hook"] = "cid-oci-hook";
    summary_["ran_in"] = io_.ran_in;
    auto fail = Execute(state_text);
    summary_["ms"] = std::chrono::duration<double, std::milli>(Clock::now() - start_).count();
    if (fail) {
      summary_["error"] = fail->msg;
      summary_["exit"] = fail->code;
      fprintf(io_.err, "cid-oci-hook: %s%s\n", fail->msg.c_str(),
              o_.fail_closed ? "" : " (container not blocked; --fail-closed would refuse it)");
    }
    WriteLog();
    if (!fail) return kOk;
    return o_.fail_closed ? fail->code : kOk;
  }

 private:
  std::optional<Failure> Execute(const std::string& state_text) {
    Container c;
    if (auto f = ReadContainer(state_text, &c)) return f;
    summary_["container"] = c.id;
    auto merge = c.annotations.find("io.cid.merge");
    if (merge != c.annotations.end()) {
      std::string v = merge->second;
      for (auto& ch : v) ch = static_cast<char>(tolower(static_cast<unsigned char>(ch)));
      if (v == "false" || v == "0" || v == "no" || v == "off") {
        summary_["skipped"] = "io.cid.merge=false";
        if (!o_.quiet) fprintf(io_.err, "cid-oci-hook: container %s: io.cid.merge=false, left alone\n", c.id.c_str());
        return std::nullopt;
      }
      if (v != "true" && v != "1" && v != "yes" && v != "on") {
        return Failure{kBadAnnotation, "annotation io.cid.merge=" + merge->second + ": want true or false"};
      }
    }
    std::string domain;
    if (auto d = c.annotations.find("io.cid.domain"); d != c.annotations.end()) {
      if (!ValidDomainName(d->second)) {
        return Failure{kBadAnnotation, "annotation io.cid.domain=" + d->second +
                                           ": want 1-64 letters, digits, '-', '_' or '.'"};
      }
      domain = d->second;
      summary_["domain"] = domain;
    }

    auto rootfs = CanonicalPath(c.rootfs);
    if (!rootfs.ok()) return Failure{kNotOverlay, "rootfs: " + rootfs.status().message()};
    std::string mountinfo = o_.mountinfo;
    if (mountinfo.empty()) {
      std::string own = "/proc/" + std::to_string(c.pid) + "/mountinfo";
      mountinfo = c.pid > 0 && access(own.c_str(), R_OK) == 0 ? own : "/proc/self/mountinfo";
    }
    auto mount = FindOverlayMount(mountinfo, *rootfs);
    if (!mount.ok()) return Failure{kNotOverlay, "rootfs " + mount.status().message()};

    std::string storage_root = o_.storage_root;
    bool relative = std::any_of(mount->lowers.begin(), mount->lowers.end(),
                                [](const std::string& l) { return l.empty() || l[0] != '/'; });
    if (storage_root.empty() && relative && !mount->upper.empty() && mount->upper[0] == '/') {
      storage_root = ParentDir(ParentDir(mount->upper));  // containers/storage: <root>/overlay/<id>/diff
    }
    std::vector<std::string> layers;
    for (const auto& l : mount->lowers) {
      auto r = ResolveLayer(l, storage_root);
      if (!r.ok()) {
        Exit code = r.status().code() == Status::Code::kInvalidArgument ? kLayerEscapes : kBadLayer;
        return Failure{code, r.status().message()};
      }
      layers.push_back(*r);
    }
    summary_["layers"] = layers;

    std::string index_path = o_.index.empty() ? DefaultIndexPath() : o_.index;
    // Every lower layer seen is remembered, so that --hardlink can link a
    // later container's layers with this one's.
    std::string registry = DefaultLayerRegistryPath(index_path);
    if (Status r = RememberLayers(registry, layers); !r.ok()) {
      fprintf(io_.err, "cid-oci-hook: %s (hard-linking will not know these layers)\n", r.message().c_str());
    }

    std::atomic<bool> stop{false};
    Deadline deadline(std::chrono::milliseconds(o_.budget_ms), &stop);
    // In cidd: its reader of this index, held for the rest of the run.
    std::unique_lock<std::mutex> cache_lock;
    Index* reader = nullptr;
    if (ReadIndexCache* cache = io_.index_cache) {
      cache_lock = std::unique_lock<std::mutex>(cache->mu);
      reader = cache->For(index_path);
      if (!reader) cache_lock.unlock();
    }
    IndexRun run = IndexTrees(index_path, layers, /*lower_layers=*/true, &stop, reader);
    if (!run.error.ok()) return Failure{run.index_failed ? kIndexFailed : kBadLayer, run.error.message()};
    size_t scanned = run.indexed;
    summary_["layers_indexed"] = scanned;
    summary_["layers_current"] = run.current;
    summary_["index_written"] = run.wrote;
    summary_["files_hashed"] = run.hashed;
    summary_["file_errors"] = run.file_errors;

    bool kernel = KernelHasNamedMerging();
    ShareMode mode = kernel ? ShareMode::kTag : o_.hardlink ? ShareMode::kHardlink : ShareMode::kReport;
    summary_["mode"] = mode == ShareMode::kTag ? "tag" : mode == ShareMode::kHardlink ? "hardlink" : "report";
    bool pending = scanned < layers.size();
    std::string cidd_note;
    std::optional<uint32_t> domain_id;
    if (!domain.empty() && mode == ShareMode::kTag) {
      auto id = AskDomain(domain);
      if (id.ok()) domain_id = *id;
      else cidd_note = "domain " + domain + " needs cidd to map it to a kernel domain: " + id.status().message();
    }
    ShareStats ss;
    bool can_share = !pending && (domain.empty() || mode != ShareMode::kTag || domain_id);
    if (can_share) {
      ShareOptions sh;
      sh.mode = mode;
      sh.domain = domain_id;
      sh.min_size = o_.min_size;
      sh.journal = o_.journal.empty() ? DefaultJournalPath(index_path) : o_.journal;
      sh.stop = &stop;
      if (mode == ShareMode::kHardlink) sh.link_layers = LinkableLayers(registry, layers, {*mount}, storage_root);
      sh.on_error = [&](const Status& s) { fprintf(io_.err, "cid-oci-hook: %s\n", s.message().c_str()); };
      // Report mode on an unchanged index: the counts cidd kept, if any.
      ReadIndexCache* cache = reader && run.index == reader && mode == ShareMode::kReport ? io_.index_cache : nullptr;
      auto key = std::make_pair(layers, o_.min_size);
      if (auto kept = cache ? cache->reports.find(key) : decltype(cache->reports.end()){};
          cache && kept != cache->reports.end()) {
        ss = kept->second;
        summary_["counts_kept"] = true;
      } else {
        Status s = ShareDuplicates(run.index, layers, sh, &ss);
        if (!s.ok()) return Failure{kShareFailed, "container " + c.id + ": " + s.message()};
        // Kept only if nobody wrote the index meanwhile.
        int64_t version = cache ? cache->version : -1;
        if (cache && !ss.stopped && cache->For(index_path) == reader && cache->version == version) cache->reports[key] = ss;
      }
      pending = ss.stopped;
    }
    if (cache_lock.owns_lock()) cache_lock.unlock();  // run.index is not used below
    summary_["duplicated_contents"] = ss.groups;
    summary_["duplicated_files"] = ss.files;
    summary_["duplicated_bytes"] = ss.duplicated_bytes;
    summary_["tagged"] = ss.tagged;
    summary_["already_tagged"] = ss.already_tagged;
    summary_["hardlinked"] = ss.links.linked;
    summary_["hardlink_differ"] = ss.links.differ;
    summary_["pending"] = pending;

    // cidd finishes what is pending and keeps the container for its metrics.
    json req = {{"op", "enqueue"}, {"container", c.id}, {"paths", layers}, {"hardlink", mode == ShareMode::kHardlink},
                {"shared", !pending && can_share}};
    if (!domain.empty()) req["domain"] = domain;
    if (auto n = c.annotations.find("io.podman.annotations.name"); n != c.annotations.end()) req["name"] = n->second;
    auto answer = io_.control(o_.socket, req.dump(), o_.cidd_timeout_ms);
    summary_["cidd"] = answer.ok();
    if (!answer.ok() && (pending || !cidd_note.empty())) {
      if (cidd_note.empty()) cidd_note = answer.status().message();
      fprintf(io_.err,
              "cid-oci-hook: container %s: %s; did only what fits in %d ms (%zu of %zu layers indexed), "
              "the rest waits for the next start or 'cidctl scan'\n",
              c.id.c_str(), cidd_note.c_str(), o_.budget_ms, scanned, layers.size());
    }
    if (!o_.quiet) {
      fprintf(io_.err,
              "cid-oci-hook: container %s: %zu layers (%zu indexed now), %" PRIu64 " duplicated files (%" PRIu64
              " bytes); %s%s\n",
              c.id.c_str(), layers.size(), scanned, ss.files, ss.duplicated_bytes,
              mode == ShareMode::kTag        ? ("tagged " + std::to_string(ss.tagged)).c_str()
              : mode == ShareMode::kHardlink ? ("hard-linked " + std::to_string(ss.links.linked)).c_str()
                                             : "report only (stock kernel; --hardlink to link them)",
              pending ? (answer.ok() ? "; the rest handed to cidd" : "; the rest left undone") : "");
    }
    return std::nullopt;
  }

  Result<uint32_t> AskDomain(const std::string& name) {
    json req = {{"op", "domain"}, {"name", name}};
    auto a = io_.control(o_.socket, req.dump(), o_.cidd_timeout_ms);
    if (!a.ok()) return a.status();
    json j = json::parse(*a, nullptr, false);
    if (j.is_discarded() || !j.value("ok", false) || !j.contains("id") || !j["id"].is_number_unsigned()) {
      return Status::Corruption("cidd: bad answer to a domain request: " + *a);
    }
    return j["id"].get<uint32_t>();
  }

  void WriteLog() {
    if (o_.log.empty()) return;
    FILE* f = fopen(o_.log.c_str(), "a");
    if (!f) {
      fprintf(io_.err, "cid-oci-hook: log %s: %s\n", o_.log.c_str(), strerror(errno));
      return;
    }
    fprintf(f, "%s\n", summary_.dump().c_str());
    fclose(f);
  }

  const Options o_;
  const OciHookIo& io_;
  Clock::time_point start_;
  json summary_ = json::object();
};

// Parses args (args[0] the program's name) into *o: -1 to go on, else the
// exit status.  getopt_long keeps its state in globals: one parse at a time
// in a process (cidd runs hooks in several threads).
int ParseArgs(const std::vector<std::string>& args, const OciHookIo& io, Options* out) {
  static std::mutex getopt_mu;
  std::lock_guard<std::mutex> lock(getopt_mu);
  std::vector<std::string> copy = args;
  std::vector<char*> argv_vec;
  for (auto& a : copy) argv_vec.push_back(a.data());
  argv_vec.push_back(nullptr);
  int argc = static_cast<int>(copy.size());
  char** argv = argv_vec.data();
  Options& o = *out;
  o.index = EnvOr(io, "CID_INDEX", "");
  o.socket = EnvOr(io, "CID_SOCKET", kDefaultSocket);
  long budget = 200;
  if (!ParseLong(EnvOr(io, "CID_HOOK_BUDGET_MS", "200"), 0, 600000, &budget)) {
    fprintf(io.err, "cid-oci-hook: CID_HOOK_BUDGET_MS: want milliseconds\n");
    return kUsage;
  }
  enum { kIndex = 1000, kSocket, kBudget, kCiddTimeout, kHardlink, kJournal, kStorage, kMountinfo, kMinSize, kLog, kFailClosed,
         kQuiet };
  const option opts[] = {{"index", required_argument, nullptr, kIndex},
                         {"socket", required_argument, nullptr, kSocket},
                         {"budget-ms", required_argument, nullptr, kBudget},
                         {"cidd-timeout-ms", required_argument, nullptr, kCiddTimeout},
                         {"hardlink", no_argument, nullptr, kHardlink},
                         {"journal", required_argument, nullptr, kJournal},
                         {"storage-root", required_argument, nullptr, kStorage},
                         {"mountinfo", required_argument, nullptr, kMountinfo},
                         {"min-size", required_argument, nullptr, kMinSize},
                         {"log", required_argument, nullptr, kLog},
                         {"fail-closed", no_argument, nullptr, kFailClosed},
                         {"quiet", no_argument, nullptr, kQuiet},
                         {"help", no_argument, nullptr, 'h'},
                         {nullptr, 0, nullptr, 0}};
  opterr = 0;
  optind = 0;  // glibc: start afresh
  int c;
  while ((c = getopt_long(argc, argv, "h", opts, nullptr)) != -1) {
    long v = 0;
    switch (c) {
      case 'h': fputs(kUsageText, io.out); return kOk;
      case kIndex: o.index = optarg; break;
      case kSocket: o.socket = optarg; break;
      case kBudget:
        if (!ParseLong(optarg, 0, 600000, &budget)) {
          fprintf(io.err, "cid-oci-hook: --budget-ms %s: want milliseconds\n", optarg);
          return kUsage;
        }
        break;
      case kCiddTimeout:
        if (!ParseLong(optarg, 1, 600000, &v)) {
          fprintf(io.err, "cid-oci-hook: --cidd-timeout-ms %s: want milliseconds\n", optarg);
          return kUsage;
        }
        o.cidd_timeout_ms = static_cast<int>(v);
        break;
      case kHardlink: o.hardlink = true; break;
      case kJournal: o.journal = optarg; break;
      case kStorage: o.storage_root = optarg; break;
      case kMountinfo: o.mountinfo = optarg; break;
      case kMinSize:
        if (!ParseLong(optarg, 1, LONG_MAX, &v)) {
          fprintf(io.err, "cid-oci-hook: --min-size %s: want bytes\n", optarg);
          return kUsage;
        }
        o.min_size = static_cast<uint64_t>(v);
        break;
      case kLog: o.log = optarg; break;
      case kFailClosed: o.fail_closed = true; break;
      case kQuiet: o.quiet = true; break;
      default:
        fprintf(io.err, "cid-oci-hook: unknown option or missing value: %s (see --help)\n", argv[optind - 1]);
        return kUsage;
    }
  }
  if (optind < argc) {
    // runc passes the hook's args; anything extra is a configuration mistake.
    fprintf(io.err, "cid-oci-hook: unexpected argument '%s' (see --help)\n", argv[optind]);
    return kUsage;
  }
  o.budget_ms = static_cast<int>(budget);
  return -1;
}

}  // namespace

int RunOciHook(const std::vector<std::string>& args, const std::string* state, const OciHookIo& io) {
  Options o;
  if (int done = ParseArgs(args, io, &o); done >= 0) return done;
  if (!state) {
    fprintf(io.err, "cid-oci-hook: reads the OCI state JSON on stdin (see --help)\n");
    return kUsage;
  }
  Hook hook(o, io);
  return hook.Run(*state);
}

}  // namespace cid
