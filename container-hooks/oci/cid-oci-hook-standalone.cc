// cid-oci-hook-standalone: the OCI hook in a process of its own (oci_hook.h),
// what cid-oci-hook runs when cidd is not there to run the hook for it.
// Options, exit status: --help.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "cid/control.h"
#include "oci/oci_hook.h"

int main(int argc, char** argv) {
  try {
    cid::OciHookIo io;
    io.getenv = [](const char* name) -> const char* { return getenv(name); };
    io.control = cid::ControlRequest;
    std::vector<std::string> args(argv, argv + argc);
    if (isatty(STDIN_FILENO)) return cid::RunOciHook(args, nullptr, io);
    std::string state;
    char buf[65536];
    ssize_t n;
    while ((n = read(STDIN_FILENO, buf, sizeof(buf))) > 0) {
      state.append(buf, static_cast<size_t>(n));
      if (state.size() > (16u << 20)) break;  // no real state is this large
    }
    return cid::RunOciHook(args, &state, io);
  } catch (const std::bad_alloc&) {
    fprintf(stderr, "cid-oci-hook: out of memory\n");
    return 1;
  }
}
