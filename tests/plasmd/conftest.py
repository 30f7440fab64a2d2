"""Real plasmd processes for tests: start, learn their address, stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT, script

HELLO = ROOT / "packages" / "plasm-exec" / "examples" / "build" / "hello.wasm"
EXAMPLES = ROOT / "packages" / "plasm-exec" / "examples" / "build"


@dataclass
class NodeProc:
    home: Path
    proc: subprocess.Popen[bytes]
    started: dict[str, object]
    stderr_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def node_id(self) -> str:
        return str(self.started["node_id"])

    @property
    def port(self) -> int:
        return int(str(self.listen).rsplit(":", 1)[1])

    @property
    def listen(self) -> str:
        return str(self.started["listen"][0])  # type: ignore[index]

    @property
    def peer(self) -> str:
        return f"{self.node_id}@127.0.0.1:{self.port}"

    def logs(self) -> list[dict[str, object]]:
        out = []
        for line in self.stderr_path.read_text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def status(self) -> dict[str, object]:
        r = subprocess.run([script("plasmd"), "status", f"--home={self.home}"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def init_home(home: Path, *args: str) -> None:
    r = subprocess.run([script("plasmd"), "init", "-q", f"--home={home}",
                        "--listen=127.0.0.1:0", *args], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr


def start_node(home: Path, *args: str, init: bool = True, env: dict[str, str] | None = None,
               timeout: float = 60, prefix: tuple[str, ...] = ()) -> NodeProc:
    """Start ``plasmd start`` in ``home`` and wait for its node_started record."""
    if init and not (home / "key").exists():
        init_home(home)
    err = home.parent / f"{home.name}.stderr"
    e = dict(os.environ, **(env or {}))
    e.pop("PHASE_HOME", None)
    proc = subprocess.Popen([*prefix, script("plasmd"), "start", f"--home={home}", "-v", *args],
                            stdout=subprocess.PIPE, stderr=open(err, "wb"), env=e)
    assert proc.stdout is not None
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        proc.kill()
        raise AssertionError(f"plasmd did not start: {err.read_text()[-2000:]}")
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        raise AssertionError(f"plasmd exited {proc.returncode}: {err.read_text()[-2000:]}")
    started = json.loads(line)
    assert started["type"] == "node_started"
    return NodeProc(home, proc, started, err)


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[object]:
    nodes: list[NodeProc] = []

    def make(name: str = "worker", *args: str, **kw: object) -> NodeProc:
        n = start_node(tmp_path / name, *args, **kw)  # type: ignore[arg-type]
        nodes.append(n)
        return n

    yield make
    for n in nodes:
        n.stop()


def submit(home: Path, peer: str, module: Path = HELLO, *args: str,
           stdin: bytes | None = None, tmp: Path | None = None, timeout: float = 120
           ) -> subprocess.CompletedProcess[bytes]:
    """Run ``plasmd submit`` as a process (initialising the client home first)."""
    if not (home / "key").exists():
        init_home(home)
    extra = []
    if stdin is not None:
        assert tmp is not None
        f = tmp / f"stdin-{os.getpid()}-{len(stdin)}"
        f.write_bytes(stdin)
        extra.append(f"--stdin={f}")
    return subprocess.run([script("plasmd"), "submit", f"--home={home}", str(module),
                           f"--peer={peer}", *extra, *args], capture_output=True,
                          timeout=timeout)


def prepare_home(home: Path, **config: object) -> str:
    """A node home written directly (faster than `plasmd init` when many are needed).

    Returns the node id."""
    from dataclasses import replace

    from phase_core import identity
    from plasmd.config import Config

    home.mkdir(parents=True, exist_ok=True)
    ident = identity.create(home / "key")
    config.setdefault("listen", ("127.0.0.1:0",))
    cfg = replace(Config(), **config)  # type: ignore[arg-type]
    (home / "config.toml").write_text(cfg.to_toml())
    return ident.node_id
