"""Fairness between submitters: the node's slots are handed out round-robin per key.

A submitter with a backlog (a batch of 500 jobs, or 500 streams) must not make
every other submitter wait behind it. ``FairQueue`` is the sans-I/O order: the
waiters of each key (a submitter's node id) in arrival order, and the keys in a
ring; ``pop`` takes the head of the next key's line, so a newcomer waits behind
at most one waiter of each other active key (round robin by job count: deficit
round robin with a quantum of one job).

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
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Generic, TypeVar

from phase_core.errors import Interrupted

__all__ = ["FairGate", "FairQueue", "FairSlots"]
T = TypeVar("T")
CANCEL_POLL_S = 0.05  # how often a waiting guest looks at its job's cancel flag


class FairQueue(Generic[T]):
    """Waiters per key, served round-robin across keys, in arrival order within one."""

    def __init__(self) -> None:
        self._lines: collections.OrderedDict[str, collections.deque[T]] = \
            collections.OrderedDict()
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def push(self, key: str, item: T) -> None:
        """``item`` waits at the end of ``key``'s line (a new key joins the ring last)."""
        self._lines.setdefault(key, collections.deque()).append(item)
        self._n += 1

    def pop(self) -> tuple[str, T]:
        """The next waiter: the head of the next key's line; that key moves to the end
        of the ring. Raises ``IndexError`` when nobody waits."""
        if not self._lines:
            raise IndexError("nobody waits")
        key, line = next(iter(self._lines.items()))
        item = line.popleft()
        self._n -= 1
        if line:
            self._lines.move_to_end(key)
        else:
            del self._lines[key]
        return key, item

    def remove(self, key: str, item: T) -> bool:
        """Take a waiter out (its job was cancelled); False if it was not waiting."""
        line = self._lines.get(key)
        if line is None or item not in line:
            return False
        line.remove(item)
        self._n -= 1
        if not line:
            del self._lines[key]
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
    __slots__ = ("granted",)

    def __init__(self) -> None:
        self.granted = False


class FairGate:
    """``n`` slots for threads: ``with gate.slot(key, cancel)``; a freed slot goes to
    the next waiting thread in ``FairQueue`` order. A waiter whose ``cancel`` is set
    leaves the line and raises ``Interrupted`` (its job was never started)."""

    def __init__(self, n: int) -> None:
        self._free = n
        self._queue: FairQueue[_Waiter] = FairQueue()
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def slot(self, key: str, cancel: threading.Event | None = None) -> Iterator[None]:
        with self._cond:
            if self._free > 0 and not len(self._queue):
                self._free -= 1
            else:
                w = _Waiter()
                self._queue.push(key, w)
                while not w.granted:
                    if cancel is not None and cancel.is_set():
                        self._queue.remove(key, w)
                        raise Interrupted("the job was cancelled while it waited for a "
                                          "guest slot; nothing ran")
                    self._cond.wait(CANCEL_POLL_S if cancel is not None else None)
        try:
            yield
        finally:
            with self._cond:
                if len(self._queue):
                    _, nxt = self._queue.pop()
                    nxt.granted = True
                    self._cond.notify_all()
                else:
                    self._free += 1

    def waiting(self) -> int:
        with self._cond:
            return len(self._queue)
