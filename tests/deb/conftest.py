"""The Debian package test: build the packages twice (an install and an upgrade),
boot the cached Debian 12 image under QEMU TCG and drive it through its agent.

Without the tools (.ci/apt-packages.txt) the tests skip, naming what is missing;
under CI=true they fail: CI must run them.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, script
from tests.deb.vm import VM, tools_missing

BUILD = ROOT / "packaging" / "deb" / "build"
IMAGE = ROOT / "packaging" / "deb" / "vm" / "build-image"
V1, V2 = "0.1.0-1~vmtest1", "0.1.0-1~vmtest2"
TIMES: dict[str, float] = {}
LINTIAN: list[subprocess.Popen[str]] = []


def require_tools() -> None:
    missing = tools_missing()
    if not missing:
        return
    msg = f"package test tools missing: {', '.join(missing)} (see .ci/apt-packages.txt)"
    if os.environ.get("CI") == "true":
        pytest.fail(msg + "; CI must run the package test", pytrace=False)
    pytest.skip(msg)


def timed(name: str, start: float) -> None:
    TIMES[name] = time.monotonic() - start
    print(f"deb-test: {name} took {TIMES[name]:.1f} s", flush=True)


def _env() -> dict[str, str]:
    return dict(os.environ, PHASE_BOOT_SKIP_SETUP="1")


@dataclass
class Debs:
    disk: Path
    v1: Path


@pytest.fixture(scope="session")
def debs(tmp_path_factory: pytest.TempPathFactory) -> Debs:
    require_tools()
    tmp = tmp_path_factory.mktemp("debs")
    start = time.monotonic()
    # the second build packs the same tree as a higher version (the upgrade); lintian
    # runs later, beside the VM's boot (test_lintian_is_clean)
    r = subprocess.run([str(BUILD), f"--version={V1}", f"--out={tmp / 'disk' / 'v1'}",
                        f"--also={V2}:{tmp / 'disk' / 'v2'}", "--no-lintian"],
                       capture_output=True, text=True, env=_env(), timeout=900)
    print(r.stderr[-4000:], flush=True)
    assert r.returncode == 0, f"packaging/deb/build failed ({r.returncode}): {r.stderr[-4000:]}"
    timed("build v1 and v2", start)
    disk = tmp / "debs.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tmp / "disk"), str(disk), "96M"],
                   check=True, capture_output=True)
    return Debs(disk, tmp / "disk" / "v1")


@pytest.fixture(scope="session")
def image() -> Path:
    require_tools()
    start = time.monotonic()
    r = subprocess.run([str(IMAGE)], capture_output=True, text=True, env=_env(), timeout=900)
    assert r.returncode == 0, f"build-image failed: {r.stderr[-4000:]}"
    timed("VM image (cached after the first run)", start)
    return Path(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def vm(debs: Debs, image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VM]:
    start = time.monotonic()
    machine = VM(image, tmp_path_factory.mktemp("vm"), [debs.disk])
    LINTIAN.append(subprocess.Popen(  # on the other core while the VM boots
        ["lintian", "--profile=debian", "--display-level", ">=info", "--fail-on",
         "error,warning", *sorted(str(p) for p in debs.v1.glob("*.deb"))],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        machine.wait_booted()
        machine.ok("systemctl is-system-running --wait || true; mkdir -p /mnt/debs && "
                   "mount -o ro /dev/vdb /mnt/debs", 240)
        timed("boot", start)
        yield machine
    finally:
        machine.close()
        print("deb-test: step times: " + ", ".join(f"{k} {v:.0f} s" for k, v in TIMES.items()),
              flush=True)


@dataclass
class Client:
    home: Path
    public: str


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Client:
    import json

    home = tmp_path_factory.mktemp("client") / "home"
    subprocess.run([script("plasmd"), "init", "-q", f"--home={home}"], check=True, timeout=60)
    r = subprocess.run([script("phase-key"), "show", f"--key={home / 'key'}"],
                       capture_output=True, text=True, check=True, timeout=60)
    return Client(home, json.loads(r.stdout)["key"])
