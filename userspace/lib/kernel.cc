#include "cid/fd.h"
#include "cid/kernel.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/cid.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

namespace cid {

namespace {

constexpr const char* kStatFiles[] = {"enabled",       "contents",       "tagged_inodes",
                                      "pages_shared",  "pages_sharing",  "general_profit",
                                      "tags",          "untags",         "write_denials"};

static_assert(sizeof(cid_tag{}.digest) == kDigestSize);


}  // namespace

// O_NONBLOCK: a FIFO named here must not block the open.
Result<int> OpenRegularFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ELOOP) return Status::InvalidArgument(path + ": is a symbolic link; tag its target");
    return Status::FromErrno(path, errno);
  }
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return Status::InvalidArgument(path + ": not a regular file");
  }
  return fd;
}

namespace {

Result<int> OpenReadOnly(const std::string& path) { return OpenRegularFile(path); }

Status IoctlError(const std::string& path, const char* op, int err) {
  std::string msg = IoctlErrorMessage(path, op, err);
  if (err == EINVAL && !KernelHasNamedMerging()) return Status::Unsupported(msg, err);
  return Status::WithErrno(std::move(msg), err);
}

}  // namespace

std::string IoctlErrorMessage(const std::string& path, const char* op, int err, const std::string& sysfs_dir) {
  std::string reason;
  switch (err) {
    case ENOTTY:
      reason = kNoKernelSupport;
      break;
    case EINVAL:
      reason = KernelHasNamedMerging(sysfs_dir) ? "invalid argument (unknown flags or non-zero reserved fields)"
                                                : kNoKernelSupport;
      break;
    case EPERM:
      reason = "permission denied: tagging needs CAP_SYS_ADMIN in the initial user namespace";
      break;
    case EACCES:
      reason = "permission denied";
      break;
    case ETXTBSY:
      reason = "the file is open for writing";
      break;
    case EOPNOTSUPP:
      reason = "not supported for this filesystem or file type (tmpfs and special files cannot share)";
      break;
    case EBADMSG:
      reason = "the content differs from the expected digest (the index is out of date; rescan)";
      break;
    case EINTR:
      reason = "interrupted by a signal before the file was hashed; try again";
      break;
    case ENODATA:
      reason = "the file is not tagged";
      break;
    default:
      reason = strerror(err);
  }
  return path + ": " + op + ": " + reason;
}

Result<TagInfo> TagFile(const std::string& path, const TagRequest& req) {
  auto fd = OpenReadOnly(path);
  if (!fd.ok()) return fd.status();
  Fd f(*fd);
  return TagFd(f.get(), path, req);
}

Result<TagInfo> TagFd(int fd, const std::string& path, const TagRequest& req) {
  cid_tag t;
  memset(&t, 0, sizeof(t));
  if (req.expect) {
    t.flags |= CID_TAG_EXPECT_DIGEST;
    memcpy(t.digest, req.expect->bytes.data(), kDigestSize);
  }
  if (req.domain) {
    t.flags |= CID_TAG_DOMAIN;
    t.domain = *req.domain;
  }
  if (ioctl(fd, CID_IOC_TAG, &t) < 0) return IoctlError(path, "tag", errno);
  TagInfo info;
  info.digest = Digest::FromBytes(t.digest, kDigestSize);
  info.size = t.size;
  return info;
}

Status UntagFile(const std::string& path) {
  auto fd = OpenReadOnly(path);
  if (!fd.ok()) return fd.status();
  Fd f(*fd);
  if (ioctl(f.get(), CID_IOC_UNTAG) < 0) return IoctlError(path, "untag", errno);
  return Status::OK();
}

Result<QueryInfo> QueryFile(const std::string& path) {
  auto fd = OpenReadOnly(path);
  if (!fd.ok()) return fd.status();
  Fd f(*fd);
  cid_query q;
  memset(&q, 0, sizeof(q));
  if (ioctl(f.get(), CID_IOC_QUERY, &q) < 0) return IoctlError(path, "query", errno);
  QueryInfo info;
  info.tagged = q.flags & CID_QUERY_TAGGED;
  info.shared = q.flags & CID_QUERY_SHARED;
  info.domain = q.domain;
  info.digest = Digest::FromBytes(q.digest, kDigestSize);
  info.size = q.size;
  info.content_pages = q.content_pages;
  info.content_users = q.content_users;
  info.tagged_inodes = q.tagged_inodes;
  return info;
}

bool KernelHasNamedMerging(const std::string& sysfs_dir) {
  struct stat st;
  return stat(sysfs_dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::vector<std::pair<std::string, std::string>> ReadKernelStats(const std::string& sysfs_dir) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const char* name : kStatFiles) {
    std::ifstream in(sysfs_dir + "/" + name);
    if (!in) continue;
    std::string value;
    std::getline(in, value);
    out.emplace_back(name, value);
  }
  return out;
}

}  // namespace cid
