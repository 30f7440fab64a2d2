"""wasmtime's C API as ``plasm_exec.capi`` binds it: short calls keep the GIL; the calls
that run, unwind or free a guest, compile, or open files release it
(docs/performance.md, "Short wasmtime calls keep the GIL" and "wasmtime's C API, bound
directly")."""

from __future__ import annotations

import ctypes

from wasmtime import _ffi

from plasm_exec import capi
from plasm_exec.api import RunSpec


def keeps_gil(name: str) -> bool:
    return bool(getattr(capi.lib, name)._flags_ & ctypes._FUNCFLAG_PYTHONAPI)


def test_the_short_calls_keep_the_gil_and_the_guest_calls_release_it():
    assert capi.RELEASE_GIL <= set(capi.SIGNATURES)
    for name in ("wasmtime_call_future_poll", "wasmtime_call_future_delete",
                 "wasmtime_store_delete", "wasi_config_set_stdin_file",
                 "wasi_config_set_stdout_file", "wasi_config_set_stderr_file",
                 "wasi_config_preopen_dir", "wasmtime_module_new",
                 "wasmtime_module_deserialize"):
        assert not keeps_gil(name), name
    for name in ("wasmtime_store_new", "wasmtime_context_set_fuel", "wasi_config_set_argv",
                 "wasmtime_instance_pre_instantiate_async", "wasmtime_func_call_async",
                 "wasmtime_instance_export_get", "wasmtime_memory_data"):
        assert keeps_gil(name), name


def test_the_structures_have_wasmtimes_layout():
    """Each structure capi declares has the size, alignment and field offsets of
    wasmtime-py's declaration of the same C type."""
    pairs = [(capi.ByteVec, _ffi.wasm_byte_vec_t), (capi.Func, _ffi.wasmtime_func_t),
             (capi.Memory, _ffi.wasmtime_memory_t), (capi.Extern, _ffi.wasmtime_extern_t),
             (capi.Instance, _ffi.wasmtime_instance_t), (capi.ValRaw, _ffi.wasmtime_val_raw_t)]
    for ours, theirs in pairs:
        assert ctypes.sizeof(ours) == ctypes.sizeof(theirs), ours
        assert ctypes.alignment(ours) == ctypes.alignment(theirs), ours
    assert capi.Extern.of.offset == _ffi.wasmtime_extern_t.of.offset
    assert capi.Extern.kind.offset == _ffi.wasmtime_extern_t.kind.offset


def test_every_declared_function_is_in_the_library_with_wasmtime_pys_argument_count():
    from wasmtime import _bindings
    for name, (_res, args) in capi.SIGNATURES.items():
        theirs = getattr(_bindings, "_" + name)
        assert len(theirs.argtypes) == len(args), name


def test_the_trap_names_follow_wasmtimes_codes():
    from wasmtime import TrapCode
    for code in TrapCode:
        assert capi.TRAP_NAMES[code.value] == code.name.lower(), code


def test_a_run_through_them_gives_the_same_result(executor, wasm):
    res = executor.run(executor.load(wasm["cat"]), RunSpec(argv=["g"]), stdin=b"ok")
    assert (res.outcome.ended, res.stdout) == ("exited", b"ok")
    assert res.outcome.fuel_consumed > 0  # read back through wasmtime_context_get_fuel


def test_the_version_is_the_installed_wasmtime_pys():
    from importlib.metadata import version
    assert capi.VERSION == version("wasmtime")
