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

from phase_core import envelope
from phase_core.errors import InputError, PhaseError, TempFailure, Unavailable
from phase_core.identity import Identity
from phase_core.protocol.jobs_batch import MAX_BATCH_JOBS
from plasmd.poolpeer import Item, Peer
from plasmd.submit import Outcome

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
        self._by_id: dict[str, Peer] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._items: set[Item] = set()
        self._closed = False
        self._room = asyncio.Semaphore(max_in_flight)
        self._peers = [Peer(self, p) for p in peers]
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
        item = Item(job, fut)
        self._items.add(item)
        fut.add_done_callback(lambda _f: self._items.discard(item))
        self._queue(item)
        return fut

    def _queue(self, item: Item) -> None:
        peer = min(self._peers, key=lambda p: p.load)
        if not peer.queue:
            peer.held_since = time.monotonic()
        peer.queue.append(item)
        peer.wake.set()

    def _settle(self, item: Item, *, outcome: Outcome | None = None,
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

    async def _retry(self, item: Item, delay: float) -> None:
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


