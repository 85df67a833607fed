#!/usr/bin/env python3
"""Independent oracle for the integration tests: walks trees with os.lstat
(no symlinks, regular files only), computes each file's fs-verity digest with
hashlib, and prints what `cidctl dups --json` and `cidctl report --json` must
say, as JSON."""
import hashlib
import json
import os
import struct
import sys

PAGE = os.sysconf("SC_PAGESIZE")
BLOCK = 4096


def verity_digest(path):
    """The fs-verity file digest (SHA-256, 4096-byte blocks, no salt), as in
    the kernel's Documentation/filesystems/fsverity.rst: hash every block of a
    level, zero-padded, into the next level until a level is one block; the
    root hash is that block's hash (all zeros for an empty file); the digest
    is the SHA-256 of the 256-byte fsverity_descriptor."""
    level = []
    size = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(BLOCK)
            if not b:
                break
            size += len(b)
            level.append(hashlib.sha256(b.ljust(BLOCK, b"\0")).digest())
    root = bytes(32)
    while level:
        if len(level) == 1:
            root = level[0]
            break
        packed = b"".join(level)
        level = [hashlib.sha256(packed[i:i + BLOCK].ljust(BLOCK, b"\0")).digest()
                 for i in range(0, len(packed), BLOCK)]
    desc = struct.pack("<BBBBIQ", 1, 1, 12, 0, 0, size) + root.ljust(64, b"\0") + bytes(32 + 144)
    return "fsverity-sha256:" + hashlib.sha256(desc).hexdigest()


def main():
    min_size = int(sys.argv[1])
    roots = [os.path.realpath(r) for r in sys.argv[2:]]
    inodes = {}  # (dev, ino) -> {size, digest, paths, roots}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in filenames:
                p = os.path.join(dirpath, name)
                st = os.lstat(p)
                if not os.path.stat.S_ISREG(st.st_mode):
                    continue
                key = (st.st_dev, st.st_ino)
                if key not in inodes:
                    inodes[key] = {"size": st.st_size, "digest": verity_digest(p), "paths": [], "roots": set()}
                inodes[key]["paths"].append(p)
                inodes[key]["roots"].add(root)
    by_digest = {}
    for key, v in inodes.items():
        by_digest.setdefault(v["digest"], []).append(key)
    groups = []
    for d, keys in by_digest.items():
        size = inodes[keys[0]]["size"]
        if len(keys) > 1 and size >= min_size:
            groups.append({"digest": d, "size": size, "copies": len(keys),
                           "duplicated_bytes": size * (len(keys) - 1),
                           "paths": sorted(p for k in keys for p in inodes[k]["paths"])})
    groups.sort(key=lambda g: (-g["duplicated_bytes"], g["digest"]))
    pages = lambda s: (s + PAGE - 1) // PAGE
    total = {
        "files": len(inodes),
        "bytes": sum(v["size"] for v in inodes.values()),
        "distinct_contents": len(by_digest),
        "distinct_bytes": sum(inodes[k[0]]["size"] for k in by_digest.values()),
        "cache_pages": sum(pages(v["size"]) for v in inodes.values()),
        "shared_cache_pages": sum(pages(inodes[k[0]]["size"]) for k in by_digest.values()),
    }
    total["duplicated_bytes"] = total["bytes"] - total["distinct_bytes"]
    total["saved_pages"] = total["cache_pages"] - total["shared_cache_pages"]
    total["saved_bytes"] = total["saved_pages"] * PAGE
    print(json.dumps({"groups": groups, "total": total,
                      "duplicated_bytes": sum(g["duplicated_bytes"] for g in groups)}))


if __name__ == "__main__":
    main()
