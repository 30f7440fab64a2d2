"""Every ``Executor`` of a process shares one wasmtime engine and one epoch ticker
(``plasm_exec.engine.shared``): a tool that makes an executor per item, like
``phase-verify --reexec`` over many receipts, must not leave a thread ticking a
hundred times a second behind each one (docs/plasm-exec.md, "One engine per
process")."""

from __future__ import annotations

import os
import threading

from plasm_exec import engine
from plasm_exec.api import Executor, RunSpec


def _tickers() -> int:
    return sum(t.name == "plasm-epoch" for t in threading.enumerate())


def test_executors_share_one_runtime_and_one_ticker(wasm):
    before = _tickers()
    runtimes = set()
    for _ in range(5):
        ex = Executor(None)
        res = ex.run(ex.load(wasm["cat"]), RunSpec(argv=["g"]), stdin=b"abc")
        assert res.stdout == b"abc"
        runtimes.add(id(ex.runtime))
    assert len(runtimes) == 1 and engine.shared() is ex.runtime
    assert _tickers() <= max(before, 1)


def test_a_forked_child_makes_its_own_runtime():
    parent = engine.shared()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the parent's ticker thread did not come along: a new runtime
        try:
            os.write(w, b"new" if engine.shared() is not parent else b"same")
        finally:
            os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 8) == b"new"
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    assert engine.shared() is parent
