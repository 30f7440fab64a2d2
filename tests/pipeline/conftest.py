"""A directory prepared as the README describes, and real shell pipelines run in it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline import readme
from tests.records import check_stdout

EXAMPLES = readme.ROOT / "packages" / "plasm-exec" / "examples" / "build"
BIN = Path(sys.executable).parent


@dataclass
class Ran:
    code: int
    out: str
    err: str

    @property
    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]

    @property
    def types(self) -> list[str]:
        return [r["type"] for r in self.records]


class World:
    """A temp directory with hello.wasm, in.txt and the README's setup blocks run in it."""

    def __init__(self, root: Path) -> None:
        self.dir = root
        root.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                    "PHASE_HOME": str(root / "home")}
        for name in ("PHASE_BOOTSTRAP", "PHASE_KEYRING"):
            self.env.pop(name, None)
        shutil.copy(EXAMPLES / "hello.wasm", root / "hello.wasm")
        shutil.copy(EXAMPLES / "trap.wasm", root / "trap.wasm")
        (root / "in.txt").write_bytes(b"Hello, World")

    def sh(self, code: str, timeout: float = 120) -> Ran:
        r = subprocess.run(["sh", "-c", code], cwd=self.dir, env=self.env, capture_output=True,
                           text=True, timeout=timeout, check=False)
        check_stdout(r.stdout, f"sh -c {code[:80]!r}")
        return Ran(r.returncode, r.stdout, r.stderr)

    def setup(self, readme_path: Path = readme.READMES[0]) -> None:
        for block in readme.setup_of(readme_path):
            r = self.sh(block.code)
            assert r.code == 0, f"setup block {block.name} failed ({r.code}):\n{r.err}"

    def blob_path(self, name: str) -> Path:
        return self.dir / "blobs" / hashlib.sha256((self.dir / name).read_bytes()).hexdigest()


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = World(tmp_path / "w")
    w.setup()
    return w


def main_pipeline() -> readme.Block:
    """The README's first `run` block: verify | fetch | job | verify."""
    return next(b for b in readme.of_kind("run") if b.readme == readme.READMES[0])
