"""Phase Boot on arm64: qemu-system-aarch64 -machine virt, TCG, AAVMF (UEFI).

CI runs one boot (``node_run``), boot/README.md's arm64 quickstart run as written: the
arm64 initramfs under AAVMF in local mode finds the host provider, verifies, fetches and
kexecs into the node image (the same initramfs with ``phase.stage=node``), which runs
the hello job on its plasmd and writes the receipt to the cache partition; the host's
phase-verify then checks that receipt against the node's key read from the disk.
The other arm64 boots are marked ``on_demand`` (deselected
unless PHASE_BOOT_ON_DEMAND=1; boot/README.md has the commands and times).

Debian 12's arm64 kernel has no kexec_file_load, so the kexec here is phase-boot's
kexec_load fallback through kexec-tools (packages/phase-boot/src/phase_boot/kexec_tools.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.boot import quickstart, vm_arm64
from tests.boot.conftest import BOOT, ROOT, Built, build_if_stale
from tests.boot.test_qemu import log_path, parallel

pytestmark = pytest.mark.slow

ARCH = "aarch64"
OUT = Path(os.environ.get("PHASE_BOOT_OUT_AARCH64", BOOT / "out" / "aarch64"))
# TCG on arm64 is slow: a longer discovery deadline than x86_64's, still bounded
CHAIN = "phase.rescue=poweroff phase.retries=2 phase.discover_timeout=30"
# the quickstart block: build, release, provider, then the boot; bounded
QUICKSTART_TIMEOUT_S = 1200
QUICKSTART_OUT = BOOT / "out" / "aarch64"  # the block's paths
QUICKSTART_DISK = Path("/tmp/arm64-disk.img")  # the block's copy of the disk


def require_arm64_tools() -> None:
    missing = vm_arm64.tools_missing()
    if missing:
        msg = (f"arm64 boot toolchain missing: {', '.join(missing)} (install the packages "
               "in .ci/apt-packages.txt)")
        if os.environ.get("CI") == "true":
            pytest.fail(msg + "; CI must run the arm64 boot tests", pytrace=False)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def built64() -> Built:
    require_arm64_tools()
    return build_if_stale(OUT, f"--arch={ARCH}")


@pytest.fixture(scope="module")
def node_run() -> dict[str, Any]:
    """The CI boot: boot/README.md's arm64 quickstart run with ``sh`` as written
    (tests/boot/quickstart.py): apt-get, boot/build, boot/release, the provider on 8080,
    AAVMF and QEMU in local mode; the chain kexecs into the node image, which runs the
    hello job on its plasmd, writes the receipt to the cache partition and powers off."""
    require_arm64_tools()
    assert str(QUICKSTART_DISK) in quickstart.block("arm64")
    r = quickstart.run("arm64", log_path("arm64-quickstart"),
                       until=r"PHASE-BOOT poweroff|PHASE-BOOT rescue[^\n]*\n|Kernel panic",
                       timeout_s=QUICKSTART_TIMEOUT_S)
    assert r.matched, r.explain()
    assert not r.left_running, f"still running after the kill: {r.left_running}"
    assert quickstart.port_free(r.port), f"port {r.port} still held after the run"
    env = json.loads((QUICKSTART_OUT / "release" / "boot-manifest.json").read_text())
    print(f"arm64 quickstart (substitutions: {r.substitutions or 'none'}): build, release, "
          f"discover → verify → fetch → kexec → node → hello in {r.seconds:.1f} s")
    return {"run": r, "disk": QUICKSTART_DISK, "version": env["body"]["version"]}


def test_arm64_chain_discover_verify_fetch_kexec(node_run: dict[str, Any]) -> None:
    r = node_run["run"]
    marks = r.markers()
    order = [f"PHASE-BOOT init mode=local stage=boot channel=stable arch={ARCH}",
             "PHASE-BOOT net up", "PHASE-BOOT discover ok",
             f"PHASE-BOOT loaded version={node_run['version']}", "PHASE-BOOT kexec",
             f"PHASE-BOOT init mode=local stage=node channel=stable arch={ARCH}"]
    idx = [next((i for i, m in enumerate(marks) if m.startswith(o)), -1) for o in order]
    assert -1 not in idx and idx == sorted(idx), (idx, r.explain())
    assert not any(m.startswith("PHASE-BOOT rescue") for m in marks), r.explain()


def _cache_partition(disk: Path, dest: Path) -> Path:
    """Copy partition 2 (PHASECACHE) of a GPT disk image out, for debugfs."""
    info = subprocess.run(["sgdisk", "-i", "2", str(disk)], capture_output=True, text=True,
                          check=True).stdout
    first = int(re.search(r"First sector: (\d+)", info).group(1))  # type: ignore[union-attr]
    last = int(re.search(r"Last sector: (\d+)", info).group(1))  # type: ignore[union-attr]
    subprocess.run(["dd", f"if={disk}", f"of={dest}", "bs=512", f"skip={first}",
                    f"count={last - first + 1}", "status=none"], check=True)
    return dest


def _dump(part: Path, src: str, dest: Path) -> Path:
    subprocess.run(["debugfs", "-R", f"dump -p {src} {dest}", str(part)], capture_output=True,
                   check=True)
    assert dest.exists() and dest.stat().st_size > 0, f"{src} is not on the cache partition"
    return dest


def _host_verify(receipt: Path, key: Path, keyring: Path) -> subprocess.CompletedProcess[str]:
    bin_ = ROOT / ".venv" / "bin"
    subprocess.run([str(bin_ / "phase-key"), "trust", "-q", f"--keyring={keyring}",
                    "--name=arm64-node", "--role=worker", f"--key={key}"], check=True)
    return subprocess.run([str(bin_ / "phase-verify"), f"--keys={keyring}", "--type=receipt",
                           str(receipt)], capture_output=True, text=True, check=False)


def test_arm64_hello_job_receipt_verified_by_host(node_run: dict[str, Any],
                                                  tmp_path: Path) -> None:
    from phase_core import identity

    r = node_run["run"]
    marks = r.markers()
    assert "PHASE-BOOT hello stdout=dlroW ,olleH" in marks, r.explain()
    assert "PHASE-BOOT hello via=plasmd" in marks, r.explain()  # a real job on the node
    assert any(m.startswith("PHASE-BOOT receipt verified") for m in marks), r.explain()
    part = _cache_partition(node_run["disk"], tmp_path / "cache.ext4")
    ls = subprocess.run(["debugfs", "-R", "ls /phase/receipts", str(part)],
                        capture_output=True, text=True, check=True).stdout
    names = re.findall(r"hello-[0-9T]+\.json", ls)
    assert names, ls
    receipt = _dump(part, f"/phase/receipts/{names[0]}", tmp_path / "receipt.json")
    node_key = _dump(part, "/phase/key", tmp_path / "node.key")
    ok = _host_verify(receipt, node_key, tmp_path / "node.toml")
    assert ok.returncode == 0, ok.stderr
    rec = json.loads(ok.stdout.splitlines()[0])
    assert rec["type"] == "verified" and rec["doc_type"] == "receipt", rec
    assert rec["body"]["exit_code"] == 0
    assert rec["body"]["stdout"] == "sha256:" + hashlib.sha256(b"dlroW ,olleH").hexdigest()
    # the same receipt against a key that did not sign it: the host rejects it
    stranger = tmp_path / "stranger.key"
    identity.create(stranger)
    bad = _host_verify(receipt, stranger, tmp_path / "stranger.toml")
    assert bad.returncode == 1, (bad.returncode, bad.stderr)


# -- on demand (PHASE_BOOT_ON_DEMAND=1) ---------------------------------------------
@pytest.fixture(scope="module")
def disk_runs(built64: Built, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The USB disk under AAVMF: systemd-boot (BOOTAA64.EFI) starts each menu entry."""
    tmp = tmp_path_factory.mktemp("arm64-uefi")

    def one(mode: str) -> Any:
        disk = tmp / f"{mode}.img"
        subprocess.run(["cp", "--sparse=always", str(built64.disk), str(disk)], check=True)
        conf = tmp / f"loader-{mode}.conf"
        conf.write_text(f"default phase-{mode}.conf\ntimeout 0\n")
        subprocess.run(["mcopy", "-o", "-i", f"{disk}@@1M", str(conf),
                        "::/loader/loader.conf"], check=True)
        return vm_arm64.run(log_path(f"arm64-disk-{mode}"), disk=disk, net="none",
                            until=rf"PHASE-BOOT init mode={mode}", timeout_s=600)

    start = time.monotonic()
    runs = parallel({m: functools.partial(one, m) for m in ("internet", "local", "private")})
    print(f"arm64: 3 UEFI disk boots in {time.monotonic() - start:.1f} s")
    return runs


@pytest.mark.on_demand
@pytest.mark.parametrize("mode", ["internet", "local", "private"])
def test_arm64_uefi_disk_boots_each_menu_mode(disk_runs: dict[str, Any], mode: str) -> None:
    r = disk_runs[mode]
    assert r.matched, r.explain()


@pytest.mark.on_demand
def test_arm64_unified_kernel_image_boots(built64: Built) -> None:
    """phase-boot.efi (systemd-stub + Image + initramfs + cmdline) started by AAVMF."""
    r = vm_arm64.run(log_path("arm64-uki"), kernel=built64.out / "phase-boot.efi", append=None,
                     net="none", until=r"PHASE-BOOT init mode=internet", timeout_s=600)
    assert r.matched, r.explain()


@pytest.mark.on_demand
def test_arm64_private_mode_chain_kexecs_into_stage2(built64: Built, tmp_path: Path) -> None:
    """Private mode (no disk at all): the chain kexecs into the tiny stage-2 initramfs."""
    from plasmd.provider import sign_boot_manifest
    from tests.boot.conftest import Provider

    prov = Provider(tmp_path / "provider")
    try:
        sign_boot_manifest(kernel=built64.kernel, initramfs=built64.stage2,
                           cmdline=f"console={vm_arm64.CONSOLE} panic=-1 phase.test=arm64-ok",
                           keys=built64.keys, arch=ARCH, state_file=tmp_path / "versions.json",
                           mirrors=[prov.guest_url], cas=prov.cas,
                           manifests_dir=prov.manifests)
        r = vm_arm64.run(log_path("arm64-private-stage2"), kernel=built64.kernel,
                         initrd=built64.initramfs,
                         append=f"phase.mode=private phase.provider={prov.guest_url} {CHAIN}",
                         until=r"PHASE-STAGE2-OK.*|PHASE-BOOT poweroff|Kernel panic",
                         timeout_s=600)
    finally:
        prov.close()
    stage2 = [m for m in r.markers() if m.startswith("PHASE-STAGE2-OK")]
    assert stage2 and "phase.test=arm64-ok" in stage2[0], r.explain()
    assert "phase.mode=private" in stage2[0], r.explain()
