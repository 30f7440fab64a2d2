"""The wasmtime border: with ``capi`` (the C API, bound directly), ``determinism`` and
``pollfence``, the only modules that touch wasmtime.

``Runtime`` owns one wasmtime engine (fuel metering) and up to two linkers
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
yields back to the poller after every ``FUEL_SLICE`` of fuel and at every epoch
tick (one ticker thread per process, ``TICK_S``); ``capi.poll_until`` asks the run's
``RunControl`` whether to go on (deadline, output fence, the caller's cancel)
and, if not, drops the future, which unwinds the guest. So a run stops within
one tick or one slice, whichever comes first. A guest asleep in ``poll_oneoff``
makes no yield; ``pollfence`` asks ``RunControl`` itself at each tick and, to
stop, traps the guest out of its sleep. The fuel it reports is what it
consumed, also when it was stopped: wasmtime writes the fuel counter back at
each slice and at each call, so a stopped run's figure is short by less than
one slice (a tight loop stopped by an epoch *trap*, as before, reported 0).
The async entry points are ``wasmtime_instance_pre_instantiate_async``,
``wasmtime_func_call_async`` and ``wasmtime_call_future_poll``.

wasmtime errors are translated to ``phase_core`` errors here.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Callable

from phase_core.errors import InputError, Malformed
from plasm_exec import capi, pollfence
from plasm_exec.values import Outcome, Value
from plasm_exec.wasmheader import check_header

TYPE_CHECKING = False  # typing's, without importing typing
if TYPE_CHECKING:
    from typing import Any

WASI = "wasi_snapshot_preview1"
RUNTIME_NAME = "wasmtime"
RUNTIME_VERSION: str = capi.VERSION
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
# wasmtime_config_<name>_set for each. What the memory fence cannot count is off:
# more memories (the store limit is per memory), shared and 64-bit memories, and GC
# heaps.
ENGINE_SETTINGS: dict[str, int | bool] = {
    "consume_fuel": True, "epoch_interruption": True,
    "cranelift_nan_canonicalization": True, "wasm_relaxed_simd_deterministic": True,
    "cranelift_opt_level": capi.OPT_SPEED,
    "wasm_multi_memory": False, "wasm_threads": False, "wasm_memory64": False,
    "wasm_gc": False, "wasm_function_references": False, "wasm_exceptions": False,
    "wasm_stack_switching": False, "wasm_custom_page_sizes": False,
    "wasm_component_model": False,
}

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
    return f"{ENGINE_PROFILE};wasmtime={RUNTIME_VERSION};{os.uname().machine}"


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

    A process needs one: ``shared()`` gives it (every ``Executor`` uses it). Each
    ``Runtime`` keeps its ticker thread, and so itself, for the rest of the process.
    """

    def __init__(self, *, tick_s: float = TICK_S) -> None:
        self.engine = capi.Engine(ENGINE_SETTINGS)
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
                linker = capi.Linker(self.engine)  # WASI preview1 defined
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
                    module = capi.Module.deserialize(self.engine, art)
                except capi.WasmError:
                    module = None  # foreign or stale artifact: rebuild
        fresh = module is None
        if module is None:
            try:
                module = capi.Module.compile(self.engine, wasm)
            except capi.WasmError as e:
                raise Malformed(f"not a valid WASM module: {_first_line(e)}",
                                slug="bad_module") from None
        check_module(module)
        if fresh and save_artifact is not None:
            save_artifact(module.serialize())
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
        store = capi.Store(self.engine)
        try:
            return self._execute(store, prog, argv, env, limits, deterministic, dirs,
                                 stdin_path, stdout_path, stderr_path, ctl, stdin_bytes)
        finally:
            store.close()  # frees the guest's memory now, not when the collector runs

    def _execute(self, store: capi.Store, prog: Program, argv: list[str],
                 env: dict[str, str], limits: dict[str, int], deterministic: bool,
                 dirs: Any, stdin_path: str, stdout_path: str, stderr_path: str,
                 ctl: RunControl, stdin_bytes: bytes | None) -> Outcome:
        fuel = int(limits["fuel"])
        lib, ctx = capi.lib, store.context
        linear, elems = memory_split(int(limits["memory_bytes"]))
        # memory bytes, table elements, instances, tables, memories
        lib.wasmtime_store_limiter(store.ptr, linear, elems, 1, MAX_TABLES, 1)
        capi.check(lib.wasmtime_context_set_fuel(ctx, fuel))
        capi.check(lib.wasmtime_context_fuel_async_yield_interval(ctx, FUEL_SLICE))
        lib.wasmtime_context_set_epoch_deadline(ctx, 1)
        lib.wasmtime_context_epoch_deadline_async_yield_and_update(ctx, 1)
        self._ensure_ticker()
        wasi = capi.wasi_config(argv, env, stdin_bytes, stdin_path, stdout_path, stderr_path,
                                dirs)
        capi.check(lib.wasmtime_context_set_wasi(ctx, wasi))  # takes the config over
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

    def _run(self, store: capi.Store, pre: capi.InstancePre, fuel: int, linear: int,
             ctl: RunControl, t0: float) -> Outcome:
        ended, code, trap, msg = "exited", None, None, None
        inst = None
        try:
            inst = _instantiate(store, pre, ctl)
            if inst is not None and _call_start(store, inst, ctl):
                code = 0
            else:
                ended = ctl.stop_reason or "cancelled"
                msg = f"plasm-exec: run stopped ({ended})"
        except capi.ExitStatus as e:
            code = e.code
        except capi.Trap as e:
            msg = _first_line(e)
            if e.code == capi.OUT_OF_FUEL:
                ended = "out_of_fuel"
            else:
                ended, trap = "trapped", e.name
        except capi.WasmError as e:
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
        if pollfence.stopped():  # its error is our own trap: the run was stopped
            ended = ctl.stop_reason or "cancelled"
            msg = f"plasm-exec: run stopped ({ended})"
        wall_ms = int((time.monotonic() - t0) * 1000)
        try:
            left = store.get_fuel()
        except capi.WasmError:
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
            mem = store.export(inst, "memory")
            if mem is not None and mem.kind == capi.EXTERN_MEMORY \
                    and store.memory_size(mem) + PAGE > linear:
                ended = "memory_limit"  # it hit the ceiling and then failed
        if ended != "exited" and ended != "memory_limit":
            code = None
        if ended != "trapped":
            trap = None
        if ended == "cancelled":
            ended = "timeout"
        return Outcome(ended, code, trap, consumed, fuel_exact, wall_ms, msg)


_shared: Runtime | None = None
_shared_lock = threading.Lock()


def shared() -> Runtime:
    """The process's one ``Runtime``, made on first use. A process that makes many
    executors (``phase-verify --reexec`` over many receipts, say) shares its engine
    and its one ticker thread, where a runtime each would keep a thread ticking a
    hundred times a second for every executor ever made."""
    global _shared
    rt = _shared
    if rt is None:
        with _shared_lock:
            rt = _shared
            if rt is None:
                rt = _shared = Runtime()
    return rt


def _forget_shared() -> None:
    """In a forked child: its parent's ticker thread did not come along, so the
    child makes a runtime of its own when it needs one."""
    global _shared, _shared_lock
    _shared, _shared_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_shared)


def _link(linker: capi.Linker, module: capi.Module) -> capi.InstancePre:
    try:
        return linker.instantiate_pre(module)
    except capi.WasmError as e:
        raise InputError(f"module cannot be linked against WASI preview1: "
                         f"{_first_line(e)}", slug="bad_import") from None


def _instantiate(store: capi.Store, pre: capi.InstancePre,
                 ctl: RunControl) -> capi.Instance | None:
    """The instance, or None when the run was stopped while instantiating."""
    inst = capi.Instance()
    trap, error = ctypes.c_void_p(), ctypes.c_void_p()
    fut = capi.lib.wasmtime_instance_pre_instantiate_async(
        pre.ptr, store.context, ctypes.byref(inst), ctypes.byref(trap), ctypes.byref(error))
    if not capi.poll_until(fut, ctl.poll):
        return None
    capi.raise_outcome(trap, error)
    return inst


def _call_start(store: capi.Store, inst: capi.Instance, ctl: RunControl) -> bool:
    """Call the instance's ``_start`` to its end (True) or until stopped (False)."""
    start = store.export(inst, "_start")
    if start is None:  # check_module saw it in the module
        raise capi.WasmError("the instance has no `_start` export")
    trap, error = ctypes.c_void_p(), ctypes.c_void_p()
    fut = capi.lib.wasmtime_func_call_async(store.context, ctypes.byref(start.of.func), None,
                                            0, None, 0, ctypes.byref(trap),
                                            ctypes.byref(error))
    if not capi.poll_until(fut, ctl.poll):
        return False
    capi.raise_outcome(trap, error)
    return True


# wasmtime's words when instantiation asks for more than the store allows
_LIMIT_ERRORS = ("exceeds memory limits", "exceeds table limits", "resource limit exceeded")


def check_module(module: capi.Module) -> None:
    """A runnable WASI preview1 command: `_start`, exported memory, only WASI imports."""
    exports = module.exports()
    if exports.get("_start") != capi.EXTERN_FUNC:
        raise InputError("module has no exported `_start` function", slug="no_start",
                         hint="build it as a WASI command (e.g. clang --target=wasm32-wasi)")
    if exports.get("memory") != capi.EXTERN_MEMORY:
        raise InputError("module exports no `memory`", slug="no_memory",
                         hint="WASI needs the guest's linear memory exported as `memory`")
    for imp_module, imp_name, kind in module.imports():
        if imp_module != WASI or imp_name not in PREVIEW1 or kind != capi.EXTERN_FUNC:
            raise InputError(f"module imports {imp_module}.{imp_name}, which is not a "
                             "WASI preview1 function", slug="bad_import",
                             hint="only wasi_snapshot_preview1 functions are provided")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if "Caused by:" in lines:
        i = lines.index("Caused by:")
        return " ".join(lines[i + 1:i + 3])[:300]
    return (lines[0] if lines else type(e).__name__)[:300]

