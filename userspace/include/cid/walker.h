// Walking a tree: every regular file below a root, never following
// symlinks (neither below the root nor at the end of a path), skipping
// devices, FIFOs and sockets, not entering mounts of pseudo filesystems
// (proc, sysfs, cgroup, ...), and reporting what cannot be read with its
// path and errno before going on.  Hardlinks are reported once per path;
// the caller counts inodes (see Scanner).
#ifndef CID_WALKER_H_
#define CID_WALKER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "cid/io.h"
#include "cid/status.h"

namespace cid {

struct WalkStats {
  uint64_t files = 0;     // regular files reported
  uint64_t dirs = 0;
  uint64_t symlinks = 0;  // seen and not followed
  uint64_t special = 0;   // devices, FIFOs, sockets
  uint64_t errors = 0;    // paths that could not be read or stat'ed
  uint64_t pseudo_fs = 0; // mounts of proc, sysfs, cgroup... not entered
};

struct WalkCallbacks {
  std::function<void(const std::string& path, const FileStat& st)> on_file;
  std::function<void(const std::string& path, const Status& error)> on_error;  // message names path and errno
  const std::atomic<bool>* stop = nullptr;            // checked between entries
  // Directories held open at once.  Deeper than this, a directory's fd is
  // closed while its subdirectories are walked and reopened beneath the
  // root afterwards (checked to be the same directory), so a tree of any
  // depth needs this many fds, not one per level.
  unsigned max_open_dirs = 16;
};

// Returns an error only if the root itself cannot be examined; everything
// below it goes to on_error.  The root may be a regular file.  Files are
// reported in the byte order of their full paths (a directory's entries in
// name order, a subdirectory's files where "name/" sorts), so runs are
// reproducible and a caller can merge them with rows sorted by path.
Status Walk(const std::string& root, const WalkCallbacks& cb, WalkStats* stats);

// The same below an open directory: root_fd is the directory `root` names
// (the caller keeps it open); every directory is opened beneath it.
Status WalkFd(int root_fd, const std::string& root, const WalkCallbacks& cb, WalkStats* stats);

// The absolute, symlink-free form of a path that must exist.
Result<std::string> CanonicalPath(const std::string& path);

}  // namespace cid

#endif  // CID_WALKER_H_
