"""Processes for the phase-discover tests: DHT test nodes and silent peers, on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str) -> subprocess.Popen[str]:
        p = subprocess.Popen([sys.executable, *args], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.procs.append(p)
        return p

    @staticmethod
    def ready(p: subprocess.Popen[str]) -> dict[str, str]:
        assert p.stdout is not None
        line = p.stdout.readline()
        if not line:
            raise AssertionError(f"process {p.args} exited with {p.wait(10)} before it was ready")
        info: dict[str, str] = json.loads(line)
        return info

    def stop(self, p: subprocess.Popen[str]) -> None:
        if p.poll() is None:
            p.kill()
        p.wait(10)

    def close(self) -> None:
        for p in self.procs:
            self.stop(p)


@pytest.fixture
def procs() -> Iterator[Procs]:
    ps = Procs()
    try:
        yield ps
    finally:
        ps.close()


def silent(procs: Procs, kind: str) -> str:
    return Procs.ready(procs.start(str(HERE / "silent_peer.py"), kind))["address"]
