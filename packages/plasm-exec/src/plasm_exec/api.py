"""The library API that ``plasm-exec`` and ``plasmd`` share.

::

    ex = Executor(home)                       # all share the process's engine and ticker
    prog = ex.load(wasm_bytes)                # checked, compiled once (disk cache + memory)
    res = ex.run(prog, RunSpec(argv=["x"], limits=DEFAULT_LIMITS), stdin=b"...")
    res.outcome.ended, res.stdout, res.stdout_id

``Executor.run`` is thread-safe and reuses the program's pre-instantiation;
each call makes only a new Store. wasm runs with the GIL released, so threads
run guests on all cores. Importing this module does not import wasmtime; the
first ``Executor`` does.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
from pathlib import Path

from phase_core.errors import DigestMismatch, Interrupted, MissingInput, UsageError
from phase_core.limits import DEFAULT_LIMITS, LIMITS
from plasm_exec.values import Value

TYPE_CHECKING = False  # typing's, without importing typing
if TYPE_CHECKING:
    from typing import Any

    from plasm_exec.engine import Outcome, Program, RunControl
    from plasm_exec.signals import SignalGuard

PROGRAMS_IN_MEMORY = 32
# A stdin up to this size reaches the guest as bytes (an in-memory stream), a larger
# one as a file. wasmtime reads a file stdin on its blocking-I/O threads, a hand-off
# per read; bytes cost none (docs/performance.md). The rule is the size alone, so a
# job's guest sees the same kind of stdin on every node.
STDIN_IN_MEMORY = 1 << 20


def module_id_of(wasm: bytes) -> str:
    from phase_core.digest import content_id
    return content_id(wasm)


class RunSpec(Value):
    """What to run a program with: argv, environment, limits, profile, preopened dirs."""

    _fields = ("argv", "env", "limits", "deterministic", "dirs")

    def __init__(self, argv: list[str] | None = None, env: dict[str, str] | None = None,
                 limits: dict[str, int] | None = None, deterministic: bool = False,
                 dirs: list[tuple[str, str, bool]] | None = None) -> None:
        self.argv: list[str] = ["main.wasm"] if argv is None else argv
        self.env: dict[str, str] = {} if env is None else env
        self.limits: dict[str, int] = dict(DEFAULT_LIMITS) if limits is None else limits
        self.deterministic = deterministic
        # (host, guest, writable)
        self.dirs: list[tuple[str, str, bool]] = [] if dirs is None else dirs

    def check(self) -> None:
        LIMITS(self.limits, "limits")
        if self.deterministic and any(rw for _, _, rw in self.dirs):
            raise UsageError("--deterministic allows no writable directory",
                             hint="drop :rw from --dir, or drop --deterministic")
        for host, _, _ in self.dirs:
            if not Path(host).is_dir():
                raise MissingInput(f"--dir {host}: no such directory")


class RunResult(Value):
    """A run's outcome and the content ids and sizes of its stdio."""

    _fields = ("outcome", "stdin_id", "stdout_id", "stderr_id", "stdout_bytes",
               "stderr_bytes", "stdout", "stderr")

    def __init__(self, outcome: Outcome, stdin_id: str, stdout_id: str, stderr_id: str,
                 stdout_bytes: int, stderr_bytes: int, stdout: bytes | None = None,
                 stderr: bytes | None = None) -> None:
        self.outcome = outcome
        self.stdin_id = stdin_id
        self.stdout_id = stdout_id
        self.stderr_id = stderr_id
        self.stdout_bytes = stdout_bytes
        self.stderr_bytes = stderr_bytes
        self.stdout = stdout  # captured runs only
        self.stderr = stderr


class Executor:
    """Compile once, run many times, from any thread."""

    def __init__(self, home: Path | None = None, *, disk_cache: bool = True,
                 cache_max_bytes: int | None = None) -> None:
        from plasm_exec import engine
        from plasm_exec.cache import DEFAULT_MAX_BYTES, ModuleCache, cache_dir

        self.engine_mod = engine
        self.runtime = engine.shared()  # the process's one engine and ticker
        self.cache = None
        if disk_cache and home is not None:
            self.cache = ModuleCache(cache_dir(home), fingerprint=engine.fingerprint(),
                                     max_bytes=cache_max_bytes or DEFAULT_MAX_BYTES)
        self._programs: collections.OrderedDict[str, Program] = collections.OrderedDict()
        self._lock = threading.Lock()
        # The CLI's signal guard (plasm_exec.signals): runs poll its event, and
        # compiling and running are sections where a signal is deferred.
        self.guard: SignalGuard | None = None

    def _critical(self) -> contextlib.AbstractContextManager[None]:
        return self.guard.critical() if self.guard is not None else contextlib.nullcontext()

    @property
    def runtime_info(self) -> dict[str, str]:
        return {"name": self.engine_mod.RUNTIME_NAME, "version": self.engine_mod.RUNTIME_VERSION}

    def load(self, wasm: bytes, module_id: str | None = None) -> Program:
        """A checked, compiled program for ``wasm`` (raises on bad modules)."""
        self.engine_mod.check_header(wasm)
        mid = module_id or module_id_of(wasm)
        with self._lock:
            prog = self._programs.get(mid)
            if prog is not None:
                self._programs.move_to_end(mid)
                return prog
        cache = self.cache
        with self._critical():
            prog = self.runtime.compile(
                wasm, mid,
                load_artifact=(lambda: cache.load(mid)) if cache else None,
                save_artifact=(lambda art: cache.save(mid, art)) if cache else None)
        with self._lock:
            self._programs[mid] = prog
            while len(self._programs) > PROGRAMS_IN_MEMORY:
                self._programs.popitem(last=False)
        return prog

    def cached(self, module_id: str) -> Program | None:
        """The compiled program for ``module_id`` if it is in memory (no I/O)."""
        with self._lock:
            prog = self._programs.get(module_id)
            if prog is not None:
                self._programs.move_to_end(module_id)
            return prog

    def new_control(self) -> RunControl:
        return self.engine_mod.RunControl()

    def execute(self, prog: Program, spec: RunSpec, *, stdin_path: str, stdout_path: str,
                stderr_path: str, control: RunControl | None = None,
                stdin_bytes: bytes | None = None) -> Outcome:
        """The raw run: the caller owns the stdio paths (``stdin_bytes``, when given,
        is the guest's stdin instead of ``stdin_path``)."""
        from phase_core import log
        log.get().debug("plasm.run.started", module=prog.module_id,
                        limits=dict(spec.limits))
        return self.runtime.execute(
            prog, argv=spec.argv, env=spec.env, limits=spec.limits,
            deterministic=spec.deterministic, dirs=spec.dirs, stdin_path=stdin_path,
            stdout_path=stdout_path, stderr_path=stderr_path, control=control,
            stdin_bytes=stdin_bytes)

    def run(self, prog: Program, spec: RunSpec, *, stdin: bytes | Path | None = None,
            control: RunControl | None = None,
            cancel: threading.Event | None = None,
            stdin_id: str | None = None) -> RunResult:
        """Run with stdin from bytes or a file, capturing stdout and stderr in memory.

        ``stdin_id``: the content id of a stdin file the caller has checked (a store
        blob); without it the file is hashed here. A stdin of at most
        ``STDIN_IN_MEMORY`` bytes is read and handed to the guest as bytes, hashed
        as it is handed over (``DigestMismatch`` if it no longer has ``stdin_id``).

        ``cancel``: when another thread sets it, the guest is stopped at its next
        yield (an epoch tick or a fuel slice) and ``Interrupted`` (exit 130) is
        raised; there is no result to sign.
        """
        from plasm_exec.capture import PipeCapture

        spec.check()
        ctl = control or self.new_control()
        if cancel is None and self.guard is not None:
            cancel = self.guard.event
        if cancel is not None:
            if cancel.is_set():
                raise Interrupted("the run was cancelled before it started")
            ctl.cancel = cancel
        cap = PipeCapture(int(spec.limits["output_bytes"]), ctl)
        in_fd = None
        try:
            data = _small_file(stdin) if isinstance(stdin, Path) else stdin or b""
            if data is None:  # a file over STDIN_IN_MEMORY: the guest reads it
                assert isinstance(stdin, Path)
                stdin_id = stdin_id or _file_id(stdin)
                in_bytes, stdin_path = None, str(stdin)
            else:  # the bytes the guest gets are the ones hashed
                got = module_id_of(data)
                if isinstance(stdin, Path) and stdin_id is not None and got != stdin_id:
                    raise DigestMismatch(f"stdin {stdin_id} changed on disk: it now "
                                         f"hashes to {got}")
                stdin_id = got
                in_bytes, in_fd, stdin_path = guest_stdin(data)

            def go() -> Outcome:
                return self.execute(prog, spec, stdin_path=stdin_path,
                                    stdout_path=cap.out_path, stderr_path=cap.err_path,
                                    control=ctl, stdin_bytes=in_bytes)
            # under the CLI's guard the guest runs in a worker thread, so a signal is
            # handled even while the guest sits in a blocking WASI call
            outcome = self.guard.in_worker(go) if self.guard is not None else go()
            out, err, exceeded = cap.collect()
        finally:
            cap.close()
            if in_fd is not None:
                os.close(in_fd)
        if outcome.ended == "interrupted":
            raise Interrupted(f"the run was cancelled after {outcome.wall_ms} ms",
                              hint="nothing was recorded; run the job again to get a result")
        if exceeded and outcome.ended != "output_limit":
            outcome = _as_output_limit(outcome)
        return RunResult(outcome, stdin_id, module_id_of(out), module_id_of(err),
                         len(out), len(err), out, err)


def _as_output_limit(o: Outcome) -> Outcome:
    return o.replace(ended="output_limit", exit_code=None, trap=None, fuel_exact=False)


def guest_stdin(data: bytes) -> tuple[bytes | None, int | None, str]:
    """How ``data`` reaches the guest, by its size alone (so the same on every node and
    on re-execution): (bytes for the guest or None, a memfd to close or None, the path
    the guest opens otherwise). Empty: /dev/null; up to ``STDIN_IN_MEMORY``: the
    bytes; larger: a memfd holding them."""
    if not data:
        return None, None, "/dev/null"
    if len(data) <= STDIN_IN_MEMORY:
        return data, None, "/dev/null"
    from plasm_exec.stdio import memfd

    fd, path = memfd("plasm-stdin", data)
    return None, fd, path


def _small_file(path: Path) -> bytes | None:
    """The file's bytes if it holds at most ``STDIN_IN_MEMORY`` (then the guest gets
    them as an in-memory stdin), else None (the guest reads the file)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > STDIN_IN_MEMORY:
                return None
            data = f.read(STDIN_IN_MEMORY + 1)
    except FileNotFoundError:
        raise MissingInput(f"no such file: {path}") from None
    return data if len(data) <= STDIN_IN_MEMORY else None


def _file_id(path: Path) -> str:
    import hashlib
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except FileNotFoundError:
        raise MissingInput(f"no such file: {path}") from None
    return "sha256:" + h.hexdigest()


def run_spec_from_manifest(body: dict[str, Any], limits: dict[str, int] | None = None) -> RunSpec:
    return RunSpec(argv=list(body["argv"]), env=dict(body["env"]),
                   limits=dict(limits or body["limits"]),
                   deterministic=bool(body.get("deterministic", False)))
