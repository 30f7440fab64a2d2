"""Group commit: one ``fdatasync`` makes every write made before it durable.

Several threads append to one file (a journal, a log) and each must not go on
until its own line is durable. Syncing once per line costs one disk flush per
line; here a writer takes a *ticket* right after its ``os.write`` and then
``wait(ticket)``: if no flush is under way it becomes the leader, flushes the
file once, and that flush covers every ticket taken before it started; the
others wait for it (or for the next one). Under load many lines share one
flush; alone, a writer pays exactly one, as before.

The promise is unchanged: ``wait`` returns only after the data written before
the ticket was taken is on disk. A failed flush is not retried: on Linux the
dirty pages may already be dropped, so a later successful flush would prove
nothing. Every waiter of that flush and every later one gets ``IOFailure``
(the writer must stop; a restart re-reads the file from disk).

A writer that has more to do than wait (the next guest to run) hands its ticket
to ``later`` instead: a flusher thread makes it durable, sharing the flush with
everything written meanwhile, and only then calls the writer's callback. The
promise is the same; only the waiting moves to another thread.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from phase_core.errors import IOFailure


class GroupSync:
    """Shared ``fdatasync`` of one file for concurrent writers (threads)."""

    def __init__(self, name: str, sync: Callable[[int], None] = os.fdatasync) -> None:
        self.name = name
        self._sync = sync  # tests inject a slow or failing flush
        self._cond = threading.Condition()
        self._written = 0  # tickets handed out
        self._synced = 0  # every ticket up to this one is durable
        self._busy = False
        self._failed: str | None = None
        self.flushes = 0  # for status and benchmarks: flushes made
        self.covered = 0  # tickets those flushes made durable
        self._later: list[tuple[int, int, Callable[[IOFailure | None], Any]]] = []
        self._flusher: threading.Thread | None = None
        self._linger_s = 0.0
        self._coming: Callable[[], bool] = lambda: False

    def linger(self, seconds: float, coming: Callable[[], bool]) -> None:
        """Let the flusher thread wait up to ``seconds`` before a flush while
        ``coming()`` says more writes are on their way (jobs in their guest), so
        one flush covers them too. ``coming`` is asked under this object's lock
        and must not block. A writer that comes alone (``coming()`` false) is
        flushed at once; ``wait`` never lingers."""
        self._linger_s, self._coming = seconds, coming

    def ticket(self) -> int:
        """Call right after the write (under the writer's own lock, so tickets follow
        the order of the writes)."""
        with self._cond:
            self._written += 1
            return self._written

    def wait(self, fd: int, ticket: int) -> None:
        """Return once ``ticket``'s write is durable; flush ``fd`` if nobody is."""
        with self._cond:
            while True:
                if self._failed is not None:
                    raise IOFailure(self._failed)
                if self._synced >= ticket:
                    return
                if not self._busy:
                    break
                self._cond.wait()
            self._busy = True
            upto = self._written
        err: OSError | None = None
        try:
            self._sync(fd)
        except OSError as e:
            err = e
        with self._cond:
            self._busy = False
            if err is not None:
                self._failed = (f"cannot make {self.name} durable: {err.strerror or err}; "
                                "the node stops writing it until it is restarted")
            else:
                self.flushes += 1
                self.covered += upto - self._synced
                self._synced = upto
            self._cond.notify_all()
            if self._failed is not None:
                raise IOFailure(self._failed)

    def later(self, fd: int, ticket: int, done: Callable[[IOFailure | None], Any]) -> None:
        """Make ``ticket``'s write durable on the flusher thread, then call
        ``done(None)`` there (``done(IOFailure)`` if the flush failed). ``fd`` must stay
        open until ``done`` is called. Callbacks run in ticket order, after the flush
        that covers them, and must not block."""
        with self._cond:
            self._later.append((ticket, fd, done))
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_later, daemon=True,
                                                 name="groupsync-flusher")
                self._flusher.start()
            self._cond.notify_all()

    def _flush_later(self) -> None:
        while True:
            with self._cond:
                while not self._later:
                    self._cond.wait()
                if self._linger_s > 0 and self._coming():
                    deadline = time.monotonic() + self._linger_s
                    while self._coming() and (left := deadline - time.monotonic()) > 0:
                        self._cond.wait(left)  # woken by each new write
                batch, self._later = self._later, []
            err: IOFailure | None = None
            try:
                self.wait(batch[-1][1], max(t for t, _, _ in batch))
            except IOFailure as e:
                err = e
            for _, _, done in batch:
                try:
                    done(err)
                except Exception as e:  # a caller's bug must not stop everyone's flushes
                    from phase_core import log
                    log.get().error("groupsync.callback_failed", file=self.name,
                                    error=repr(e))

    def reset(self) -> None:
        """The file was rewritten whole (compaction, repair) and made durable by that."""
        with self._cond:
            self._synced = self._written
