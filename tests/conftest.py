"""Shared fixtures: the vectors, a throw-away PHASE_HOME, in-process CLI runs."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.records import check_stdout

pytest_plugins = ["tests.netns"]  # the `net` fixture: network namespaces joined by veth

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"
# a WASM header, then a section cut short: every engine refuses to compile it
BROKEN_MODULE = b"\0asm\x01\0\0\0\x01\xff"


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]

    @property
    def types(self) -> list[str]:
        return [r["type"] for r in self.records]

    @property
    def logs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.err.splitlines() if line.startswith("{")]

    @property
    def error_slugs(self) -> list[str]:
        return [rec["error"] for rec in self.logs if "error" in rec]


class _Stdin:
    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)


@pytest.fixture
def vectors() -> Path:
    return VECTORS


@pytest.fixture
def phase_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("PHASE_HOME", str(home))
    return home


@pytest.fixture
def run_tool(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
             ) -> Callable[..., Result]:
    """Run a tool's CLI in-process: run_tool(cli_module, [args], stdin=b"...").

    Every record it prints is checked against docs/schemas/ (tests/records.py)."""
    from phase_core.cli.runner import run_cli

    def run(cli: Any, argv: list[str], stdin: bytes = b"", tool: str | None = None,
            check: bool = True) -> Result:
        monkeypatch.setattr(sys, "stdin", _Stdin(stdin))
        capsys.readouterr()
        name = tool or cli.__name__.split(".")[0].replace("_", "-")
        code = run_cli(name, cli.__doc__, "test", cli.main, argv)
        cap = capsys.readouterr()
        if check:  # off only where a test feeds a broken record to be passed on
            check_stdout(cap.out, f"{name} {' '.join(argv)[:80]}", argv)
        return Result(code, cap.out, cap.err)

    return run


def script(name: str) -> str:
    """The path of an installed console script (beside this interpreter, else on PATH)."""
    import shutil

    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"console script {name} is not installed")
    return found
