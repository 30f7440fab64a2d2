"""A batch's jobs on the job threads: few hops, shared flushes, answers as jobs end.

``plasmd.batch`` hands the jobs of one ``batch`` stream whose module and stdin
are here to a ``Work``, instead of one job-thread hop (and one set of asyncio
tasks) per job. Each job is still checked and run exactly as ``run_one_later`` does
it, on its own:

1. ``prepare`` (one hop for the whole batch): verify every manifest (signed by
   the peer, the job that was offered), then record every verified job id in
   the replay journal with one append (``StateStore.begin_record_jobs``); a
   replay is refused alone. Their shared flush runs on the journal's flusher
   thread while the guests run, as for a job on a stream of its own.
2. ``run`` (on up to ``workers`` job threads, each taking the next job): run
   the guest under its own fences in a guest slot (taken per job, round-robin
   with other submitters' jobs: ``plasmd.fair``) and sign its receipt, which
   ``JobThread._log_later`` appends to the receipt log once the job ids are
   durable: the answer leaves only once the receipt's entry is durable too,
   from the flusher thread, while this thread runs the next guest. No job
   thread waits for a flush.
   A runner gives its job thread up between two jobs when another submitter
   waits for one, and queues again behind it.

Threads report to the event loop through a ``Mailbox`` (one wake-up of the loop
per drain, not per event): a job starting its guest, and each job's end (its
verified job and ``JobResult``, a ``Refused``, or the ``PhaseError`` it failed
with). The submitter going away sets ``cancel``: a running guest stops, a job
not started yet is not run, and nothing more is logged for them.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from phase_core import timefmt
from phase_core.errors import Interrupted, PhaseError, Rejected
from phase_core.protocol import jobs
from phase_core.state import Durable
from plasmd.jobthread import Refused

__all__ = ["Mailbox", "Work"]


class Mailbox:
    """Events from job threads to the event loop: ``drain(events)`` runs on the loop,
    scheduled once for however many events arrived meanwhile."""

    def __init__(self, loop: Any, drain: Callable[[list[tuple[Any, ...]]], None]) -> None:
        self._loop = loop
        self._drain = drain
        self._lock = threading.Lock()
        self._events: list[tuple[Any, ...]] = []

    def put(self, *event: Any) -> None:
        with self._lock:
            self._events.append(event)
            first = len(self._events) == 1
        if first:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the node stopped
                self._loop.call_soon_threadsafe(self._run)

    def _run(self) -> None:
        with self._lock:
            events, self._events = self._events, []
        self._drain(events)


class Work:
    """The jobs ``items`` (index → offer and ``run`` manifest) of one batch from ``peer``.
    Events: ``("started", i)`` and ``("done", i, outcome)``."""

    def __init__(self, node: Any, peer: str, items: list[tuple[dict[str, Any], dict[str, Any]]],
                 cancel: threading.Event, mailbox: Mailbox) -> None:
        self.node = node
        self.peer = peer
        self.items = items
        self.cancel = cancel
        self.mailbox = mailbox
        self.todo: collections.deque[tuple[int, Any]] = collections.deque()
        self.recorded = Durable.DONE  # the journal lines of the jobs in ``todo``

    def prepare(self) -> None:
        """On a job thread: verify every job, record the verified ones (one flush)."""
        node, put = self.node, self.mailbox.put
        ok: list[tuple[int, Any]] = []
        for i, (offer, env) in enumerate(self.items):
            verified, reject = node._verify_run(self.peer, env)
            if reject is None:
                assert verified is not None
                mismatch = jobs.matches_offer(offer, verified.body, verified.id)
                if mismatch is not None:
                    reject = ("invalid_request", mismatch)
            if reject is not None:
                put("done", i, Refused(*reject))
            else:
                ok.append((i, verified))
        if not ok:
            return
        try:
            errors, self.recorded = node.state.begin_record_jobs(
                self.peer, [(v.id, timefmt.parse_time(v.body["expires"])) for _, v in ok],
                timefmt.now())
        except PhaseError as e:  # the journal cannot be written: none may run
            for i, _ in ok:
                put("done", i, e)
            return
        for (i, verified), err in zip(ok, errors, strict=True):
            if err is None:
                self.todo.append((i, verified))
            elif isinstance(err, Rejected):
                node.counters.inc("replays")
                put("done", i, Refused("replay", err.message))
            else:  # too many unexpired jobs from this submitter
                put("done", i, Refused("queue_full", err.message))

    def run(self, give_way: Callable[[], bool] = lambda: False) -> None:
        """On a job thread: take the next recorded job, run it, log its receipt (the
        answer leaves once that is durable); until none is left, or ``give_way()``
        says another submitter waits for a job thread (the caller then queues this
        runner again behind it: ``plasmd.fair``)."""
        node, put = self.node, self.mailbox.put
        while not give_way():
            try:
                i, verified = self.todo.popleft()
            except IndexError:
                return
            if self.cancel.is_set():
                put("done", i, Interrupted("the submitter went away before the job started"))
                continue
            put("started", i)
            try:
                result = node._run_guest(self.items[i][1], verified, self.cancel, self.peer)
            except PhaseError as e:  # answered once the job id is durable, as a result is
                self.recorded.then(functools.partial(self._failed, i, e))
                continue
            logged = node._log_later(result.receipt, self.recorded)
            logged.add_done_callback(functools.partial(self._logged, i, (verified, result)))

    def _failed(self, i: int, error: PhaseError, failure: PhaseError | None) -> None:
        self.mailbox.put("done", i, failure or error)

    def _logged(self, i: int, ran: tuple[Any, Any], logged: Future[None]) -> None:
        self.mailbox.put("done", i, logged.exception() or ran)
