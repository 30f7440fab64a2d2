"""The worker's batch hook (``plasmd.batch.serve``) with a stand-in node and stream.

The real per-job path is exercised over QUIC in test_batch.py; here the node's
``_job`` is replaced to hold jobs in flight, to check what the hook itself
decides: each job enters the per-job path with its own offer and run, a peer's
batch jobs in flight are capped (each job counts), answers leave as jobs end,
and the submitter's departure reaches every job still in flight.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest

from phase_core.errors import ProtocolViolation, Unavailable
from phase_core.protocol import framing
from phase_core.protocol.jobs import SendBlob
from phase_core.protocol.jobs_worker import Offered, Responder, RunArrived, SubmitterGone
from plasmd import batch
from plasmd.node import Counters
from tests.phase_core.test_job_batch import _entry, jobs


class FakeStream:
    peer_id = "p" * 64
    connection = None

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.incoming: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.aborted = False

    async def recv(self) -> dict[str, Any] | None:
        return await self.incoming.get()

    async def send(self, msg: dict[str, Any]) -> None:
        framing.encode_control(msg)  # it must fit a real frame
        self.sent.append(msg)

    async def send_blob(self, data: bytes) -> None:
        self.sent.append(SendBlob(bytes(data)))

    def abort(self, code: int = 0) -> None:
        self.aborted = True


class FakeNode:
    """``_job`` reads its run, then waits for its release (or its submitter's end)."""

    def __init__(self) -> None:
        self.counters = Counters()
        self.release: dict[str, asyncio.Event] = {}
        self.entered: list[str] = []
        self.gone: list[str] = []

    async def _job(self, peer: str, r: Responder, ev: Offered, stream: Any) -> None:
        self.entered.append(ev.job)
        r.accept()
        for item in r.outbox():
            await stream.send(item)
        run = r.receive(await stream.recv())
        assert isinstance(run, RunArrived) and run.manifest["body"]["module"]
        r.admit(ev.job, run.manifest["body"])
        r.started()
        ev_done = self.release.setdefault(ev.job, asyncio.Event())
        waiter = asyncio.ensure_future(stream.recv())
        done, _ = await asyncio.wait([waiter, asyncio.ensure_future(ev_done.wait())],
                                     return_when=asyncio.FIRST_COMPLETED)
        if waiter in done:
            assert isinstance(r.receive(waiter.result()), SubmitterGone)
            self.gone.append(ev.job)
            return
        waiter.cancel()
        r.error("test_end", "released")
        for item in r.outbox():
            await stream.send(item)


def frame(n: int, **kw: Any) -> dict[str, Any]:
    return {"type": "batch", "jobs": [_entry(env, jid) for env, jid in jobs(n, **kw)]}


def test_each_job_counts_against_the_peers_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch, "MAX_BATCH_JOBS_PER_PEER", 3)

    async def go() -> None:
        node, s1, s2 = FakeNode(), FakeStream(), FakeStream()
        first = asyncio.create_task(batch.serve(node, "peer-a", frame(2), s1))
        while len(node.entered) < 2:
            await asyncio.sleep(0)
        second = asyncio.create_task(batch.serve(node, "peer-a", frame(3, env={"B": "1"}), s2))
        other = FakeStream()
        third = asyncio.create_task(batch.serve(node, "peer-b", frame(1, env={"C": "1"}),
                                                other))
        while len(node.entered) < 4:
            await asyncio.sleep(0)
        # peer-a had 2 in flight: one more fits, two are refused at once; peer-b unaffected
        refused = [m for m in s2.sent if m["type"] == "reject"]
        assert len(refused) == 2 and {m["reason"] for m in refused} == {"queue_full"}
        assert node.counters.c["rejected_queue_full"] == 2
        for ev in node.release.values():
            ev.set()
        await asyncio.gather(first, second, third)
        answered = [m["job"] for m in s1.sent + s2.sent + other.sent]
        assert len(answered) == len(set(answered)) == 6  # one answer per job
        assert batch._IN_FLIGHT[node] == {}  # every slot given back

    asyncio.run(go())


def test_answers_leave_as_jobs_end_and_the_submitters_end_reaches_the_rest() -> None:
    async def go() -> None:
        node, s = FakeNode(), FakeStream()
        task = asyncio.create_task(batch.serve(node, "peer", frame(3), s))
        while len(node.entered) < 3:
            await asyncio.sleep(0)
        node.release[node.entered[1]].set()
        while not s.sent:
            await asyncio.sleep(0)
        assert [m["job"] for m in s.sent] == [node.entered[1]]  # before the batch ends
        s.incoming.put_nowait(None)  # the submitter went away
        await task
        assert sorted(node.gone) == sorted([node.entered[0], node.entered[2]])

    asyncio.run(go())


def test_a_message_after_the_batch_is_a_violation_and_stops_every_job() -> None:
    async def go() -> None:
        node, s = FakeNode(), FakeStream()
        task = asyncio.create_task(batch.serve(node, "peer", frame(2), s))
        while len(node.entered) < 2:
            await asyncio.sleep(0)
        s.incoming.put_nowait({"type": "run", "manifest": {}})
        with pytest.raises(ProtocolViolation):
            await task
        assert len(node.gone) == 2

    asyncio.run(go())


def test_a_bad_batch_is_counted_and_refused_whole() -> None:
    async def go() -> None:
        node, s = FakeNode(), FakeStream()
        f = frame(1)
        f["jobs"] = f["jobs"] * 2
        with pytest.raises(ProtocolViolation):
            await batch.serve(node, "peer", f, s)
        assert node.counters.c["bad_requests"] == 1 and not node.entered

    asyncio.run(go())




class AdmittingNode(FakeNode):
    """Holds every job's module and stdin and admits all but the first, as ``Node`` does:
    each admitted job is counted (``plasmd.admission``) until it ends."""

    def __init__(self) -> None:
        super().__init__()
        self.queued = self.running = 0
        self.held: collections.Counter[str] = collections.Counter()
        self._idle = asyncio.Event()
        self._idle.set()
        self.offers = 0

    def inputs_here(self, offer: dict[str, Any]) -> bool:
        return True

    def _admit(self, peer: str, offer: dict[str, Any]) -> tuple[str | None, str]:
        self.offers += 1
        return ("too_large", "refused at once") if self.offers == 1 else (None, "")


class BrokenStream(FakeStream):
    async def send(self, msg: dict[str, Any]) -> None:
        raise Unavailable("the connection is gone", slug="connection_lost")


def test_a_stream_that_breaks_before_the_jobs_start_leaves_nothing_counted() -> None:
    # the refusal of the first job is sent before the others start; the stream is
    # gone by then: the two admitted jobs must not stay queued, held or in flight
    async def go() -> None:
        node = AdmittingNode()
        with pytest.raises(Unavailable):
            await batch.serve(node, "peer", frame(3), BrokenStream())
        assert node.offers == 3 and not node.entered
        assert (node.queued, node.running, dict(node.held)) == (0, 0, {})
        assert node._idle.is_set()
        assert batch._IN_FLIGHT[node] == {}

    asyncio.run(go())
