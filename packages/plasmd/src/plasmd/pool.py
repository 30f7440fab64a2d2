"""Submit many jobs: a ``Pool`` of warm connections that batches what is queued.

    async with Pool(identity, ["<node-id>@127.0.0.1:4433"], max_in_flight=64) as pool:
        outcome = await pool.submit(Job(manifest_env, {module_id: module}))
        async for done in pool.map(jobs):        # results in completion order
            print(done.index, done.outcome or done.error)

Every job keeps its own signed manifest, and its receipt is verified on its own
(``submit.check_outcome``): signature, worker, job, module and stdin ids,
output digests. Only the transport is shared.

Batching (``phase_core.protocol.jobs_batch``): jobs queued for the same
connection go out together, at most ``max_batch`` per stream, as one ``batch``
frame. A job that finds nothing else queued goes at once on a stream of its
own; only when more jobs are queued does the sender wait up to ``linger_s``
for the batch to fill. A worker that does not advertise the ``job-batch``
feature in its node record (asked once per connection, without holding any
job back) gets one job per stream.

Backpressure: at most ``max_in_flight`` jobs are queued or running (their
blobs are the pool's memory). ``submit`` waits for room; ``map`` reads its
input only as results are taken, so a huge input stream costs bounded memory.
A ``queue_full`` refusal is retried (``retries`` times, with backoff).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from phase_core import envelope, log
from phase_core.errors import InputError, PhaseError, TempFailure, Unavailable
from phase_core.identity import Identity
from phase_core.protocol.jobs_batch import FEATURE, MAX_BATCH_JOBS, Answer, BatchSubmission
from phase_core.protocol.jobs_client import (
    Accepted,
    Failed,
    Finished,
    Query,
    Refused,
    Submission,
)
from plasmd.blobs import send_out
from plasmd.submit import JobRejected, Outcome, check_outcome, parse_peer

__all__ = ["Done", "Job", "Pool"]


@dataclass(frozen=True)
class Job:
    """A signed job manifest and the bytes of its module (and stdin)."""

    manifest: dict[str, Any]
    blobs: Mapping[str, bytes]
    id: str = field(default="")

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", envelope.parse(self.manifest).id)
        body = self.manifest["body"]
        for cid in (body.get("module"), body.get("stdin")):
            if cid is not None and cid not in self.blobs:
                raise InputError(f"job {self.id}: no bytes for {cid}",
                                 hint="give the module (and stdin) the manifest names")

    @property
    def timeout_s(self) -> float:
        return int(self.manifest["body"]["limits"]["wall_ms"]) / 1000 + 30

    def size(self, cid: str | None) -> int:
        return len(self.blobs[cid]) if cid is not None else 0


@dataclass(frozen=True)
class Done:
    """One job's end, from ``Pool.map``: its verified outcome or its error."""

    index: int
    job: Job
    outcome: Outcome | None = None
    error: PhaseError | None = None


@dataclass(eq=False)
class _Item:
    job: Job
    future: asyncio.Future[Outcome]
    attempt: int = 0


class _Peer:
    """One worker: its connection, its queue and the sender that drains it."""

    def __init__(self, pool: Pool, text: str) -> None:
        self.pool = pool
        self.node_id, self.host, self.port = parse_peer(text)
        self.queue: collections.deque[_Item] = collections.deque()
        self.wake = asyncio.Event()
        self.in_flight = 0
        self.batch_ok = False  # until the node record says so
        self.asked: asyncio.Future[None] | None = None  # the node record, asked for
        self.unanswered = 0  # streams sent that have had no answer yet
        self.held_since = 0.0  # when the oldest queued job was queued
        self.peer_id: str | None = None
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
                rec = q.receive(await asyncio.wait_for(stream.recv(), 15))
            feats = rec["record"]["body"].get("capabilities", {}).get("features", [])
            self.batch_ok = isinstance(feats, list) and FEATURE in feats
        except (PhaseError, TimeoutError, AttributeError) as e:
            log.get().debug("pool.features_unknown", peer=conn.peer_id, error=repr(e))

    async def _send_loop(self) -> None:
        """Send what is queued. A job goes at once when no stream to this worker awaits
        its first answer (a lone job is never held); otherwise queued jobs wait for that
        answer, at most ``linger_s``, and then go together (Nagle's rule, per stream)."""
        pool = self.pool
        while True:
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
                    await asyncio.wait_for(asyncio.shield(self.asked), 2)
            if not self.batch_ok:
                while self.queue:
                    self._start_single(conn)
                await asyncio.sleep(0)
                continue
            if self.unanswered and len(self.queue) < pool.max_batch:
                left = self.held_since + pool.linger_s - time.monotonic()
                if left > 0:  # let the batch fill until an answer comes, or the linger ends
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), left)
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
        taken: dict[str, _Item] = {}
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

    def _start(self, coro: Any, items: list[_Item]) -> None:
        self.unanswered += 1
        self.in_flight += len(items)
        for it in items:
            for cid, data in it.job.blobs.items():
                self.serving.setdefault(cid, [0, data])[0] += 1
        self.pool._spawn(coro)

    def _finish(self, item: _Item) -> None:
        self.in_flight -= 1
        for cid in item.job.blobs:
            entry = self.serving[cid]
            entry[0] -= 1
            if not entry[0]:
                del self.serving[cid]

    async def _single(self, conn: Any, item: _Item) -> None:
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

    async def _batch(self, conn: Any, m: BatchSubmission, items: dict[str, _Item]) -> None:
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

    def _answer(self, peer: str, item: _Item, a: Answer) -> None:
        self._finish(item)
        o = a.outcome
        try:
            if isinstance(o, Finished):
                body = item.job.manifest["body"]
                out = check_outcome(peer, item.job.id, body, o.receipt, o.stdout, o.stderr)
                self.pool._settle(item, outcome=out)
                return
            if isinstance(o, Refused):
                cls = TempFailure if o.retryable else JobRejected
                raise cls(f"the worker rejected the job: {o.reason}"
                          + (f" ({o.message})" if o.message else ""), slug=o.reason)
            assert isinstance(o, Failed)
            raise JobRejected(f"the worker could not run the job: {o.message}",
                              slug=o.error or "job_failed")
        except PhaseError as e:
            self.pool._settle(item, error=e)


class Pool:
    """Warm connections to ``peers`` (``[<node-id>@]host:port``); jobs go to the least
    loaded one. Create it inside a running event loop; use it as an async context
    manager, or call ``close()`` (jobs not yet ended fail with ``Unavailable``)."""

    def __init__(self, identity: Identity, peers: Iterable[str], *, max_in_flight: int = 64,
                 max_batch: int = MAX_BATCH_JOBS, linger_s: float = 0.05,
                 retries: int = 4, limits: Any = None) -> None:
        from phase_core.aio.pool import Pool as Connections
        from phase_core.aio.stream import Limits

        if max_in_flight < 1 or not 1 <= max_batch <= MAX_BATCH_JOBS:
            raise ValueError("max_in_flight must be ≥ 1 and max_batch in 1..64")
        self.max_in_flight, self.max_batch, self.linger_s = max_in_flight, max_batch, linger_s
        self.retries = retries
        self.stats: collections.Counter[str] = collections.Counter()
        self._conns = Connections(identity, limits or Limits(idle_timeout_s=10, keepalive_s=2),
                                  handler=self._serve)
        self._by_id: dict[str, _Peer] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._items: set[_Item] = set()
        self._closed = False
        self._room = asyncio.Semaphore(max_in_flight)
        self._peers = [_Peer(self, p) for p in peers]
        if not self._peers:
            raise ValueError("a pool needs at least one peer")

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- submitting ------------------------------------------------------------
    async def submit(self, job: Job) -> asyncio.Future[Outcome]:
        """Queue ``job`` (waiting while ``max_in_flight`` jobs are in flight); the
        future gives its verified ``Outcome`` or raises the job's error."""
        await self._room.acquire()
        fut = self._enqueue(job)
        fut.add_done_callback(lambda _f: self._room.release())
        return fut

    async def map(self, jobs: Iterable[Job] | AsyncIterable[Job]) -> AsyncIterator[Done]:
        """Run every job of ``jobs``; yield each one's ``Done`` as it ends. The input is
        read only while fewer than ``max_in_flight`` results are unclaimed."""
        done: asyncio.Queue[Done | None] = asyncio.Queue()
        room = self._room
        counts = [0, 0]  # jobs read, results yielded

        def settled(i: int, job: Job, f: asyncio.Future[Outcome]) -> None:
            e = None if f.cancelled() else f.exception()
            if f.cancelled() or (e is not None and not isinstance(e, PhaseError)):
                e = Unavailable("the pool was closed")
            done.put_nowait(Done(i, job, error=e) if isinstance(e, PhaseError)
                            else Done(i, job, outcome=f.result()))

        async def feed() -> None:
            try:
                async for job in _aiter(jobs):
                    await room.acquire()  # released once the caller took the result
                    if self._closed:
                        return
                    i = counts[0]
                    counts[0] += 1
                    self._enqueue(job).add_done_callback(functools.partial(settled, i, job))
            finally:
                done.put_nowait(None)

        feeder = asyncio.create_task(feed())
        fed_all = False
        try:
            while not (fed_all and counts[1] == counts[0]):
                d = await done.get()
                if d is None:
                    fed_all = True
                    await feeder  # raises what reading the input raised
                    continue
                counts[1] += 1
                room.release()
                yield d
        finally:
            if not feeder.done():
                feeder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feeder

    @property
    def in_flight(self) -> int:
        return sum(p.load for p in self._peers)

    def _enqueue(self, job: Job) -> asyncio.Future[Outcome]:
        if self._closed:
            raise Unavailable("the pool is closed")
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        item = _Item(job, fut)
        self._items.add(item)
        fut.add_done_callback(lambda _f: self._items.discard(item))
        self._queue(item)
        return fut

    def _queue(self, item: _Item) -> None:
        peer = min(self._peers, key=lambda p: p.load)
        if not peer.queue:
            peer.held_since = time.monotonic()
        peer.queue.append(item)
        peer.wake.set()

    def _settle(self, item: _Item, *, outcome: Outcome | None = None,
                error: PhaseError | None = None, retry: bool = False) -> None:
        if item.future.done():
            return
        retry = retry or (isinstance(error, TempFailure) and error.slug == "queue_full")
        if error is not None and retry and item.attempt < self.retries and not self._closed:
            item.attempt += 1
            self.stats["retried"] += 1
            self._spawn(self._retry(item, 0.05 * 2 ** item.attempt))
            return
        if error is not None:
            item.future.set_exception(error)
        else:
            assert outcome is not None
            item.future.set_result(outcome)

    async def _retry(self, item: _Item, delay: float) -> None:
        await asyncio.sleep(delay)
        self._queue(item)

    def _spawn(self, coro: Any) -> None:
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # -- the worker fetching a job's blobs -----------------------------------------
    async def _serve(self, peer: str, stream: Any) -> None:
        """Answer a worker's ``get`` for a blob of a job in flight to that worker only."""
        from plasmd.blobs import serve_get

        p = self._by_id.get(peer)

        def lookup(cid: str) -> bytes | None:
            entry = p.serving.get(cid) if p is not None else None
            return entry[1] if entry is not None else None

        await serve_get(stream, await stream.recv(), lookup)

    async def close(self) -> None:
        """Stop the senders, fail every job not yet ended, close the connections."""
        self._closed = True
        for p in self._peers:
            p.sender.cancel()
            p.queue.clear()
        for item in list(self._items):
            if not item.future.done():
                item.future.set_exception(Unavailable("the pool was closed"))
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*(p.sender for p in self._peers), *self._tasks,
                             return_exceptions=True)
        await self._conns.close()


async def _aiter(jobs: Iterable[Job] | AsyncIterable[Job]) -> AsyncIterator[Job]:
    if isinstance(jobs, AsyncIterable):
        async for j in jobs:
            yield j
    else:
        for j in jobs:
            yield j
            await asyncio.sleep(0)


