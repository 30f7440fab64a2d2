"""boot/write-usb refusals and boot/release (checksums and a signed boot manifest)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.boot.conftest import BOOT, Built

WRITE_USB = str(BOOT / "write-usb")


def test_write_usb_refuses_a_file_that_is_not_a_block_device(tmp_path: Path) -> None:
    image = tmp_path / "img"
    image.write_bytes(b"phase" * 1000)
    target = tmp_path / "not-a-disk"
    target.write_bytes(b"keep me")
    r = subprocess.run([WRITE_USB, "--yes", f"--image={image}", str(target)],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 1 and "not a block device" in r.stderr
    assert target.read_bytes() == b"keep me"


def test_write_usb_force_overrides_and_checks_what_it_wrote(tmp_path: Path) -> None:
    image = tmp_path / "img"
    image.write_bytes(os.urandom(1 << 20))
    target = tmp_path / "stick"
    target.write_bytes(b"")
    r = subprocess.run([WRITE_USB, "--yes", "--force", f"--image={image}", str(target)],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert "WARNING (--force)" in r.stderr and target.read_bytes() == image.read_bytes()


def test_write_usb_usage_and_missing_things(tmp_path: Path) -> None:
    assert subprocess.run([WRITE_USB], capture_output=True, check=False).returncode == 64
    image = tmp_path / "img"
    image.write_bytes(b"x")
    r = subprocess.run([WRITE_USB, "--yes", f"--image={image}", str(tmp_path / "nope")],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 66
    r = subprocess.run([WRITE_USB, "--yes", f"--image={tmp_path / 'none'}", "/dev/null"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 66


def test_release_signs_a_manifest_the_image_trusts(built: Built, tmp_path: Path) -> None:
    rel = tmp_path / "release"
    r = subprocess.run([str(BOOT / "release"), f"--dir={rel}", "--mirror=http://m.example"],
                       capture_output=True, text=True, check=False,
                       env={**os.environ, "PHASE_BOOT_OUT": str(built.out),
                            "PHASE_BOOT_SKIP_SETUP": "1"})
    assert r.returncode == 0, r.stderr
    assert "DEVELOPMENT keys" in r.stderr
    sums = (rel / "SHA256SUMS").read_text()
    assert "initramfs.img" in sums and "phase-boot.img" in sums
    env = json.loads((rel / "boot-manifest.json").read_text())
    assert env == json.loads((rel / "manifests/stable/x86_64/manifest.json").read_text())
    v = subprocess.run([str(Path(os.environ.get("VIRTUAL_ENV", BOOT.parent / ".venv"))
                            / "bin" / "phase-verify"), f"--keys={built.keyring}",
                        str(rel / "boot-manifest.json")], capture_output=True, text=True,
                       check=False)
    assert v.returncode == 0, v.stderr
    rec = json.loads(v.stdout)
    assert rec["body"]["mirrors"] == ["http://m.example"] and rec["body"]["version"] == 1
    assert "phase.stage=node" in rec["body"]["cmdline"]
    # a second release bumps the version
    subprocess.run([str(BOOT / "release"), f"--dir={rel}"], capture_output=True, check=True,
                   env={**os.environ, "PHASE_BOOT_OUT": str(built.out),
                        "PHASE_BOOT_SKIP_SETUP": "1"})
    assert json.loads((rel / "boot-manifest.json").read_text())["body"]["version"] == 2
