"""Fairness between submitters: the node's slots are handed out round-robin per key.

A submitter with a backlog (a batch of 500 jobs, or 500 streams) must not make
every other submitter wait behind it. ``FairQueue`` is the sans-I/O order: the
waiters of each key (a submitter's node id) in arrival order, served round-robin
across keys by job count (start-time fair queueing, one job per turn), so a
newcomer waits for the slots in use to free up, not behind anyone's backlog, and
submitters with backlogs alternate.

Two gates use it, both handing a freed slot straight to the next waiter:

- ``FairSlots`` (asyncio): the node's job threads (``Node._slots``), taken by a
  job before its hop to a job thread, and by each runner of a batch;
- ``FairGate`` (threads): the guest slots (``Node._guests``), taken on a job
  thread around each guest run, so the jobs already on job threads are served
  in the same order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Generic, TypeVar

from phase_core.errors import Interrupted

__all__ = ["FairGate", "FairQueue", "FairSlots"]
T = TypeVar("T")
CANCEL_POLL_S = 0.05  # how often a waiting guest looks at its job's cancel flag


class FairQueue(Generic[T]):
    """Waiters per key, served round-robin across keys, in arrival order within one.

    Start-time fair queueing with a cost of one job: each key's head waiter has a
    tag; ``pop`` serves the smallest (ties: the tag given first), the virtual time
    becomes that tag and the key's next waiter gets the tag after it. A key that
    comes (back) starts at the virtual time, or after its last service if that is
    later: a newcomer is served before a backlogged key's next job, and a key that
    keeps one job waiting at a time alternates with the others, never passes them."""

    def __init__(self) -> None:
        self._lines: dict[str, collections.deque[T]] = {}
        self._head: dict[str, tuple[int, int]] = {}  # key → (tag, seq) of its head
        self._heap: list[tuple[int, int, str]] = []
        self._after: dict[str, int] = {}  # key → the tag after its last service
        self._now = 0
        self._seq = 0
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def _schedule(self, key: str, tag: int) -> None:
        self._seq += 1
        self._head[key] = (tag, self._seq)
        heapq.heappush(self._heap, (tag, self._seq, key))

    def push(self, key: str, item: T) -> None:
        """``item`` waits at the end of ``key``'s line."""
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = collections.deque()
            self._schedule(key, max(self._now, self._after.pop(key, 0)))
        line.append(item)
        self._n += 1

    def charge(self, key: str) -> None:
        """``key`` took a slot without waiting (nobody waited): its next waiter comes
        after a newcomer's. Only the last such grant counts."""
        if not self._lines:
            self._after = {key: self._now + 1}

    def pop(self) -> tuple[str, T]:
        """The next waiter. Raises ``IndexError`` when nobody waits."""
        while self._heap:
            tag, seq, key = heapq.heappop(self._heap)
            if self._head.get(key) != (tag, seq):
                continue  # stale: that key's line emptied or was rescheduled
            line = self._lines[key]
            item = line.popleft()
            self._n -= 1
            self._now = tag
            if line:
                self._schedule(key, tag + 1)
            else:
                self._forget(key)
                self._after[key] = tag + 1
                if len(self._after) > 2 * len(self._lines) + 64:  # those due anyway
                    self._after = {k: t for k, t in self._after.items() if t > self._now}
            return key, item
        raise IndexError("nobody waits")

    def _forget(self, key: str) -> None:
        del self._lines[key]
        del self._head[key]

    def remove(self, key: str, item: T) -> bool:
        """Take a waiter out (its job was cancelled); False if it was not waiting."""
        line = self._lines.get(key)
        if line is None or item not in line:
            return False
        line.remove(item)
        self._n -= 1
        if not line:
            self._forget(key)
        return True

    def waiting(self, key: str) -> int:
        line = self._lines.get(key)
        return len(line) if line is not None else 0

    def others_waiting(self, key: str) -> bool:
        """Someone with another key waits (a batch runner then gives its slot up)."""
        return len(self._lines) > (1 if key in self._lines else 0)


class FairSlots:
    """``n`` slots for asyncio tasks: ``async with slots.take(key)``; a freed slot goes
    to the next waiter in ``FairQueue`` order."""

    def __init__(self, n: int) -> None:
        self.free = n
        self.queue: FairQueue[asyncio.Future[None]] = FairQueue()

    @contextlib.asynccontextmanager
    async def take(self, key: str) -> AsyncIterator[None]:
        if self.free > 0 and not len(self.queue):
            self.free -= 1
            self.queue.charge(key)
        else:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.queue.push(key, fut)
            try:
                await fut
            except asyncio.CancelledError:
                if not self.queue.remove(key, fut) and fut.done() and not fut.cancelled():
                    self._release()  # granted as it was cancelled: pass it on
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while len(self.queue):
            _, fut = self.queue.pop()
            if not fut.done():
                fut.set_result(None)
                return
        self.free += 1

    def others_waiting(self, key: str) -> bool:
        return self.queue.others_waiting(key)


class _Waiter:
    """A thread waiting at a ``FairGate``, woken alone when it is granted a slot."""

    __slots__ = ("granted", "wake")

    def __init__(self, lock: threading.Lock) -> None:
        self.granted = False
        self.wake = threading.Condition(lock)  # the gate's lock: no wake-up is lost


class FairGate:
    """``n`` slots for threads: ``with gate.slot(key, cancel)``; a freed slot goes to
    the next waiting thread in ``FairQueue`` order. A waiter whose ``cancel`` is set
    leaves the line and raises ``Interrupted`` (its job was never started)."""

    def __init__(self, n: int) -> None:
        self._n = n
        self._free = n
        self._queue: FairQueue[_Waiter] = FairQueue()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def slot(self, key: str, cancel: threading.Event | None = None) -> Iterator[None]:
        with self._lock:
            if self._free > 0 and not len(self._queue):
                self._free -= 1
                self._queue.charge(key)
            else:
                w = _Waiter(self._lock)
                self._queue.push(key, w)
                while not w.granted:
                    if cancel is not None and cancel.is_set():
                        self._queue.remove(key, w)
                        raise Interrupted("the job was cancelled while it waited for a "
                                          "guest slot; nothing ran")
                    w.wake.wait(CANCEL_POLL_S if cancel is not None else None)
        try:
            yield
        finally:
            with self._lock:
                if len(self._queue):  # straight to the next waiter, and wake only it
                    _, nxt = self._queue.pop()
                    nxt.granted = True
                    nxt.wake.notify()
                else:
                    self._free += 1

    def waiting(self) -> int:
        with self._lock:
            return len(self._queue)

    def busy(self) -> bool:
        """A guest holds a slot now (read without the lock: a hint, never a promise)."""
        return self._free < self._n
