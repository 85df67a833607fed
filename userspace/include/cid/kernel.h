// The kernel side of named merging: tagging files (CID_IOC_TAG), untagging,
// querying, and the statistics under /sys/kernel/mm/cid/.  Feature
// detection is by capability: the sysfs directory, or the ioctl answering.
#ifndef CID_KERNEL_H_
#define CID_KERNEL_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cid/digest.h"
#include "cid/status.h"

namespace cid {

constexpr char kSysfsDir[] = "/sys/kernel/mm/cid";
constexpr char kNoKernelSupport[] = "the running kernel lacks named merging (no /sys/kernel/mm/cid)";

struct TagRequest {
  std::optional<Digest> expect;    // CID_TAG_EXPECT_DIGEST
  std::optional<uint32_t> domain;  // CID_TAG_DOMAIN
};

struct TagInfo {
  Digest digest;  // as the kernel computed it
  uint64_t size = 0;
};

struct QueryInfo {
  bool tagged = false;
  bool shared = false;  // this open is served from the content inode
  uint32_t domain = 0;
  Digest digest;
  uint64_t size = 0;
  uint64_t content_pages = 0;
  uint64_t content_users = 0;
  uint64_t tagged_inodes = 0;
};

// Opens path O_RDONLY|O_NOFOLLOW|O_NONBLOCK, refuses anything but a
// regular file, and tags it.
Result<TagInfo> TagFile(const std::string& path, const TagRequest& req);
// The open TagFile does: a regular file, read-only, never through a
// symlink at the end, never blocking (a FIFO).  Returns the fd.
Result<int> OpenRegularFile(const std::string& path);
// Tags a file already open for reading; path only names it in messages.
Result<TagInfo> TagFd(int fd, const std::string& path, const TagRequest& req);
Status UntagFile(const std::string& path);
Result<QueryInfo> QueryFile(const std::string& path);

// Whether /sys/kernel/mm/cid exists (sysfs_dir overridable for tests).
bool KernelHasNamedMerging(const std::string& sysfs_dir = kSysfsDir);

// The statistics files that exist, in a fixed order, as (name, value).
std::vector<std::pair<std::string, std::string>> ReadKernelStats(const std::string& sysfs_dir = kSysfsDir);

// A message for an ioctl failure: "<path>: <op>: <reason>".
std::string IoctlErrorMessage(const std::string& path, const char* op, int err,
                              const std::string& sysfs_dir = kSysfsDir);

}  // namespace cid

#endif  // CID_KERNEL_H_
