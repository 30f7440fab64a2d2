"""kexec_file_load(2) and reboot(LINUX_REBOOT_CMD_KEXEC) through ctypes: no kexec-tools.

The kernel reads both files from the descriptors it is given (from offset 0),
so the descriptors phase-boot hashed are the ones loaded. arm64's
kexec_file_load takes an uncompressed ``Image``: a gzip'd vmlinuz is
inflated into a memfd first (capped). A kernel without kexec_file_load
(ENOSYS: Debian 12's arm64 kernel) gets kexec_load(2) through the image's
kexec-tools instead, fed from sealed copies of the same descriptors
(kexec_tools.py).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import zlib
from pathlib import Path
from typing import Any

from phase_boot import kexec_tools
from phase_core.errors import ConfigError, IOFailure, PhaseError, Rejected, TooLarge, Unavailable

SYS_KEXEC_FILE_LOAD = {"x86_64": 320, "aarch64": 294}
LINUX_REBOOT_CMD_KEXEC = 0x45584543
KEXEC_LOADED = Path("/sys/kernel/kexec_loaded")
KEXEC_TOOLS = Path("/usr/sbin/kexec")  # in the image on arm64 (boot/build)
LOCKDOWN = Path("/sys/kernel/security/lockdown")  # "none [integrity] confidentiality"
MAX_IMAGE_BYTES = 256 << 20
_SIGN_HINT = ("sign the kernel the manifest names with a key in the firmware's db "
              "(boot/build --secure-boot-keys) or one of the kernel's built-in keys")
SIG_REFUSED = {errno.EBADMSG, getattr(errno, "EKEYREJECTED", 129),
               getattr(errno, "EKEYREVOKED", 128), getattr(errno, "ENOKEY", 126)}
REFUSED = {errno.ENOEXEC, *SIG_REFUSED}


def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def load(kernel_fd: int, initrd_fd: int, cmdline: str, *, arch: str | None = None,
         libc: Any = None) -> None:
    """Load the kernel for a later reboot(KEXEC); raise the specific error."""
    arch = arch or platform.machine()
    nr = SYS_KEXEC_FILE_LOAD.get(arch)
    if nr is None:
        raise ConfigError(f"phase-boot knows no kexec_file_load syscall for {arch}",
                          slug="kexec_unsupported", hint="x86_64 and aarch64 are supported")
    libc = libc if libc is not None else _libc()
    kfd = _uncompressed(kernel_fd) if arch == "aarch64" else kernel_fd
    cmd = cmdline.encode() + b"\0"
    try:
        rc = libc.syscall(ctypes.c_long(nr), ctypes.c_int(kfd), ctypes.c_int(initrd_fd),
                          ctypes.c_ulong(len(cmd)), ctypes.c_char_p(cmd), ctypes.c_ulong(0))
        err = ctypes.get_errno() if rc != 0 else 0
        if rc != 0 and err == errno.ENOSYS and KEXEC_TOOLS.exists():
            kexec_tools.load(kfd, initrd_fd, cmdline, kexec=str(KEXEC_TOOLS))
            return
    finally:
        if kfd != kernel_fd:
            os.close(kfd)
    if rc != 0:
        raise load_error(err, lockdown=lockdown_mode() if err == errno.EPERM else None)


def lockdown_mode(path: Path | None = None) -> str | None:
    """The kernel's lockdown mode (``integrity`` under Secure Boot), None if unknown/off."""
    try:
        text = (path if path is not None else LOCKDOWN).read_text(errors="replace")[:200]
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    mode = text[start + 1:end] if 0 <= start < end else ""
    return mode if mode and mode != "none" else None


def load_error(err: int, *, lockdown: str | None = None) -> PhaseError:
    """Our error for a kexec_file_load errno (``lockdown``: the kernel's lockdown mode)."""
    what = f"kexec_file_load failed: {os.strerror(err)} (errno {err})"
    if err == errno.EPERM and lockdown:
        # kernel/kexec_file.c: a kernel image whose signature does not verify against
        # the built-in, secondary or platform (firmware db) keyring is refused under
        # lockdown with EPERM: the image was judged, not the caller.
        return Rejected(f"{what}: kernel lockdown ({lockdown}) refused the kernel image: "
                        "it is not signed by a key the running kernel trusts",
                        slug="kexec_unsigned", hint=_SIGN_HINT)
    if err == errno.ENODATA:
        # the PE signature table is empty, and the kernel enforces signed kexec images
        # (x86 under Secure Boot: the IMA arch policy sets it; or KEXEC_SIG_FORCE)
        return Rejected(f"{what}: the running kernel refused the kernel image: it carries "
                        "no signature and this kernel requires signed kernels (Secure Boot)",
                        slug="kexec_unsigned", hint=_SIGN_HINT)
    if err == errno.EPERM:
        return ConfigError(what, slug="kexec_not_permitted",
                           hint="kexec is disabled (/proc/sys/kernel/kexec_load_disabled) or "
                                "kernel lockdown refuses it; phase-boot must run as root")
    if err == errno.ENOSYS:
        return ConfigError(what, slug="kexec_unsupported",
                           hint="this kernel was built without CONFIG_KEXEC_FILE")
    if err in SIG_REFUSED:
        return Rejected(f"{what}: the running kernel refused the kernel image's signature: "
                        "not made by a key it trusts, or not matching the image",
                        slug="kexec_refused", hint=_SIGN_HINT)
    if err in REFUSED:
        return Rejected(what, slug="kexec_refused",
                        hint="the running kernel refused the image: not a kernel for this "
                             "machine, or unsigned where signatures are enforced")
    return IOFailure(what, slug="kexec_failed")


def _uncompressed(fd: int) -> int:
    """A memfd holding the inflated image when ``fd`` is gzip'd; else ``fd`` itself."""
    if os.pread(fd, 2, 0) != b"\x1f\x8b":
        return fd
    out = os.memfd_create("phase-boot-Image", os.MFD_CLOEXEC)
    try:
        z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pos = total = 0
        while chunk := os.pread(fd, 1 << 20, pos):
            pos += len(chunk)
            data = z.decompress(chunk, MAX_IMAGE_BYTES + 1 - total)
            while data:
                total += len(data)
                if total > MAX_IMAGE_BYTES:
                    raise TooLarge(f"the kernel inflates to more than {MAX_IMAGE_BYTES} bytes")
                os.write(out, data)
                data = z.decompress(z.unconsumed_tail, MAX_IMAGE_BYTES + 1 - total)
        return out
    except BaseException:
        os.close(out)
        raise


def exec_loaded(*, libc: Any = None, loaded: Path | None = None) -> int:
    """reboot(KEXEC) into the loaded kernel. Returns only on failure (raises)."""
    loaded = loaded if loaded is not None else KEXEC_LOADED
    try:
        state = loaded.read_text().strip()
    except OSError as e:
        raise Unavailable(f"cannot read {loaded}: {e.strerror}", slug="nothing_loaded",
                          hint="is this Linux with kexec support?") from None
    if state != "1":
        raise Unavailable("no kernel is loaded for kexec", slug="nothing_loaded",
                          hint="run phase-boot --load-only first")
    libc = libc if libc is not None else _libc()
    os.sync()
    libc.reboot(ctypes.c_int(LINUX_REBOOT_CMD_KEXEC))
    err = ctypes.get_errno()
    if err == errno.EPERM:
        raise ConfigError("reboot(KEXEC) is not permitted", slug="kexec_not_permitted",
                          hint="phase-boot exec must run as root")
    raise IOFailure(f"reboot(KEXEC) returned: {os.strerror(err)} (errno {err})",
                    slug="kexec_failed")
