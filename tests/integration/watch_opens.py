#!/usr/bin/env python3
"""Run a command and write to OUT, one per line, the names of the files in DIR
that were opened while it ran (inotify IN_OPEN).  Exits with the command's
status.  Usage: watch_opens.py OUT DIR CMD [ARGS...]"""
import ctypes
import os
import struct
import subprocess
import sys

IN_OPEN, IN_NONBLOCK = 0x20, 0o4000
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(IN_NONBLOCK)
if fd < 0 or libc.inotify_add_watch(fd, os.fsencode(sys.argv[2]), IN_OPEN) < 0:
    sys.exit("inotify: %s" % os.strerror(ctypes.get_errno()))
rc = subprocess.call(sys.argv[3:])
names = []
while True:
    try:
        buf = os.read(fd, 65536)
    except BlockingIOError:
        break
    off = 0
    while off < len(buf):
        _, mask, _, length = struct.unpack_from("iIII", buf, off)
        name = buf[off + 16:off + 16 + length].rstrip(b"\0")
        if mask & IN_OPEN and name:
            names.append(os.fsdecode(name))
        off += 16 + length
with open(sys.argv[1], "w") as out:
    for n in names:
        out.write(n + "\n")
sys.exit(rc)
