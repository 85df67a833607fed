// Opening files of an indexed tree without leaving it.  A path the index
// or the walk recorded is opened from its scanned root's directory fd with
// openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS): a directory swapped for a
// symlink, or ".." games, fail (ELOOP, EXDEV) instead of reaching a file
// outside the tree.  Relative paths of any length work: a path longer than
// PATH_MAX is opened one PATH_MAX-sized run of components at a time.
#ifndef CID_SAFE_OPEN_H_
#define CID_SAFE_OPEN_H_

#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cid/io.h"
#include "cid/status.h"

namespace cid {

// Opens `rel` beneath the directory dir_fd (flags as for open(2); O_CLOEXEC
// is added).  Returns the fd, or -errno.  Never follows a symlink, never
// crosses out of dir_fd's tree.  rel must be relative and non-empty.
int OpenBeneath(int dir_fd, std::string_view rel, int flags);

// Opens an absolute, canonical directory path (a scanned root) without
// following any symlink on the way; -errno on failure.
int OpenRootDir(const std::string& path);

// Opens a regular file for reading beneath dir_fd (O_NOFOLLOW, O_NONBLOCK so
// a FIFO swapped in cannot block, O_NOATIME where permitted) and checks it
// is a regular file; if expect.ino != 0, also that it is the inode
// expect names (dev, ino).  `path` is only for messages.  On success the fd
// has O_NONBLOCK cleared (unless keep_nonblock: pread and preadv2 ignore it
// on regular files, io_uring does not) and *st holds its fstat.
Result<int> OpenFileBeneath(int dir_fd, std::string_view rel, const std::string& path, const FileStat& expect,
                            FileStat* st, bool keep_nonblock = false);

// The scanned roots of an index, each opened once, mapping an indexed path
// to (root fd, path relative to it).  A path lies in the longest root it is
// equal to or below.
class RootFds {
 public:
  explicit RootFds(std::vector<std::string> roots);
  ~RootFds();
  RootFds(const RootFds&) = delete;
  RootFds& operator=(const RootFds&) = delete;

  // NotFound if no root holds the path; the root's open error if it
  // cannot be opened (renamed, replaced by a symlink).  A path equal to
  // its root (a scanned file) is opened from the root's parent.
  Result<std::pair<int, std::string>> Resolve(const std::string& path);

 private:
  Result<int> Fd(const std::string& dir);
  std::vector<std::string> roots_;       // longest first
  std::map<std::string, int> fds_;       // opened so far (fd or -errno)
};

}  // namespace cid

#endif  // CID_SAFE_OPEN_H_
