// cid-analyze: how much memory would each deduplication strategy keep for
// these processes?  The thesis's Table 5.1 measured on live frames, plus
// what named merging would save and what it saves now.  See
// docs/cid-analyze.md (equations, exit codes, JSON).
//
// Exit status: 0 success; 1 error; 2 usage; 3 done, but a target exited
// during the snapshot (dropped, noted); 4 not permitted (needs root for
// /proc/kpage* and frame numbers); 5 no such pid, cgroup, container or
// saved snapshot; 6 a named target is a kernel thread; 7 a target cannot
// be stopped (already traced; --no-stop reads it live); 130 interrupted
// (targets resumed, nothing written).
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "cid/analyze.h"
#include "cid/json.h"

namespace cid::analyze {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitError = 1;
constexpr int kExitUsage = 2;
constexpr int kExitPartial = 3;
constexpr int kExitPermission = 4;
constexpr int kExitNotFound = 5;
constexpr int kExitKernelThread = 6;
constexpr int kExitCannotStop = 7;
constexpr int kExitInterrupted = 130;

constexpr double kPageMiB = 4096.0 / (1024 * 1024);

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

void Error(const std::string& msg) { fprintf(stderr, "cid-analyze: %s\n", msg.c_str()); }

const char kUsage[] =
    "usage: cid-analyze [options] [PID...]\n"
    "       cid-analyze table SNAPSHOT...       Table 5.1 from saved snapshots (relative to the first)\n"
    "       cid-analyze chart OUT.svg SNAPSHOT... stacked bar chart of saved snapshots\n"
    "\n"
    "Stops the target processes (ptrace), hashes every resident frame once, resumes\n"
    "them, and reports how many 4 KiB frames each strategy keeps: no sharing,\n"
    "mmap/fork (what the kernel uses now), KSM hint all, full content-based page\n"
    "sharing, named merging (oracle: identical file pages once) and named merging\n"
    "achieved now (frames shared by different inodes).  Needs root.\n"
    "\n"
    "targets (any mix; at least one):\n"
    "  PID...                 processes\n"
    "  --cgroup DIR           every process in a cgroup directory and below it\n"
    "  --container NAME       a podman container (name or id) and its processes\n"
    "  --podman-arg ARG       pass ARG to podman before 'inspect' (e.g. --root=DIR)\n"
    "  --all                  every user process except this one\n"
    "snapshot:\n"
    "  --no-stop              read live without stopping (inconsistent, never blocks them)\n"
    "  --verify               byte-compare pages of equal hash\n"
    "  --range LO-HI          only virtual addresses LO..HI (hex)\n"
    "  --threads N            threads reading and hashing contents (default: one per CPU, at most 8)\n"
    "output:\n"
    "  --base SNAPSHOT        relative figures against this saved snapshot's mmap/fork\n"
    "  --save SNAPSHOT        save this snapshot's JSON (a NAME or a FILE.json)\n"
    "  --json                 JSON on stdout instead of the table\n"
    "  --svg FILE             stacked bar chart (base and this snapshot)\n"
    "  --png FILE             the chart as PNG (needs rsvg-convert, librsvg2-bin)\n"
    "  --groups               per process, cgroup and container tables\n"
    "  -h, --help\n"
    "\n"
    "SNAPSHOT is a NAME (saved in $CID_ANALYZE_DIR, default /var/lib/cid/analyze)\n"
    "or a path to a .json file written by --save or --json.\n"
    "exit: 0 ok, 1 error, 2 usage, 3 a target exited mid-scan (dropped), 4 not root,\n"
    "5 no such target or snapshot, 6 kernel thread, 7 target cannot be stopped,\n"
    "130 interrupted.\n";

// ------------------------------------------------------------- figures I/O

struct Row {
  const char* name;
  const char* key;
  uint64_t Figures::*total;
  uint64_t Figures::ByType::*by_type;  // nullptr: not split by type
};

const Row kRows[] = {
    {"no sharing", "no_sharing", &Figures::no_sharing, &Figures::ByType::no_sharing},
    {"mmap/fork", "mmap_fork", &Figures::mmap_fork, &Figures::ByType::mmap_fork},
    {"KSM hint all", "ksm_shared", &Figures::ksm_shared, &Figures::ByType::ksm_shared},
    {"full CBPS", "cbps_shared", &Figures::cbps_shared, &Figures::ByType::cbps_shared},
    {"named merging oracle", "nm_oracle", &Figures::nm_oracle, &Figures::ByType::nm_oracle},
};

void WriteFigures(JsonWriter& j, std::string_view key, const Figures& f) {
  j.BeginObject(key);
  j.Uint("processes", f.processes);
  for (const Row& r : kRows) j.Uint(r.key, f.*r.total);
  j.Uint("ksm_sharings", f.ksm_sharings);
  j.Uint("cbps_sharings", f.cbps_sharings);
  j.Uint("nm_achieved", f.nm_achieved);
  j.Uint("nm_baseline", f.nm_baseline);
  j.Uint("nm_oracle_sharings", f.nm_oracle_sharings);
  j.BeginObject("by_type");
  for (int t = 0; t < kPageTypes; t++) {
    j.BeginObject(PageTypeName(t));
    for (const Row& r : kRows) j.Uint(r.key, f.by_type[t].*r.by_type);
    j.EndObject();
  }
  j.EndObject();
  j.Uint("anon_frames", f.anon_frames);
  j.Uint("named_frames", f.named_frames);
  j.Uint("zero_frames", f.zero_frames);
  j.Uint("zero_mappings", f.zero_mappings);
  j.Uint("ksm_frames", f.ksm_frames);
  j.Uint("ksm_mappings", f.ksm_mappings);
  j.Uint("thp_frames", f.thp_frames);
  j.Uint("hugetlb_frames", f.hugetlb_frames);
  j.Uint("rss_pages", f.rss);
  j.Double("pss_pages", f.pss);
  j.Uint("uss_pages", f.uss);
  j.Double("pss_kib", f.pss * 4);
  j.Uint("uss_kib", f.uss * 4);
  j.Uint("charged", f.charged);
  j.Uint("used_charged_elsewhere", f.used_charged_elsewhere);
  j.Uint("swapped", f.swapped);
  j.Uint("skipped", f.skipped);
  j.EndObject();
}

Figures ReadFigures(const nlohmann::json& j) {
  Figures f;
  auto u = [&](const char* k) { return j.contains(k) ? j.at(k).get<uint64_t>() : 0; };
  f.processes = u("processes");
  for (const Row& r : kRows) f.*r.total = u(r.key);
  f.ksm_sharings = u("ksm_sharings");
  f.cbps_sharings = u("cbps_sharings");
  f.nm_achieved = u("nm_achieved");
  f.nm_baseline = u("nm_baseline");
  f.nm_oracle_sharings = u("nm_oracle_sharings");
  if (j.contains("by_type")) {
    for (int t = 0; t < kPageTypes; t++) {
      if (!j["by_type"].contains(PageTypeName(t))) continue;
      const auto& b = j["by_type"][PageTypeName(t)];
      for (const Row& r : kRows)
        if (b.contains(r.key)) f.by_type[t].*r.by_type = b.at(r.key).get<uint64_t>();
    }
  }
  return f;
}

std::string SnapshotDir() {
  const char* d = getenv("CID_ANALYZE_DIR");
  return d && *d ? d : "/var/lib/cid/analyze";
}

// A NAME or a path.
std::string SnapshotPath(const std::string& s) {
  if (s.find('/') != std::string::npos || (s.size() > 5 && s.compare(s.size() - 5, 5, ".json") == 0)) return s;
  return SnapshotDir() + "/" + s + ".json";
}

struct Saved {
  std::string label;
  Figures figures;
};

// Loads a saved snapshot; *code gets the exit code on failure.
bool LoadSaved(const std::string& name, Saved* out, int* code) {
  std::string path = SnapshotPath(name);
  std::ifstream in(path);
  if (!in) {
    Error("snapshot " + name + ": " + path + ": " + strerror(errno));
    *code = errno == ENOENT ? kExitNotFound : kExitError;
    return false;
  }
  try {
    nlohmann::json j = nlohmann::json::parse(in);
    if (!j.contains("figures") || !j["figures"].contains("mmap_fork"))
      throw std::runtime_error("no \"figures\" with \"mmap_fork\"");
    out->figures = ReadFigures(j["figures"]);
    out->label = j.contains("label") ? j["label"].get<std::string>() : name;
  } catch (const std::exception& e) {
    Error("snapshot " + name + ": " + path + ": not a cid-analyze snapshot (" + e.what() + ")");
    *code = kExitError;
    return false;
  }
  return true;
}

// ------------------------------------------------------------- text output

std::string Rel(uint64_t v, uint64_t base) {
  if (!base) return "-";
  char b[32];
  snprintf(b, sizeof(b), "%.2f", static_cast<double>(v) / static_cast<double>(base));
  return b;
}

void PrintTable(const Figures& f, uint64_t base, const std::string& base_label) {
  printf("%-24s %10s %10s %8s %10s %10s %10s\n", "pages kept (4 KiB)", "pages", "MiB", "relative", "anonymous",
         "named", "mixed");
  for (const Row& r : kRows) {
    uint64_t v = f.*r.total;
    printf("%-24s %10" PRIu64 " %10.1f %8s %10" PRIu64 " %10" PRIu64 " %10" PRIu64 "\n", r.name, v, v * kPageMiB,
           Rel(v, base).c_str(), f.by_type[kAnonymous].*r.by_type, f.by_type[kNamed].*r.by_type,
           f.by_type[kMixed].*r.by_type);
  }
  printf("%-24s %10" PRIu64 " %10.1f   (frames different inodes share now; oracle saves %" PRIu64 ")\n",
         "named merging achieved", f.nm_achieved, f.nm_achieved * kPageMiB, f.nm_oracle_sharings);
  printf("relative to %s (%" PRIu64 " pages)\n", base_label.c_str(), base);
}

void PrintDetails(const Snapshot& s, const Figures& f) {
  printf("frames: %" PRIu64 " anonymous, %" PRIu64 " named; zero page %" PRIu64 " (%" PRIu64
         " mappings); KSM pages %" PRIu64 " (%" PRIu64 " mappings); THP %" PRIu64 ", hugetlb %" PRIu64 "\n",
         f.anon_frames, f.named_frames, f.zero_frames, f.zero_mappings, f.ksm_frames, f.ksm_mappings, f.thp_frames,
         f.hugetlb_frames);
  printf("use: RSS %.1f MiB, PSS %.1f MiB, USS %.1f MiB", f.rss * kPageMiB, f.pss * kPageMiB, f.uss * kPageMiB);
  if (s.have_kpagecgroup) printf("; memcg charge of these frames to the targets' cgroups: %" PRIu64 " pages", f.charged);
  printf("\n");
  if (f.swapped || f.skipped || s.unreadable)
    printf("not counted: %" PRIu64 " swapped out, %" PRIu64 " in PFN-mapped/special regions, %" PRIu64
           " unreadable (counted as unique)\n",
           f.swapped, f.skipped, s.unreadable);
  if (s.hash_collisions) printf("--verify: %" PRIu64 " pages of equal hash and different bytes kept apart\n", s.hash_collisions);
}

void PrintGroups(const std::vector<Group>& groups, bool kpagecgroup) {
  printf("\n%-10s %-28s %9s %9s %9s %9s %9s %9s %9s %9s%s\n", "group", "name", "no-share", "mmap/fork", "KSM",
         "CBPS", "NM-oracle", "NM-now", "PSS MiB", "USS MiB", kpagecgroup ? "   charged  elsewhere" : "");
  for (const Group& g : groups) {
    const Figures& f = g.figures;
    std::string name = g.name.size() > 28 ? "..." + g.name.substr(g.name.size() - 25) : g.name;
    printf("%-10s %-28s %9" PRIu64 " %9" PRIu64 " %9" PRIu64 " %9" PRIu64 " %9" PRIu64 " %9" PRIu64 " %9.1f %9.1f",
           g.kind.c_str(), name.c_str(), f.no_sharing, f.mmap_fork, f.ksm_shared, f.cbps_shared, f.nm_oracle,
           f.nm_achieved, f.pss * kPageMiB, f.uss * kPageMiB);
    if (kpagecgroup) printf(" %9" PRIu64 " %9" PRIu64, f.charged, f.used_charged_elsewhere);
    printf("\n");
  }
}

// ------------------------------------------------------------- chart

// A stacked bar chart like the thesis's Figures 5.3/5.4: for each
// snapshot a group of bars (one per strategy), each split by page type.
std::string Svg(const std::vector<Saved>& series) {
  const char* colors[kPageTypes] = {"#4e79a7", "#f28e2b", "#76b7b2"};
  const int kBar = 22, kGap = 6, kGroupGap = 30, kLeft = 80, kTop = 40, kHeight = 300, kBottom = 110;
  size_t nrows = std::size(kRows);
  int width = kLeft + static_cast<int>(series.size() * (nrows * (kBar + kGap) + kGroupGap)) + 160;
  uint64_t max = 1;
  for (const Saved& s : series)
    for (const Row& r : kRows) max = std::max(max, s.figures.*r.total);
  std::ostringstream o;
  o << "<svg xmlns='http://www.w3.org/2000/svg' width='" << width << "' height='" << kTop + kHeight + kBottom
    << "' font-family='sans-serif' font-size='11'>\n"
    << "<rect width='100%' height='100%' fill='white'/>\n"
    << "<text x='" << kLeft << "' y='20' font-size='14'>Memory consumption in page frames (4 KiB)</text>\n";
  for (int i = 0; i <= 4; i++) {  // axis ticks
    double v = static_cast<double>(max) * i / 4;
    int y = kTop + kHeight - static_cast<int>(kHeight * i / 4);
    o << "<line x1='" << kLeft - 4 << "' x2='" << width - 160 << "' y1='" << y << "' y2='" << y
      << "' stroke='#ddd'/><text x='" << kLeft - 8 << "' y='" << y + 4 << "' text-anchor='end'>"
      << static_cast<uint64_t>(v) << "</text>\n";
  }
  int x = kLeft + 10;
  for (const Saved& s : series) {
    int gx = x;
    for (const Row& r : kRows) {
      double y = kTop + kHeight;
      for (int t = 0; t < kPageTypes; t++) {
        double h = static_cast<double>(kHeight) * static_cast<double>(s.figures.by_type[t].*r.by_type) /
                   static_cast<double>(max);
        y -= h;
        o << "<rect x='" << x << "' y='" << y << "' width='" << kBar << "' height='" << h << "' fill='"
          << colors[t] << "'><title>" << s.label << ", " << r.name << ", " << PageTypeName(t) << ": "
          << s.figures.by_type[t].*r.by_type << "</title></rect>\n";
      }
      o << "<text transform='translate(" << x + kBar / 2 + 4 << "," << kTop + kHeight + 6
        << ") rotate(60)' font-size='10'>" << r.name << "</text>\n";
      x += kBar + kGap;
    }
    o << "<text x='" << (gx + x) / 2 << "' y='" << kTop + kHeight + kBottom - 8 << "' text-anchor='middle'>"
      << JsonWriter::Escape(s.label).substr(1, JsonWriter::Escape(s.label).size() - 2) << "</text>\n";
    x += kGroupGap;
  }
  for (int t = 0; t < kPageTypes; t++) {
    int ly = kTop + 10 + 18 * t;
    o << "<rect x='" << width - 150 << "' y='" << ly << "' width='12' height='12' fill='" << colors[t]
      << "'/><text x='" << width - 132 << "' y='" << ly + 10 << "'>" << PageTypeName(t) << " pages</text>\n";
  }
  o << "</svg>\n";
  return o.str();
}

int WriteChart(const std::vector<Saved>& series, const std::string& svg, const std::string& png) {
  std::string svg_path = svg.empty() ? png + ".svg" : svg;
  {
    std::ofstream out(svg_path);
    out << Svg(series);
    if (!out.flush()) {
      Error(svg_path + ": cannot write: " + strerror(errno));
      return kExitError;
    }
  }
  if (!png.empty()) {
    pid_t pid = fork();
    if (pid == 0) {
      execlp("rsvg-convert", "rsvg-convert", "-o", png.c_str(), svg_path.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      Error(png + ": " +
            (WIFEXITED(st) && WEXITSTATUS(st) == 127 ? "rsvg-convert not found (apt-get install librsvg2-bin); SVG kept at " + svg_path
                                                      : "rsvg-convert failed"));
      return kExitError;
    }
    if (svg.empty()) unlink(svg_path.c_str());
  }
  return kExitOk;
}

// ------------------------------------------------------------- commands

int TableOrChart(int argc, char** argv, bool chart) {
  int first = chart ? 3 : 2;
  if (argc > 2 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
    fputs(kUsage, stdout);
    return kExitOk;
  }
  if (argc <= first) {
    Error(chart ? "chart: usage: cid-analyze chart OUT.svg SNAPSHOT..." : "table: usage: cid-analyze table SNAPSHOT...");
    return kExitUsage;
  }
  std::vector<Saved> series;
  for (int i = first; i < argc; i++) {
    Saved s;
    int code;
    if (!LoadSaved(argv[i], &s, &code)) return code;
    series.push_back(s);
  }
  if (chart) {
    std::string out = argv[2];
    bool png = out.size() > 4 && out.compare(out.size() - 4, 4, ".png") == 0;
    return WriteChart(series, png ? "" : out, png ? out : "");
  }
  uint64_t base = series[0].figures.mmap_fork;
  printf("%-24s", "relative to the first");
  for (const Saved& s : series) printf(" %14.14s", s.label.c_str());
  printf("\n");
  for (const Row& r : kRows) {
    printf("%-24s", r.name);
    for (const Saved& s : series) printf(" %14s", Rel(s.figures.*r.total, base).c_str());
    printf("\n");
  }
  printf("%-24s", "named merging achieved");
  for (const Saved& s : series) printf(" %14s", Rel(s.figures.nm_achieved, base).c_str());
  printf("\n(%s: mmap/fork %" PRIu64 " pages, %.1f MiB)\n", series[0].label.c_str(), base, base * kPageMiB);
  return kExitOk;
}

int CodeFor(TargetError e) {
  switch (e) {
    case TargetError::kNotFound: return kExitNotFound;
    case TargetError::kKernelThread: return kExitKernelThread;
    default: return kExitError;
  }
}

int CodeFor(const Status& s) {
  if (s.code() == Status::Code::kPermission) return kExitPermission;
  if (s.IsBusy()) return s.message() == "interrupted" ? kExitInterrupted : kExitCannotStop;
  if (s.IsNotFound()) return kExitNotFound;
  return kExitError;
}

bool ParseRange(const char* s, uint64_t* lo, uint64_t* hi) {
  char* end;
  *lo = strtoull(s, &end, 16);
  if (*end != '-') return false;
  *hi = strtoull(end + 1, &end, 16);
  return *end == 0 && *lo < *hi;
}

// The test hook CID_ANALYZE_TEST_HOLD=FILE: with every target stopped,
// write FILE and wait until it is removed (at most 60 s).
void HoldForTest() {
  const char* hold = getenv("CID_ANALYZE_TEST_HOLD");
  if (!hold || !*hold) return;
  { std::ofstream(hold) << "stopped\n"; }
  for (int i = 0; i < 6000 && !g_stop && access(hold, F_OK) == 0; i++)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

int Main(int argc, char** argv) {
  if (argc > 1 && !strcmp(argv[1], "table")) return TableOrChart(argc, argv, false);
  if (argc > 1 && !strcmp(argv[1], "chart")) return TableOrChart(argc, argv, true);
  enum { kCgroup = 256, kContainer, kPodmanArg, kAll, kNoStop, kVerify, kRange, kThreads, kBase, kSave, kJson, kSvg, kPng, kGroups };
  static const option longopts[] = {
      {"cgroup", required_argument, nullptr, kCgroup}, {"container", required_argument, nullptr, kContainer},
      {"podman-arg", required_argument, nullptr, kPodmanArg}, {"all", no_argument, nullptr, kAll},
      {"no-stop", no_argument, nullptr, kNoStop}, {"verify", no_argument, nullptr, kVerify},
      {"range", required_argument, nullptr, kRange}, {"threads", required_argument, nullptr, kThreads},
      {"base", required_argument, nullptr, kBase},
      {"save", required_argument, nullptr, kSave}, {"json", no_argument, nullptr, kJson},
      {"svg", required_argument, nullptr, kSvg}, {"png", required_argument, nullptr, kPng},
      {"groups", no_argument, nullptr, kGroups}, {"help", no_argument, nullptr, 'h'}, {nullptr, 0, nullptr, 0}};
  std::vector<std::string> cgroups, containers, podman_args;
  bool all = false, json = false, groups = false;
  SnapshotOptions opts;
  std::string base_name, save, svg, png;
  int c;
  while ((c = getopt_long(argc, argv, "h", longopts, nullptr)) != -1) {
    switch (c) {
      case kCgroup: cgroups.push_back(optarg); break;
      case kContainer: containers.push_back(optarg); break;
      case kPodmanArg: podman_args.push_back(optarg); break;
      case kAll: all = true; break;
      case kNoStop: opts.stop = false; break;
      case kVerify: opts.verify = true; break;
      case kRange:
        if (!ParseRange(optarg, &opts.range_lo, &opts.range_hi)) {
          Error("--range " + std::string(optarg) + ": want LO-HI in hex, LO < HI");
          return kExitUsage;
        }
        break;
      case kThreads: {
        char* end;
        long n = strtol(optarg, &end, 10);
        if (*end || n < 1 || n > 64) {
          Error("--threads " + std::string(optarg) + ": want a number from 1 to 64");
          return kExitUsage;
        }
        opts.threads = static_cast<unsigned>(n);
        break;
      }
      case kBase: base_name = optarg; break;
      case kSave: save = optarg; break;
      case kJson: json = true; break;
      case kSvg: svg = optarg; break;
      case kPng: png = optarg; break;
      case kGroups: groups = true; break;
      case 'h': fputs(kUsage, stdout); return kExitOk;
      default: fputs(kUsage, stderr); return kExitUsage;
    }
  }
  std::vector<pid_t> pids;
  for (int i = optind; i < argc; i++) {
    char* end;
    long v = strtol(argv[i], &end, 10);
    if (*end || v <= 0) {
      Error("'" + std::string(argv[i]) + "' is not a process id (did you mean a subcommand: table, chart?)");
      return kExitUsage;
    }
    pids.push_back(static_cast<pid_t>(v));
  }
  if (pids.empty() && cgroups.empty() && containers.empty() && !all) {
    Error("no targets: give PIDs, --cgroup DIR, --container NAME or --all (see --help)");
    return kExitUsage;
  }
  Saved base;
  if (!base_name.empty()) {
    int code;
    if (!LoadSaved(base_name, &base, &code)) return code;
  }

  // Targets.
  std::vector<Target> targets;
  std::vector<std::string> notes;
  auto add = [&](TargetResult r) {
    if (r.error != TargetError::kNone) {
      Error(r.status.message());
      return CodeFor(r.error);
    }
    for (auto& n : r.notes) notes.push_back(n);
    for (const Target& t : r.targets) {
      bool dup = false;
      for (Target& have : targets) {
        if (have.pid == t.pid) {
          if (have.container.empty()) have.container = t.container;
          dup = true;
        }
      }
      if (!dup) targets.push_back(t);
    }
    return kExitOk;
  };
  int code = kExitOk;
  if (!pids.empty()) code = add(TargetsFromPids(pids));
  for (size_t i = 0; code == kExitOk && i < cgroups.size(); i++) code = add(TargetsFromCgroup(cgroups[i]));
  for (size_t i = 0; code == kExitOk && i < containers.size(); i++)
    code = add(TargetsFromContainer(containers[i], podman_args));
  if (code == kExitOk && all) code = add(AllUserProcesses());
  if (code != kExitOk) return code;
  if (targets.empty()) {
    Error("the targets hold no user processes");
    return kExitNotFound;
  }

  struct sigaction sa{};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);
  bool tty = isatty(STDERR_FILENO) && !json;
  opts.interrupted = [] { return g_stop.load(); };
  opts.after_stop = HoldForTest;
  auto last = std::chrono::steady_clock::now();
  if (tty) {
    opts.on_progress = [&](uint64_t done, uint64_t total) {
      auto now = std::chrono::steady_clock::now();
      if (now - last < std::chrono::milliseconds(100)) return;
      last = now;
      fprintf(stderr, "\rcid-analyze: %" PRIu64 " of ~%" PRIu64 " pages hashed (%.0f MiB)   ", done, total,
              done * kPageMiB);
    };
  }
  auto snap = TakeSnapshot(targets, opts);
  if (tty) fprintf(stderr, "\r\033[K");
  if (!snap.ok()) {
    if (snap.status().message() == "interrupted") {
      Error("interrupted: every target resumed, nothing written");
      return kExitInterrupted;
    }
    Error(snap.status().message());
    return CodeFor(snap.status());
  }
  Snapshot& s = *snap;
  s.notes.insert(s.notes.begin(), notes.begin(), notes.end());
  Figures f = Compute(s);
  std::vector<Group> gs = ComputeGroups(s);
  uint64_t base_pages = base_name.empty() ? f.mmap_fork : base.figures.mmap_fork;
  std::string base_label = base_name.empty() ? "this snapshot's mmap/fork" : "mmap/fork of " + base.label;

  JsonWriter j;
  j.BeginObject();
  j.Uint("version", 1);
  j.String("label", save.empty() ? "snapshot" : save.substr(save.rfind('/') + 1));
  j.BeginObject("snapshot");
  j.Bool("stopped", s.stopped);
  j.Double("stopped_seconds", s.stopped_seconds);
  j.Double("scan_seconds", s.scan_seconds);
  j.Uint("pages_hashed", s.pages_hashed);
  j.Uint("pages_pinned", s.pages_pinned);
  j.Double("pages_per_second", s.scan_seconds > 0 ? s.pages_hashed / s.scan_seconds : 0);
  j.Bool("verify", opts.verify);
  j.Uint("bytes_compared", s.bytes_compared);
  j.Uint("hash_collisions", s.hash_collisions);
  j.Uint("unreadable", s.unreadable);
  j.Bool("kpagecgroup", s.have_kpagecgroup);
  j.Uint("threads", s.threads);
  j.BeginObject("phases");  // seconds; all but "after" with the targets stopped
  j.Double("stop", s.phases.stop);
  j.Double("pagemap", s.phases.pagemap);
  j.Double("contents", s.phases.contents);
  j.Double("verify", s.phases.verify);
  j.Double("resume", s.phases.resume);
  j.Double("after", s.phases.after);
  j.EndObject();
  j.EndObject();
  WriteFigures(j, "figures", f);
  if (!base_name.empty()) {
    j.BeginObject("relative");
    j.String("base", base.label);
    j.Uint("base_pages", base_pages);
    for (const Row& r : kRows) j.Double(r.key, static_cast<double>(f.*r.total) / std::max<uint64_t>(base_pages, 1));
    j.EndObject();
  }
  j.BeginArray("processes");
  for (const ProcessSnap& p : s.procs) {
    j.BeginObject();
    j.Int("pid", p.pid);
    j.String("comm", p.comm);
    j.String("cgroup", p.cgroup);
    if (!p.container.empty()) j.String("container", p.container);
    j.Bool("dropped", p.dropped && !p.excluded);
    j.Bool("excluded", p.excluded);
    if (p.dropped) j.String("note", p.note);
    j.Uint("pages", p.pages.size());
    j.EndObject();
  }
  j.EndArray();
  j.BeginArray("groups");
  for (const Group& g : gs) {
    j.BeginObject();
    j.String("kind", g.kind);
    j.String("name", g.name);
    WriteFigures(j, "figures", g.figures);
    j.EndObject();
  }
  j.EndArray();
  j.BeginArray("notes");
  for (const auto& n : s.notes) j.String(n);
  j.EndArray();
  j.EndObject();

  if (!save.empty()) {
    std::string path = SnapshotPath(save);
    if (path.rfind(SnapshotDir() + "/", 0) == 0) mkdir(SnapshotDir().c_str(), 0755);
    std::string tmp = path + ".tmp";
    std::ofstream out(tmp);
    out << j.str() << "\n";
    if (!out.flush() || rename(tmp.c_str(), path.c_str()) != 0) {
      Error("--save " + path + ": cannot write: " + strerror(errno));
      unlink(tmp.c_str());
      return kExitError;
    }
  }
  if (json) {
    printf("%s\n", j.str().c_str());
  } else {
    printf("cid-analyze: %zu processes%s, %" PRIu64 " frames (%.1f MiB) hashed in %.2f s; targets %s\n",
           f.processes, s.dropped() ? (" (" + std::to_string(s.dropped()) + " dropped)").c_str() : "", s.pages_hashed,
           s.pages_hashed * kPageMiB, s.scan_seconds,
           s.stopped ? ("stopped for " + std::to_string(s.stopped_seconds).substr(0, 5) + " s").c_str()
                     : "not stopped (--no-stop: a live, inconsistent read)");
    PrintTable(f, base_pages, base_label);
    PrintDetails(s, f);
    if (groups) PrintGroups(gs, s.have_kpagecgroup);
    for (const auto& n : s.notes) printf("note: %s\n", n.c_str());
  }
  if (!svg.empty() || !png.empty()) {
    std::vector<Saved> series;
    if (!base_name.empty()) series.push_back(base);
    series.push_back({save.empty() ? "this snapshot" : save, f});
    int rc = WriteChart(series, svg, png);
    if (rc != kExitOk) return rc;
  }
  if (fflush(stdout) != 0 && errno == EPIPE) return kExitOk;
  if (s.dropped()) {
    for (const ProcessSnap& p : s.procs)
      if (p.dropped && !p.excluded) Error("pid " + std::to_string(p.pid) + " (" + p.comm + ") " + p.note + ": dropped");
    return kExitPartial;
  }
  return kExitOk;
}

// A snapshot's own arrays (per frame and per page: about 80 bytes a frame)
// are fresh memory, and faulting that in 4 KiB at a time was a third of
// the CPU of a 1 GiB snapshot in the VM it was measured in (~36 us a
// fault; a 2 MiB huge page costs a few of those).  So the heap is put on
// huge pages where the kernel offers them (THP "madvise" mode): arrays up
// to 32 MiB come from it, not from mmap, the heap grows 256 MiB at a time,
// is not given back, and that first 256 MiB is advised MADV_HUGEPAGE
// (larger arrays are mmap'd and advised where they are allocated).  Memory
// not touched is not used.
void HeapOnHugePages() {
  constexpr uintptr_t kHuge = 2 << 20;
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TOP_PAD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  uintptr_t lo = reinterpret_cast<uintptr_t>(sbrk(0));
  static void* volatile grow;  // volatile: a malloc freed unused may be optimized away
  grow = malloc(1 << 20);        // grows the heap by the pad
  free(grow);
  uintptr_t hi = reinterpret_cast<uintptr_t>(sbrk(0));
  lo = (lo + kHuge - 1) & ~(kHuge - 1);
  hi &= ~(kHuge - 1);
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
}

}  // namespace
}  // namespace cid::analyze

int main(int argc, char** argv) {
  cid::analyze::HeapOnHugePages();
  return cid::analyze::Main(argc, argv);
}
