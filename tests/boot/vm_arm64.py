"""Run the arm64 Phase Boot images under qemu-system-aarch64 (TCG) with AAVMF.

``-machine virt -cpu max,pauth-impdef=on -accel tcg``: ``max`` has every feature
wasmtime may use; ``pauth-impdef`` swaps QEMU's costly emulation of the architected
pointer-authentication hash for a cheap one (same instructions, much faster under TCG).
The firmware is Debian's AAVMF (qemu-efi-aarch64) as two pflash drives: its code,
read-only, and a fresh copy of its variable store per run. A direct kernel
(``kernel=``) is handed to the firmware by QEMU (fw_cfg) and started through the
kernel's EFI stub, so the arm64 boot is a UEFI boot in both forms, as on hardware.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.boot.vm import VMRun, watch

QEMU = "qemu-system-aarch64"
AAVMF_CODE = Path("/usr/share/AAVMF/AAVMF_CODE.fd")
AAVMF_VARS = Path("/usr/share/AAVMF/AAVMF_VARS.fd")
CONSOLE = "ttyAMA0"
TOOLS = (QEMU, "aarch64-linux-gnu-objcopy", "qemu-img", "mcopy", "mkfs.vfat", "sgdisk",
         "mkfs.ext4", "debugfs", "cpio", "zstd", "readelf", "modprobe", "depmod", "apt-get",
         "timeout", "busybox")


def tools_missing() -> list[str]:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    missing += [f"{p} (qemu-efi-aarch64)" for p in (AAVMF_CODE, AAVMF_VARS) if not p.exists()]
    return missing


def run(log_path: Path, *, kernel: Path | None = None, initrd: Path | None = None,
        append: str | None = "", disk: Path | None = None, until: str | None = None,
        timeout_s: float = 600, memory_mib: int = 1536, net: str = "user") -> VMRun:
    """Boot once under AAVMF; return when ``until`` appears, QEMU exits, or the deadline."""
    vars_copy = log_path.with_suffix(".vars.fd")
    shutil.copyfile(AAVMF_VARS, vars_copy)
    args = [QEMU, "-machine", "virt", "-cpu", "max,pauth-impdef=on", "-accel", "tcg",
            "-m", str(memory_mib), "-smp", "1", "-display", "none", "-no-reboot",
            "-nodefaults", "-serial", "stdio", "-monitor", "none",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={AAVMF_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
    if kernel is not None:  # append=None: no -append (a UKI brings its own cmdline)
        args += ["-kernel", str(kernel)]
        if append is not None:
            args += ["-append", f"console={CONSOLE} panic=-1 quiet {append}"]
        if initrd is not None:
            args += ["-initrd", str(initrd)]
    if disk is not None:
        args += ["-drive", f"file={disk},if=virtio,format=raw,cache=writeback"]
    if net == "user":
        args += ["-nic", "user,model=virtio-net-pci"]
    else:
        args += ["-nic", "none"]
    try:
        return watch(args, log_path, until=until, timeout_s=timeout_s)
    finally:
        os.unlink(vars_copy)
