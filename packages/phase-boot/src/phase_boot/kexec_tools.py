"""kexec_load(2) through kexec-tools, for kernels built without kexec_file_load.

Debian 12's arm64 kernel has ``CONFIG_KEXEC_FILE`` off, so kexec_file_load(2) fails
with ENOSYS there. kexec_load(2) wants user space to lay out the segments itself (the
Image, the initramfs, a device tree whose /chosen names them, a purgatory), which is
what kexec-tools' ``kexec --kexec-syscall`` does. The bytes it loads are still the
bytes phase-boot hashed: the kernel and initramfs are copied from the very descriptors
that were hashed into memfds, sealed against any further write, and ``kexec`` reads them
as ``/proc/self/fd/N`` (descriptors it inherits), never by a path someone could swap.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess

from phase_core.errors import ConfigError, IOFailure, PhaseError, TooLarge

KEXEC_TIMEOUT_S = 120
MAX_SEGMENT_BYTES = 1 << 30
_SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL


def sealed_copy(fd: int, name: str) -> int:
    """A memfd with the whole content of ``fd`` (read from offset 0), sealed read-only."""
    out = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        pos = 0
        while chunk := os.pread(fd, 1 << 20, pos):
            pos += len(chunk)
            if pos > MAX_SEGMENT_BYTES:
                raise TooLarge(f"{name} is larger than {MAX_SEGMENT_BYTES} bytes")
            os.write(out, chunk)
        fcntl.fcntl(out, fcntl.F_ADD_SEALS, _SEALS)
        return out
    except BaseException:
        os.close(out)
        raise


def load(kernel_fd: int, initrd_fd: int, cmdline: str, *, kexec: str | None = None,
         timeout_s: float = KEXEC_TIMEOUT_S) -> None:
    """Load the kernel with ``kexec --load --kexec-syscall``; raise the specific error."""
    binary = kexec or shutil.which("kexec")
    if binary is None:
        raise ConfigError("this kernel has no kexec_file_load and no kexec binary is installed",
                          slug="kexec_unsupported",
                          hint="build the image with kexec-tools (boot/build does for aarch64) "
                               "or boot a kernel with CONFIG_KEXEC_FILE")
    kfd = sealed_copy(kernel_fd, "phase-boot-kernel")
    try:
        ifd = sealed_copy(initrd_fd, "phase-boot-initrd")
    except BaseException:
        os.close(kfd)
        raise
    try:
        cmd = [binary, "--load", "--kexec-syscall", f"/proc/self/fd/{kfd}",
               f"--initrd=/proc/self/fd/{ifd}", f"--command-line={cmdline}"]
        try:
            r = subprocess.run(cmd, pass_fds=(kfd, ifd), stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise IOFailure(f"kexec did not finish in {timeout_s:.0f} s",
                            slug="kexec_failed") from None
        except OSError as e:
            raise IOFailure(f"cannot run {binary}: {e.strerror}", slug="kexec_failed") from None
    finally:
        os.close(kfd)
        os.close(ifd)
    if r.returncode != 0:
        raise load_error(r.returncode, r.stderr.decode("utf-8", "replace"))


def load_error(code: int, stderr: str) -> PhaseError:
    """Our error for a failed ``kexec --load``: its last lines say why."""
    tail = " | ".join(ln.strip() for ln in stderr.strip().splitlines()[-3:]) or "no output"
    what = f"kexec --load exited {code}: {tail[:400]}"
    if "Operation not permitted" in stderr:
        return ConfigError(what, slug="kexec_not_permitted",
                           hint="kexec is disabled (/proc/sys/kernel/kexec_load_disabled) or "
                                "kernel lockdown refuses kexec_load; phase-boot must run as root")
    return IOFailure(what, slug="kexec_failed")
