// Overlay layer stacks: which directories a container's overlayfs root is
// built from, read from a mount table (/proc/PID/mountinfo) with libmount.
//
// Overlay's lowerdir option lists layers top first, separated by ':' ("::"
// starts the data-only layers); a ':' or ',' inside a path is escaped with
// a backslash when mounting.  The mount table shows the option as given,
// with ',', ' ', '=', tabs, newlines and backslashes in octal (\054), which
// libmount decodes: "c\,x\:y" is what a layer "c,x:y" looks like then.
// Kernels since 6.7 may show each layer as its own lowerdir+= or datadir+=.
// Podman (containers/storage) mounts its layers through short links
// <storage>/overlay/l/<ID> -> ../<layer>/diff, sometimes as paths relative
// to <storage>/overlay.
#ifndef CID_LAYERS_H_
#define CID_LAYERS_H_

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cid/status.h"

namespace cid {

// Splits a mount option string (as libmount gives it) at the commas no
// backslash escapes, into (name, value) pairs; the escapes are kept.
std::vector<std::pair<std::string, std::string>> SplitMountOptions(std::string_view options);

// Splits a lowerdir value (already unescaped from the mount table) into its
// layers, top first, removing the backslash escapes of ':' , ',' and '\'.
// Data-only layers after "::" are included.  Fails on an empty layer or a
// trailing ':' (which overlayfs itself refuses).
Result<std::vector<std::string>> SplitLowerdir(std::string_view value);

struct OverlayMount {
  std::string target;               // mount point
  std::vector<std::string> lowers;  // as the mount table gives them, top first
  std::string upper;                // empty for a read-only overlay
  std::string work;
};

// The overlay mounted at `target` in `mountinfo` (a /proc/PID/mountinfo
// file).  NotFound if nothing is mounted there; InvalidArgument naming the
// filesystem type if what is mounted there is not overlay.  When several
// mounts stack on the target, the last (visible) one counts.
Result<OverlayMount> FindOverlayMount(const std::string& mountinfo, const std::string& target);

// Every overlay mount in `mountinfo`, in mount order (lowers as the mount
// table gives them; a mount whose options cannot be parsed is skipped).
Result<std::vector<OverlayMount>> ListOverlayMounts(const std::string& mountinfo);

// Where a layer path from the mount table really is.  A relative path is
// taken relative to `storage_root` (containers/storage mounts relative to
// <graphroot>/overlay when the option would be too long).  Symlinks (podman's
// l/<ID> links) are resolved, and the result must lie beneath storage_root
// when one is given, or beneath the directory holding the l/ link when the
// path goes through one: anything else is refused as a link out of the
// storage root.  The result must be a readable directory.
// Errors: kNotFound / kPermission (unreadable), kInvalidArgument (escapes).
Result<std::string> ResolveLayer(const std::string& layer, const std::string& storage_root);

// The read-only layers the hooks have seen as overlay lowers, so a later
// container's layers can be hard-linked with an earlier one's: one
// canonical path a line in `file` (<dir of the index>/lower-layers).
std::string DefaultLayerRegistryPath(const std::string& index_path);
// Appends the layers not listed yet (each line written whole with O_APPEND,
// so concurrent hooks never interleave).
Status RememberLayers(const std::string& file, const std::vector<std::string>& layers);
// The listed layers that still exist; none if the file does not.
Result<std::vector<std::string>> KnownLayers(const std::string& file);

// The layers whose files may be hard-linked with each other: `ours` and
// the registry's, minus any that is, holds or lies beneath the upper or
// work directory of an overlay in /proc/self/mountinfo or in `also` (whose
// relative paths are taken relative to storage_root).
std::vector<std::string> LinkableLayers(const std::string& registry, const std::vector<std::string>& ours,
                                        const std::vector<OverlayMount>& also, const std::string& storage_root);

// The directory part of a path ("/a/b" -> "/a", "b" -> ".", "/a" -> "/").
std::string ParentDir(const std::string& path);

// True if `path` equals `dir` or lies beneath it (both canonical).
bool PathBeneath(std::string_view path, std::string_view dir);

}  // namespace cid

#endif  // CID_LAYERS_H_
