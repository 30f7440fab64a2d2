"""Run Phase Boot images under QEMU (TCG) and watch the serial console for markers.

Every run: ``-accel tcg -cpu max`` (wasmtime needs SSE4.1; KVM hangs on this kind of
machine), ``-no-reboot`` with ``panic=-1`` on direct-kernel command lines, a host-side
``timeout`` around QEMU and a poll loop that kills it at the deadline or as soon as
the awaited marker appears. Nothing is left running.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

QEMU = "qemu-system-x86_64"
OVMF_CANDIDATES = ("/usr/share/ovmf/OVMF.fd", "/usr/share/qemu/OVMF.fd")
HOST_FROM_GUEST = "10.0.2.2"


@dataclass
class VMRun:
    log: str
    seconds: float
    matched: bool
    exit_code: int | None
    log_path: Path

    def markers(self) -> list[str]:
        return [ln.strip() for ln in self.log.splitlines() if "PHASE-" in ln]

    def explain(self) -> str:
        tail = "\n".join(self.log.splitlines()[-40:])
        return (f"after {self.seconds:.1f} s (qemu exit {self.exit_code}); "
                f"log {self.log_path}; last lines:\n{tail}")


def ovmf() -> str | None:
    return next((p for p in OVMF_CANDIDATES if os.path.exists(p)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(log_path: Path, *, kernel: Path | None = None, initrd: Path | None = None,
        append: str = "", disk: Path | None = None, disk_readonly: bool = False,
        uefi: bool = False, until: str | None = None, timeout_s: float = 120,
        memory_mib: int = 1024, net: str = "user", extra: list[str] | None = None,
        wrap: list[str] | None = None) -> VMRun:
    """Boot once; return when ``until`` (a regex) appears, QEMU exits, or the deadline."""
    args = [QEMU, "-accel", "tcg", "-cpu", "max", "-m", str(memory_mib), "-smp", "1",
            "-display", "none", "-no-reboot", "-nodefaults", "-serial", "stdio",
            "-monitor", "none"]
    if kernel is not None:
        args += ["-kernel", str(kernel), "-append", f"console=ttyS0 panic=-1 quiet {append}"]
        if initrd is not None:
            args += ["-initrd", str(initrd)]
    if uefi:
        fw = ovmf()
        assert fw, "OVMF is not installed (Debian package ovmf)"
        args += ["-bios", fw]
    if disk is not None:
        ro = ",readonly=on" if disk_readonly else ""
        args += ["-drive", f"file={disk},if=virtio,format=raw,cache=writeback{ro}"]
    if net == "user":
        args += ["-nic", "user,model=virtio-net-pci"]
    elif net == "none":
        args += ["-nic", "none"]
    else:  # a tap device name (inside the caller's network namespace)
        args += ["-netdev", f"tap,id=n0,ifname={net},script=no,downscript=no",
                 "-device", "virtio-net-pci,netdev=n0"]
    args += extra or []
    return watch(args, log_path, until=until, timeout_s=timeout_s, wrap=wrap)


def watch(args: list[str], log_path: Path, *, until: str | None, timeout_s: float,
          wrap: list[str] | None = None) -> VMRun:
    """Run a QEMU command line under ``timeout``; stop at ``until``, its exit or the deadline."""
    cmd = [*(wrap or []), "timeout", "--kill-after=5", str(int(timeout_s) + 5), *args]
    pattern = re.compile(until) if until else None
    start = time.monotonic()
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    matched = False
    try:
        while True:
            code = proc.poll()
            text = log_path.read_bytes().decode("utf-8", "replace")
            if pattern is not None and pattern.search(text):
                matched = True
                break
            if code is not None:
                break
            if time.monotonic() - start > timeout_s:
                break
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    seconds = time.monotonic() - start
    text = log_path.read_bytes().decode("utf-8", "replace").replace("\r", "")
    return VMRun(text, seconds, matched, proc.returncode, log_path)


def tools_missing() -> list[str]:
    need = [QEMU, "qemu-img", "mcopy", "mkfs.vfat", "sgdisk", "mkfs.ext4", "cpio", "zstd",
            "readelf", "objcopy", "modprobe", "depmod", "apt-get", "timeout"]
    missing = [t for t in need if shutil.which(t) is None]
    if ovmf() is None:
        missing.append("ovmf")
    return missing
