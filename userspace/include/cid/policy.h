// Which files of a writable tree (an LXC rootfs, a zero-install home) may
// be tagged.  A tagged file that a reader holds open refuses in-place
// writers with ETXTBSY, like a running executable, so only content that is
// not written in place in practice qualifies:
//   - not recently modified (mtime older than min_age: a file being
//     written now is not a candidate), and not open for writing (the kernel
//     refuses that tag with ETXTBSY itself);
//   - not matching an exclude pattern (default: var/*, etc/*, home/*,
//     root/*, tmp/*, run/*, srv/*: data, configuration, state);
//   - and either matching an include pattern (default: usr/*, lib/*,
//     lib64/*, bin/*, sbin/*, opt/*, *.so, *.so.*, *.py, *.pyc, *.pm,
//     *.rb), or an ELF executable or shared object (its first bytes).
// Patterns are fnmatch(3) globs on the path relative to the tree, '*'
// matching '/' too; excludes win.
#ifndef CID_POLICY_H_
#define CID_POLICY_H_

#include <cstdint>
#include <string>
#include <vector>

namespace cid {

struct TreePolicy {
  std::string root;  // canonical tree the relative paths start from
  std::vector<std::string> include{"usr/*", "lib/*", "lib64/*", "bin/*", "sbin/*", "opt/*", "*.so",
                                   "*.so.*", "*.py", "*.pyc", "*.pm", "*.rb"};
  std::vector<std::string> exclude{"var/*", "etc/*", "home/*", "root/*", "tmp/*", "run/*", "srv/*"};
  int64_t min_age_s = 600;

  // Whether `path` (beneath root) may be tagged now.
  bool Eligible(const std::string& path) const;
};

}  // namespace cid

#endif  // CID_POLICY_H_
