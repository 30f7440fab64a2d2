"""Run a command with ``socket(AF_NETLINK, ...)`` refused with EAFNOSUPPORT, as
systemd's ``RestrictAddressFamilies=`` does, through a real seccomp filter
(libseccomp via ctypes).

    python -m tests.plasmd.nonetlink COMMAND [ARG...]

Exits 70 without running COMMAND when the filter cannot be installed, so a test
never believes it ran sandboxed when it did not."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys

AF_NETLINK = 16
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO = 0x00050000
SCMP_CMP_EQ = 4


class _Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def install() -> None:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                     ctypes.c_uint, _Cmp]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise OSError("seccomp_init failed")
    nr = lib.seccomp_syscall_resolve_name(b"socket")
    rc = lib.seccomp_rule_add(ctx, SCMP_ACT_ERRNO | errno.EAFNOSUPPORT, nr, 1,
                              _Cmp(0, SCMP_CMP_EQ, AF_NETLINK, 0))
    if rc != 0 or lib.seccomp_load(ctx) != 0:
        raise OSError("seccomp rule could not be installed")


def main() -> None:
    try:
        install()
        import socket
        try:
            socket.socket(AF_NETLINK, socket.SOCK_RAW).close()
        except OSError as e:
            if e.errno != errno.EAFNOSUPPORT:
                raise
        else:
            raise OSError("the filter is loaded but netlink sockets still open")
    except OSError as e:
        print(f"nonetlink: {e}", file=sys.stderr)
        os._exit(70)
    os.execvp(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()
