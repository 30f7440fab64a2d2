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
from typing import Any

import wasmtime as wt

WASI = "wasi_snapshot_preview1"
DET_EPOCH_NS = 1_767_225_600 * 10**9
DET_SEED = hashlib.sha256(b"phase:deterministic-random:v1").digest()

_tls = threading.local()
_I32, _I64 = wt.ValType.i32(), wt.ValType.i64()
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


def _write(caller: Any, ptr: int, data: bytes) -> int:
    ptr &= U64 >> 32  # wasmtime hands i32 parameters over signed
    mem = caller.get("memory")
    if not isinstance(mem, wt.Memory):
        return EFAULT
    try:
        mem.write(caller, data, ptr)
    except (IndexError, ValueError, wt.WasmtimeError):
        return EFAULT
    return SUCCESS


def _det_clock_res_get(caller: Any, clock: int, ptr: int) -> int:
    if not 0 <= clock <= 3:
        return EINVAL
    return _write(caller, ptr, (1_000_000).to_bytes(8, "little"))


def _det_clock_time_get(caller: Any, clock: int, _precision: int, ptr: int) -> int:
    if not 0 <= clock <= 3:
        return EINVAL
    st = _state()
    st.now = min(st.now + 1_000_000, U64)
    return _write(caller, ptr, st.now.to_bytes(8, "little"))


def _det_random_get(caller: Any, ptr: int, n: int) -> int:
    n &= U64 >> 32
    if n < 0 or n > 1 << 24:
        return EINVAL
    return _write(caller, ptr, _state().random(n))


def shadow(linker: Any) -> None:
    """Replace the clock and random functions of a linker that has WASI defined."""
    linker.allow_shadowing = True
    linker.define_func(WASI, "clock_res_get", wt.FuncType([_I32, _I32], [_I32]),
                       _det_clock_res_get, access_caller=True)
    linker.define_func(WASI, "clock_time_get", wt.FuncType([_I32, _I64, _I32], [_I32]),
                       _det_clock_time_get, access_caller=True)
    linker.define_func(WASI, "random_get", wt.FuncType([_I32, _I32], [_I32]),
                       _det_random_get, access_caller=True)


def begin_run() -> None:
    _tls.det = _DetState()


def end_run() -> None:
    _tls.det = None
