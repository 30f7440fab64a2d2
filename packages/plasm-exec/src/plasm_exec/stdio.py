"""Guest stdio plumbing: pipes with pump threads (streaming) and memfds (capture).

wasmtime-py takes stdio only as paths, so a guest's stdin/stdout/stderr are
either files we own (memfds, opened by path as ``/proc/self/fd/N``) or pipes
exposed as ``/dev/fd/N`` with a thread on our end:

- ``StdinPump`` copies our stdin into the guest's pipe, hashing what it
  forwards (the receipt's stdin is exactly what was offered to the guest), and
  closes the pipe at EOF, at the wall-clock deadline or when the run ends — so
  a guest blocked reading stdin sees EOF and then meets its next yield.
- ``OutputTap`` reads the guest's stdout or stderr pipe, hashes and counts it,
  forwards it to our own fd, and enforces the shared output budget: bytes past
  the budget are neither forwarded nor hashed, and the run is stopped with
  ``output_limit`` at its next yield. When the reader of our stdout goes
  away (EPIPE) the run is stopped with ``broken_pipe``.
- ``memfd`` holds a spooled stdin. The library and ``job`` mode capture
  stdout/stderr with ``plasm_exec.capture``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import threading
import time

from phase_core.digest import Hasher
from plasm_exec.engine import RunControl

TYPE_CHECKING = False  # typing's, without importing typing
if TYPE_CHECKING:
    from typing import BinaryIO

CHUNK = 1 << 16
FRAME_BYTES = 4096  # a longer guest stderr line is split into partial records


class Budget:
    """The output fence: stdout and stderr share one byte budget."""

    def __init__(self, limit: int, ctl: RunControl) -> None:
        self.left = limit
        self.ctl = ctl
        self.exceeded = False
        self._lock = threading.Lock()

    def take(self, n: int) -> int:
        """How many of ``n`` bytes may still be kept; trips the fence past the end."""
        with self._lock:
            ok = min(n, self.left)
            self.left -= ok
            if ok < n:
                self.exceeded = True
                self.ctl.stop("output_limit")
            return ok


class _Wake:
    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        self.set = False

    def fire(self) -> None:
        if not self.set:
            self.set = True
            with contextlib.suppress(OSError):
                os.write(self.w, b"x")

    def close(self) -> None:
        for fd in (self.r, self.w):
            with contextlib.suppress(OSError):
                os.close(fd)


class _Pipe:
    """A pipe whose guest end is opened by path, after which we close our copy."""

    def __init__(self, guest_end_is_read: bool) -> None:
        r, w = os.pipe()
        self.ours, self.theirs = (w, r) if guest_end_is_read else (r, w)
        self.path = f"/dev/fd/{self.theirs}"
        self._closed = False

    def release_guest_end(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(OSError):
                os.close(self.theirs)


class _Tap:
    """A pipe between the guest and a thread that hashes and counts what passes."""

    def __init__(self, guest_end_is_read: bool, ctl: RunControl, keep: BinaryIO | None,
                 name: str) -> None:
        self.pipe = _Pipe(guest_end_is_read=guest_end_is_read)
        self.ctl = ctl
        self.keep = keep
        self.hash = Hasher()
        self.size = 0
        self._wake = _Wake()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def _loop(self) -> None:
        raise NotImplementedError

    @property
    def path(self) -> str:
        return self.pipe.path

    @property
    def content_id(self) -> str:
        return "sha256:" + self.hash.hexdigest()


class Framer:
    """Guest bytes → JSON log records, one per line (``plasm.guest.stderr``).

    The guest's bytes become a JSON string (escaped, never a record of their own),
    so a guest cannot print a line a JSON-lines reader would take for ours.
    """

    def __init__(self, tool: str = "plasm-exec", event: str = "plasm.guest.stderr") -> None:
        self.tool, self.event = tool, event
        self.buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        out: list[bytes] = []
        while True:
            cut = self.buf.find(b"\n", 0, FRAME_BYTES)
            if cut < 0 and len(self.buf) < FRAME_BYTES:
                return out
            end = cut + 1 if cut >= 0 else FRAME_BYTES
            out.append(self.record(self.buf[:end], partial=cut < 0))
            self.buf = self.buf[end:]

    def flush(self) -> list[bytes]:
        rest, self.buf = self.buf, b""
        return [self.record(rest, partial=True)] if rest else []

    def record(self, line: bytes, partial: bool) -> bytes:
        import json  # here: a guest that writes no stderr never needs it
        rec = {"v": 1, "type": "log",
               "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "level": "info", "tool": self.tool, "event": self.event,
               "text": line.removesuffix(b"\n").decode("utf-8", "backslashreplace")}
        if partial:
            rec["partial"] = True  # no newline ended it (yet)
        return (json.dumps(rec, ensure_ascii=True) + "\n").encode("ascii")


class OutputTap(_Tap):
    def __init__(self, dest_fd: int | None, budget: Budget, ctl: RunControl,
                 keep: BinaryIO | None = None, framed: bool = False) -> None:
        super().__init__(False, ctl, keep, "plasm-out")
        self.dest = dest_fd
        self.framer = Framer() if framed else None
        self.budget = budget
        self.dest_broken = False
        self.reader_gone = False  # EPIPE on our stdout: the run stops with broken_pipe
        self._thread.start()

    def _loop(self) -> None:
        src = self.pipe.ours
        while True:
            r, _, _ = select.select([src, self._wake.r], [], [])
            if src not in r:  # the run is over: drain what is left, never block
                os.set_blocking(src, False)
                with contextlib.suppress(BlockingIOError):
                    while data := os.read(src, CHUNK):
                        self._take(data)
                self._flush_frames()
                return
            data = os.read(src, CHUNK)
            if not data:
                break
            self._take(data)
        self._flush_frames()

    def _flush_frames(self) -> None:
        if self.framer is not None and self.dest is not None and not self.dest_broken:
            for rec in self.framer.flush():
                self._forward(rec)

    def _take(self, data: bytes) -> None:
        if self.reader_gone:
            return  # the run is being stopped: drain without counting
        n = self.budget.take(len(data))
        if n <= 0:
            return
        data = data[:n]
        self.hash.update(data)
        self.size += n
        if self.keep is not None:
            self.keep.write(data)
        if self.dest is not None and not self.dest_broken:
            if self.framer is None:
                self._forward(data)
            else:
                for rec in self.framer.feed(data):
                    self._forward(rec)

    def _forward(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            remaining = self.ctl.deadline - time.monotonic() if self.ctl.deadline else 1.0
            if remaining <= 0:
                self.ctl.stop("timeout")
                self.dest_broken = True  # our reader is stuck: stop forwarding
                return
            _, w, _ = select.select([], [self.dest], [], remaining)
            if not w:
                continue
            try:
                view = view[os.write(self.dest, view):]
            except BlockingIOError:
                continue
            except OSError as e:  # EPIPE: nobody reads our stdout any more
                if e.errno in (errno.EPIPE, errno.EBADF):
                    self.dest_broken = True
                    if self.dest == 1:  # nobody reads the guest's output: stop it
                        self.reader_gone = True
                        self.ctl.stop("broken_pipe")
                    return
                raise

    def finish(self) -> None:
        """Call after the guest has ended: collect the rest and stop the thread."""
        self.pipe.release_guest_end()
        self._wake.fire()
        self._thread.join()
        self._wake.close()
        with contextlib.suppress(OSError):
            os.close(self.pipe.ours)


class StdinPump(_Tap):
    """Stream ``src_fd`` into the guest's stdin pipe until EOF, the deadline or the end."""

    def __init__(self, src_fd: int, ctl: RunControl, keep: BinaryIO | None = None) -> None:
        super().__init__(True, ctl, keep, "plasm-in")
        os.set_blocking(self.pipe.ours, False)
        self.src = src_fd
        self._thread.start()

    def _remaining(self) -> float | None:
        self.ctl.started.wait()
        return self.ctl.deadline - time.monotonic()

    def _loop(self) -> None:
        try:
            while True:
                left = self._remaining()
                if left is None or left <= 0:
                    return
                r, _, _ = select.select([self.src, self._wake.r], [], [], left)
                if self._wake.r in r or not r:
                    return
                try:
                    data = os.read(self.src, CHUNK)
                except OSError:
                    return
                if not data:
                    return
                if not self._send(data):
                    return
        finally:
            with contextlib.suppress(OSError):
                os.close(self.pipe.ours)  # EOF for the guest

    def _send(self, data: bytes) -> bool:
        view = memoryview(data)
        while view:
            left = self.ctl.deadline - time.monotonic()
            if left <= 0:
                return False
            r, w, _ = select.select([self._wake.r], [self.pipe.ours], [], left)
            if r:
                return False
            if not w:
                continue
            try:
                n = os.write(self.pipe.ours, view)
            except BlockingIOError:
                continue
            except OSError:  # the guest closed its stdin or ended
                return False
            self.hash.update(view[:n])
            if self.keep is not None:
                self.keep.write(view[:n])
            self.size += n
            view = view[n:]
        return True

    def interrupt(self) -> None:
        """Close the guest's stdin soon (safe from a signal handler: one write)."""
        self._wake.fire()

    def finish(self) -> None:
        self.pipe.release_guest_end()
        self.ctl.started.set()
        self._wake.fire()
        self._thread.join()
        self._wake.close()


def memfd(name: str, data: bytes | None = None) -> tuple[int, str]:
    """An anonymous in-memory file and the path the guest opens it by."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    if data:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    return fd, f"/proc/self/fd/{fd}"
