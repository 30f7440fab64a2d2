"""Real plasmd workers on loopback for the dispatcher's tests, and job inputs."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phase_core import envelope, identity, manifest
from plasmd.submit import make_manifest
from tests.conftest import script
from tests.plasmd.conftest import EXAMPLES, HELLO, NodeProc, init_home, prepare_home


def start_workers(root: Path, n: int, *, liars: int = 0, timeout: float = 120
                  ) -> list[NodeProc]:
    """``n`` ``plasmd start --open`` processes on 127.0.0.1, started together; the
    first ``liars`` of them with PHASE_TEST_LIAR=1 in their environment."""
    procs = []
    for i in range(n):
        home = root / f"w{i}"
        prepare_home(home, open=True)
        env = dict(os.environ)
        env.pop("PHASE_HOME", None)
        env.pop("PHASE_TEST_LIAR", None)
        if i < liars:
            env["PHASE_TEST_LIAR"] = "1"
        err = root / f"w{i}.stderr"
        p = subprocess.Popen([script("plasmd"), "start", f"--home={home}"],
                             stdout=subprocess.PIPE, stderr=open(err, "wb"), env=env)
        procs.append((home, p, err))
    nodes = []
    for home, p, err in procs:
        assert p.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(p.stdout, selectors.EVENT_READ)
        line = p.stdout.readline() if sel.select(timeout) else b""
        if not line:
            for _, q, _ in procs:
                q.kill()
            raise AssertionError(f"a worker did not start: {err.read_text()[-2000:]}")
        nodes.append(NodeProc(home, p, json.loads(line), err))
    return nodes


@pytest.fixture
def client_home(tmp_path: Path) -> Path:
    home = tmp_path / "client"
    init_home(home)
    return home


def hello_jobs(home: Path, n: int, where: Path, tag: str = "job") -> tuple[list[str], list[str]]:
    """``n`` job records running hello.wasm on stdin ``<tag> <i>`` (it prints the
    reverse): the JSON lines and the job ids, in input order."""
    me = identity.load(home / "key")
    module = HELLO.read_bytes()
    where.mkdir(parents=True, exist_ok=True)
    lines, ids = [], []
    for i in range(n):
        stdin = f"{tag} {i}".encode()
        path = where / f"{tag}-{i}.in"
        path.write_bytes(stdin)
        env = make_manifest(me, module, stdin, argv=["hello.wasm"])
        ids.append(envelope.parse(env).id)
        lines.append(json.dumps({"v": 1, "type": "job", "manifest": env,
                                 "module_path": str(HELLO), "stdin_path": str(path)}))
    return lines, ids


def spin_job(home: Path, **limits: int) -> str:
    """A job record running spin.wasm (it loops until a fence ends it) under the
    default limits with ``limits`` changed, signed by ``home``'s key."""
    spin = EXAMPLES / "spin.wasm"
    env = make_manifest(identity.load(home / "key"), spin.read_bytes(), None,
                        argv=["spin.wasm"], limits=dict(manifest.DEFAULT_LIMITS, **limits))
    return json.dumps({"v": 1, "type": "job", "manifest": env, "module_path": str(spin)})


def records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def stop_all() -> Iterator[list[NodeProc]]:
    nodes: list[NodeProc] = []
    yield nodes
    for n in nodes:
        n.stop()
