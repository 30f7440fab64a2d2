"""The real tools in a pipe, as boot/init runs them (phase-boot in --dry-run):

    phase-verify <manifest | phase-fetch --out-dir=D | phase-boot

with an HTTP provider on 127.0.0.1 serving the blobs. The last stage's exit status
and summary line say what happened anywhere in the pipe.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from phase_core import boot, envelope
from phase_core.cas import ContentStore
from phase_core.identity import Identity
from phase_core.state import StateStore

SIGNERS = [Identity(bytes([n]) * 32) for n in (21, 22)]
KERNEL, INITRAMFS = os.urandom(100_000), b"initramfs " * 2000
BIN = Path(sys.executable).parent


@dataclass
class Chain:
    dir: Path
    url: str
    cas: ContentStore

    def manifest(self, *, version: int = 3, mirror: str | None = None,
                 signers: list[Identity] = SIGNERS) -> dict[str, Any]:
        art = {name: {"id": self.cas.put_bytes(data), "size": len(data)}
               for name, data in (("kernel", KERNEL), ("initramfs", INITRAMFS))}
        body = boot.build(channel="stable", arch="x86_64", version=version,
                          now=int(time.time()) - 60, lifetime_s=3600, cmdline="quiet",
                          mirrors=[mirror or self.url], **art)
        env = envelope.sign(boot.TYPE, body, signers)
        # published: the provider serves only the artifacts of the manifests it serves
        slot = self.dir / "manifests" / "stable" / "x86_64"
        slot.mkdir(parents=True, exist_ok=True)
        (slot / "manifest.json").write_text(json.dumps(env))
        return env

    def run(self, env: dict[str, Any]) -> tuple[int, list[dict[str, Any]], str]:
        d = self.dir
        (d / "found.jsonl").write_text(json.dumps({"v": 1, "type": "boot", "envelope": env})
                                       + "\n" + json.dumps({"v": 1, "type": "boot_provider",
                                                            "url": self.url}) + "\n")
        keys, state = d / "keyring.toml", d / "home" / "state.json"
        (d / "boot").mkdir(exist_ok=True)  # as /init does
        script = (
            f'"{BIN}/phase-verify" --keys={keys} --state={state} --type=boot_manifest '
            f'--keep-going <{d}/found.jsonl 2>{d}/verify.err '
            f'| "{BIN}/phase-fetch" --keys={keys} --home={d}/home --out-dir={d}/boot '
            f'--retries=0 2>{d}/fetch.err '
            f'| "{BIN}/phase-boot" --keys={keys} --state={state} --channel=stable '
            f'--arch=x86_64 --mode=local --dry-run --summary={d}/summary.txt '
            f'--log={d}/verify.err --log={d}/fetch.err 2>{d}/boot.err')
        r = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=120,
                           check=False)
        recs = [json.loads(ln) for ln in r.stdout.splitlines() if ln.strip()]
        return r.returncode, recs, (d / "summary.txt").read_text().strip()


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    from plasmd.provider import serve

    cas = ContentStore(tmp_path / "provider")
    (tmp_path / "manifests").mkdir()
    server = serve(cas, tmp_path / "manifests", "127.0.0.1", 0)
    lines = ["[thresholds]", "boot-signer = 2", ""]
    for n, ident in enumerate(SIGNERS):
        lines += [f"[keys.signer-{n}]", f'key = "{ident.node_id}"', 'roles = ["boot-signer"]',
                  ""]
    (tmp_path / "keyring.toml").write_text("\n".join(lines))
    try:
        yield Chain(tmp_path, f"http://127.0.0.1:{server.server_address[1]}", cas)
    finally:
        server.stop()


def test_the_pipe_loads_what_was_fetched(chain: Chain) -> None:
    code, recs, summary = chain.run(chain.manifest())
    assert code == 0, (chain.dir / "boot.err").read_text()
    kexec = recs[-1]
    assert kexec["type"] == "kexec" and kexec["version"] == 3
    assert Path(kexec["kernel"]["path"]).read_bytes() == KERNEL
    assert kexec["cmdline"] == "quiet phase.mode=local phase.channel=stable"
    assert summary.startswith("version=3 id=sha256:")


def test_a_rejection_upstream_ends_the_pipe_with_1(chain: Chain) -> None:
    env = chain.manifest(version=3)
    StateStore(chain.dir / "home" / "state.json").commit_mark(
        "boot/stable/x86_64", 9, "sha256:" + "9" * 64)
    code, recs, summary = chain.run(env)
    assert code == 1, (chain.dir / "boot.err").read_text()
    assert [r["error"] for r in recs if r["type"] == "error"] == ["rollback"]
    assert summary.startswith("rollback: ")


def test_too_few_signers_ends_the_pipe_with_1(chain: Chain) -> None:
    code, _, summary = chain.run(chain.manifest(signers=SIGNERS[:1]))
    assert code == 1 and summary.startswith("threshold: ")


def test_wrong_bytes_on_the_mirror_end_the_pipe_with_1(chain: Chain) -> None:
    from tests.phase_fetch.badserver import BadServer, Route

    with BadServer() as bad:
        env = chain.manifest(mirror=bad.url)
        for name, data in (("kernel", KERNEL), ("initramfs", INITRAMFS)):
            bad.routes[f"/sha256/{env['body'][name]['id'][7:]}"] = Route(data, "wrong")
        code, recs, summary = chain.run(env)
    assert code == 1 and summary.startswith("digest_mismatch: "), summary
    assert not [r for r in recs if r["type"] == "kexec"]
