"""kexec_load through kexec-tools when the kernel has no kexec_file_load (ENOSYS).

A stub ``kexec`` stands in for kexec-tools: it records its arguments and the bytes it
reads from the descriptors it is handed, and tries to write to them.
"""

from __future__ import annotations

import errno
import gzip
import os
from pathlib import Path

import pytest

from phase_boot import kexec, kexec_tools
from tests.phase_boot.conftest import INITRAMFS, KERNEL, Boot
from tests.phase_boot.test_kexec import FakeLibc

STUB = """#!/bin/sh
out={out}
for a in "$@"; do
    case "$a" in
        --initrd=*) cp "${{a#--initrd=}}" "$out/initrd" ;;
        --command-line=*) printf '%s' "${{a#--command-line=}}" > "$out/cmdline" ;;
        /proc/self/fd/*) cp "$a" "$out/kernel"
                         if printf x >> "$a" 2>/dev/null; then : > "$out/writable"; fi ;;
    esac
done
printf '%s\\n' "$@" > "$out/argv"
{tail}
"""


def stub(tmp: Path, tail: str = "exit 0") -> Path:
    out = tmp / "seen"
    out.mkdir()
    p = tmp / "kexec"
    p.write_text(STUB.format(out=out, tail=tail))
    p.chmod(0o755)
    return p


def test_no_kexec_file_load_falls_back_to_kexec_tools(bt: Boot,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kexec, "_libc", lambda: FakeLibc(fail=errno.ENOSYS))
    monkeypatch.setattr(kexec, "KEXEC_TOOLS", stub(bt.dir))
    bt.files()
    bt.manifest()
    r = bt.run("--load-only")
    assert r.code == 0, r
    seen = bt.dir / "seen"
    assert (seen / "kernel").read_bytes() == KERNEL
    assert (seen / "initrd").read_bytes() == INITRAMFS
    argv = (seen / "argv").read_text().splitlines()
    assert argv[:2] == ["--load", "--kexec-syscall"]  # kexec_load(2), never a path swap
    assert not (seen / "writable").exists(), "kexec got a writable copy"
    assert r.types[-1] == "kexec"


def test_arm64_fallback_gets_the_inflated_image(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kexec, "KEXEC_TOOLS", stub(tmp_path))
    image = os.urandom(5000)
    k, i = tmp_path / "vmlinuz", tmp_path / "initrd"
    k.write_bytes(gzip.compress(image))
    i.write_bytes(b"initrd")
    kfd, ifd = os.open(k, os.O_RDONLY), os.open(i, os.O_RDONLY)
    try:
        kexec.load(kfd, ifd, "console=ttyAMA0", arch="aarch64",
                   libc=FakeLibc(fail=errno.ENOSYS))
    finally:
        os.close(kfd)
        os.close(ifd)
    assert (tmp_path / "seen" / "kernel").read_bytes() == image
    assert (tmp_path / "seen" / "cmdline").read_text() == "console=ttyAMA0"


@pytest.mark.parametrize("tail,code,slug", [
    ("echo 'kexec_load failed: Operation not permitted' >&2; exit 1", 78,
     "kexec_not_permitted"),
    ("echo 'Could not find a free area of memory' >&2; exit 255", 74, "kexec_failed")])
def test_kexec_tools_failures_are_named(bt: Boot, monkeypatch: pytest.MonkeyPatch, tail: str,
                                        code: int, slug: str) -> None:
    monkeypatch.setattr(kexec, "_libc", lambda: FakeLibc(fail=errno.ENOSYS))
    monkeypatch.setattr(kexec, "KEXEC_TOOLS", stub(bt.dir, tail))
    bt.files()
    bt.manifest()
    summary = bt.dir / "summary.txt"
    r = bt.run("--load-only", f"--summary={summary}")
    assert r.code == code and slug in r.error_slugs
    assert summary.read_text().startswith(f"{slug}: kexec --load exited")


def test_sealed_copy_cannot_be_changed(tmp_path: Path) -> None:
    f = tmp_path / "blob"
    f.write_bytes(b"abc" * 1000)
    fd = os.open(f, os.O_RDONLY)
    try:
        m = kexec_tools.sealed_copy(fd, "t")
    finally:
        os.close(fd)
    try:
        assert os.pread(m, 10, 0) == b"abcabcabca"
        with pytest.raises(PermissionError):
            os.pwrite(m, b"x", 0)
    finally:
        os.close(m)
