"""A ``batch`` stream on the worker: each job keeps the checks of the one-job path.

``jobs_batch.BatchResponder`` checks the batch and merges the answers. A job whose
module and stdin the node holds is admitted here as ``Node._job`` admits a job;
then the batch's jobs are verified and recorded in one hop to a job thread (one
journal flush for all of them) and run by up to ``workers`` job threads, each
taking the next job; each answer leaves once its receipt is durable
(``plasmd.batchhere`` on the event loop, ``plasmd.batchrun`` on the job threads).

A job that needs a fetch runs through ``Node._job`` as if it had come on a stream
of its own, over a ``Lane``: a stand-in for that stream which hands the job's
``run`` to the path, passes its answers to the batch machine and reports the
submitter's departure as the end of the stream. Answers go out as each job ends.

A peer's jobs in flight on batch streams are capped (``MAX_BATCH_JOBS_PER_PEER``,
the number of one-job streams the transport lets a peer keep open); a job over
the cap is refused ``queue_full`` on its own, like a job the queue has no room for.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
import weakref
from typing import Any

from phase_core import log
from phase_core.errors import PhaseError, ProtocolViolation, Unavailable
from phase_core.protocol.jobs import SendBlob
from phase_core.protocol.jobs_batch import BatchJob, BatchResponder
from phase_core.protocol.jobs_worker import Offered, Responder
from plasmd.admission import Admission
from plasmd.blobs import send_out

MAX_BATCH_JOBS_PER_PEER = 256

# node → peer → its batch jobs in flight
_IN_FLIGHT: weakref.WeakKeyDictionary[Any, collections.Counter[str]] = \
    weakref.WeakKeyDictionary()


class Lane:
    """What ``Node._job`` sees as the job's stream."""

    def __init__(self, batch: BatchStream, job: BatchJob) -> None:
        self._batch = batch
        self._job = job.job
        self._run: dict[str, Any] | None = job.run
        self.connection = batch.stream.connection
        self.peer_id = batch.stream.peer_id

    async def recv(self) -> dict[str, Any] | None:
        if self._run is not None:  # first the job's run, then: wait for the submitter to go
            run, self._run = self._run, None
            return run
        await self._batch.gone.wait()
        return None

    async def send(self, message: dict[str, Any]) -> None:
        await self._batch.out(self._job, message)

    async def send_blob(self, data: bytes) -> None:
        await self._batch.out(self._job, SendBlob(bytes(data)))

    def abort(self, code: int = 0) -> None:
        self._batch.stream.abort()


class BatchStream:
    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.machine = BatchResponder(time.monotonic)
        self.gone = asyncio.Event()
        self.cancel = threading.Event()  # set with ``gone``: stops the batch's guests
        self._lock = asyncio.Lock()
        self._sender: asyncio.Task[None] | None = None

    async def out(self, job: str, item: Any) -> None:
        if not self.machine.job_out(job, item):
            raise Unavailable("the submitter went away", slug="submitter_gone")
        async with self._lock:  # a result and its blobs leave together, in order
            await send_out(self.stream, self.machine.outbox())

    async def flush(self) -> None:
        async with self._lock:
            await send_out(self.stream, self.machine.outbox())

    def send_soon(self) -> None:
        """Send what the machine queued, from a task (one for many answers)."""
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_all())

    async def _send_all(self) -> None:
        async with self._lock:
            while out := self.machine.outbox():
                try:
                    await send_out(self.stream, out)
                except PhaseError:  # the submitter went away: answers are orphaned
                    return

    async def sent(self) -> None:
        if self._sender is not None:
            await self._sender

    async def watch(self) -> None:
        """The submitter sends nothing after the batch; the end of its half means it
        went away: every job still running is stopped."""
        try:
            msg = await self.stream.recv()
        except ProtocolViolation:
            self.gone.set()
            raise
        except PhaseError:  # the connection is gone
            msg = None
        try:
            self.machine.receive(msg)
        finally:
            self.gone.set()
            self.cancel.set()


async def serve(node: Any, peer: str, message: dict[str, Any], stream: Any) -> None:
    """Answer one ``batch`` stream: every job through ``node._job``, answers as they end."""
    b = BatchStream(stream)
    try:
        batch = b.machine.open(message)
    except ProtocolViolation:
        node.counters.inc("bad_requests")
        raise
    node.counters.inc("batches")
    node.counters.inc("batch_jobs", len(message["jobs"]))
    share = _Share(_IN_FLIGHT.setdefault(node, collections.Counter()), peer)
    runnable = []
    for job in batch:
        if share.full():
            node.counters.inc("rejected_queue_full")
            b.machine.reject(job.job, "queue_full", "this peer has too many jobs in flight")
            continue
        share.take(job)
        runnable.append(job)
    watch = asyncio.create_task(b.watch())
    here: list[tuple[BatchJob, Admission]] = []
    try:
        here, fetch = _split(node, peer, b, runnable, share)
        await b.flush()  # the jobs refused at once
        tasks = [_one(node, peer, b, job, share) for job in fetch]
        if here:
            tasks.append(_here(node, peer, b, here, share))
        done = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        watch.cancel()
        await asyncio.wait([watch])
        # if the stream broke (or this task was cancelled) before every job got to
        # its task, the rest are counted out here; each job only once
        for _, adm in here:
            adm.end()
        share.release_all()
    errors = [e for e in done if isinstance(e, BaseException)]
    if not watch.cancelled() and isinstance(watch.exception(), ProtocolViolation):
        errors.insert(0, watch.exception())  # type: ignore[arg-type]
    for e in errors:  # the submitter breaking the protocol drops its connection
        if isinstance(e, ProtocolViolation) or not isinstance(e, PhaseError):
            raise e
    if errors:
        raise errors[0]  # a stream that failed under every job (logged by the transport)


async def _one(node: Any, peer: str, b: BatchStream, job: BatchJob, share: _Share) -> None:
    try:
        r = Responder(time.monotonic)
        ev = r.receive(job.offer)
        assert isinstance(ev, Offered)
        await node._job(peer, r, ev, Lane(b, job))
    finally:
        share.release(job)


def _split(node: Any, peer: str, b: BatchStream, runnable: list[BatchJob], share: _Share
           ) -> tuple[list[tuple[BatchJob, Admission]], list[BatchJob]]:
    """(jobs for ``_here``, jobs for ``_job``): a job whose module and stdin are here is
    admitted now as ``Node._job`` admits (refused: answered at once); one that needs a
    fetch goes through ``_job``."""
    if not callable(getattr(node, "inputs_here", None)):
        return [], runnable
    here, fetch = [], []
    for job in runnable:
        if not node.inputs_here(job.offer):
            fetch.append(job)
            continue
        reason, why = node._admit(peer, job.offer)
        if reason is not None:
            node.counters.inc(f"rejected_{reason}")
            log.get().info("job.rejected", peer=peer, job=job.job, reason=reason)
            b.machine.reject(job.job, reason, why)
            share.release(job)
            continue
        here.append((job, Admission(node, peer)))
    return here, fetch


class _Share:
    """The jobs of one batch counted in its peer's node-wide jobs in flight
    (at most ``MAX_BATCH_JOBS_PER_PEER``); each is counted out once, however its
    batch ends."""

    def __init__(self, in_flight: collections.Counter[str], peer: str) -> None:
        self.in_flight = in_flight
        self.peer = peer
        self._mine: set[int] = set()  # id() of the batch's jobs still counted

    def full(self) -> bool:
        return self.in_flight[self.peer] >= MAX_BATCH_JOBS_PER_PEER

    def take(self, job: BatchJob) -> None:
        self._mine.add(id(job))
        self.in_flight[self.peer] += 1

    def release(self, job: BatchJob) -> None:
        if id(job) in self._mine:
            self._mine.discard(id(job))
            self._give_back(1)

    def release_all(self) -> None:
        n, self._mine = len(self._mine), set()
        self._give_back(n)

    def _give_back(self, n: int) -> None:
        self.in_flight[self.peer] -= n
        if self.in_flight[self.peer] <= 0:
            del self.in_flight[self.peer]


async def _here(node: Any, peer: str, b: BatchStream, here: list[tuple[BatchJob, Admission]],
                share: _Share) -> None:
    from plasmd.batchhere import run_here

    try:
        await run_here(node, peer, b, here)
    finally:
        for job, _ in here:
            share.release(job)
