"""The documented boot chain, with no --mirror: discover | verify | fetch --out-dir.

phase-discover reports the provider a manifest came from (`provider_url`),
phase-verify carries it into its `verified` record as `sources`, and phase-fetch
fetches kernel and initramfs from it: the manifest's signed mirror here is a
closed port, so only the carried source can serve them. Everything runs in a
network namespace the test creates (only loopback), so mDNS, which
phase-discover also tries, sends nothing anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from phase_core import boot, envelope
from phase_core.cas import ContentStore
from phase_core.identity import Identity
from phase_core.trust import format_entry
from tests.pipeline import readme
from tests.pipeline.conftest import BIN, Ran
from tests.records import check_stdout

SIGNER = Identity(bytes([9]) * 32)
KERNEL, INITRAMFS = os.urandom(200_000), b"initramfs " * 3000
CLOSED = "http://127.0.0.1:1"  # the signed mirror: nothing listens there


def _namespaces_usable() -> str | None:
    if os.geteuid() != 0:
        return "a network namespace needs root"
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


class Provider:
    def __init__(self, root: Path) -> None:
        cas = ContentStore(root / "cas")
        art = {name: {"id": cas.put_bytes(data), "size": len(data)}
               for name, data in (("kernel", KERNEL), ("initramfs", INITRAMFS))}
        body = boot.build(channel="stable", arch="x86_64", version=4,
                          now=int(time.time()) - 60, lifetime_s=3600, cmdline="quiet",
                          mirrors=[CLOSED], **art)
        dest = root / "manifests" / "stable" / "x86_64" / "manifest.json"
        dest.parent.mkdir(parents=True)
        dest.write_text(json.dumps(envelope.sign(boot.TYPE, body, [SIGNER])))
        env = {**os.environ, "PYTHONPATH": str(readme.ROOT)}
        self.proc = subprocess.Popen(
            ["unshare", "-n", "sh", "-c",
             f'ip link set lo up && exec "{sys.executable}" -m tests.pipeline.provider_proc '
             f'"{root}"'], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the provider exited with {self.proc.wait(10)}")
        self.url = json.loads(line)["url"]

    def sh(self, code: str, cwd: Path) -> Ran:
        """Run ``code`` in the provider's network namespace."""
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               "PHASE_HOME": str(cwd / "home")}
        env.pop("PHASE_BOOTSTRAP", None)
        r = subprocess.run(["nsenter", f"--net=/proc/{self.proc.pid}/ns/net", "sh", "-c", code],
                           cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                           check=False)
        check_stdout(r.stdout, f"sh -c {code[:80]!r}")
        return Ran(r.returncode, r.stdout, r.stderr)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[Provider]:
    why = _namespaces_usable()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(why + "; CI runs as root and must run this test", pytrace=False)
        pytest.skip(why)
    p = Provider(tmp_path / "provider")
    try:
        yield p
    finally:
        p.close()


@pytest.mark.parametrize("block", readme.of_kind("boot"), ids=lambda b: b.name)
def test_documented_boot_chain_needs_no_mirror(provider: Provider, tmp_path: Path,
                                               block: readme.Block):
    work = tmp_path / "w"
    work.mkdir()
    (work / "keyring.toml").write_text(format_entry("release", SIGNER.node_id,
                                                    ["boot-signer"]))
    assert readme.DOC_PROVIDER in block.code and "--mirror" not in block.code
    code = block.code.replace(readme.DOC_PROVIDER, provider.url)
    r = provider.sh(code, work)
    assert r.code == 0, r.err
    if r.records[-1]["type"] == "kexec":  # ends in phase-boot --dry-run, which consumed
        kexec = r.records[-1]             # the blob and verified records
        assert kexec["dry_run"] is True and kexec["loaded"] is False
        assert Path(kexec["kernel"]["path"]).read_bytes() == KERNEL
        assert Path(kexec["initramfs"]["path"]).read_bytes() == INITRAMFS
        assert (work / "boot" / "kernel").read_bytes() == KERNEL
        return
    blobs = [x for x in r.records if x["type"] == "blob"]
    assert {b["name"] for b in blobs} == {"kernel", "initramfs"}
    assert all(b["source"].startswith(provider.url) for b in blobs), blobs
    last = r.records[-1]
    assert last["type"] == "verified" and last["doc_type"] == "boot_manifest"
    assert last["sources"] == [provider.url]
    assert (work / "boot" / "kernel").read_bytes() == KERNEL  # --out-dir was created
    assert (work / "boot" / "initramfs").read_bytes() == INITRAMFS
