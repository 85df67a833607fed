// Errors are values.  A Status says whether an operation succeeded and, if
// not, why: a code, the errno that caused it (0 if none) and a message that
// names the path or object involved.  Result<T> is a value or a Status.
// errno is turned into a Status in exactly one place: Status::FromErrno.
#ifndef CID_STATUS_H_
#define CID_STATUS_H_

#include <cassert>
#include <optional>
#include <string>
#include <utility>

namespace cid {

class Status {
 public:
  enum class Code {
    kOk = 0,
    kNotFound,
    kIoError,
    kCorruption,    // a file (index, digest string) is not what it claims
    kInvalidArgument,
    kBusy,          // locked by another process
    kChanged,       // a file changed while it was read
    kUnsupported,   // the kernel or filesystem cannot do this
    kPermission,
  };

  Status() = default;
  static Status OK() { return Status(); }
  static Status NotFound(std::string msg) { return Status(Code::kNotFound, 0, std::move(msg)); }
  static Status IoError(std::string msg, int err = 0) { return Status(Code::kIoError, err, std::move(msg)); }
  static Status Corruption(std::string msg) { return Status(Code::kCorruption, 0, std::move(msg)); }
  static Status InvalidArgument(std::string msg) {
    return Status(Code::kInvalidArgument, 0, std::move(msg));
  }
  static Status Busy(std::string msg) { return Status(Code::kBusy, 0, std::move(msg)); }
  static Status Changed(std::string msg) { return Status(Code::kChanged, 0, std::move(msg)); }
  static Status Unsupported(std::string msg, int err = 0) {
    return Status(Code::kUnsupported, err, std::move(msg));
  }
  // "<context>: <strerror(err)>", with the code chosen from the errno.
  static Status FromErrno(const std::string& context, int err);
  // A message of the caller's own, with the code chosen from the errno.
  static Status WithErrno(std::string msg, int err);

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  int err() const { return err_; }  // the errno behind it, or 0
  const std::string& message() const { return msg_; }
  std::string ToString() const { return ok() ? "OK" : msg_; }

  bool IsNotFound() const { return code_ == Code::kNotFound; }
  bool IsCorruption() const { return code_ == Code::kCorruption; }
  bool IsChanged() const { return code_ == Code::kChanged; }
  bool IsBusy() const { return code_ == Code::kBusy; }

 private:
  Status(Code code, int err, std::string msg) : code_(code), err_(err), msg_(std::move(msg)) {}

  Code code_ = Code::kOk;
  int err_ = 0;
  std::string msg_;
};

template <typename T>
class Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) { assert(!status_.ok()); }  // NOLINT

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() { assert(ok()); return *value_; }
  const T& value() const { assert(ok()); return *value_; }
  T& operator*() { return value(); }
  const T& operator*() const { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace cid

#endif  // CID_STATUS_H_
