// cidctl: index trees, find duplicated content, and tag files for named
// merging.  See docs/cidctl.md.
//
// Exit status: 0 success; 1 error; 2 usage; 3 the scan finished but some
// files could not be indexed (unreadable, or changed while read); 130 the
// scan was interrupted (what was indexed is kept; scan again to continue).
#include <getopt.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "cid/digest.h"
#include "cid/hasher.h"
#include "cid/index.h"
#include "cid/json.h"
#include "cid/kernel.h"
#include "cid/report.h"
#include "cid/safe_open.h"
#include "cid/scanner.h"
#include "cid/walker.h"
#include "host_commands.h"

namespace cid {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitError = 1;
constexpr int kExitUsage = 2;
constexpr int kExitPartial = 3;
constexpr int kExitBusy = 4;  // the index is locked by another client beyond --busy-timeout
constexpr int kExitInterrupted = 130;

std::atomic<bool> g_stop{false};

void OnSignal(int) { g_stop = true; }

void Error(const std::string& msg) { fprintf(stderr, "cidctl: %s\n", msg.c_str()); }

int Fail(const Status& s) {
  Error(s.message());
  return s.IsBusy() ? kExitBusy : kExitError;
}

// --busy-timeout MS (every command that opens the index); -1: the
// CID_BUSY_TIMEOUT_MS environment variable, else 2000 ms.
int g_busy_timeout_ms = -1;

// "123", "4k", "1M", "2G" (binary units).
bool ParseSize(const char* text, uint64_t* out) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = strtoull(text, &end, 10);
  if (errno || end == text) return false;
  uint64_t mult = 1;
  if (*end) {
    switch (*end) {
      case 'k': case 'K': mult = 1ull << 10; break;
      case 'm': case 'M': mult = 1ull << 20; break;
      case 'g': case 'G': mult = 1ull << 30; break;
      case 't': case 'T': mult = 1ull << 40; break;
      default: return false;
    }
    end++;
    if (*end == 'i') end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end) return false;
  }
  *out = v * mult;
  return true;
}

bool ParseU32(const char* text, uint32_t* out) {
  char* end = nullptr;
  errno = 0;
  unsigned long v = strtoul(text, &end, 0);
  if (errno || end == text || *end || v > UINT32_MAX) return false;
  *out = static_cast<uint32_t>(v);
  return true;
}

enum { kOptIndex = 1000, kOptBatch, kOptJson, kOptMinSize, kOptWorkers, kOptNoUring, kOptQuiet, kOptDomain, kOptNoVerify,
       kOptVerify, kOptDups, kOptRehash, kOptBusyTimeout, kOptHashAll, kOptMap };

struct Command {
  const char* name;
  const char* summary;
  const char* usage;
  int (*run)(int argc, char** argv);
};

// Parses options with getopt_long; `on_opt` returns false on a bad value.
// Returns -1 when parsing succeeded, else the exit code to return.
int ParseOptions(int argc, char** argv, const Command& cmd, const std::vector<option>& extra,
                 const std::function<bool(int, const char*)>& on_opt) {
  std::vector<option> opts = extra;
  bool has_index = false;
  for (const option& o : extra) has_index |= o.val == kOptIndex;
  if (has_index) opts.push_back({"busy-timeout", required_argument, nullptr, kOptBusyTimeout});
  opts.push_back({"help", no_argument, nullptr, 'h'});
  opts.push_back({nullptr, 0, nullptr, 0});
  std::string shorts = "h";  // GNU getopt permutes: options may follow PATHs
  optind = 1;
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, shorts.c_str(), opts.data(), nullptr)) != -1) {
    if (c == 'h') {
      printf("%s", cmd.usage);
      return kExitOk;
    }
    if (c == '?' || c == ':') {
      Error(std::string(cmd.name) + ": unknown option or missing value: " + argv[optind - 1] + " (see 'cidctl " +
            cmd.name + " --help')");
      return kExitUsage;
    }
    if (c == kOptBusyTimeout) {
      uint32_t ms;
      if (!ParseU32(optarg, &ms) || ms > INT32_MAX) {
        Error(std::string(cmd.name) + ": bad value for --busy-timeout: '" + optarg + "' (milliseconds)");
        return kExitUsage;
      }
      g_busy_timeout_ms = static_cast<int>(ms);
      continue;
    }
    if (!on_opt(c, optarg)) {
      Error(std::string(cmd.name) + ": bad value for " + argv[optind - 1] + ": '" + (optarg ? optarg : "") + "'");
      return kExitUsage;
    }
  }
  return -1;
}


const option kIndexOpt = {"index", required_argument, nullptr, kOptIndex};
const option kJsonOpt = {"json", no_argument, nullptr, kOptJson};

Result<std::unique_ptr<Index>> OpenIndex(const std::string& given, Index::Mode mode) {
  IndexOptions o;
  o.busy_timeout_ms = g_busy_timeout_ms;
  return Index::Open(given.empty() ? DefaultIndexPath() : given, mode, o);
}

// ---- scan ----------------------------------------------------------------

extern const Command kScan;

int CmdScan(int argc, char** argv) {
  std::string index_path;
  bool json = false, quiet = false;
  ScanOptions so;
  int rc = ParseOptions(argc, argv, kScan,
                        {kIndexOpt, kJsonOpt, {"workers", required_argument, nullptr, kOptWorkers},
                         {"no-uring", no_argument, nullptr, kOptNoUring}, {"quiet", no_argument, nullptr, kOptQuiet},
                         {"batch", required_argument, nullptr, kOptBatch},
                         {"rehash", no_argument, nullptr, kOptRehash},
                         {"hash-all", no_argument, nullptr, kOptHashAll},
                         {"map", no_argument, nullptr, kOptMap}},
                        [&](int c, const char* arg) {
                          switch (c) {
                            case kOptIndex: index_path = arg; return true;
                            case kOptJson: json = true; return true;
                            case kOptQuiet: quiet = true; return true;
                            case kOptRehash: so.rehash = true; return true;
                            case kOptHashAll: so.lazy = false; return true;
                            case kOptMap: so.hasher.map_min_size = 1 << 20; return true;
                            case kOptNoUring: setenv("CID_NO_URING", "1", 1); return true;
                            case kOptWorkers: return ParseU32(arg, &so.workers) && so.workers > 0;
                            case kOptBatch: {
                              uint32_t n;
                              if (!ParseU32(arg, &n) || n == 0) return false;
                              so.batch_writes = n;
                              return true;
                            }
                          }
                          return false;
                        });
  if (rc >= 0) return rc;
  if (optind >= argc) {
    Error("scan: no PATH given (see 'cidctl scan --help')");
    return kExitUsage;
  }
  auto index = OpenIndex(index_path, Index::Mode::kReadWrite);
  if (!index.ok()) return Fail(index.status());

  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sa.sa_flags = SA_RESETHAND;  // a second Ctrl-C kills at once (the index stays valid)
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  bool tty = isatty(STDERR_FILENO) && !quiet && !json;
  ScanSession session;  // a first scan of several roots keeps its rows in memory from one to the next
  session.roots = static_cast<unsigned>(argc - optind);
  so.session = &session;
  so.stop = &g_stop;
  so.on_error = [&](const Status& s) {
    if (tty) fprintf(stderr, "\r\033[K");
    Error(s.message());
  };
  std::string current;
  if (tty) {
    so.on_progress = [&](const ScanProgress& p) {
      fprintf(stderr, "\r\033[Kscanning %s: %" PRIu64 " files, %" PRIu64 " hashed (%s), %" PRIu64 " queued",
              current.c_str(), p.files, p.hashed, HumanBytes(p.hashed_bytes).c_str(), p.queued);
    };
  }
  JsonWriter jw;
  jw.BeginObject().String("index", (*index)->path()).BeginArray("roots");
  bool interrupted = false;
  int exit_code = kExitOk;
  for (int i = optind; i < argc && !interrupted; i++) {
    current = argv[i];
    ScanStats st;
    Status s = ScanTree(index->get(), argv[i], so, &st);
    if (tty) fprintf(stderr, "\r\033[K");
    if (!s.ok()) {
      Error(s.message());
      // The index itself failing ends the run; a bad root skips to the next.
      if (s.message().rfind("index ", 0) == 0) return s.IsBusy() ? kExitBusy : kExitError;
      exit_code = kExitError;
      continue;
    }
    interrupted = st.interrupted;
    double gbps = st.seconds > 0 ? static_cast<double>(st.hashed_bytes) / st.seconds / 1e9 : 0;
    if (json) {
      jw.BeginObject()
          .String("root", st.root)
          .Uint("files", st.files)
          .Uint("inodes", st.inodes)
          .Uint("hardlinks", st.hardlinks)
          .Uint("unchanged", st.unchanged)
          .Uint("hashed", st.hashed)
          .Uint("hashed_bytes", st.hashed_bytes)
          .Uint("mapped_bytes", st.mapped_bytes)
          .Uint("changed", st.changed)
          .Uint("errors", st.errors)
          .Uint("symlinks", st.symlinks)
          .Uint("special", st.special)
          .Uint("pseudo_fs", st.pseudo_fs)
          .Uint("removed", st.removed)
          .Uint("racy", st.racy)
          .Uint("deferred", st.deferred)
          .Uint("fingerprinted", st.fingerprinted)
          .Uint("partial_unique", st.partial_unique)
          .Uint("compared", st.compared)
          .Uint("compared_bytes", st.compared_bytes)
          .Bool("interrupted", st.interrupted)
          .Double("seconds", st.seconds)
          .String("engine", st.engine)
          .EndObject();
    } else if (!quiet) {
      char rate[32] = "";
      if (st.hashed_bytes > 0) snprintf(rate, sizeof(rate), ", %.2f GB/s", gbps);
      printf("%s: %" PRIu64 " files (%" PRIu64 " inodes), %" PRIu64 " hashed (%s%s; %" PRIu64
             " of them by comparison with a twin), %" PRIu64 " of unique size, %" PRIu64
             " of unique fingerprint, %" PRIu64
             " unchanged, %" PRIu64 " removed, %" PRIu64 " errors, %" PRIu64 " changed while read; %.2f s [%s]%s\n",
             st.root.c_str(), st.files, st.inodes, st.hashed, HumanBytes(st.hashed_bytes).c_str(), rate, st.compared,
             st.deferred,
             st.partial_unique, st.unchanged,
             st.removed, st.errors, st.changed, st.seconds, st.engine.c_str(), st.interrupted ? " INTERRUPTED" : "");
    }
    if ((st.errors || st.changed) && exit_code == kExitOk) exit_code = kExitPartial;
  }
  if (Status f = session.Finish(index->get()); !f.ok()) {
    Error(f.message());
    if (exit_code == kExitOk) exit_code = f.IsBusy() ? kExitBusy : kExitError;
  }
  jw.EndArray().EndObject();
  if (json) printf("%s\n", jw.str().c_str());
  session.LeaveToExit();
  if (interrupted) {
    Error("scan interrupted; everything hashed so far is kept in " + (*index)->path() +
          "; run the same scan again to continue");
    return kExitInterrupted;
  }
  return exit_code;
}

const Command kScan = {
    "scan", "index trees: hash new and changed files into the index",
    "usage: cidctl scan [--index FILE] [--busy-timeout MS] [--workers N] [--batch N] [--rehash] [--hash-all] [--map] [--no-uring] [--quiet] [--json] PATH...\n"
    "\n"
    "Walk each PATH (never following symlinks, skipping special files and not\n"
    "entering proc, sysfs, cgroup and other pseudo filesystems), hash every\n"
    "regular file that is new or changed since the last scan, and record it in the\n"
    "index.  Unchanged files (same inode, size, mtime, ctime) are not read again,\n"
    "except files whose times were within the filesystem's timestamp granularity\n"
    "of the scan that hashed them (they could have changed unseen: git's racy-clean\n"
    "rule); those are hashed again by the next scan.\n"
    "An interrupted scan keeps what it hashed; scanning again continues.\n"
    "\n"
    "  --index FILE   index database (default /var/lib/cid/index.db for root,\n"
    "                 $XDG_STATE_HOME/cid/index.db otherwise)\n"
    "  --busy-timeout MS  wait at most MS ms for another client's lock on the\n"
    "                 index (default $CID_BUSY_TIMEOUT_MS, else 2000); then exit 4\n"
    "  --workers N    hashing threads (default: one per CPU)\n"
    "  --batch N      commit to the index every N writes or every second,\n"
    "                 whichever comes first (default 4096; up to 4N while the\n"
    "                 batch before is still being written)\n"
    "  --rehash       hash every file again, even those the index has as unchanged\n"
    "                 (a write through a shared mapping need not move mtime)\n"
    "  --hash-all     hash every file; by default a file whose size no other\n"
    "                 indexed file has is recorded by size only (it cannot have a\n"
    "                 duplicate), and of same-size files over 8 KiB only those\n"
    "                 whose first and last 4 KiB match another's are hashed\n"
    "  --map          hash the parts of files of 1 MiB or more that are in the\n"
    "                 page cache from read-only mappings instead of reading\n"
    "                 them (saves a copy where page faults are cheap; in a\n"
    "                 virtual machine that traps every first touch of a page\n"
    "                 it is slower than reading)\n"
    "  --no-uring     read with pread instead of io_uring (also CID_NO_URING=1)\n"
    "  --quiet        no progress and no summary\n"
    "  --json         print the per-root statistics as JSON\n"
    "\n"
    "Exit status: 0 all indexed, 3 some files unreadable or changed while read,\n"
    "4 the index was busy (locked by another client beyond --busy-timeout),\n"
    "130 interrupted, 1 error, 2 usage.\n",
    CmdScan};

// ---- dups ----------------------------------------------------------------

extern const Command kDups;

int CmdDups(int argc, char** argv) {
  std::string index_path;
  bool json = false;
  uint64_t min_size = 1;
  int rc = ParseOptions(argc, argv, kDups, {kIndexOpt, kJsonOpt, {"min-size", required_argument, nullptr, kOptMinSize}},
                        [&](int c, const char* arg) {
                          switch (c) {
                            case kOptIndex: index_path = arg; return true;
                            case kOptJson: json = true; return true;
                            case kOptMinSize: return ParseSize(arg, &min_size);
                          }
                          return false;
                        });
  if (rc >= 0) return rc;
  if (optind < argc) {
    Error("dups: unexpected argument '" + std::string(argv[optind]) + "'");
    return kExitUsage;
  }
  auto index = OpenIndex(index_path, Index::Mode::kReadOnly);
  if (!index.ok()) return Fail(index.status());
  uint64_t stale = 0;
  auto groups = FindCurrentDuplicates(index->get(), min_size, &stale);
  if (!groups.ok()) return Fail(groups.status());
  if (stale > 0)
    Error("note: " + std::to_string(stale) +
          " indexed names no longer exist as the file the index hashed and are not listed "
          "(scan their trees again, or 'cidctl forget' a tree that is gone)");
  uint64_t total = 0;
  for (const auto& g : *groups) total += g.duplicated_bytes();
  if (json) {
    JsonWriter jw;
    jw.BeginObject().Uint("min_size", min_size).Uint("groups_count", groups->size()).Uint("duplicated_bytes", total)
        .Uint("stale_paths", stale);
    jw.BeginArray("groups");
    for (const auto& g : *groups) {
      jw.BeginObject()
          .String("digest", g.digest.ToString())
          .Uint("size", g.size)
          .Uint("copies", g.inodes.size())
          .Uint("duplicated_bytes", g.duplicated_bytes());
      jw.BeginArray("inodes");
      for (const auto& in : g.inodes) {
        jw.BeginObject().Uint("dev", in.dev).Uint("ino", in.ino).BeginArray("paths");
        for (const auto& p : in.paths) jw.String(p);
        jw.EndArray().EndObject();
      }
      jw.EndArray().EndObject();
      if (jw.str().size() >= (64 << 10) && !jw.FlushTo(stdout) && errno == EPIPE) return kExitOk;
    }
    jw.EndArray().EndObject();
    printf("%s\n", jw.str().c_str());
    return kExitOk;
  }
  for (const auto& g : *groups) {
    printf("%s  %" PRIu64 " bytes  x%zu  (%s duplicated)\n", g.digest.ToString().c_str(), g.size, g.inodes.size(),
           HumanBytes(g.duplicated_bytes()).c_str());
    for (const auto& in : g.inodes) {
      printf("  %s\n", in.paths[0].c_str());
      for (size_t i = 1; i < in.paths.size(); i++) printf("  %s  (hardlink of the above)\n", in.paths[i].c_str());
    }
  }
  if (fflush(stdout) != 0 && errno == EPIPE) return kExitOk;
  fprintf(stderr, "%zu duplicated contents, %s duplicated\n", groups->size(), HumanBytes(total).c_str());
  return kExitOk;
}

const Command kDups = {
    "dups", "list content that exists as more than one inode",
    "usage: cidctl dups [--index FILE] [--busy-timeout MS] [--min-size N] [--json]\n"
    "\n"
    "List every content (fs-verity digest) that the index holds as two or more inodes,\n"
    "largest duplicated bytes first.  Hardlinks are one inode and never count\n"
    "as duplicates.  Each name is checked first: one that no longer exists\n"
    "beneath its scanned root as the inode and version the index hashed is left\n"
    "out (counted in stale_paths).  Names that are not UTF-8 are written in\n"
    "--json with each undecodable byte as \\udcXX (see docs/cidctl.md).\n"
    "\n"
    "  --min-size N   only contents of at least N bytes (suffixes k, M, G; default 1)\n"
    "  --json         {\"min_size\", \"groups_count\", \"duplicated_bytes\", \"stale_paths\", \"groups\": [\n"
    "                   {\"digest\", \"size\", \"copies\", \"duplicated_bytes\",\n"
    "                    \"inodes\": [{\"dev\", \"ino\", \"paths\": [...]}]}]}\n",
    CmdDups};

// ---- report --------------------------------------------------------------

extern const Command kReport;

void SummaryJson(JsonWriter* jw, const char* key, const Summary& s, uint64_t page) {
  jw->BeginObject(key)
      .Uint("files", s.files)
      .Uint("bytes", s.bytes)
      .Uint("distinct_contents", s.distinct_contents)
      .Uint("distinct_bytes", s.distinct_bytes)
      .Uint("duplicated_bytes", s.duplicated_bytes)
      .Uint("cache_pages", s.cache_pages)
      .Uint("shared_cache_pages", s.shared_cache_pages)
      .Uint("saved_pages", s.saved_pages())
      .Uint("saved_bytes", s.saved_pages() * page)
      .EndObject();
}

void SummaryText(const Summary& s, uint64_t page, const char* indent) {
  printf("%sfiles %" PRIu64 " (%s), distinct contents %" PRIu64 " (%s)\n", indent, s.files, HumanBytes(s.bytes).c_str(),
         s.distinct_contents, HumanBytes(s.distinct_bytes).c_str());
  printf("%sduplicated bytes %" PRIu64 " (%s)\n", indent, s.duplicated_bytes, HumanBytes(s.duplicated_bytes).c_str());
  printf("%spage cache if every copy is cached: %" PRIu64 " pages (%s); shared: %" PRIu64
         " pages; sharing saves %" PRIu64 " pages (%s)\n",
         indent, s.cache_pages, HumanBytes(s.cache_pages * page).c_str(), s.shared_cache_pages, s.saved_pages(),
         HumanBytes(s.saved_pages() * page).c_str());
}

int CmdReport(int argc, char** argv) {
  std::string index_path;
  bool json = false;
  int rc = ParseOptions(argc, argv, kReport, {kIndexOpt, kJsonOpt}, [&](int c, const char* arg) {
    switch (c) {
      case kOptIndex: index_path = arg; return true;
      case kOptJson: json = true; return true;
    }
    return false;
  });
  if (rc >= 0) return rc;
  if (optind < argc) {
    Error("report: unexpected argument '" + std::string(argv[optind]) + "'");
    return kExitUsage;
  }
  auto index = OpenIndex(index_path, Index::Mode::kReadOnly);
  if (!index.ok()) return Fail(index.status());
  uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  auto rep = BuildReport(index->get(), page);
  if (!rep.ok()) return Fail(rep.status());
  if (json) {
    JsonWriter jw;
    jw.BeginObject().String("index", (*index)->path()).Uint("page_size", page);
    SummaryJson(&jw, "total", rep->total, page);
    jw.BeginArray("trees");
    for (const auto& t : rep->trees) {
      jw.BeginObject().String("root", t.root.path).Bool("complete", t.root.complete).Int("scanned_ns", t.root.scanned_ns);
      SummaryJson(&jw, "within", t.within, page);
      jw.Uint("also_elsewhere_bytes", t.also_elsewhere_bytes).EndObject();
    }
    jw.EndArray().EndObject();
    printf("%s\n", jw.str().c_str());
    return kExitOk;
  }
  printf("index %s (page size %" PRIu64 ")\n", (*index)->path().c_str(), page);
  printf("all trees:\n");
  SummaryText(rep->total, page, "  ");
  for (const auto& t : rep->trees) {
    printf("%s%s:\n", t.root.path.c_str(), t.root.complete ? "" : " (last scan incomplete)");
    SummaryText(t.within, page, "  ");
    printf("  content also found in other trees: %s\n", HumanBytes(t.also_elsewhere_bytes).c_str());
  }
  return kExitOk;
}

const Command kReport = {
    "report", "summarise duplication and the page cache sharing would save",
    "usage: cidctl report [--index FILE] [--busy-timeout MS] [--json]\n"
    "\n"
    "For all trees together and for each scanned tree: files (inodes), distinct\n"
    "contents, duplicated bytes (bytes beyond the first copy of each content),\n"
    "and the page cache every copy would take if cached whole (pages rounded up\n"
    "per file) against one copy per content: the pages named merging saves.\n"
    "\n"
    "  --json   {\"index\", \"page_size\", \"total\": SUMMARY, \"trees\": [{\"root\",\n"
    "            \"complete\", \"scanned_ns\", \"within\": SUMMARY, \"also_elsewhere_bytes\"}]}\n"
    "           SUMMARY = {\"files\", \"bytes\", \"distinct_contents\", \"distinct_bytes\",\n"
    "           \"duplicated_bytes\", \"cache_pages\", \"shared_cache_pages\",\n"
    "           \"saved_pages\", \"saved_bytes\"}\n",
    CmdReport};

// ---- status --------------------------------------------------------------

extern const Command kStatus;

int CmdStatus(int argc, char** argv) {
  bool json = false;
  int rc = ParseOptions(argc, argv, kStatus, {kJsonOpt}, [&](int c, const char*) {
    if (c == kOptJson) json = true;
    return c == kOptJson;
  });
  if (rc >= 0) return rc;
  const char* dir = getenv("CID_SYSFS_DIR");  // tests point this at a fake tree
  std::string sysfs = dir && *dir ? dir : kSysfsDir;
  bool have = KernelHasNamedMerging(sysfs);
  auto stats = have ? ReadKernelStats(sysfs) : std::vector<std::pair<std::string, std::string>>{};
  if (json) {
    JsonWriter jw;
    jw.BeginObject().Bool("named_merging", have).String("sysfs", sysfs).BeginObject("stats");
    for (const auto& [k, v] : stats) jw.String(k, v);
    jw.EndObject().EndObject();
    printf("%s\n", jw.str().c_str());
    return kExitOk;
  }
  if (!have) {
    printf("named merging: not available: %s\n", sysfs == kSysfsDir ? kNoKernelSupport : (sysfs + " is absent").c_str());
    printf("(cidctl scan/dups/report still work; tagging needs the patched kernel)\n");
    return kExitOk;
  }
  printf("named merging: available (%s)\n", sysfs.c_str());
  for (const auto& [k, v] : stats) printf("  %-16s %s\n", k.c_str(), v.c_str());
  return kExitOk;
}

const Command kStatus = {
    "status", "say whether the running kernel has named merging, with its statistics",
    "usage: cidctl status [--json]\n"
    "\n"
    "Report whether /sys/kernel/mm/cid exists and print the statistics found\n"
    "there (enabled, contents, tagged_inodes, pages_shared, pages_sharing,\n"
    "general_profit, tags, untags, write_denials; missing files are skipped).\n"
    "\n"
    "  --json   {\"named_merging\": bool, \"sysfs\": DIR, \"stats\": {NAME: VALUE}}\n",
    CmdStatus};

// ---- tag / untag / query -------------------------------------------------

extern const Command kTag;

// What the index says about a file open as fd, named `path` on the command
// line: no row (nullopt: tag without an expected digest), or the digest of a
// row that describes the open file as it is now.  A row that no longer
// describes it is an error: an indexed path is never tagged without its
// expected digest.
Result<std::optional<Digest>> IndexedDigest(Index* index, const std::string& path, int fd) {
  if (!index) return std::optional<Digest>();
  auto canon = CanonicalPath(path);
  if (!canon.ok()) return std::optional<Digest>();
  auto rec = index->FindPath(*canon);
  if (!rec.ok()) return rec.status();
  if (!rec->has_value()) return std::optional<Digest>();
  struct stat st;
  if (fstat(fd, &st) < 0) return Status::FromErrno(path, errno);
  if (!(*rec)->inode.Matches(FileStat::From(st)))
    return Status::Changed(path + ": changed since the index recorded it (inode, size, mtime or ctime); "
                           "scan it again, or tag with --no-verify-index");
  if (!(*rec)->inode.hashed)
    return Status::InvalidArgument(path + ": the index has it unhashed (no other indexed file has its size, or its "
                                   "first and last 4 KiB, so it has nothing to share with yet); tag with "
                                   "--no-verify-index to tag it anyway");
  return std::optional<Digest>((*rec)->inode.digest);
}

// Opens one checked name of each inode of each group, beneath its scanned
// root (never through a symlink, never outside it), still the version the
// index hashed, and hands it to fn (which closes it) until fn returns false.
// Names that fail are reported and the next name of the inode is tried;
// inodes left without one are counted in *skipped.
void ForEachDupTarget(Index* index, const std::vector<DupGroup>& groups, uint64_t* skipped,
                      const std::function<bool(int fd, const std::string& path, const Digest& digest)>& fn) {
  auto roots = index->Roots();
  if (!roots.ok()) {
    Error(roots.status().message());
    return;
  }
  std::vector<std::string> root_paths;
  for (const auto& r : *roots) root_paths.push_back(r.path);
  RootFds fds(std::move(root_paths));
  for (const auto& g : groups) {
    for (const auto& in : g.inodes) {
      bool opened = false;
      for (const auto& p : in.paths) {
        auto where = fds.Resolve(p);
        if (!where.ok()) {
          Error("skipped: " + where.status().message());
          continue;
        }
        FileStat want;
        want.dev = in.dev;
        want.ino = in.ino;
        FileStat now;
        auto fd = OpenFileBeneath(where->first, where->second, p, want, &now);
        if (!fd.ok()) {
          Error("skipped: " + fd.status().message());
          continue;
        }
        if (now.size != g.size || now.mtime_ns != in.mtime_ns || now.ctime_ns != in.ctime_ns) {
          close(*fd);
          Error("skipped: " + p + ": changed since the index recorded it; scan again");
          continue;
        }
        opened = true;
        if (!fn(*fd, p, g.digest)) return;
        break;  // one name per inode is enough
      }
      if (!opened) (*skipped)++;
    }
  }
}

int CmdTag(int argc, char** argv) {
  std::string index_path;
  bool verify = true, dups = false, json = false;
  uint64_t min_size = 1;
  TagRequest base;
  int rc = ParseOptions(
      argc, argv, kTag,
      {kIndexOpt, kJsonOpt, {"domain", required_argument, nullptr, kOptDomain},
       {"verify-index", no_argument, nullptr, kOptVerify}, {"no-verify-index", no_argument, nullptr, kOptNoVerify},
       {"dups", no_argument, nullptr, kOptDups}, {"min-size", required_argument, nullptr, kOptMinSize}},
      [&](int c, const char* arg) {
        switch (c) {
          case kOptIndex: index_path = arg; return true;
          case kOptJson: json = true; return true;
          case kOptVerify: verify = true; return true;
          case kOptNoVerify: verify = false; return true;
          case kOptDups: dups = true; return true;
          case kOptMinSize: return ParseSize(arg, &min_size);
          case kOptDomain: {
            uint32_t d;
            if (!ParseU32(arg, &d)) return false;
            base.domain = d;
            return true;
          }
        }
        return false;
      });
  if (rc >= 0) return rc;
  if (optind >= argc && !dups) {
    Error("tag: no PATH given (see 'cidctl tag --help')");
    return kExitUsage;
  }
  // The index is optional here (a guest or a fresh host has none), unless
  // it was named explicitly or --dups needs it.
  std::unique_ptr<Index> index;
  if (verify || dups) {
    auto opened = OpenIndex(index_path, Index::Mode::kReadOnly);
    if (opened.ok()) {
      index = std::move(*opened);
    } else if (!index_path.empty() || dups || !opened.status().IsNotFound()) {
      if (!index_path.empty() || dups) return Fail(opened.status());
      Error("warning: not checking digests against the index: " + opened.status().message());
    }
  }
  JsonWriter jw;
  jw.BeginObject().BeginArray("files");
  uint64_t ok = 0, failed = 0;
  // Tags one open file; false once the kernel has said it cannot tag at all.
  auto tag_one = [&](int fd, const std::string& p, const TagRequest& req) {
    auto r = TagFd(fd, p, req);
    close(fd);
    if (!r.ok()) {
      failed++;
      Error(r.status().message());
      if (json) jw.BeginObject().String("path", p).String("error", r.status().message()).EndObject();
      return !(r.status().code() == Status::Code::kUnsupported &&
               (r.status().err() == ENOTTY || r.status().err() == EINVAL));
    }
    ok++;
    if (json) {
      jw.BeginObject().String("path", p).String("digest", r->digest.ToString()).Uint("size", r->size)
          .Bool("verified", req.expect.has_value()).EndObject();
    } else {
      printf("%s  %s%s\n", r->digest.ToString().c_str(), p.c_str(), req.expect ? "  (matches index)" : "");
    }
    return true;
  };
  size_t attempted = 0;
  if (dups) {
    uint64_t stale = 0;
    auto groups = FindCurrentDuplicates(index.get(), min_size, &stale);
    if (!groups.ok()) return Fail(groups.status());
    if (stale > 0)
      Error("note: " + std::to_string(stale) + " indexed names no longer exist as the file the index hashed; not tagged");
    uint64_t skipped = 0;
    ForEachDupTarget(index.get(), *groups, &skipped, [&](int fd, const std::string& p, const Digest& digest) {
      attempted++;
      TagRequest req = base;
      req.expect = digest;  // always: an indexed path is only tagged as the content the index saw
      return tag_one(fd, p, req);
    });
    failed += skipped;
  }
  for (int i = optind; i < argc; i++) {
    std::string p = argv[i];
    attempted++;
    auto fd = OpenRegularFile(p);
    if (!fd.ok()) {
      failed++;
      Error(fd.status().message());
      if (json) jw.BeginObject().String("path", p).String("error", fd.status().message()).EndObject();
      continue;
    }
    TagRequest req = base;
    if (verify) {
      auto want = IndexedDigest(index.get(), p, *fd);
      if (!want.ok()) {
        close(*fd);
        failed++;
        Error(want.status().message());
        if (json) jw.BeginObject().String("path", p).String("error", want.status().message()).EndObject();
        continue;
      }
      req.expect = *want;
    }
    if (!tag_one(*fd, p, req)) break;
  }
  jw.EndArray().Uint("tagged", ok).Uint("failed", failed).EndObject();
  if (json) printf("%s\n", jw.str().c_str());
  else if (attempted > 1 || failed > 1) fprintf(stderr, "tagged %" PRIu64 ", failed %" PRIu64 "\n", ok, failed);
  return failed ? kExitError : kExitOk;
}

const Command kTag = {
    "tag", "ask the kernel to share the page cache of files with identical content",
    "usage: cidctl tag [--domain N] [--no-verify-index] [--index FILE] [--busy-timeout MS] [--json] PATH...\n"
    "       cidctl tag --dups [--min-size N] [--index FILE] [--busy-timeout MS] [--domain N]\n"
    "\n"
    "Tag each file with CID_IOC_TAG: the kernel hashes it under write denial and\n"
    "from then on serves read-only opens from one shared page cache per content.\n"
    "Needs CAP_SYS_ADMIN and the patched kernel (see 'cidctl status').\n"
    "\n"
    "  --domain N        share only with files tagged with the same domain\n"
    "  --verify-index    (default) if the index has a current row for the file,\n"
    "                    pass its digest; the kernel refuses (EBADMSG) if it differs\n"
    "  --no-verify-index do not consult the index\n"
    "  --dups            tag one name of every inode of every duplicated content\n"
    "  --min-size N      with --dups: only contents of at least N bytes\n"
    "  --json            {\"files\": [{\"path\", \"digest\", \"size\", \"verified\"} or\n"
    "                    {\"path\", \"error\"}], \"tagged\", \"failed\"}\n",
    CmdTag};

extern const Command kUntag;

int CmdUntag(int argc, char** argv) {
  int rc = ParseOptions(argc, argv, kUntag, {}, [](int, const char*) { return false; });
  if (rc >= 0) return rc;
  if (optind >= argc) {
    Error("untag: no PATH given");
    return kExitUsage;
  }
  int exit_code = kExitOk;
  for (int i = optind; i < argc; i++) {
    Status s = UntagFile(argv[i]);
    if (!s.ok()) {
      Error(s.message());
      exit_code = kExitError;
    }
  }
  return exit_code;
}

const Command kUntag = {"untag", "drop the tag of files (they stop sharing on their next open)",
                        "usage: cidctl untag PATH...\n"
                        "\n"
                        "Remove the named-merging tag of each file with CID_IOC_UNTAG.\n",
                        CmdUntag};

extern const Command kQuery;

int CmdQuery(int argc, char** argv) {
  bool json = false;
  int rc = ParseOptions(argc, argv, kQuery, {kJsonOpt}, [&](int c, const char*) {
    if (c == kOptJson) json = true;
    return c == kOptJson;
  });
  if (rc >= 0) return rc;
  if (optind >= argc) {
    Error("query: no PATH given");
    return kExitUsage;
  }
  int exit_code = kExitOk;
  JsonWriter jw;
  jw.BeginObject().BeginArray("files");
  for (int i = optind; i < argc; i++) {
    auto q = QueryFile(argv[i]);
    if (!q.ok()) {
      Error(q.status().message());
      if (json) jw.BeginObject().String("path", argv[i]).String("error", q.status().message()).EndObject();
      exit_code = kExitError;
      continue;
    }
    if (json) {
      jw.BeginObject().String("path", argv[i]).Bool("tagged", q->tagged).Bool("shared", q->shared);
      if (q->tagged) {
        jw.Uint("domain", q->domain).String("digest", q->digest.ToString()).Uint("size", q->size)
            .Uint("content_pages", q->content_pages).Uint("content_users", q->content_users)
            .Uint("tagged_inodes", q->tagged_inodes);
      }
      jw.EndObject();
    } else if (!q->tagged) {
      printf("%s: not tagged\n", argv[i]);
    } else {
      printf("%s: tagged %s size %" PRIu64 " domain %u%s; content: %" PRIu64 " pages cached, %" PRIu64
             " users, %" PRIu64 " tagged inodes\n",
             argv[i], q->digest.ToString().c_str(), q->size, q->domain, q->shared ? ", this open shared" : "",
             q->content_pages, q->content_users, q->tagged_inodes);
    }
  }
  jw.EndArray().EndObject();
  if (json) printf("%s\n", jw.str().c_str());
  return exit_code;
}

const Command kQuery = {
    "query", "show whether files are tagged and how much of their content is cached",
    "usage: cidctl query [--json] PATH...\n"
    "\n"
    "  --json   {\"files\": [{\"path\", \"tagged\", \"shared\", and if tagged \"domain\",\n"
    "            \"digest\", \"size\", \"content_pages\", \"content_users\",\n"
    "            \"tagged_inodes\"} or {\"path\", \"error\"}]}\n",
    CmdQuery};

// ---- forget --------------------------------------------------------------

extern const Command kForget;

int CmdForget(int argc, char** argv) {
  std::string index_path;
  bool json = false;
  int rc = ParseOptions(argc, argv, kForget, {kIndexOpt, kJsonOpt}, [&](int c, const char* arg) {
    switch (c) {
      case kOptIndex: index_path = arg; return true;
      case kOptJson: json = true; return true;
    }
    return false;
  });
  if (rc >= 0) return rc;
  if (optind >= argc) {
    Error("forget: no ROOT given (see 'cidctl forget --help')");
    return kExitUsage;
  }
  auto index = OpenIndex(index_path, Index::Mode::kReadWrite);
  if (!index.ok()) return Fail(index.status());
  JsonWriter jw;
  jw.BeginObject().BeginArray("roots");
  int exit_code = kExitOk;
  for (int i = optind; i < argc; i++) {
    // A root that still exists is named as the scan recorded it (canonical);
    // one that is gone, as given, without trailing slashes.
    std::string root = argv[i];
    if (auto canon = CanonicalPath(root); canon.ok()) root = *canon;
    while (root.size() > 1 && root.back() == '/') root.pop_back();
    auto n = (*index)->ForgetRoot(root);
    if (!n.ok()) {
      Error(n.status().message());
      exit_code = kExitError;
      if (json) jw.BeginObject().String("root", root).String("error", n.status().message()).EndObject();
      continue;
    }
    if (json) jw.BeginObject().String("root", root).Uint("paths_removed", *n).EndObject();
    else printf("%s: forgotten (%" PRIu64 " paths)\n", root.c_str(), *n);
  }
  jw.EndArray().EndObject();
  if (json) printf("%s\n", jw.str().c_str());
  return exit_code;
}

const Command kForget = {
    "forget", "remove scanned roots and what they recorded from the index",
    "usage: cidctl forget [--index FILE] [--busy-timeout MS] [--json] ROOT...\n"
    "\n"
    "Remove each ROOT (as 'cidctl report' lists it; it need not exist any more,\n"
    "e.g. a renamed or deleted tree) from the index: its row, every path its\n"
    "scans recorded, and the inodes no other path names.  Files are not touched.\n"
    "\n"
    "  --json   {\"roots\": [{\"root\", \"paths_removed\"} or {\"root\", \"error\"}]}\n"
    "\n"
    "Exit status: 0 all forgotten, 1 a ROOT is not a scanned root or the index failed.\n",
    CmdForget};

// ---- hash ----------------------------------------------------------------

extern const Command kHash;

int CmdHash(int argc, char** argv) {
  int rc = ParseOptions(argc, argv, kHash, {{"no-uring", no_argument, nullptr, kOptNoUring}}, [](int c, const char*) {
    if (c == kOptNoUring) setenv("CID_NO_URING", "1", 1);
    return c == kOptNoUring;
  });
  if (rc >= 0) return rc;
  if (optind >= argc) {
    Error("hash: no PATH given");
    return kExitUsage;
  }
  if (Status c = Sha256Available(); !c.ok()) {
    Error(c.message());
    return kExitError;
  }
  FileHasher hasher(DefaultEngineFactory(ScanOptions::kDefaultQueueDepth)(), HasherOptions{});
  int exit_code = kExitOk;
  for (int i = optind; i < argc; i++) {
    HashOutcome o = hasher.HashPath(argv[i]);
    if (!o.status.ok()) {
      Error(o.status.message());
      exit_code = kExitError;
      continue;
    }
    printf("%s  %s\n", o.digest.ToString().c_str(), argv[i]);
  }
  return exit_code;
}

const Command kHash = {"hash", "print the content id of files (no index)",
                       "usage: cidctl hash [--no-uring] PATH...\n"
                       "\n"
                       "Print \"fsverity-sha256:<hex>  PATH\" for each file, as cidctl scan computes\n"
                       "it: the fs-verity file digest (SHA-256, 4096-byte blocks, no salt) that\n"
                       "`fsverity digest` prints and the kernel computes when it tags the file.\n",
                       CmdHash};

// Commands defined in host_commands.cc parse their own options.
const Command kUnlinkDups = {"unlink-dups", "undo the hard links cid-oci-hook --hardlink made", "", CmdUnlinkDups};
const Command kMetrics = {"metrics", "cidd's metrics (Prometheus text) or state (--json)", "", CmdMetrics};
const Command kTop = {"top", "savings per container and layer, from cidd", "", CmdTop};

const Command* const kCommands[] = {&kScan,   &kDups, &kReport,     &kStatus,  &kTag, &kUntag,
                                    &kQuery,  &kForget, &kHash, &kUnlinkDups, &kMetrics, &kTop};

void Usage(FILE* out) {
  fprintf(out,
          "usage: cidctl COMMAND [OPTIONS] [ARGS]\n"
          "\n"
          "Find duplicated file content and share its page cache (named merging).\n"
          "\n"
          "commands:\n");
  for (const Command* c : kCommands) fprintf(out, "  %-8s %s\n", c->name, c->summary);
  fprintf(out, "\n'cidctl COMMAND --help' describes each command.\n");
}

int Main(int argc, char** argv) {
  if (argc < 2) {
    Usage(stderr);
    return kExitUsage;
  }
  std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    Usage(stdout);
    return kExitOk;
  }
  for (const Command* c : kCommands)
    if (name == c->name) return c->run(argc - 1, argv + 1);
  Error("unknown command '" + name + "' (see 'cidctl --help')");
  return kExitUsage;
}

}  // namespace
}  // namespace cid

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  return cid::Main(argc, argv);
}
