#include "host_commands.h"

#include <getopt.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cid/control.h"
#include "cid/index.h"
#include "cid/json.h"
#include "cid/linkdups.h"

namespace cid {
namespace {

using json = nlohmann::json;

constexpr int kOk = 0, kError = 1, kUsage = 2, kNoDaemon = 4;

struct Opt {
  const char* name;
  bool has_arg;
  std::function<bool(const char*)> set;
};

// getopt_long over `opts` plus --help; -1 to go on, else the exit status.
int Parse(int argc, char** argv, const char* cmd, const char* usage, const std::vector<Opt>& opts) {
  std::vector<option> lo;
  for (size_t i = 0; i < opts.size(); i++)
    lo.push_back({opts[i].name, opts[i].has_arg ? required_argument : no_argument, nullptr, static_cast<int>(1000 + i)});
  lo.push_back({"help", no_argument, nullptr, 'h'});
  lo.push_back({nullptr, 0, nullptr, 0});
  optind = 1;
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, "h", lo.data(), nullptr)) != -1) {
    if (c == 'h') {
      printf("%s", usage);
      return kOk;
    }
    if (c < 1000) {
      fprintf(stderr, "cidctl: %s: unknown option or missing value: %s (see 'cidctl %s --help')\n", cmd,
              argv[optind - 1], cmd);
      return kUsage;
    }
    if (!opts[static_cast<size_t>(c - 1000)].set(optarg)) {
      fprintf(stderr, "cidctl: %s: bad value for %s: '%s'\n", cmd, argv[optind - 1], optarg ? optarg : "");
      return kUsage;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "cidctl: %s: unexpected argument '%s'\n", cmd, argv[optind]);
    return kUsage;
  }
  return -1;
}

// One request to cidd; prints why on failure.
bool Ask(const std::string& socket, const json& req, json* answer, int* exit_code) {
  auto a = ControlRequest(socket, req.dump(), 5000);
  if (!a.ok()) {
    fprintf(stderr, "cidctl: %s\n", a.status().message().c_str());
    *exit_code = a.status().IsNotFound() ? kNoDaemon : kError;
    return false;
  }
  *answer = json::parse(*a, nullptr, false);
  if (answer->is_discarded() || !answer->is_object()) {
    fprintf(stderr, "cidctl: cidd sent something that is not JSON: %.200s\n", a->c_str());
    *exit_code = kError;
    return false;
  }
  if (!answer->value("ok", false)) {
    fprintf(stderr, "cidctl: cidd: %s\n", answer->value("error", std::string("request refused")).c_str());
    *exit_code = kError;
    return false;
  }
  return true;
}

uint64_t U(const json& j, const char* k) { return j.contains(k) && j[k].is_number() ? j[k].get<uint64_t>() : 0; }

}  // namespace

std::string HumanBytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    u++;
  }
  char buf[32];
  if (u == 0) snprintf(buf, sizeof(buf), "%" PRIu64 " B", n);
  else snprintf(buf, sizeof(buf), "%.1f %s", v, units[u]);
  return buf;
}

int CmdUnlinkDups(int argc, char** argv) {
  static const char kUsageText[] =
      "usage: cidctl unlink-dups --undo [--journal FILE | --index FILE] [--json]\n"
      "       cidctl unlink-dups [--journal FILE | --index FILE] [--json]\n"
      "\n"
      "Undo what 'cid-oci-hook --hardlink' did: give every name it re-linked its\n"
      "own inode again (a copy with the same bytes, mode, owner, times and\n"
      "xattrs), newest first, and clean up temporary links an interrupted run\n"
      "left.  Without --undo, only say what the journal holds.\n"
      "\n"
      "  --journal FILE  the journal (default: hardlinks.journal beside the index)\n"
      "  --index FILE    the index whose journal to use (default as 'cidctl scan')\n"
      "  --json          {\"restored\", \"untouched\", \"removed_tmp\", \"errors\"} or,\n"
      "                  without --undo, {\"journal\", \"linked\", \"aborted\", \"unfinished\"}\n"
      "\n"
      "Exit status: 0 done (or nothing to undo), 1 some names not restored (run\n"
      "again), 2 usage.\n";
  std::string journal, index;
  bool undo = false, as_json = false;
  int rc = Parse(argc, argv, "unlink-dups", kUsageText,
                 {{"undo", false, [&](const char*) { return undo = true; }},
                  {"journal", true, [&](const char* a) { journal = a; return true; }},
                  {"index", true, [&](const char* a) { index = a; return true; }},
                  {"json", false, [&](const char*) { return as_json = true; }}});
  if (rc >= 0) return rc;
  if (journal.empty()) journal = DefaultJournalPath(index.empty() ? DefaultIndexPath() : index);
  if (!undo) {
    std::ifstream in(journal);
    if (!in) {
      printf(as_json ? "{\"journal\": %s, \"linked\": 0, \"aborted\": 0, \"unfinished\": 0}\n" : "%s: no journal\n",
             as_json ? JsonWriter::Escape(journal).c_str() : journal.c_str());
      return kOk;
    }
    uint64_t begun = 0, done = 0, aborted = 0;
    std::string line;
    while (std::getline(in, line)) {
      json j = json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object()) continue;
      std::string op = j.value("op", "");
      begun += op == "link";
      done += op == "done";
      aborted += op == "abort";
    }
    uint64_t unfinished = begun - done - aborted;
    if (as_json) {
      JsonWriter w;
      w.BeginObject().String("journal", journal).Uint("linked", done).Uint("aborted", aborted)
          .Uint("unfinished", unfinished).EndObject();
      printf("%s\n", w.str().c_str());
    } else {
      printf("%s: %" PRIu64 " names hard-linked, %" PRIu64 " attempts abandoned, %" PRIu64
             " interrupted; 'cidctl unlink-dups --undo' reverts them\n",
             journal.c_str(), done, aborted, unfinished);
    }
    return kOk;
  }
  UndoStats st;
  Status s = UndoLinks(journal, [](const Status& e) { fprintf(stderr, "cidctl: %s\n", e.message().c_str()); }, &st);
  if (!s.ok() && s.IsNotFound()) {
    fprintf(stderr, "cidctl: %s\n", s.message().c_str());
    return kOk;
  }
  if (as_json) {
    JsonWriter w;
    w.BeginObject().Uint("restored", st.restored).Uint("untouched", st.untouched).Uint("removed_tmp", st.removed_tmp)
        .Uint("errors", st.errors).EndObject();
    printf("%s\n", w.str().c_str());
  } else {
    printf("restored %" PRIu64 " names to their own inodes, %" PRIu64 " needed nothing, %" PRIu64
           " temporary links removed\n",
           st.restored, st.untouched, st.removed_tmp);
  }
  if (!s.ok()) {
    fprintf(stderr, "cidctl: %s\n", s.message().c_str());
    return kError;
  }
  return kOk;
}

int CmdMetrics(int argc, char** argv) {
  static const char kUsageText[] =
      "usage: cidctl metrics [--socket PATH] [--json]\n"
      "\n"
      "Print cidd's metrics in the Prometheus text format (the same text cidd\n"
      "writes to --metrics-dir for node_exporter's textfile collector), or its\n"
      "whole state as JSON.\n"
      "\n"
      "  --socket PATH  cidd's control socket (default /run/cid/cidd.sock, or CID_SOCKET)\n"
      "  --json         cidd's state: queue, containers, layers, totals, kernel, hashing\n"
      "\n"
      "Exit status: 0 printed, 1 error, 2 usage, 4 cidd is not running.\n";
  std::string socket = DefaultSocketPath();
  bool as_json = false;
  int rc = Parse(argc, argv, "metrics", kUsageText,
                 {{"socket", true, [&](const char* a) { socket = a; return true; }},
                  {"json", false, [&](const char*) { return as_json = true; }}});
  if (rc >= 0) return rc;
  json answer;
  int code = kOk;
  if (!Ask(socket, {{"op", as_json ? "state" : "metrics"}}, &answer, &code)) return code;
  if (as_json) printf("%s\n", answer.dump(2).c_str());
  else printf("%s", answer.value("text", std::string()).c_str());
  return kOk;
}

int CmdTop(int argc, char** argv) {
  static const char kUsageText[] =
      "usage: cidctl top [--socket PATH] [--interval SECONDS] [--once]\n"
      "\n"
      "What named merging saves per container and per layer, from cidd: files,\n"
      "bytes duplicated elsewhere, tagged files, and the queue.  On a terminal it\n"
      "refreshes every --interval seconds (default 2) until interrupted; piped,\n"
      "or with --once, it prints once.\n"
      "\n"
      "Exit status: 0 shown, 1 error, 2 usage, 4 cidd is not running.\n";
  std::string socket = DefaultSocketPath();
  double interval = 2;
  bool once = !isatty(STDOUT_FILENO);
  int rc = Parse(argc, argv, "top", kUsageText,
                 {{"socket", true, [&](const char* a) { socket = a; return true; }},
                  {"interval", true,
                   [&](const char* a) {
                     char* end;
                     interval = strtod(a, &end);
                     return *end == 0 && interval >= 0.1 && interval <= 3600;
                   }},
                  {"once", false, [&](const char*) { return once = true; }}});
  if (rc >= 0) return rc;
  for (;;) {
    json s;
    int code = kOk;
    if (!Ask(socket, {{"op", "state"}}, &s, &code)) return code;
    std::string out;
    char line[512];
    const json& t = s.contains("totals") ? s["totals"] : json::object();
    snprintf(line, sizeof(line),
             "cidd: %" PRIu64 " files, %" PRIu64 " distinct contents, %s duplicated, %" PRIu64
             " tagged; queue %" PRIu64 "; kernel %s\n",
             U(t, "files"), U(t, "distinct_contents"), HumanBytes(U(t, "duplicated_bytes")).c_str(), U(t, "tagged_files"),
             U(s, "queue_length"), s.value("kernel_named_merging", false) ? "shares (patched)" : "stock (report only)");
    out += line;
    snprintf(line, sizeof(line), "\n%-24s %-20s %8s %12s %12s %8s\n", "CONTAINER", "NAME", "LAYERS", "FILES",
             "DUP BYTES", "TAGGED");
    out += line;
    for (const auto& c : s.value("containers", json::array())) {
      snprintf(line, sizeof(line), "%-24.24s %-20.20s %8zu %12" PRIu64 " %12s %8" PRIu64 "\n",
               c.value("id", std::string()).c_str(), c.value("name", std::string()).c_str(),
               c.value("layers", json::array()).size(), U(c, "files"), HumanBytes(U(c, "duplicated_bytes")).c_str(),
               U(c, "tagged_files"));
      out += line;
    }
    snprintf(line, sizeof(line), "\n%-60s %10s %12s %12s\n", "LAYER", "FILES", "BYTES", "ELSEWHERE");
    out += line;
    for (const auto& l : s.value("layers", json::array())) {
      std::string p = l.value("path", std::string());
      if (p.size() > 60) p = "..." + p.substr(p.size() - 57);
      snprintf(line, sizeof(line), "%-60s %10" PRIu64 " %12s %12s\n", p.c_str(), U(l, "files"),
               HumanBytes(U(l, "bytes")).c_str(), HumanBytes(U(l, "also_elsewhere_bytes")).c_str());
      out += line;
    }
    if (once) {
      fputs(out.c_str(), stdout);
      return kOk;
    }
    printf("\033[H\033[2J%s", out.c_str());
    fflush(stdout);
    usleep(static_cast<useconds_t>(interval * 1e6));
  }
}

}  // namespace cid
