"""The Pool's side of one worker: its connection, its queue and the sender (see pool.py).

The sender decides what goes on which stream: one job on a stream of its own
(``jobs_client.Submission``) or several in one ``batch`` (``jobs_batch``), by
Nagle's rule per connection, and only for a worker whose node record lists the
``job-batch`` feature. Every answer is verified here, per job, before it settles
the job's future.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from phase_core import log
from phase_core.errors import PhaseError, Unavailable
from phase_core.protocol.jobs_batch import FEATURE, Answer, BatchSubmission
from phase_core.protocol.jobs_client import (
    Accepted,
    Failed,
    Finished,
    Query,
    Refused,
    Submission,
)
from plasmd.blobs import send_out
from plasmd.submit import Outcome, answer_error, check_outcome, parse_peer

if TYPE_CHECKING:
    from plasmd.pool import Job, Pool


@dataclass(eq=False)
class Item:
    job: Job
    future: asyncio.Future[Outcome]
    attempt: int = 0




class Peer:
    """One worker: its connection, its queue and the sender that drains it."""

    def __init__(self, pool: Pool, text: str) -> None:
        self.pool = pool
        self.node_id, self.host, self.port = parse_peer(text)
        self.queue: collections.deque[Item] = collections.deque()
        self.wake = asyncio.Event()
        self.in_flight = 0
        self.batch_ok = False  # until the node record says so
        self.asked: asyncio.Future[None] | None = None  # the node record, asked for
        self.unanswered = 0  # streams sent that have had no answer yet
        self.held_since = 0.0  # when the oldest queued job was queued
        self.peer_id: str | None = None
        self.record: dict[str, Any] | None = None  # its signed node record, once asked
        self.serving: dict[str, list[Any]] = {}  # content id → [jobs using it, bytes]
        self.sender = asyncio.create_task(self._send_loop())

    @property
    def load(self) -> int:
        return len(self.queue) + self.in_flight

    async def _connection(self) -> Any:
        conn = await self.pool._conns.get(self.host, self.port, self.node_id)
        if conn.peer_id != self.peer_id:  # a new connection: ask what it supports
            self.peer_id, self.batch_ok = conn.peer_id, False
            self.pool._by_id[conn.peer_id] = self
            self.asked = asyncio.ensure_future(self._ask_features(conn))
        return conn

    async def _ask_features(self, conn: Any) -> None:
        q = Query(time.monotonic, {"type": "get_node_record"})
        try:
            stream = await conn.open_stream()
            async with stream:
                q.start()
                await send_out(stream, q.outbox())
                async with asyncio.timeout(15):
                    rec = q.receive(await stream.recv())
            self.record = rec["record"]
            feats = rec["record"]["body"].get("capabilities", {}).get("features", [])
            self.batch_ok = isinstance(feats, list) and FEATURE in feats
        except (PhaseError, TimeoutError, AttributeError) as e:
            log.get().debug("pool.features_unknown", peer=conn.peer_id, error=repr(e))

    async def _send_loop(self) -> None:
        """Send what is queued. A job goes at once when no stream to this worker awaits
        its first answer (a lone job is never held); otherwise queued jobs wait for that
        answer, at most ``linger_s``, and then go together (Nagle's rule, per stream).

        Its waits use ``asyncio.timeout``, not ``wait_for``: on Python 3.11 a
        ``wait_for`` whose awaited thing ends as the task is cancelled returns and
        drops the cancellation, and this loop then waited for ever, holding up the
        pool's ``close`` (a Ctrl-C of ``plasmd submit --jobs`` that never ended). A
        closed pool ends the loop too."""
        pool = self.pool
        while not pool._closed:
            await self.wake.wait()
            self.wake.clear()
            if not self.queue:
                continue
            try:
                conn = await self._connection()
            except PhaseError as e:
                while self.queue:
                    pool._settle(self.queue.popleft(), error=e)
                continue
            if len(self.queue) > 1 and self.asked is not None and not self.asked.done():
                # more are queued: learn whether they may go as a batch (one round trip)
                self._start_single(conn)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2):  # (not wait_for: see _send_loop)
                        await asyncio.shield(self.asked)
            if not self.batch_ok:
                while self.queue:
                    self._start_single(conn)
                await asyncio.sleep(0)
                continue
            if self.unanswered and len(self.queue) < pool.max_batch:
                left = self.held_since + pool.linger_s - time.monotonic()
                if left > 0:  # let the batch fill until an answer comes, or the linger ends
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(left):
                            await self.wake.wait()
                    self.wake.set()
                    continue
            while self.queue:
                self._start_batch(conn)
            await asyncio.sleep(0)

    def _start_single(self, conn: Any) -> None:
        item = self.queue.popleft()
        self._start(self._single(conn, item), [item])

    def _start_batch(self, conn: Any) -> None:
        if len(self.queue) == 1:
            return self._start_single(conn)
        m = BatchSubmission(time.monotonic, timeout_s=0, max_jobs=self.pool.max_batch)
        taken: dict[str, Item] = {}
        while self.queue:
            it = self.queue[0]
            body = it.job.manifest["body"]
            if not m.add(it.job.manifest, it.job.id, it.job.size(body["module"]),
                         it.job.size(body["stdin"])):
                break
            taken[it.job.id] = self.queue.popleft()
        if len(taken) == 1:  # the next job is a duplicate of this one: not in one batch
            (item,) = taken.values()
            return self._start(self._single(conn, item), [item])
        m.timeout_s = max(it.job.timeout_s for it in taken.values())
        return self._start(self._batch(conn, m, taken), list(taken.values()))

    def _first_answer(self) -> None:
        self.unanswered -= 1
        self.wake.set()

    def _start(self, coro: Any, items: list[Item]) -> None:
        self.unanswered += 1
        self.in_flight += len(items)
        for it in items:
            for cid, data in it.job.blobs.items():
                self.serving.setdefault(cid, [0, data])[0] += 1
        self.pool._spawn(coro)

    def _finish(self, item: Item) -> None:
        self.in_flight -= 1
        for cid in item.job.blobs:
            entry = self.serving[cid]
            entry[0] -= 1
            if not entry[0]:
                del self.serving[cid]

    async def _single(self, conn: Any, item: Item) -> None:
        """One job on a stream of its own (``jobs_client.Submission``)."""
        job = item.job
        sub = Submission(time.monotonic, job.manifest, job.id,
                         {c: len(b) for c, b in job.blobs.items()}, timeout_s=job.timeout_s)
        self.pool.stats["streams_single"] += 1
        first = True
        try:
            stream = await conn.open_stream()
            async with stream:
                sub.start()
                try:
                    async with asyncio.timeout(sub.time_left()):
                        try:
                            await send_out(stream, sub.outbox())
                        except Unavailable:  # a worker that refuses the offer stops
                            pass  # reading the run; its answer says why
                        while not sub.finished:
                            cap = sub.expect_blob
                            ev = (sub.receive(await stream.recv()) if cap is None else
                                  sub.receive_blob(await stream.recv_blob(max_bytes=cap)))
                            if first:
                                first = False
                                self._first_answer()
                            if ev is not None and not isinstance(ev, Accepted):
                                self._answer(conn.peer_id, item, Answer(job.id, ev))
                except TimeoutError:
                    sub.deadline_passed(f"the job did not finish within {sub.timeout_s:.0f} s")
        except PhaseError as e:
            if not item.future.done():
                self._finish(item)
                # reset before any answer: the worker refused the stream (a full queue),
                # so the job may go again (had it been recorded, it would be a replay)
                self.pool._settle(item, error=e, retry=first and e.slug == "stream_reset")
        finally:
            if first:
                self._first_answer()

    async def _batch(self, conn: Any, m: BatchSubmission, items: dict[str, Item]) -> None:
        self.pool.stats["batches"] += 1
        self.pool.stats["batched_jobs"] += len(items)
        first = True
        try:
            stream = await conn.open_stream()
            async with stream:
                m.start()
                try:
                    async with asyncio.timeout(m.time_left()):
                        await send_out(stream, m.outbox())
                        while not m.finished:
                            cap = m.expect_blob
                            answers = (m.receive(await stream.recv()) if cap is None else
                                       m.receive_blob(await stream.recv_blob(max_bytes=cap)))
                            if answers and first:
                                first = False
                                self._first_answer()
                            for a in answers:
                                self._answer(conn.peer_id, items.pop(a.job), a)
                except TimeoutError:
                    m.deadline_passed(f"the batch did not finish within {m.timeout_s:.0f} s")
        except PhaseError as e:
            for item in items.values():
                self._finish(item)
                self.pool._settle(item, error=e)
        finally:
            if first:
                self._first_answer()

    def _answer(self, peer: str, item: Item, a: Answer) -> None:
        self._finish(item)
        o = a.outcome
        try:
            if isinstance(o, Finished):
                body = item.job.manifest["body"]
                out = check_outcome(peer, item.job.id, body, o.receipt, o.stdout, o.stderr)
                self.pool._settle(item, outcome=out)
                return
            assert isinstance(o, Refused | Failed)
            raise answer_error(o)
        except PhaseError as e:
            self.pool._settle(item, error=e)


