"""The wasmtime border: with ``determinism`` and ``pollfence``, the only modules that
import wasmtime.

``Runtime`` owns one ``wasmtime.Engine`` (fuel metering) and up to two linkers
(plain WASI preview1, and the deterministic profile that shadows clocks and
``random_get``), each made on first use; both shadow ``poll_oneoff`` with
``pollfence``'s, which sleeps with the run's deadline and cancel in view.
``Runtime.compile`` turns bytes into a checked ``Program`` (compiled once,
linked against plain WASI to check its imports; pre-instantiated per profile on
the profile's first run, so a cold ``run`` builds only the linker it uses);
``Runtime.execute`` runs a
``Program`` in a fresh ``Store`` under the four fences and returns an
``Outcome``. ``execute`` is safe to call from many threads at once: wasm runs
with the GIL released.

Wall clock and stopping: the guest runs as a wasmtime *call future* that
yields back to ``_drive`` after every ``FUEL_SLICE`` of fuel and at every epoch
tick (one ticker thread per process, ``TICK_S``); ``_drive`` asks the run's
``RunControl`` whether to go on (deadline, output fence, the caller's cancel)
and, if not, drops the future, which unwinds the guest. So a run stops within
one tick or one slice, whichever comes first. A guest asleep in ``poll_oneoff``
makes no yield; ``pollfence`` asks ``RunControl`` itself at each tick and, to
stop, traps the guest out of its sleep. The fuel it reports is what it
consumed, also when it was stopped: wasmtime writes the fuel counter back at
each slice and at each call, so a stopped run's figure is short by less than
one slice (a tight loop stopped by an epoch *trap*, as before, reported 0).
The async entry points are the ffi bindings
``wasmtime_instance_pre_instantiate_async``,
``wasmtime_func_call_async`` and ``wasmtime_call_future_poll``, which
wasmtime-py 50 ships but does not wrap.

wasmtime errors are translated to ``phase_core`` errors here.
"""

from __future__ import annotations

import ctypes
import platform
import threading
import time
from collections.abc import Callable
from typing import Any

import wasmtime as wt
from wasmtime import _ffi as ffi
from wasmtime import _func

from phase_core.errors import InputError, Malformed
from plasm_exec import pollfence
from plasm_exec.values import Outcome, Value
from plasm_exec.wasmheader import check_header

# Short wasmtime calls that keep the GIL. ctypes releases the GIL around every
# foreign call; a run makes about 25 of them, most a few hundred nanoseconds
# long (setters, allocations, a lookup). In a node, each release lets the event
# loop or another job thread take the GIL, and taking it back waits for them
# (up to the interpreter's switch interval): that hand-off cost more than the
# calls. These are loaded a second time through ``ctypes.PyDLL`` (same library,
# same argument types) and run holding the GIL. None of them runs guest code,
# blocks or does I/O; ``wasi_config_set_*_file``, ``wasmtime_call_future_poll``
# (where the guest runs), ``wasmtime_call_future_delete`` (it may unwind a
# guest) and ``wasmtime_store_delete`` (it frees the guest's memory) still
# release it. ``wasmtime_context_set_wasi`` opens the preopened directories,
# which a job has none of (docs/performance.md, "Short wasmtime calls").
KEEP_GIL = (
    "wasi_config_new", "wasi_config_set_argv", "wasi_config_set_env",
    "wasi_config_set_stdin_bytes", "wasm_byte_vec_new", "wasmtime_store_new",
    "wasmtime_store_context", "wasmtime_store_limiter", "wasmtime_context_set_wasi",
    "wasmtime_context_set_fuel", "wasmtime_context_get_fuel",
    "wasmtime_context_fuel_async_yield_interval", "wasmtime_context_set_epoch_deadline",
    "wasmtime_context_epoch_deadline_async_yield_and_update",
    "wasmtime_instance_pre_instantiate_async", "wasmtime_func_call_async",
    "wasmtime_instance_export_nth",
)


def _keep_gil(names: tuple[str, ...] = KEEP_GIL) -> list[str]:
    """Rebind wasmtime-py's ``names`` to calls that keep the GIL; the names done (a
    binding this wasmtime-py lacks is left as it is)."""
    from wasmtime import _bindings

    try:
        lib = ctypes.PyDLL(ffi.dll._name)
    except (AttributeError, OSError):
        return []
    done = []
    for name in names:
        old, new = getattr(_bindings, "_" + name, None), getattr(lib, name, None)
        if old is None or new is None:
            continue
        new.restype, new.argtypes = old.restype, old.argtypes
        setattr(_bindings, "_" + name, new)
        done.append(name)
    return done


KEPT_GIL = _keep_gil()

WASI = "wasi_snapshot_preview1"
RUNTIME_NAME = "wasmtime"
RUNTIME_VERSION: str = getattr(wt, "__version__", "") or "50.0.1"
FUEL_SLICE = 1_000_000  # fuel per slice: a run checks whether to stop after each
TICK_S = 0.01  # ... and at each epoch tick (a guest busy in host calls burns little fuel)
PAGE = 65536
# The memory fence covers all guest memory: one linear memory (multi-memory is
# off, one instance per store) and at most MAX_TABLES tables, whose elements are
# reserved out of memory_bytes: at most 1/TABLE_SHARE of it, counted at
# TABLE_ELEMENT_BYTES per element (wasmtime keeps about 8.5 bytes per funcref).
MAX_TABLES = 2
MAX_TABLE_ELEMENTS = 1 << 20
TABLE_ELEMENT_BYTES = 16
TABLE_SHARE = 16
ENGINE_PROFILE = "fuel+epoch;nan-canon;relaxed-simd-det;opt=speed;mvp-mem;v2"

PREVIEW1 = frozenset("""
args_get args_sizes_get environ_get environ_sizes_get clock_res_get clock_time_get
fd_advise fd_allocate fd_close fd_datasync fd_fdstat_get fd_fdstat_set_flags
fd_fdstat_set_rights fd_filestat_get fd_filestat_set_size fd_filestat_set_times fd_pread
fd_prestat_get fd_prestat_dir_name fd_pwrite fd_read fd_readdir fd_renumber fd_seek fd_sync
fd_tell fd_write path_create_directory path_filestat_get path_filestat_set_times path_link
path_open path_readlink path_remove_directory path_rename path_symlink path_unlink_file
poll_oneoff proc_exit proc_raise sched_yield random_get sock_accept sock_recv sock_send
sock_shutdown""".split())


def memory_split(memory_bytes: int) -> tuple[int, int]:
    """(linear memory bytes, elements per table) so that all of it fits ``memory_bytes``."""
    elems = min(MAX_TABLE_ELEMENTS,
                memory_bytes // (TABLE_SHARE * TABLE_ELEMENT_BYTES * MAX_TABLES))
    return memory_bytes - MAX_TABLES * elems * TABLE_ELEMENT_BYTES, elems


def fingerprint() -> str:
    """What a compiled artifact depends on: engine settings, wasmtime version, host."""
    return f"{ENGINE_PROFILE};wasmtime={RUNTIME_VERSION};{platform.machine()}"


class RunControl(Value):
    """Shared between a running guest and the threads that watch it."""

    _fields = ("deadline", "stop_reason", "started", "watch", "cancel")

    def __init__(self, deadline: float = 0.0, stop_reason: str | None = None,
                 started: threading.Event | None = None,
                 watch: Callable[[], str | None] | None = None,
                 cancel: threading.Event | None = None) -> None:
        self.deadline = deadline  # time.monotonic() value
        self.stop_reason = stop_reason
        self.started = started if started is not None else threading.Event()
        self.watch = watch  # polled at each tick
        self.cancel = cancel  # set by the caller: stop with "interrupted"

    def poll(self) -> str | None:
        """Called after each fuel slice from the guest's thread: the reason to stop, if any."""
        if self.stop_reason is None and self.cancel is not None and self.cancel.is_set():
            self.stop("interrupted")
        if self.stop_reason is None and self.watch is not None:
            reason = self.watch()
            if reason is not None:
                self.stop(reason)
        if self.stop_reason is None and time.monotonic() >= self.deadline:
            self.stop("timeout")
        return self.stop_reason

    def stop(self, reason: str) -> None:
        """Ask the run to end after the current fuel slice (first reason wins)."""
        if self.stop_reason is None:
            self.stop_reason = reason


class Program(Value):
    """A compiled, checked module, ready to run many times."""

    _fields = ("module_id", "size", "module", "pres")
    _hidden = ("module", "pres")

    def __init__(self, module_id: str, size: int, module: Any,
                 pres: dict[bool, Any] | None = None) -> None:
        self.module_id = module_id
        self.size = size
        self.module = module
        self.pres: dict[bool, Any] = {} if pres is None else pres  # profile → pre-instance


# -- the runtime ---------------------------------------------------------------

class Runtime:
    """One engine, one epoch ticker, two linkers (each made on first use).

    Create one per process and share it.
    """

    def __init__(self, *, tick_s: float = TICK_S) -> None:
        cfg = wt.Config()
        cfg.consume_fuel = True
        cfg.epoch_interruption = True
        cfg.cranelift_nan_canonicalization = True
        cfg.wasm_relaxed_simd_deterministic = True
        cfg.cranelift_opt_level = "speed"
        # What the memory fence cannot count is off: more memories (the store
        # limit is per memory), shared and 64-bit memories, and GC heaps.
        cfg.wasm_multi_memory = False
        cfg.wasm_threads = False
        cfg.wasm_memory64 = False
        cfg.wasm_gc = False
        cfg.wasm_function_references = False
        cfg.wasm_exceptions = False
        cfg.wasm_stack_switching = False
        cfg.wasm_custom_page_sizes = False
        cfg.wasm_component_model = False
        self.engine = wt.Engine(cfg)
        self.tick_s = tick_s
        self._linkers: dict[bool, Any] = {}
        self._ticker: threading.Thread | None = None
        self._lock = threading.Lock()

    def _linker(self, deterministic: bool) -> Any:
        """The profile's linker, made on first use (a cold `run` needs only one)."""
        linker = self._linkers.get(deterministic)
        if linker is not None:
            return linker
        with self._lock:
            linker = self._linkers.get(deterministic)
            if linker is None:
                linker = wt.Linker(self.engine)
                linker.define_wasi()
                if deterministic:
                    from plasm_exec import determinism
                    determinism.shadow(linker)
                pollfence.shadow(linker, deterministic)
                self._linkers[deterministic] = linker
        return linker

    def _pre(self, prog: Program, deterministic: bool) -> Any:
        """``prog`` pre-instantiated for the profile (made on its first run)."""
        pre = prog.pres.get(deterministic)
        if pre is None:
            pre = _link(self._linker(deterministic), prog.module)
            prog.pres[deterministic] = pre  # a racing thread makes an equal one
        return pre

    def _ensure_ticker(self) -> None:
        if self._ticker is not None:
            return
        with self._lock:
            if self._ticker is None:
                t = threading.Thread(target=self._tick, name="plasm-epoch", daemon=True)
                t.start()
                self._ticker = t

    def _tick(self) -> None:
        while True:
            time.sleep(self.tick_s)
            self.engine.increment_epoch()

    # -- compiling -----------------------------------------------------------
    def compile(self, wasm: bytes, module_id: str, *,
                load_artifact: Callable[[], bytes | None] | None = None,
                save_artifact: Callable[[bytes], None] | None = None) -> Program:
        """Check and compile ``wasm`` (or load a cached artifact for it)."""
        check_header(wasm)
        module = None
        if load_artifact is not None:
            art = load_artifact()
            if art is not None:
                try:
                    module = wt.Module.deserialize(self.engine, art)
                except wt.WasmtimeError:
                    module = None  # foreign or stale artifact: rebuild
        fresh = module is None
        if module is None:
            try:
                module = wt.Module(self.engine, wasm)
            except wt.WasmtimeError as e:
                raise Malformed(f"not a valid WASM module: {_first_line(e)}",
                                slug="bad_module") from None
        check_module(module)
        if fresh and save_artifact is not None:
            save_artifact(bytes(module.serialize()))
        prog = Program(module_id, len(wasm), module)
        # linking checks the imports; the deterministic profile provides the same
        # functions, so its pre-instance is made when a deterministic run needs it
        prog.pres[False] = _link(self._linker(False), module)
        return prog

    # -- running ---------------------------------------------------------------
    def execute(self, prog: Program, *, argv: list[str], env: dict[str, str],
                limits: dict[str, int], deterministic: bool = False,
                dirs: list[tuple[str, str, bool]] = (),  # type: ignore[assignment]
                stdin_path: str = "/dev/null", stdout_path: str = "/dev/null",
                stderr_path: str = "/dev/null", control: RunControl | None = None,
                stdin_bytes: bytes | None = None) -> Outcome:
        """Run ``prog`` once under ``limits``; every fence outcome is an ``Outcome``.

        The caller owns the stdio paths (files, memfds or pipes as /dev/fd/N).
        ``stdin_bytes``, when given, is the guest's stdin instead of ``stdin_path``:
        a stream of those bytes, then end of file.
        """
        ctl = control or RunControl()
        fuel = int(limits["fuel"])
        store = wt.Store(self.engine)
        linear, elems = memory_split(int(limits["memory_bytes"]))
        store.set_limits(memory_size=linear, table_elements=elems, instances=1,
                         tables=MAX_TABLES, memories=1)
        store.set_fuel(fuel)
        err = ffi.wasmtime_context_fuel_async_yield_interval(store._context(), FUEL_SLICE)
        if err:
            raise wt.WasmtimeError._from_ptr(err)
        store.set_epoch_deadline(1)
        # returns void in the C API (the binding's pointer result is garbage: ignore it)
        ffi.wasmtime_context_epoch_deadline_async_yield_and_update(store._context(), 1)
        self._ensure_ticker()
        wasi = wt.WasiConfig()
        wasi.argv = list(argv)
        wasi.env = [(k, v) for k, v in env.items()]
        if stdin_bytes is not None:
            _stdin_bytes(wasi, stdin_bytes)
        else:
            wasi.stdin_file = stdin_path
        wasi.stdout_file = stdout_path
        wasi.stderr_file = stderr_path
        for host, guest, writable in dirs:
            wasi.preopen_dir(host, guest, fs_mutable=writable)
        store.set_wasi(wasi)
        pre = self._pre(prog, deterministic)
        if deterministic:
            from plasm_exec import determinism
            determinism.begin_run()
        pollfence.begin_run(ctl, time.monotonic_ns())  # the guest's monotonic clock is ~0
        t0 = time.monotonic()
        ctl.deadline = t0 + int(limits["wall_ms"]) / 1000
        ctl.started.set()
        try:
            return self._run(store, pre, fuel, linear, ctl, t0)
        finally:
            pollfence.end_run()
            if deterministic:
                determinism.end_run()

    def _run(self, store: Any, pre: Any, fuel: int, linear: int, ctl: RunControl,
             t0: float) -> Outcome:
        ended, code, trap, msg = "exited", None, None, None
        inst = None
        try:
            inst = _instantiate(store, pre, ctl)
            if inst is not None and _call(store, inst.exports(store)["_start"], ctl):
                code = 0
            else:
                ended = ctl.stop_reason or "cancelled"
                msg = f"plasm-exec: run stopped ({ended})"
        except wt.ExitTrap as e:
            code = e.code
        except wt.Trap as e:
            tc = e.trap_code
            msg = _first_line(e)
            if tc == wt.TrapCode.OUT_OF_FUEL:
                ended = "out_of_fuel"
            else:
                ended, trap = "trapped", (tc.name.lower() if tc is not None else "unknown")
        except wt.WasmtimeError as e:
            msg = _first_line(e)
            text = str(e)
            if inst is None and any(m in text for m in _LIMIT_ERRORS):
                ended = "memory_limit"
            elif "invalid exit status" in text:
                ended, trap = "trapped", "bad_exit_status"
            elif inst is None:
                ended, trap = "trapped", "instantiation_failed"
            else:
                ended, trap = "trapped", "host_error"
        if _stopped_in_poll():  # its error is our own trap: the run was stopped
            ended = ctl.stop_reason or "cancelled"
            msg = f"plasm-exec: run stopped ({ended})"
        wall_ms = int((time.monotonic() - t0) * 1000)
        try:
            left = store.get_fuel()
        except wt.WasmtimeError:
            left = fuel
        consumed = max(0, fuel - left)  # real also when stopped: counted up to the slice
        # fuel_exact: the figure is what a re-execution must reproduce (a run stopped
        # from outside consumed a real but timing-dependent amount)
        fuel_exact = ended not in ("timeout", "output_limit", "cancelled", "interrupted",
                                   "broken_pipe")
        if ctl.stop_reason in ("interrupted", "broken_pipe"):
            ended, fuel_exact = ctl.stop_reason, False  # these win over the rest
        elif ctl.stop_reason == "output_limit":
            ended = "output_limit"  # the output fence wins over how the guest then ended
            fuel_exact = False
        if inst is not None and ended in ("exited", "trapped") and code != 0:
            mem = inst.exports(store).get("memory")
            if isinstance(mem, wt.Memory) and mem.data_len(store) + PAGE > linear:
                ended = "memory_limit"  # it hit the ceiling and then failed
        if ended != "exited" and ended != "memory_limit":
            code = None
        if ended != "trapped":
            trap = None
        if ended == "cancelled":
            ended = "timeout"
        return Outcome(ended, code, trap, consumed, fuel_exact, wall_ms, msg)


def _stdin_bytes(wasi: Any, data: bytes) -> None:
    """``data`` as the guest's stdin (wasmtime-py 50 ships the binding, not a wrapper).

    The vector is a copy made by wasmtime; the config takes it over."""
    vec = ffi.wasm_byte_vec_t()
    ffi.wasm_byte_vec_new(ctypes.byref(vec), len(data),
                          ctypes.cast(ctypes.c_char_p(data), ctypes.POINTER(ffi.wasm_byte_t)))
    ffi.wasi_config_set_stdin_bytes(wasi.ptr(), ctypes.byref(vec))


def _link(linker: Any, module: Any) -> Any:
    try:
        return linker.instantiate_pre(module)
    except wt.WasmtimeError as e:
        raise InputError(f"module cannot be linked against WASI preview1: "
                         f"{_first_line(e)}", slug="bad_import") from None


def _stopped_in_poll() -> bool:
    """Whether this thread's trap came from ``pollfence`` stopping a sleeping guest.

    wasmtime-py also keeps a host function's exception in a module global, to
    raise it at its next call that sees a trap; ours never take that path, so a
    left-over ``Stopped`` is dropped here.
    """
    if isinstance(_func.LAST_EXCEPTION, pollfence.Stopped):
        _func.LAST_EXCEPTION = None
    return pollfence.stopped()


def _drive(fut: Any, ctl: RunControl) -> bool:
    """Poll a call future to its end (True), or until ``ctl`` says stop (False).

    The future is always deleted; deleting an unfinished one unwinds the guest.
    """
    try:
        while not ffi.wasmtime_call_future_poll(fut):
            if ctl.poll() is not None:
                return False
        return True
    finally:
        ffi.wasmtime_call_future_delete(fut)


def _check(trap: Any, error: Any) -> None:
    if error:
        raise wt.WasmtimeError._from_ptr(error)
    if trap:
        raise wt.Trap._from_ptr(trap)


def _instantiate(store: Any, pre: Any, ctl: RunControl) -> Any:
    """The instance, or None when the run was stopped while instantiating."""
    raw = ffi.wasmtime_instance_t()
    trap = ctypes.POINTER(ffi.wasm_trap_t)()
    error = ctypes.POINTER(ffi.wasmtime_error_t)()
    fut = ffi.wasmtime_instance_pre_instantiate_async(
        pre.ptr(), store._context(), ctypes.byref(raw), ctypes.byref(trap),
        ctypes.byref(error))
    if not _drive(fut, ctl):
        return None
    _check(trap, error)
    return wt.Instance._from_raw(raw)


def _call(store: Any, func: Any, ctl: RunControl) -> bool:
    """Call a () -> () export to its end (True) or until stopped (False)."""
    trap = ctypes.POINTER(ffi.wasm_trap_t)()
    error = ctypes.POINTER(ffi.wasmtime_error_t)()
    fut = ffi.wasmtime_func_call_async(store._context(), ctypes.byref(func._func), None, 0,
                                       None, 0, ctypes.byref(trap), ctypes.byref(error))
    if not _drive(fut, ctl):
        return False
    _check(trap, error)
    return True


# wasmtime's words when instantiation asks for more than the store allows
_LIMIT_ERRORS = ("exceeds memory limits", "exceeds table limits", "resource limit exceeded")


def check_module(module: Any) -> None:
    """A runnable WASI preview1 command: `_start`, exported memory, only WASI imports."""
    exports = {e.name: e.type for e in module.exports}
    if not isinstance(exports.get("_start"), wt.FuncType):
        raise InputError("module has no exported `_start` function", slug="no_start",
                         hint="build it as a WASI command (e.g. clang --target=wasm32-wasi)")
    if not isinstance(exports.get("memory"), wt.MemoryType):
        raise InputError("module exports no `memory`", slug="no_memory",
                         hint="WASI needs the guest's linear memory exported as `memory`")
    for imp in module.imports:
        if imp.module != WASI or imp.name not in PREVIEW1 \
                or not isinstance(imp.type, wt.FuncType):
            raise InputError(f"module imports {imp.module}.{imp.name}, which is not a "
                             "WASI preview1 function", slug="bad_import",
                             hint="only wasi_snapshot_preview1 functions are provided")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if "Caused by:" in lines:
        i = lines.index("Caused by:")
        return " ".join(lines[i + 1:i + 3])[:300]
    return (lines[0] if lines else type(e).__name__)[:300]

