# Named merging: top-level entry point.
#
#   make deps      install every Debian package the project needs (root, idempotent)
#   make           build all userspace (libcid, cidctl, cidd, cid-analyze, cas-fs, hooks)
#   make test      unit + integration tests on the host, then the kernel suite in QEMU
#   make kernel    build the patched Linux 6.12 test kernel (kept object tree + ccache)
#   make vm-test   boot the patched kernel under QEMU and run the kernel test suite
#   make bench     benchmarks; results land in bench/results/
#   make demo      the main job: index real duplicated trees and report the savings
#
# Build outputs go to $(BUILD); the kernel's source and object trees are kept
# in $(CID_CACHE) so rebuilds from a fresh clone stay incremental.

BUILD     ?= build
CID_CACHE ?= $(HOME)/.cache/cid
JOBS      ?= $(shell nproc)
CMAKE_BUILD_TYPE ?= RelWithDebInfo

export BUILD CID_CACHE JOBS

.PHONY: all userspace deps test unit-test kernel vm-test bench demo clean distclean help

all: userspace

help:
	@sed -n '3,12p' Makefile | sed 's/^# \{0,1\}//'

deps:
	scripts/deps.sh

$(BUILD)/CMakeCache.txt: CMakeLists.txt
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(CMAKE_BUILD_TYPE)

userspace: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j$(JOBS)

unit-test: userspace
	ctest --test-dir $(BUILD) --output-on-failure -j$(JOBS)

test: userspace
	tests/run-all.sh

kernel:
	kernel/build.sh

vm-test: kernel userspace
	tests/vm/run.sh

bench: userspace
	bench/run.sh

demo: userspace
	scripts/demo.sh

clean:
	rm -rf $(BUILD)

distclean: clean
	rm -rf $(CID_CACHE)
