"""Fixtures for phase-boot: the vector manifests, their files, phase-fetch-like records."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from phase_core.canonical import content_id
from tests.conftest import VECTORS, Result

NOW = "2026-11-30T00:00:00Z"  # inside the vectors' validity window (2000 … 2099)
KERNEL, INITRAMFS = b"kernel", b"initramfs"  # the bytes the vector manifests sign


def vector(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((VECTORS / name).read_text())
    return doc


def verified(env: dict[str, Any]) -> dict[str, Any]:
    """The record phase-verify writes for ``env`` (only its envelope is trusted)."""
    return {"v": 1, "type": "verified", "doc_type": "boot_manifest", "body": env["body"],
            "envelope": env, "sources": ["http://10.0.2.2:8080"]}


def blob_rec(data: bytes, name: str, path: Path) -> dict[str, Any]:
    return {"v": 1, "type": "blob", "id": content_id(data), "size_bytes": len(data),
            "name": name, "path": str(path)}


@dataclass
class Boot:
    """A phase-boot run's inputs in a temp dir; ``run()`` calls it in-process."""

    dir: Path
    runner: Callable[..., Result]
    lines: list[str] = field(default_factory=list)

    @property
    def state(self) -> Path:
        return self.dir / "state.json"

    def files(self, kernel: bytes = KERNEL, initramfs: bytes = INITRAMFS) -> None:
        """Blob records as phase-fetch --out-dir writes them, files holding these bytes."""
        for name, data, signed in (("kernel", kernel, KERNEL),
                                   ("initramfs", initramfs, INITRAMFS)):
            p = self.dir / "out" / name
            p.parent.mkdir(exist_ok=True)
            p.write_bytes(data)
            self.add(blob_rec(signed, name, p))

    def add(self, rec: dict[str, Any] | str) -> None:
        self.lines.append(rec if isinstance(rec, str) else json.dumps(rec))

    def manifest(self, name: str = "valid/boot_manifest.json") -> dict[str, Any]:
        env = vector(name)
        self.add(verified(env))
        return env

    def run(self, *extra: str, stdin: bool = True) -> Result:
        from phase_boot import cli

        given = {a.split("=", 1)[0] for a in extra}
        base = [f"--keys={VECTORS / 'keyring.toml'}", f"--state={self.state}", f"--now={NOW}",
                "--arch=x86_64"]
        argv = [a for a in base if a.split("=", 1)[0] not in given]
        argv += ["--dry-run", *extra] if "--load-only" not in given else list(extra)
        data = "".join(ln + "\n" for ln in self.lines).encode()
        if not stdin:
            f = self.dir / "records.jsonl"
            f.write_bytes(data)
            return self.runner(cli, [*argv, str(f)])
        return self.runner(cli, argv, stdin=data)


@pytest.fixture
def bt(tmp_path: Path, run_tool: Callable[..., Result]) -> Boot:
    return Boot(tmp_path, run_tool)
