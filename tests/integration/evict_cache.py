#!/usr/bin/env python3
"""Drop every regular file below the given trees from the page cache
(POSIX_FADV_DONTNEED), so the next read comes from storage.
Used by interrupt_test.sh and bench/hash/run.sh."""
import os
import sys

for root in sys.argv[1:]:
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
