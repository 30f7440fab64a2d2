"""Short wasmtime calls keep the GIL; the calls that run, unwind or free a guest, or
open files, still release it (``plasm_exec.engine.KEEP_GIL``, docs/performance.md)."""

from __future__ import annotations

import ctypes

from wasmtime import _bindings

from plasm_exec import engine
from plasm_exec.api import RunSpec


def keeps_gil(name: str) -> bool:
    return bool(getattr(_bindings, "_" + name)._flags_ & ctypes._FUNCFLAG_PYTHONAPI)


def test_the_short_calls_keep_the_gil_and_the_guest_calls_release_it():
    assert engine.KEPT_GIL == list(engine.KEEP_GIL)  # this wasmtime-py has every one
    assert all(keeps_gil(n) for n in engine.KEEP_GIL)
    for name in ("wasmtime_call_future_poll", "wasmtime_call_future_delete",
                 "wasmtime_store_delete", "wasi_config_set_stdin_file",
                 "wasi_config_set_stdout_file", "wasi_config_set_stderr_file",
                 "wasmtime_module_new", "wasmtime_module_deserialize"):
        assert not keeps_gil(name), name


def test_a_run_through_them_gives_the_same_result(executor, wasm):
    res = executor.run(executor.load(wasm["cat"]), RunSpec(argv=["g"]), stdin=b"ok")
    assert (res.outcome.ended, res.stdout) == ("exited", b"ok")
    assert res.outcome.fuel_consumed > 0  # read back through wasmtime_context_get_fuel
