"""Fixtures for the Phase Boot tests: the built images, signing keys, a boot provider.

The QEMU tests need the boot toolchain (.ci/apt-packages.txt). Without it they skip
with the missing tools named, except under CI=true, where they fail: CI must run them.
The images are built by boot/build when missing or older than their sources.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.boot import vm

ROOT = Path(__file__).resolve().parents[2]
BOOT = ROOT / "boot"
OUT = Path(os.environ.get("PHASE_BOOT_OUT", BOOT / "out"))
CHANNEL, ARCH = "stable", "x86_64"


def require_toolchain() -> None:
    missing = vm.tools_missing()
    if not missing:
        return
    msg = (f"boot toolchain missing: {', '.join(missing)} (install the packages in "
           ".ci/apt-packages.txt)")
    if os.environ.get("CI") == "true":
        pytest.fail(msg + "; CI must run the boot tests", pytrace=False)
    pytest.skip(msg)


def _sources() -> Iterator[Path]:
    for p in ("build", "init"):
        yield BOOT / p
    for d in ("lib", "initramfs"):
        yield from (BOOT / d).iterdir()
    for pkg in (ROOT / "packages").iterdir():
        yield pkg / "pyproject.toml"
        yield from (pkg / "src").rglob("*.py")


def _stale(info: Path, out: Path = OUT) -> str | None:
    if not info.exists():
        return "no build yet"
    built = info.stat().st_mtime
    for src in _sources():
        if src.exists() and src.stat().st_mtime > built:
            return f"{src.relative_to(ROOT)} changed"
    if not (out / "keys" / "dev-signer-1.key").exists():
        return "no development keys"
    return None


@dataclass
class Built:
    out: Path
    kernel: Path
    initramfs: Path
    stage2: Path
    disk: Path
    keys: list[Path]
    keyring: Path
    info: dict[str, Any]


@pytest.fixture(scope="session")
def built() -> Built:
    require_toolchain()
    return build_if_stale(OUT)


def build_if_stale(out: Path, *args: str) -> Built:
    """boot/build ARGS into OUT when it is missing or older than its sources."""
    info = out / "build-info.json"
    why = _stale(info, out)
    if why is not None:
        log = out.parent / "build.log" if out.parent.exists() else Path("/tmp/phase-boot-build.log")
        start = time.monotonic()
        with open(log, "wb") as f:
            r = subprocess.run([str(BOOT / "build"), *args], stdout=f, stderr=subprocess.STDOUT,
                               env={**os.environ, "PHASE_BOOT_OUT": str(out)}, check=False)
        if r.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            pytest.fail(f"boot/build failed ({why}; exit {r.returncode}); log {log}:\n{tail}",
                        pytrace=False)
        BUILD_SECONDS.append(time.monotonic() - start)
    return Built(out=out, kernel=out / "vmlinuz", initramfs=out / "initramfs.img",
                 stage2=out / "stage2-marker.img", disk=out / "phase-boot.img",
                 keys=sorted((out / "keys").glob("dev-signer-*.key")),
                 keyring=out / "keys" / "keyring.toml", info=json.loads(info.read_text()))


class Provider:
    """A boot provider on the host, reachable from QEMU guests at 10.0.2.2:<port>."""

    def __init__(self, tmp: Path) -> None:
        from phase_core.cas import ContentStore
        from plasmd.provider import serve

        self.dir = tmp
        self.cas = ContentStore(tmp / "cas")
        self.manifests = tmp / "manifests"
        self.manifests.mkdir(parents=True, exist_ok=True)
        self.server = serve(self.cas, self.manifests, "127.0.0.1", 0)
        self.port = self.server.server_address[1]
        self.guest_url = f"http://{vm.HOST_FROM_GUEST}:{self.port}"

    def publish(self, env: dict[str, Any], channel: str = CHANNEL, arch: str = ARCH) -> None:
        dest = self.manifests / channel / arch / "manifest.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(env))

    def add(self, path: Path) -> dict[str, Any]:
        cid = self.cas.put_file(path)
        return {"id": cid, "size": path.stat().st_size}

    def close(self) -> None:
        self.server.stop()


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[Provider]:
    p = Provider(tmp_path / "provider")
    try:
        yield p
    finally:
        p.close()


def body(prov: Provider, kernel: Path, initramfs: Path, cmdline: str, *, version: int = 1,
         now: int | None = None, lifetime_s: int = 3600,
         mirrors: list[str] | None = None) -> dict[str, Any]:
    from phase_core import boot

    return boot.build(channel=CHANNEL, arch=ARCH, version=version,
                      now=int(time.time()) if now is None else now, lifetime_s=lifetime_s,
                      kernel=prov.add(kernel), initramfs=prov.add(initramfs),
                      cmdline=cmdline, mirrors=mirrors or [prov.guest_url])


def sign(b: dict[str, Any], keys: list[Path]) -> dict[str, Any]:
    from phase_core import envelope, identity

    return envelope.sign("boot_manifest", b, [identity.load(k) for k in keys])


# -- on-demand tests: deselected unless PHASE_BOOT_ON_DEMAND=1 (boot/README.md) ------
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "on_demand: a slow boot test run only with "
                                       "PHASE_BOOT_ON_DEMAND=1 (boot/README.md)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("PHASE_BOOT_ON_DEMAND") == "1":
        return
    drop = [i for i in items if i.get_closest_marker("on_demand")]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = [i for i in items if not i.get_closest_marker("on_demand")]


# -- boot/test prints each test with its time (PHASE_BOOT_TIMES=1) -----------------
_TIMES: dict[str, float] = {}
_OUTCOMES: dict[str, str] = {}
BUILD_SECONDS: list[float] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _TIMES[report.nodeid] = _TIMES.get(report.nodeid, 0.0) + report.duration
    if report.when == "call" or report.outcome != "passed":
        _OUTCOMES[report.nodeid] = report.outcome


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if os.environ.get("PHASE_BOOT_TIMES") != "1" or not _TIMES:
        return
    tr = terminalreporter
    tr.section("Phase Boot tests (wall time each, fixtures included)")
    if BUILD_SECONDS:
        tr.write_line(f"{'boot/build':<78} {BUILD_SECONDS[0]:7.1f} s")
    for nodeid, secs in _TIMES.items():
        name = nodeid.split("tests/boot/", 1)[-1]
        tr.write_line(f"{name:<70} {_OUTCOMES.get(nodeid, '?'):>7} {secs:7.1f} s")
    tr.write_line(f"{'total':<78} {sum(_TIMES.values()):7.1f} s")
