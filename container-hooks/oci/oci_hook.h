// The OCI runtime hook's work, for the two programs that run it:
// cid-oci-hook-standalone (a process of its own, as runc starts it) and cidd
// (a thread of its own per run of cid-oci-hook, the thin client runc starts
// when cidd is running; see container-hooks/README.md, "Start-up").
#ifndef CID_CONTAINER_HOOKS_OCI_HOOK_H_
#define CID_CONTAINER_HOOKS_OCI_HOOK_H_

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "cid/status.h"

namespace cid {

struct ReadIndexCache;

// Where the hook's run reads its environment and writes what it says.
struct OciHookIo {
  // The hook's environment (CID_INDEX, CID_SOCKET, CID_HOOK_BUDGET_MS);
  // nullptr for a name that is not set.  Unset: nothing is.
  std::function<const char*(const char*)> getenv;
  FILE* out = stdout;  // --help
  FILE* err = stderr;  // errors and the summary
  // Sends one request to cidd at `socket` and returns the answer line
  // (ControlRequest for the standalone hook; cidd answers it itself).
  std::function<Result<std::string>(const std::string& socket, const std::string& request, int timeout_ms)> control;
  // Where the run happens, for the --log line's "ran_in".
  std::string ran_in = "standalone";
  // cidd's connection and counts kept across runs (hook_util.h); none for
  // the standalone hook.
  ReadIndexCache* index_cache = nullptr;
};

// Runs the hook with args (args[0] the program's name) on the state the
// runtime wrote to its stdin; nullptr: stdin is a terminal (a usage error).
// Returns the exit status (see --help).
int RunOciHook(const std::vector<std::string>& args, const std::string* state, const OciHookIo& io);

}  // namespace cid

#endif  // CID_CONTAINER_HOOKS_OCI_HOOK_H_
