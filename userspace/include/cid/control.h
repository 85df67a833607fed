// cidd's control socket: a unix stream socket (default /run/cid/cidd.sock,
// $CID_SOCKET overrides) on which a client sends one request, a JSON object
// on one line, and reads one JSON object on one line back.  Only root (or
// the user cidd runs as) is answered: cidd checks SO_PEERCRED.
//
// Requests: {"op":"enqueue","paths":[...],"container":ID,"name":NAME,
// "domain":NAME,"hardlink":bool,"shared":bool} ("shared": the hook indexed
// and shared every layer itself; cidd then skips layers it walked within
// its --rescan-interval), {"op":"domain","name":NAME}, {"op":"state"},
// {"op":"metrics"}, and cid-oci-hook's {"op":"oci-hook",...} (cidd.cc).
// Answers carry "ok": true, or "ok": false and "error": MESSAGE.
#ifndef CID_CONTROL_H_
#define CID_CONTROL_H_

#include <string>

#include "cid/status.h"

namespace cid {

constexpr char kDefaultSocket[] = "/run/cid/cidd.sock";

// $CID_SOCKET if set and not empty, else kDefaultSocket.
std::string DefaultSocketPath();

// Sends `request` (one line, no newline inside) and returns the answer line
// without its newline.  Gives up after timeout_ms in all.  A socket nobody
// listens on is kNotFound ("cidd is not running") whatever the errno.
Result<std::string> ControlRequest(const std::string& socket_path, const std::string& request, int timeout_ms);

}  // namespace cid

#endif  // CID_CONTROL_H_
