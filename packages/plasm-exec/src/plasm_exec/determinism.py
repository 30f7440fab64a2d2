"""The deterministic profile's host functions (``--deterministic``, manifest ``deterministic``).

They shadow three WASI preview1 functions: ``clock_time_get`` returns a fixed
start time (2026-01-01T00:00:00Z) that advances 1 ms per read (every clock),
``clock_res_get`` 1 ms, and ``random_get`` a SHA-256 counter stream from a fixed
seed. ``poll_oneoff`` (``pollfence``) sleeps on that clock: the clock jumps to
the wake-up time, no real time passes. The state is per run, kept in a
thread-local (a run stays on its thread).
"""

from __future__ import annotations

import hashlib
import threading

from plasm_exec import capi

WASI = "wasi_snapshot_preview1"
DET_EPOCH_NS = 1_767_225_600 * 10**9
DET_SEED = hashlib.sha256(b"phase:deterministic-random:v1").digest()

_tls = threading.local()
EINVAL, EFAULT, SUCCESS = 28, 21, 0
U64 = (1 << 64) - 1


class _DetState:
    def __init__(self) -> None:
        self.now = DET_EPOCH_NS  # the last time read (or slept to)
        self.counter = 0
        self.pool = b""

    def random(self, n: int) -> bytes:
        while len(self.pool) < n:
            self.pool += hashlib.sha256(DET_SEED + self.counter.to_bytes(8, "little")).digest()
            self.counter += 1
        out, self.pool = self.pool[:n], self.pool[n:]
        return out


def _state() -> _DetState:
    st = getattr(_tls, "det", None)
    if st is None:
        st = _tls.det = _DetState()
    return st


def now_ns() -> int:
    """The fixed clock's current reading (without advancing it)."""
    return _state().now


def advance_to(ns: int) -> int:
    """Move the fixed clock forward to ``ns`` (never back); the new reading."""
    st = _state()
    st.now = min(max(st.now, ns), U64)
    return st.now


def _write(mem: capi.Caller, ptr: int, data: bytes) -> int:
    ptr &= U64 >> 32  # wasmtime hands i32 parameters over signed
    if not mem.has_memory:
        return EFAULT
    try:
        mem.write(ptr, data)
    except IndexError:
        return EFAULT
    return SUCCESS


def _det_clock_res_get(caller: capi.Caller, clock: int, ptr: int) -> int:
    if not 0 <= clock <= 3:
        return EINVAL
    return _write(caller, ptr, (1_000_000).to_bytes(8, "little"))


def _det_clock_time_get(caller: capi.Caller, clock: int, _precision: int, ptr: int) -> int:
    if not 0 <= clock <= 3:
        return EINVAL
    st = _state()
    st.now = min(st.now + 1_000_000, U64)
    return _write(caller, ptr, st.now.to_bytes(8, "little"))


def _det_random_get(caller: capi.Caller, ptr: int, n: int) -> int:
    n &= U64 >> 32
    if n < 0 or n > 1 << 24:
        return EINVAL
    return _write(caller, ptr, _state().random(n))


def shadow(linker: capi.Linker) -> None:
    """Replace the clock and random functions of a linker that has WASI defined."""
    i32, i64 = capi.I32, capi.I64
    linker.shadow(WASI, "clock_res_get", (i32, i32), _det_clock_res_get)
    linker.shadow(WASI, "clock_time_get", (i32, i64, i32), _det_clock_time_get)
    linker.shadow(WASI, "random_get", (i32, i32), _det_random_get)


def begin_run() -> None:
    _tls.det = _DetState()


def end_run() -> None:
    _tls.det = None
