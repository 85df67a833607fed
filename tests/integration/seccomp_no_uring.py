#!/usr/bin/env python3
"""Run a command with io_uring_setup(2) refused with EPERM by a seccomp
filter, the way container runtimes' default profiles refuse it; with
--enter, io_uring_setup is allowed and io_uring_enter(2) refused instead
(a ring that sets up and then fails).
Usage: seccomp_no_uring.py [--enter] CMD [ARGS...]   (x86_64 only; exits 77 elsewhere)"""
import ctypes
import os
import platform
import struct
import sys

if platform.machine() != "x86_64":
    sys.exit(77)

AUDIT_ARCH_X86_64 = 0xC000003E
NR_IO_URING_SETUP = 425
NR_IO_URING_ENTER = 426
argv = sys.argv[1:]
refused = NR_IO_URING_SETUP
if argv and argv[0] == "--enter":
    refused = NR_IO_URING_ENTER
    argv = argv[1:]
EPERM = 1
BPF_LD_W_ABS, BPF_JEQ_K, BPF_RET_K = 0x20, 0x15, 0x06
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2

prog = [
    (BPF_LD_W_ABS, 0, 0, 4),                       # A = seccomp_data.arch
    (BPF_JEQ_K, 0, 3, AUDIT_ARCH_X86_64),          # other arch: allow
    (BPF_LD_W_ABS, 0, 0, 0),                       # A = seccomp_data.nr
    (BPF_JEQ_K, 0, 1, refused),
    (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM),
    (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
]
filt = b"".join(struct.pack("HBBI", *ins) for ins in prog)
buf = ctypes.create_string_buffer(filt, len(filt))


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


fprog = SockFprog(len(prog), ctypes.addressof(buf))
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
    sys.exit("prctl(NO_NEW_PRIVS): %s" % os.strerror(ctypes.get_errno()))
if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
    sys.exit("prctl(SECCOMP): %s" % os.strerror(ctypes.get_errno()))
os.execvp(argv[0], argv)
