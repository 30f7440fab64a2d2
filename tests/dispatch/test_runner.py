"""The dispatcher's asyncio shell (plasmd.dispatch) over a stand-in for the nodes:
it reads the input only as fast as it places work, and emits every job once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from phase_core.identity import Identity
from plasmd import dispatchio as io
from plasmd import dispatchsched as ds
from plasmd.dispatch import Dispatcher
from plasmd.pool import Job
from plasmd.submit import Outcome, make_manifest

EMPTY = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


class Nodes:
    """Answers every attempt after a turn of the loop, with a fixed output."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.addresses: dict[str, str] = {}
        self.fail_on = fail_on
        self.attempts: list[tuple[int, str]] = []

    async def run(self, node: str, job: Job, timeout_s: float) -> Outcome:
        await asyncio.sleep(0)
        if node == self.fail_on:
            from phase_core.errors import Unavailable

            raise Unavailable("the connection was lost")
        body = {"job": job.id, "ended": "exited", "exit_code": 0, "stdout": EMPTY,
                "stderr": EMPTY, "stdout_bytes": 0, "stderr_bytes": 0}
        return Outcome(node, {"v": 1, "type": "receipt", "body": body, "signatures": []},
                       b"", b"")


def _run(n_jobs: int, max_pending: int, nodes: Nodes, **kw: Any
         ) -> tuple[list[dict[str, Any]], int, Dispatcher]:
    me = Identity.generate()
    module = b"\0asm\1\0\0\0"
    env = make_manifest(me, module, None)
    job = Job(env, {env["body"]["module"]: module})
    out: list[dict[str, Any]] = []
    read = [0]
    lag = [0]

    def items() -> Iterator[io.Item]:
        for i in range(n_jobs):
            read[0] += 1
            lag[0] = max(lag[0], read[0] - len(out))
            yield i + 1, job

    async def go() -> Dispatcher:
        s = ds.Scheduler(max_pending=max_pending, **kw)
        d = Dispatcher(s, nodes, out.append)
        for i in range(4):
            d.node_added(f"n{i}", f"10.0.0.{i}", "", 8, None)
        assert await d.run(io.Reader(items())) == 0
        return d

    d = asyncio.run(go())
    return out, lag[0], d


def test_the_input_is_read_only_as_fast_as_jobs_are_placed() -> None:
    out, lag, d = _run(20_000, 32, Nodes())
    assert sorted(r["index"] for r in out) == list(range(20_000))  # each once
    assert d.most_live <= 32
    assert lag <= 32 + 1  # never more read than held, plus the one being handed over
    assert not d.jobs and not d.outcomes  # every job's memory went once it retired


def test_a_node_that_fails_every_attempt_loses_no_job() -> None:
    nodes = Nodes(fail_on="n0")
    out, _, _ = _run(500, 64, nodes)
    assert sorted(r["index"] for r in out) == list(range(500))
    assert all(r["type"] == "job_result" and r["worker"] != "n0" for r in out)
