"""WASI ``poll_oneoff`` under the fences: it shadows wasmtime's own in both linkers.

wasmtime's ``poll_oneoff`` sleeps in the host and blocks the guest's thread, so a
guest asleep on a one-hour clock would meet neither the wall-clock deadline nor a
cancel until it woke. This one sleeps in slices of at most ``WAIT_S`` (one epoch
tick), waiting on the run's cancel event and asking ``RunControl.poll`` after each
slice; when the run must stop it raises ``Stopped``, which wasmtime turns into a
trap, so the guest unwinds at once and never sees the wake-up.
``engine.Runtime`` maps that trap to the run's stop reason (``timeout``,
``interrupted``, ...). A plain host function is fine inside wasmtime's async
calls: it runs on the guest's fiber, on the thread polling the call future, so
the per-run state sits in a thread-local, as for ``determinism``.

Semantics, as close to wasmtime's as the host can see (WASI preview1 layout:
48-byte subscriptions, 32-byte events):

- no subscriptions, more than ``MAX_SUBSCRIPTIONS``, an unknown tag or a clock
  other than realtime (0) or monotonic (1) → ``EINVAL`` for the whole call;
  a pointer out of bounds or misaligned → ``EFAULT`` (wasmtime traps on a
  misaligned one);
- clocks: relative, or absolute (flag 1) on the realtime clock or on the guest's
  monotonic clock, which counts from the run's start; the precision is ignored;
- fd subscriptions are ready at once with ``nbytes`` 1, as wasmtime reports
  stdio and files: ``fd_read`` on 0 and ``fd_write`` on 1 and 2; the wrong
  direction on 0-2 → ``EBADF`` for the call. Other descriptors (files the
  guest opened) are reported ready unchecked: the read or write that follows
  reports its own error. A pipe stdin (``run`` mode) with no data yet is also
  "ready": the ``fd_read`` that follows blocks until data comes or the stdin
  pump closes the pipe (at EOF, the deadline or a signal);
- the call returns the ready fd events (and clocks already due) at once, or
  else sleeps until the earliest clock and returns every clock then due, in
  subscription order.

Deterministic profile: the fixed clock of ``determinism`` is the only time
there. A sleep takes no real time: the clock jumps to the wake-up time (it
never goes back), so the guest sees the time it slept for and two runs are
identical.
"""

from __future__ import annotations

import struct
import threading
import time

from plasm_exec import capi

TYPE_CHECKING = False  # typing's, without importing typing
if TYPE_CHECKING:
    from typing import Any

WASI = "wasi_snapshot_preview1"
SUB_SIZE, EVENT_SIZE = 48, 32
MAX_SUBSCRIPTIONS = 4096
CLOCK, FD_READ, FD_WRITE = 0, 1, 2
REALTIME, MONOTONIC = 0, 1
ABSTIME = 1
SUCCESS, EBADF, EFAULT, EINVAL = 0, 8, 21, 28
U32 = 0xFFFF_FFFF
WAIT_S = 0.01  # longest sleep between two looks at the run's control
_SUB = struct.Struct("<QB7xIIQQH6x")  # userdata, tag, fd or clock id, -, timeout, precision, flags
_EVENT = struct.Struct("<QHB5xQH6x")  # userdata, error, type, nbytes, flags
_NEVER = threading.Event()
_tls = threading.local()


class Stopped(Exception):
    """Raised inside the host function: the run was stopped while the guest slept."""


class Sub:
    """One subscription of a ``poll_oneoff`` call (a plain class: no ``typing`` machinery
    at import)."""

    __slots__ = ("absolute", "fd", "tag", "timeout", "userdata")

    def __init__(self, userdata: int, tag: int, fd: int, timeout: int, absolute: bool) -> None:
        self.userdata = userdata
        self.tag = tag
        self.fd = fd  # the descriptor, or the clock id for a clock
        self.timeout = timeout
        self.absolute = absolute


class _Run:
    def __init__(self, ctl: Any, base_ns: int) -> None:
        self.ctl = ctl  # engine.RunControl
        self.base_ns = base_ns  # time.monotonic_ns() when the guest's monotonic clock read 0
        self.stopped = False  # Stopped was raised: the guest's trap is the stop


def begin_run(ctl: Any, base_ns: int) -> None:
    _tls.run = _Run(ctl, base_ns)


def end_run() -> None:
    _tls.run = None


def stopped() -> bool:
    """Whether this thread's run was stopped asleep in ``poll_oneoff``."""
    run = getattr(_tls, "run", None)
    return run is not None and run.stopped


def parse(raw: bytes) -> list[Sub] | int:
    """The subscriptions in ``raw``, or the errno the whole call fails with."""
    subs = []
    for ud, tag, fd, _pad, timeout, _prec, flags in _SUB.iter_unpack(raw):
        if tag == CLOCK:
            if fd not in (REALTIME, MONOTONIC):
                return EINVAL
        elif tag == FD_READ:
            if fd in (1, 2):
                return EBADF
        elif tag == FD_WRITE:
            if fd == 0:
                return EBADF
        else:
            return EINVAL
        subs.append(Sub(ud, tag, fd, timeout, bool(flags & ABSTIME)))
    return subs


def due(subs: list[Sub], wakes: list[int | None], now: int) -> bytes:
    """The events of the subscriptions ready at ``now`` (fd ones always are)."""
    return b"".join(
        _EVENT.pack(s.userdata, SUCCESS, s.tag, 0 if s.tag == CLOCK else 1, 0)
        for s, w in zip(subs, wakes, strict=True) if w is None or w <= now)


def _subs(mem: capi.Caller, in_ptr: int, out_ptr: int, n: int,
          nevents_ptr: int) -> list[Sub] | int:
    if n == 0 or n > MAX_SUBSCRIPTIONS:
        return EINVAL
    size = mem.size
    if not mem.has_memory or in_ptr % 8 or out_ptr % 8 or nevents_ptr % 4 \
            or in_ptr + n * SUB_SIZE > size or out_ptr + n * EVENT_SIZE > size \
            or nevents_ptr + 4 > size:
        return EFAULT
    return parse(mem.read(in_ptr, n * SUB_SIZE))


def _answer(mem: capi.Caller, out_ptr: int, nevents_ptr: int, events: bytes) -> int:
    mem.write(out_ptr, events)
    mem.write(nevents_ptr, struct.pack("<I", len(events) // EVENT_SIZE))
    return SUCCESS


def _sleep_until(run: _Run, wake_ns: int) -> None:
    """Sleep to ``wake_ns`` (monotonic), or raise ``Stopped`` when the run must end."""
    ctl = run.ctl
    cancel = ctl.cancel if ctl.cancel is not None else _NEVER
    while True:
        if ctl.poll() is not None:
            run.stopped = True
            raise Stopped(ctl.stop_reason)
        left = wake_ns - time.monotonic_ns()
        if left <= 0:
            return
        # never past the deadline: ctl.poll() then ends the run at the next turn
        cancel.wait(max(0.0, min(left / 1e9, WAIT_S, ctl.deadline - time.monotonic())))


def _host_poll(mem: capi.Caller, in_ptr: int, out_ptr: int, n: int, nevents_ptr: int) -> int:
    # wasmtime hands i32 parameters over signed; WASI's are unsigned
    in_ptr, out_ptr, n, nevents_ptr = (v & U32 for v in (in_ptr, out_ptr, n, nevents_ptr))
    subs = _subs(mem, in_ptr, out_ptr, n, nevents_ptr)
    if isinstance(subs, int):
        return subs
    run: _Run = _tls.run
    now = time.monotonic_ns()
    wall = time.time_ns()
    wakes: list[int | None] = []
    for s in subs:
        if s.tag != CLOCK:
            wakes.append(None)
        elif not s.absolute:
            wakes.append(now + s.timeout)
        elif s.fd == MONOTONIC:
            wakes.append(run.base_ns + s.timeout)
        else:
            wakes.append(now + s.timeout - wall)
    if None not in wakes:
        _sleep_until(run, min(w for w in wakes if w is not None))
        now = time.monotonic_ns()
    return _answer(mem, out_ptr, nevents_ptr, due(subs, wakes, now))


def _det_poll(mem: capi.Caller, in_ptr: int, out_ptr: int, n: int, nevents_ptr: int) -> int:
    # wasmtime hands i32 parameters over signed; WASI's are unsigned
    in_ptr, out_ptr, n, nevents_ptr = (v & U32 for v in (in_ptr, out_ptr, n, nevents_ptr))
    subs = _subs(mem, in_ptr, out_ptr, n, nevents_ptr)
    if isinstance(subs, int):
        return subs
    from plasm_exec import determinism
    now = determinism.now_ns()
    wakes: list[int | None] = [None if s.tag != CLOCK else
                               s.timeout if s.absolute else now + s.timeout for s in subs]
    if None not in wakes:
        now = determinism.advance_to(min(w for w in wakes if w is not None))
    return _answer(mem, out_ptr, nevents_ptr, due(subs, wakes, now))


def shadow(linker: capi.Linker, deterministic: bool) -> None:
    """Replace ``poll_oneoff`` in a linker that has WASI defined."""
    linker.shadow(WASI, "poll_oneoff", (capi.I32,) * 4,
                  _det_poll if deterministic else _host_poll)
