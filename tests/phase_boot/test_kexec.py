"""The syscall layer with a stand-in libc: what reaches kexec_file_load, and errno mapping."""

from __future__ import annotations

import ctypes
import errno
import gzip
import os
from pathlib import Path
from typing import Any

import pytest

from phase_boot import kexec
from tests.phase_boot.conftest import INITRAMFS, KERNEL, Boot


class FakeLibc:
    """Records what the kernel would have read from the descriptors; fails on request."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.loaded: dict[str, Any] | None = None
        self.rebooted: list[int] = []

    def syscall(self, nr: Any, kfd: Any, ifd: Any, n: Any, cmd: Any, flags: Any) -> int:
        if self.fail:
            ctypes.set_errno(self.fail)
            return -1
        self.loaded = {"nr": nr.value, "kernel": os.pread(kfd.value, 1 << 20, 0),
                       "initramfs": os.pread(ifd.value, 1 << 20, 0),
                       "cmdline": ctypes.string_at(cmd, n.value), "flags": flags.value}
        return 0

    def reboot(self, cmd: Any) -> int:
        self.rebooted.append(cmd.value)
        ctypes.set_errno(errno.EINVAL)
        return -1


@pytest.fixture
def libc(monkeypatch: pytest.MonkeyPatch) -> FakeLibc:
    fake = FakeLibc()
    monkeypatch.setattr(kexec, "_libc", lambda: fake)
    return fake


def test_load_only_hands_the_checked_bytes_to_the_kernel(bt: Boot, libc: FakeLibc,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    from phase_boot import plan

    bt.files()
    bt.manifest()
    real = plan.open_checked

    def swap_after_hashing(name: str, art: dict[str, Any], blobs: Any) -> Any:
        f = real(name, art, blobs)
        # someone replaces the file after the check: the kernel must still get the old bytes
        Path(f.path).unlink()
        Path(f.path).write_bytes(b"evil " + name.encode())
        return f

    monkeypatch.setattr(plan, "open_checked", swap_after_hashing)
    r = bt.run("--load-only", "--mode=local")
    assert r.code == 0, r.err
    assert r.records[-1]["loaded"] is True and r.records[-1]["dry_run"] is False
    assert libc.loaded is not None
    assert libc.loaded["nr"] == 320 and libc.loaded["flags"] == 0
    assert libc.loaded["kernel"] == KERNEL and libc.loaded["initramfs"] == INITRAMFS
    assert libc.loaded["cmdline"] == b"console=ttyS0 phase.mode=local phase.channel=stable\0"
    assert libc.rebooted == []  # --load-only


def test_without_load_only_it_reboots_into_the_kernel(bt: Boot, libc: FakeLibc,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    flag = bt.dir / "kexec_loaded"
    flag.write_text("1\n")
    monkeypatch.setattr(kexec, "KEXEC_LOADED", flag)
    bt.files()
    bt.manifest()
    r = bt.run("--load-only")  # load first, as /init does
    assert r.code == 0
    from phase_boot import cli

    r = bt.runner(cli, ["exec"])
    # the stand-in reboot returns, which a real one never does: an I/O error, loudly
    assert libc.rebooted == [kexec.LINUX_REBOOT_CMD_KEXEC]
    assert r.code == 74 and "kexec_failed" in r.error_slugs


def test_exec_without_a_loaded_kernel_is_unavailable(tmp_path: Path, libc: FakeLibc) -> None:
    flag = tmp_path / "kexec_loaded"
    flag.write_text("0\n")
    with pytest.raises(Exception) as e:
        kexec.exec_loaded(libc=libc, loaded=flag)
    assert getattr(e.value, "exit_code", None) == 69 and libc.rebooted == []


@pytest.mark.parametrize("err,code,slug", [
    (errno.EPERM, 78, "kexec_not_permitted"), (errno.ENOSYS, 78, "kexec_unsupported"),
    (errno.ENOEXEC, 1, "kexec_refused"), (129, 1, "kexec_refused"),
    (errno.ENODATA, 1, "kexec_unsigned"),
    (errno.ENOMEM, 74, "kexec_failed")])
def test_load_errors_are_named(bt: Boot, monkeypatch: pytest.MonkeyPatch, err: int, code: int,
                               slug: str) -> None:
    monkeypatch.setattr(kexec, "_libc", lambda: FakeLibc(fail=err))
    monkeypatch.setattr(kexec, "KEXEC_TOOLS", bt.dir / "no-kexec")  # no fallback here
    lockdown = bt.dir / "lockdown"
    lockdown.write_text("[none] integrity confidentiality\n")  # not the host's
    monkeypatch.setattr(kexec, "LOCKDOWN", lockdown)
    bt.files()
    bt.manifest()
    keep, summary = bt.dir / "keep.json", bt.dir / "summary.txt"
    r = bt.run("--load-only", f"--keep={keep}", f"--summary={summary}")
    assert r.code == code and slug in r.error_slugs
    assert not keep.exists()  # nothing loaded, nothing kept as "last booted"
    assert summary.read_text().startswith(f"{slug}: kexec_file_load failed")


@pytest.mark.parametrize("mode", ["integrity", "confidentiality"])
def test_eperm_under_lockdown_is_an_unsigned_kernel(bt: Boot, monkeypatch: pytest.MonkeyPatch,
                                                    mode: str) -> None:
    """Under lockdown the kernel refuses an image it cannot verify with EPERM."""
    monkeypatch.setattr(kexec, "_libc", lambda: FakeLibc(fail=errno.EPERM))
    lockdown = bt.dir / "lockdown"
    lockdown.write_text(" ".join(f"[{m}]" if m == mode else m
                                 for m in ("none", "integrity", "confidentiality")) + "\n")
    monkeypatch.setattr(kexec, "LOCKDOWN", lockdown)
    bt.files()
    bt.manifest()
    summary = bt.dir / "summary.txt"
    r = bt.run("--load-only", f"--summary={summary}")
    assert r.code == 1 and "kexec_unsigned" in r.error_slugs
    assert f"kernel lockdown ({mode}) refused" in summary.read_text()


def test_lockdown_mode_reads_the_bracketed_word(tmp_path: Path) -> None:
    f = tmp_path / "lockdown"
    assert kexec.lockdown_mode(f) is None  # no securityfs: unknown
    f.write_text("[none] integrity confidentiality\n")
    assert kexec.lockdown_mode(f) is None
    f.write_text("none [integrity] confidentiality\n")
    assert kexec.lockdown_mode(f) == "integrity"


def test_unknown_arch_has_no_syscall(libc: FakeLibc) -> None:
    with pytest.raises(Exception) as e:
        kexec.load(0, 0, "", arch="riscv64", libc=libc)
    assert getattr(e.value, "slug", None) == "kexec_unsupported"


def test_arm64_gets_an_inflated_image(tmp_path: Path, libc: FakeLibc) -> None:
    image = os.urandom(3000) * 100
    k = tmp_path / "vmlinuz"
    k.write_bytes(gzip.compress(image))
    i = tmp_path / "initrd"
    i.write_bytes(b"initrd")
    kfd, ifd = os.open(k, os.O_RDONLY), os.open(i, os.O_RDONLY)
    try:
        kexec.load(kfd, ifd, "console=ttyAMA0", arch="aarch64", libc=libc)
    finally:
        os.close(kfd)
        os.close(ifd)
    assert libc.loaded is not None and libc.loaded["nr"] == 294
    assert libc.loaded["kernel"] == image[: 1 << 20]


def test_arm64_inflation_is_capped(tmp_path: Path, libc: FakeLibc,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kexec, "MAX_IMAGE_BYTES", 1 << 16)
    k = tmp_path / "vmlinuz"
    k.write_bytes(gzip.compress(bytes(1 << 20)))
    fd = os.open(k, os.O_RDONLY)
    try:
        with pytest.raises(Exception) as e:
            kexec.load(fd, fd, "", arch="aarch64", libc=libc)
    finally:
        os.close(fd)
    assert getattr(e.value, "slug", None) == "too_large" and libc.loaded is None
