"""In-memory capture of a guest's stdout and stderr under the output budget (library, job mode).

The guest writes into two pipes. One collector thread per process reads the
pipes of every running guest (epoll), so a run costs four descriptors, not a
thread. Bytes past the run's budget are read and dropped, never kept: what the
process holds for a run is at most its budget plus the pipes' buffers, however
much one ``fd_write`` asks to write. Passing the budget stops the run with
``output_limit`` at its next yield. When the guest has ended, nothing
writes any more; the run's own thread then drains what is left without
blocking (no need to wait for wasmtime to close its ends).
"""

from __future__ import annotations

import contextlib
import os
import select
import threading

from plasm_exec.engine import RunControl

CHUNK = 1 << 16


class PipeCapture:
    def __init__(self, limit: int, ctl: RunControl) -> None:
        self.left = limit
        self.ctl = ctl
        self.exceeded = False
        self.bufs = (bytearray(), bytearray())
        self._lock = threading.Lock()
        self._closed = False
        self._fds: list[tuple[int, int]] = []  # (our read end, the guest's write end)
        try:
            for _ in range(2):
                r, w = os.pipe2(os.O_CLOEXEC)
                self._fds.append((r, w))
                os.set_blocking(r, False)
        except OSError:
            self.close()
            raise
        self.out_path = f"/dev/fd/{self._fds[0][1]}"
        self.err_path = f"/dev/fd/{self._fds[1][1]}"
        _collector().add(self, [r for r, _ in self._fds])

    def _take(self, i: int, data: bytes) -> None:
        n = min(len(data), self.left)
        if n:
            self.bufs[i].extend(data[:n] if n < len(data) else data)
            self.left -= n
        if n < len(data):
            self.exceeded = True
            self.ctl.stop("output_limit")

    def read_ready(self, fd: int) -> None:
        """The collector saw data on ``fd``: read one chunk."""
        with self._lock:
            if self._closed:
                return
            for i, (r, _) in enumerate(self._fds):
                if r == fd:
                    with contextlib.suppress(BlockingIOError, InterruptedError):
                        data = os.read(fd, CHUNK)
                        if data:
                            self._take(i, data)
                    return

    def collect(self) -> tuple[bytes, bytes, bool]:
        """After the guest ended: (stdout, stderr, exceeded), in arrival order within budget."""
        with self._lock:
            self._closed = True
            for i, (r, _) in enumerate(self._fds):
                while True:
                    try:
                        data = os.read(r, CHUNK)
                    except (BlockingIOError, InterruptedError):
                        break
                    if not data:
                        break
                    self._take(i, data)
        _collector().remove([r for r, _ in self._fds])
        return bytes(self.bufs[0]), bytes(self.bufs[1]), self.exceeded

    def close(self) -> None:
        with self._lock:
            self._closed = True
        _collector().remove([r for r, _ in self._fds])
        for pair in self._fds:
            for fd in pair:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fds = []


class _Collector:
    """One thread reading every registered pipe as data arrives."""

    def __init__(self) -> None:
        self._ep = select.epoll()
        self._owners: dict[int, PipeCapture] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="plasm-capture", daemon=True)
        self._thread.start()

    def add(self, cap: PipeCapture, fds: list[int]) -> None:
        with self._lock:
            for fd in fds:
                self._owners[fd] = cap
                self._ep.register(fd, select.EPOLLIN)

    def remove(self, fds: list[int]) -> None:
        with self._lock:
            for fd in fds:
                if self._owners.pop(fd, None) is not None:
                    with contextlib.suppress(OSError):
                        self._ep.unregister(fd)

    def _loop(self) -> None:
        while True:
            for fd, _ in self._ep.poll():
                with self._lock:
                    cap = self._owners.get(fd)
                if cap is not None:
                    cap.read_ready(fd)


_COLLECTOR: _Collector | None = None
_COLLECTOR_LOCK = threading.Lock()


def _collector() -> _Collector:
    global _COLLECTOR
    if _COLLECTOR is None:
        with _COLLECTOR_LOCK:
            if _COLLECTOR is None:
                _COLLECTOR = _Collector()
    return _COLLECTOR
