#include "cid/status.h"

#include <cerrno>
#include <cstring>

namespace cid {

Status Status::FromErrno(const std::string& context, int err) {
  return WithErrno(context + ": " + strerror(err), err);
}

Status Status::WithErrno(std::string msg, int err) {
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return Status(Code::kNotFound, err, std::move(msg));
    case EACCES:
    case EPERM:
      return Status(Code::kPermission, err, std::move(msg));
    case EBUSY:
    case ETXTBSY:
      return Status(Code::kBusy, err, std::move(msg));
    case EINVAL:
      return Status(Code::kInvalidArgument, err, std::move(msg));
    case ENOSYS:
    case ENOTTY:
    case EOPNOTSUPP:
      return Status(Code::kUnsupported, err, std::move(msg));
    case EBADMSG:
      return Status(Code::kCorruption, err, std::move(msg));
    default:
      return Status(Code::kIoError, err, std::move(msg));
  }
}

}  // namespace cid
