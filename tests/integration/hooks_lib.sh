# shellcheck shell=bash
# Sourced after lib.sh by the container-hook and cidd tests: where the
# binaries are (beside cidctl in the build tree, or as the environment says).
BUILD_DIR=$(cd "$(dirname "$CIDCTL")/.." && pwd)
: "${CID_OCI_HOOK:=$BUILD_DIR/container-hooks/cid-oci-hook}"
: "${CID_LXC_HOOK:=$BUILD_DIR/container-hooks/cid-lxc-hook}"
: "${CIDD:=$BUILD_DIR/userspace/cidd/cidd}"
export CID_OCI_HOOK CID_LXC_HOOK CIDD

# A podman-style overlay storage under $1: layers L1, L2 reached through
# l/AAA and l/BBB, an upper layer U, and a mountinfo file describing the
# overlay on U/merged (written to $1/mountinfo).
make_storage() {
	local w=$1
	mkdir -p "$w/storage/overlay/l" "$w/storage/overlay/L1/diff" "$w/storage/overlay/L2/diff" \
		"$w/storage/overlay/U/diff" "$w/storage/overlay/U/work" "$w/storage/overlay/U/merged" "$w/bundle"
	ln -sfn ../L1/diff "$w/storage/overlay/l/AAA"
	ln -sfn ../L2/diff "$w/storage/overlay/l/BBB"
	local o=$w/storage/overlay
	echo "48 26 0:39 / $o/U/merged rw,relatime - overlay overlay rw,lowerdir=$o/l/AAA:$o/l/BBB,upperdir=$o/U/diff,workdir=$o/U/work" >"$w/mountinfo"
	echo "{\"ociVersion\": \"1.0.2\", \"root\": {\"path\": \"$o/U/merged\"}}" >"$w/bundle/config.json"
}
