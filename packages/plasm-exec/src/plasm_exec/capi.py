"""wasmtime's C API, bound with ctypes: the part plasm-exec uses, and nothing more.

wasmtime-py ships the wasmtime library and binds all of its C API when it is
imported: about 1 500 ctypes functions and 300 structures, made one by one, which
was the largest single cost of a cold ``plasm-exec run`` (docs/performance.md,
"wasmtime's C API, bound directly"). This module loads the same library file and
declares the 60-odd functions ``engine``, ``pollfence`` and ``determinism`` call.
wasmtime-py stays a dependency: it ships the library, and this module reads its
version from the package's metadata directory.

Every opaque pointer is a plain integer (``c_void_p``); the few structures passed
by value or filled in by wasmtime are declared below with wasmtime's layout (a
test compares their sizes with wasmtime-py's declarations).

The GIL: ``PyDLL`` calls keep it and ``CDLL`` calls release it. Calls that run no
guest code, do no I/O and cannot block (setters, allocations, look-ups) keep it: a
release and re-take costs more than such a call and, in a node, hands the GIL to
another thread (docs/performance.md, "Short wasmtime calls"). Compiling, loading
and freeing modules, opening files, polling a call future (where the guest runs),
dropping one (it may unwind a guest) and deleting a store (it frees the guest's
memory) release it.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    Union,
    byref,
    c_bool,
    c_char_p,
    c_int,
    c_int32,
    c_int64,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)

TYPE_CHECKING = False  # typing's, without importing typing
if TYPE_CHECKING:
    from typing import Any

_P, _S, _B, _U8, _U64, _I64, _STR = (c_void_p, c_size_t, c_bool, c_uint8, c_uint64,
                                      c_int64, c_char_p)


class ByteVec(Structure):
    """``wasm_byte_vec_t`` (also ``wasm_name_t``, ``wasm_message_t``)."""

    _fields_ = [("size", c_size_t), ("data", c_void_p)]


class PtrVec(Structure):
    """A vector of pointers (``wasm_importtype_vec_t``, ``wasm_valtype_vec_t``, ...)."""

    _fields_ = [("size", c_size_t), ("data", POINTER(c_void_p))]


class Func(Structure):
    """``wasmtime_func_t``."""

    _fields_ = [("store_id", c_uint64), ("private", c_void_p)]


class _StoreIndex(Structure):
    _fields_ = [("store_id", c_uint64), ("private1", c_uint32)]


class Memory(Structure):
    """``wasmtime_memory_t``."""

    _fields_ = [("index", _StoreIndex), ("private2", c_uint32)]


class _ExternOf(Union):
    # the other members (global, table, shared memory, tag) are not read here; the
    # padding gives the union their size (24 bytes), as wasmtime's header does
    _fields_ = [("func", Func), ("memory", Memory), ("_size", c_uint64 * 3)]


class Extern(Structure):
    """``wasmtime_extern_t``."""

    _fields_ = [("kind", c_uint8), ("of", _ExternOf)]


class Instance(Structure):
    """``wasmtime_instance_t``."""

    _fields_ = [("store_id", c_uint64), ("private", c_size_t)]


class ValRaw(Union):
    """``wasmtime_val_raw_t``: one argument or result of a host function."""

    _fields_ = [("i32", c_int32), ("i64", c_int64), ("_size", c_uint8 * 16)]


EXTERN_FUNC, EXTERN_MEMORY = 0, 3  # wasmtime_extern_kind_t and wasm_externkind_t
I32, I64 = 0, 1  # wasm_valkind_t
OPT_SPEED = 1  # wasmtime_opt_level_t
# wasmtime_trap_code_t, by value
TRAP_NAMES = """stack_overflow memory_out_of_bounds heap_misaligned table_out_of_bounds
indirect_call_to_null bad_signature integer_overflow integer_division_by_zero
bad_conversion_to_integer unreachable interrupt out_of_fuel
atomic_wait_non_shared_memory null_reference array_out_of_bounds allocation_too_large
cast_failure cannot_enter_component no_async_result unhandled_tag
continuation_already_consumed disabled_opcode async_deadlock cannot_leave_component
cannot_block_sync_task invalid_char debug_assert_string_encoding_finished
debug_assert_equal_code_units debug_assert_pointer_aligned
debug_assert_upper_bits_unset string_out_of_bounds list_out_of_bounds
invalid_discriminant unaligned_pointer task_cancel_not_cancelled
task_cancel_or_return_twice subtask_cancel_after_terminal task_return_invalid
waitable_set_drop_has_waiters subtask_drop_not_resolved thread_new_indirect_invalid_type
thread_new_indirect_uninitialized backpressure_overflow unsupported_callback_code
cannot_resume_thread concurrent_future_stream_op reference_count_overflow
stream_op_too_big waitable_sync_and_async uncaught_exception""".split()
OUT_OF_FUEL = TRAP_NAMES.index("out_of_fuel")

# (env, caller, args and results, how many) -> a wasm_trap_t pointer, or 0
HOST_CALLBACK = CFUNCTYPE(c_size_t, c_void_p, c_void_p, POINTER(ValRaw), c_size_t)

# name: (result type, argument types). Those not in RELEASE_GIL keep the GIL.
SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "wasm_config_new": (_P, []),
    "wasm_engine_new_with_config": (_P, [_P]),
    "wasm_engine_delete": (None, [_P]),
    "wasmtime_engine_increment_epoch": (None, [_P]),
    "wasmtime_module_new": (_P, [_P, _STR, _S, POINTER(c_void_p)]),
    "wasmtime_module_deserialize": (_P, [_P, _STR, _S, POINTER(c_void_p)]),
    "wasmtime_module_serialize": (_P, [_P, POINTER(ByteVec)]),
    "wasmtime_module_imports": (None, [_P, POINTER(PtrVec)]),
    "wasmtime_module_exports": (None, [_P, POINTER(PtrVec)]),
    "wasmtime_module_delete": (None, [_P]),
    "wasm_importtype_module": (POINTER(ByteVec), [_P]),
    "wasm_importtype_name": (POINTER(ByteVec), [_P]),
    "wasm_importtype_type": (_P, [_P]),
    "wasm_importtype_vec_delete": (None, [POINTER(PtrVec)]),
    "wasm_exporttype_name": (POINTER(ByteVec), [_P]),
    "wasm_exporttype_type": (_P, [_P]),
    "wasm_exporttype_vec_delete": (None, [POINTER(PtrVec)]),
    "wasm_externtype_kind": (_U8, [_P]),
    "wasm_byte_vec_new": (None, [POINTER(ByteVec), _S, _STR]),
    "wasm_byte_vec_delete": (None, [POINTER(ByteVec)]),
    "wasm_valtype_new": (_P, [_U8]),
    "wasm_valtype_vec_new": (None, [POINTER(PtrVec), _S, POINTER(c_void_p)]),
    "wasm_functype_new": (_P, [POINTER(PtrVec), POINTER(PtrVec)]),
    "wasm_functype_delete": (None, [_P]),
    "wasmtime_linker_new": (_P, [_P]),
    "wasmtime_linker_delete": (None, [_P]),
    "wasmtime_linker_define_wasi": (_P, [_P]),
    "wasmtime_linker_allow_shadowing": (None, [_P, _B]),
    "wasmtime_linker_define_func_unchecked": (
        _P, [_P, _STR, _S, _STR, _S, _P, HOST_CALLBACK, _P, _P]),
    "wasmtime_linker_instantiate_pre": (_P, [_P, _P, POINTER(c_void_p)]),
    "wasmtime_instance_pre_delete": (None, [_P]),
    "wasmtime_store_new": (_P, [_P, _P, _P]),
    "wasmtime_store_context": (_P, [_P]),
    "wasmtime_store_limiter": (None, [_P, _I64, _I64, _I64, _I64, _I64]),
    "wasmtime_store_delete": (None, [_P]),
    "wasmtime_context_set_fuel": (_P, [_P, _U64]),
    "wasmtime_context_get_fuel": (_P, [_P, POINTER(c_uint64)]),
    "wasmtime_context_fuel_async_yield_interval": (_P, [_P, _U64]),
    "wasmtime_context_set_epoch_deadline": (None, [_P, _U64]),
    # void in wasmtime's header (a pointer in wasmtime-py's binding)
    "wasmtime_context_epoch_deadline_async_yield_and_update": (None, [_P, _U64]),
    "wasmtime_context_set_wasi": (_P, [_P, _P]),
    "wasi_config_new": (_P, []),
    "wasi_config_delete": (None, [_P]),
    "wasi_config_set_argv": (_B, [_P, _S, POINTER(c_char_p)]),
    "wasi_config_set_env": (_B, [_P, _S, POINTER(c_char_p), POINTER(c_char_p)]),
    "wasi_config_set_stdin_bytes": (None, [_P, POINTER(ByteVec)]),
    "wasi_config_set_stdin_file": (_B, [_P, _STR]),
    "wasi_config_set_stdout_file": (_B, [_P, _STR]),
    "wasi_config_set_stderr_file": (_B, [_P, _STR]),
    "wasi_config_preopen_dir": (_B, [_P, _STR, _STR, _B]),
    "wasmtime_instance_pre_instantiate_async": (
        _P, [_P, _P, POINTER(Instance), POINTER(c_void_p), POINTER(c_void_p)]),
    "wasmtime_func_call_async": (
        _P, [_P, POINTER(Func), _P, _S, _P, _S, POINTER(c_void_p), POINTER(c_void_p)]),
    "wasmtime_call_future_poll": (_B, [_P]),
    "wasmtime_call_future_delete": (None, [_P]),
    "wasmtime_instance_export_get": (_B, [_P, POINTER(Instance), _STR, _S, POINTER(Extern)]),
    "wasmtime_memory_data": (_P, [_P, POINTER(Memory)]),
    "wasmtime_memory_data_size": (_S, [_P, POINTER(Memory)]),
    "wasmtime_caller_export_get": (_B, [_P, _STR, _S, POINTER(Extern)]),
    "wasmtime_caller_context": (_P, [_P]),
    "wasmtime_trap_new": (_P, [_STR, _S]),
    "wasmtime_trap_code": (_B, [_P, POINTER(c_uint8)]),
    "wasm_trap_message": (None, [_P, POINTER(ByteVec)]),
    "wasm_trap_delete": (None, [_P]),
    "wasmtime_error_message": (None, [_P, POINTER(ByteVec)]),
    "wasmtime_error_exit_status": (_B, [_P, POINTER(c_int)]),
    "wasmtime_error_delete": (None, [_P]),
}
for _setting in ("consume_fuel", "epoch_interruption", "cranelift_nan_canonicalization",
                 "wasm_relaxed_simd_deterministic", "wasm_multi_memory", "wasm_threads",
                 "wasm_memory64", "wasm_gc", "wasm_function_references", "wasm_exceptions",
                 "wasm_stack_switching", "wasm_custom_page_sizes", "wasm_component_model"):
    SIGNATURES[f"wasmtime_config_{_setting}_set"] = (None, [_P, _B])
SIGNATURES["wasmtime_config_cranelift_opt_level_set"] = (None, [_P, _U8])

# the calls that release the GIL; every other one keeps it
RELEASE_GIL = frozenset((
    "wasm_engine_new_with_config", "wasm_engine_delete", "wasmtime_module_new",
    "wasmtime_module_deserialize", "wasmtime_module_serialize", "wasmtime_module_delete",
    "wasmtime_linker_instantiate_pre", "wasmtime_linker_delete",
    "wasmtime_instance_pre_delete", "wasmtime_store_delete", "wasi_config_set_stdin_file",
    "wasi_config_set_stdout_file", "wasi_config_set_stderr_file", "wasi_config_preopen_dir",
    "wasmtime_call_future_poll", "wasmtime_call_future_delete",
))


def _package_dir() -> str:
    """wasmtime-py's package directory, found on ``sys.path`` without importing it."""
    for entry in sys.path:
        d = os.path.join(entry or ".", "wasmtime")
        if os.path.isfile(os.path.join(d, "__init__.py")):
            return d
    raise ImportError("plasm-exec needs the wasmtime package (pip install 'wasmtime>=50,<51')")


def _library(pkg: str) -> str:
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(os.uname().machine.lower(),
                                                          os.uname().machine)
    name = {"darwin": "_libwasmtime.dylib", "win32": "_wasmtime.dll"}.get(
        sys.platform, "_libwasmtime.so")
    return os.path.join(pkg, f"{sys.platform}-{machine}", name)


def _version(pkg: str) -> str:
    """The installed wasmtime-py's version, from its ``*.dist-info`` directory's name."""
    try:
        names = os.listdir(os.path.dirname(pkg))
    except OSError:
        return "unknown"
    for name in names:
        if name.startswith("wasmtime-") and name.endswith(".dist-info"):
            return name[len("wasmtime-"):-len(".dist-info")]
    return "unknown"


PACKAGE_DIR = _package_dir()
LIBRARY = _library(PACKAGE_DIR)
VERSION = _version(PACKAGE_DIR)


class _Lib:
    """The library's functions as attributes, each declared from ``SIGNATURES``."""

    def __init__(self, path: str) -> None:
        release, keep = ctypes.CDLL(path), ctypes.PyDLL(path)
        for name, (restype, argtypes) in SIGNATURES.items():
            fn = getattr(release if name in RELEASE_GIL else keep, name)
            fn.restype, fn.argtypes = restype, argtypes
            setattr(self, name, fn)

    def __getattr__(self, name: str) -> Any:  # only for names missing from SIGNATURES
        raise AttributeError(f"{name} is not declared in plasm_exec.capi.SIGNATURES")


lib: Any = _Lib(LIBRARY)


# -- errors --------------------------------------------------------------------

class WasmError(Exception):
    """A ``wasmtime_error_t``: its message is wasmtime's text (with "Caused by:" lines)."""


class ExitStatus(WasmError):
    """The guest called WASI ``proc_exit`` with ``code``."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class Trap(Exception):
    """A ``wasm_trap_t``: ``code`` is wasmtime's trap code when it has one."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code

    @property
    def name(self) -> str:
        """The trap code's name in lower case (``unreachable``, ``out_of_fuel``, ...)."""
        if self.code is None:
            return "unknown"
        return TRAP_NAMES[self.code] if self.code < len(TRAP_NAMES) else f"code_{self.code}"


def _take(vec: ByteVec) -> bytes:
    """The bytes of an owned ``wasm_byte_vec_t``, which this frees."""
    data = ctypes.string_at(vec.data, vec.size) if vec.size else b""
    lib.wasm_byte_vec_delete(byref(vec))
    return data


def _text(vec: ByteVec, strip_nul: bool = False) -> str:
    data = _take(vec)
    return (data[:-1] if strip_nul else data).decode("utf-8", "replace")


def take_error(ptr: int) -> WasmError:
    """The exception for an owned ``wasmtime_error_t`` (which this frees)."""
    vec = ByteVec()
    lib.wasmtime_error_message(ptr, byref(vec))
    message = _text(vec)
    status = c_int(0)
    exited = lib.wasmtime_error_exit_status(ptr, byref(status))
    lib.wasmtime_error_delete(ptr)
    return ExitStatus(message, status.value) if exited else WasmError(message)


def take_trap(ptr: int) -> Trap:
    """The exception for an owned ``wasm_trap_t`` (which this frees)."""
    vec = ByteVec()
    lib.wasm_trap_message(ptr, byref(vec))
    message = _text(vec, strip_nul=True)  # the message ends in a NUL byte
    code = c_uint8(0)
    has_code = lib.wasmtime_trap_code(ptr, byref(code))
    lib.wasm_trap_delete(ptr)
    return Trap(message, code.value if has_code else None)


def check(error: int | None) -> None:
    """Raise the error a call returned, if any."""
    if error:
        raise take_error(error)


# -- objects -----------------------------------------------------------------

class _Owned:
    """A pointer this process owns, freed by ``_free`` when the object goes."""

    _free = ""
    ptr: int | None = None

    def close(self) -> None:
        ptr, self.ptr = self.ptr, None
        if ptr:
            getattr(lib, self._free)(ptr)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: S110 - interpreter shutdown: the process frees it all
            pass


class Engine(_Owned):
    """A ``wasm_engine_t`` made with ``settings`` (``wasmtime_config_<name>_set``)."""

    _free = "wasm_engine_delete"

    def __init__(self, settings: dict[str, int | bool]) -> None:
        cfg = lib.wasm_config_new()
        for name, value in settings.items():
            getattr(lib, f"wasmtime_config_{name}_set")(cfg, value)
        self.ptr = lib.wasm_engine_new_with_config(cfg)  # takes the config over
        if not self.ptr:
            raise WasmError("wasmtime could not make an engine with these settings")

    def increment_epoch(self) -> None:
        lib.wasmtime_engine_increment_epoch(self.ptr)


class Module(_Owned):
    """A compiled ``wasmtime_module_t``."""

    _free = "wasmtime_module_delete"

    def __init__(self, ptr: int) -> None:
        self.ptr = ptr

    @classmethod
    def compile(cls, engine: Engine, wasm: bytes | bytearray | memoryview) -> Module:
        out = c_void_p()
        wasm = _bytes(wasm)
        check(lib.wasmtime_module_new(engine.ptr, wasm, len(wasm), byref(out)))
        return cls(out.value or 0)

    @classmethod
    def deserialize(cls, engine: Engine, artifact: bytes | bytearray | memoryview) -> Module:
        """A module from ``serialize``'s bytes. wasmtime trusts them: the caller must."""
        out = c_void_p()
        artifact = _bytes(artifact)
        check(lib.wasmtime_module_deserialize(engine.ptr, artifact, len(artifact),
                                              byref(out)))
        return cls(out.value or 0)

    def serialize(self) -> bytes:
        vec = ByteVec()
        check(lib.wasmtime_module_serialize(self.ptr, byref(vec)))
        return _take(vec)

    def imports(self) -> list[tuple[str, str, int]]:
        """(module, name, extern kind) of each import."""
        vec = PtrVec()
        lib.wasmtime_module_imports(self.ptr, byref(vec))
        try:
            return [(_name(lib.wasm_importtype_module(t)), _name(lib.wasm_importtype_name(t)),
                     lib.wasm_externtype_kind(lib.wasm_importtype_type(t)))
                    for t in vec.data[:vec.size]]
        finally:
            lib.wasm_importtype_vec_delete(byref(vec))

    def exports(self) -> dict[str, int]:
        """name → extern kind of each export."""
        vec = PtrVec()
        lib.wasmtime_module_exports(self.ptr, byref(vec))
        try:
            return {_name(lib.wasm_exporttype_name(t)):
                    lib.wasm_externtype_kind(lib.wasm_exporttype_type(t))
                    for t in vec.data[:vec.size]}
        finally:
            lib.wasm_exporttype_vec_delete(byref(vec))


def _bytes(data: bytes | bytearray | memoryview) -> bytes:
    """``data`` as ``bytes``, which ctypes passes without a copy (a copy of anything else)."""
    return data if type(data) is bytes else bytes(data)


def _name(vec: Any) -> str:
    """A borrowed ``wasm_name_t *`` as text."""
    v = vec.contents
    return ctypes.string_at(v.data, v.size).decode("utf-8", "replace") if v.size else ""


class InstancePre(_Owned):
    """A module linked against a linker, ready to instantiate in any store."""

    _free = "wasmtime_instance_pre_delete"

    def __init__(self, ptr: int, module: Module, linker: Linker) -> None:
        self.ptr = ptr
        self.module = module
        # the linker holds the host functions' callbacks, which wasmtime calls through
        # this pre-instance: they must live as long as it does
        self.linker = linker


class Caller:
    """A host function's view of the calling guest's exported ``memory``.

    Valid only during the call. A host function does not call back into the guest,
    so the memory cannot grow or move while it runs."""

    __slots__ = ("base", "size")

    def __init__(self, caller: int) -> None:
        ext = Extern()
        self.base, self.size = 0, -1
        if lib.wasmtime_caller_export_get(caller, b"memory", 6, byref(ext)) \
                and ext.kind == EXTERN_MEMORY:
            ctx = lib.wasmtime_caller_context(caller)
            self.base = lib.wasmtime_memory_data(ctx, byref(ext.of.memory)) or 0
            self.size = lib.wasmtime_memory_data_size(ctx, byref(ext.of.memory))

    @property
    def has_memory(self) -> bool:
        return self.size >= 0

    def read(self, offset: int, n: int) -> bytes:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise IndexError("out of the guest's memory")
        return ctypes.string_at(self.base + offset, n) if n else b""

    def write(self, offset: int, data: bytes) -> None:
        if offset < 0 or offset + len(data) > self.size:
            raise IndexError("out of the guest's memory")
        if data:
            ctypes.memmove(self.base + offset, data, len(data))


class Linker(_Owned):
    """A ``wasmtime_linker_t`` with WASI preview1 defined."""

    _free = "wasmtime_linker_delete"

    def __init__(self, engine: Engine) -> None:
        self.ptr = lib.wasmtime_linker_new(engine.ptr)
        self._callbacks: list[Any] = []  # kept alive as long as the linker
        check(lib.wasmtime_linker_define_wasi(self.ptr))

    def shadow(self, module: str, name: str, params: tuple[int, ...],
               fn: Callable[..., int]) -> None:
        """Define (or replace) ``module.name`` as ``fn``, a host function taking
        ``params`` (``I32``/``I64`` kinds) and returning one i32: ``fn(caller, *args)``.
        An exception it raises becomes a trap whose message names the exception's type."""
        lib.wasmtime_linker_allow_shadowing(self.ptr, True)
        ptypes = (c_void_p * len(params))(*[lib.wasm_valtype_new(k) for k in params])
        rtypes = (c_void_p * 1)(lib.wasm_valtype_new(I32))
        pvec, rvec = PtrVec(), PtrVec()
        lib.wasm_valtype_vec_new(byref(pvec), len(params), ptypes)
        lib.wasm_valtype_vec_new(byref(rvec), 1, rtypes)
        functype = lib.wasm_functype_new(byref(pvec), byref(rvec))  # takes the vectors
        callback = HOST_CALLBACK(_host(fn, params))
        self._callbacks.append(callback)
        m, n = module.encode(), name.encode()
        try:
            check(lib.wasmtime_linker_define_func_unchecked(
                self.ptr, m, len(m), n, len(n), functype, callback, None, None))
        finally:
            lib.wasm_functype_delete(functype)

    def instantiate_pre(self, module: Module) -> InstancePre:
        out = c_void_p()
        check(lib.wasmtime_linker_instantiate_pre(self.ptr, module.ptr, byref(out)))
        return InstancePre(out.value or 0, module, self)


def _host(fn: Callable[..., int], params: tuple[int, ...]) -> Any:
    wide = tuple(k == I64 for k in params)

    def call(_env: int, caller: int, vals: Any, _n: int) -> int:
        try:
            args = [vals[i].i64 if w else vals[i].i32 for i, w in enumerate(wide)]
            vals[0].i32 = fn(Caller(caller), *args)
            return 0
        except BaseException as e:
            msg = f"host function raised {type(e).__name__}".encode()
            return lib.wasmtime_trap_new(msg, len(msg)) or 0

    return call


class Store(_Owned):
    """A ``wasmtime_store_t`` and its context."""

    _free = "wasmtime_store_delete"

    def __init__(self, engine: Engine) -> None:
        self.ptr = lib.wasmtime_store_new(engine.ptr, None, None)
        self.context = lib.wasmtime_store_context(self.ptr)
        self.engine = engine  # outlives the store

    def get_fuel(self) -> int:
        out = c_uint64(0)
        check(lib.wasmtime_context_get_fuel(self.context, byref(out)))
        return out.value

    def export(self, inst: Instance, name: str) -> Extern | None:
        """The instance's export ``name``, or None."""
        ext = Extern()
        n = name.encode()
        if not lib.wasmtime_instance_export_get(self.context, byref(inst), n, len(n),
                                                byref(ext)):
            return None
        return ext

    def memory_size(self, ext: Extern) -> int:
        return int(lib.wasmtime_memory_data_size(self.context, byref(ext.of.memory)))


def wasi_config(argv: list[str], env: dict[str, str], stdin_bytes: bytes | None,
                stdin_path: str, stdout_path: str, stderr_path: str,
                dirs: Any = ()) -> int:
    """A new ``wasi_config_t`` (owned by the caller until a store takes it)."""
    cfg = lib.wasi_config_new()
    try:
        args = [a.encode() for a in argv]
        if not lib.wasi_config_set_argv(cfg, len(args), (c_char_p * len(args))(*args)):
            raise WasmError("wasmtime refused the guest's arguments")
        keys = [k.encode() for k in env]
        values = [v.encode() for v in env.values()]
        if not lib.wasi_config_set_env(cfg, len(keys), (c_char_p * len(keys))(*keys),
                                       (c_char_p * len(values))(*values)):
            raise WasmError("wasmtime refused the guest's environment")
        if stdin_bytes is not None:
            vec, data = ByteVec(), _bytes(stdin_bytes)
            lib.wasm_byte_vec_new(byref(vec), len(data), data)  # a copy
            lib.wasi_config_set_stdin_bytes(cfg, byref(vec))  # takes the copy over
        elif not lib.wasi_config_set_stdin_file(cfg, os.fsencode(stdin_path)):
            raise WasmError(f"failed to open {stdin_path} as the guest's stdin")
        if not lib.wasi_config_set_stdout_file(cfg, os.fsencode(stdout_path)):
            raise WasmError(f"failed to open {stdout_path} as the guest's stdout")
        if not lib.wasi_config_set_stderr_file(cfg, os.fsencode(stderr_path)):
            raise WasmError(f"failed to open {stderr_path} as the guest's stderr")
        for host, guest, writable in dirs:
            if not lib.wasi_config_preopen_dir(cfg, os.fsencode(host), guest.encode(),
                                               bool(writable)):
                raise WasmError(f"failed to preopen {host} as {guest}")
    except BaseException:
        lib.wasi_config_delete(cfg)
        raise
    return int(cfg)


def poll_until(fut: int, stop: Callable[[], object]) -> bool:
    """Poll a call future to its end (True), or until ``stop()`` is true (False).

    The future is always deleted; deleting an unfinished one unwinds the guest."""
    poll = lib.wasmtime_call_future_poll
    try:
        while not poll(fut):
            if stop():
                return False
        return True
    finally:
        lib.wasmtime_call_future_delete(fut)


def raise_outcome(trap: c_void_p, error: c_void_p) -> None:
    """Raise what a finished call future left in its trap and error slots, if anything."""
    if error.value:
        raise take_error(error.value)
    if trap.value:
        raise take_trap(trap.value)
