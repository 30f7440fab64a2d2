"""What each plasm-exec command does (cli.py only parses)."""

from __future__ import annotations

import contextlib
import os
import re
import stat
import sys
from pathlib import Path

from phase_core import exitcodes, home, log, units
from phase_core.errors import InputError, MissingInput, PhaseError, UsageError
from phase_core.limits import DEFAULT_LIMITS, LIMITS
from plasm_exec.wasmheader import MAX_MODULE_BYTES

TYPE_CHECKING = False  # typing's, without importing typing
if TYPE_CHECKING:
    from typing import Any

    from plasm_exec.signals import SignalGuard

# Exit statuses of `run` when a fence, not the guest, ended the run (never 0..125).
FENCE_EXIT = {
    "trapped": 134,  # as `wasmtime run` (128 + SIGABRT)
    "out_of_fuel": 151,
    "timeout": 152,
    "memory_limit": 153,
    "output_limit": 154,
}


# -- option parsing helpers ----------------------------------------------------

def parse_size(text: str, what: str) -> int:
    return units.parse_size(text, what, allow_zero=what == "--max-output")


def limits_from_args(args: dict[str, Any], base: dict[str, int] | None = None
                     ) -> dict[str, int]:
    lim = dict(base or DEFAULT_LIMITS)
    if args.get("--max-memory"):
        lim["memory_bytes"] = parse_size(args["--max-memory"], "--max-memory")
    if args.get("--max-output"):
        lim["output_bytes"] = parse_size(args["--max-output"], "--max-output")
    if args.get("--fuel"):
        if not re.fullmatch(r"[0-9]{1,20}", str(args["--fuel"])):
            raise UsageError(f"--fuel must be a positive integer, got {args['--fuel']!r}")
        lim["fuel"] = int(args["--fuel"])
    if args.get("--timeout"):  # a bare number is seconds
        lim["wall_ms"] = units.parse_duration(args["--timeout"], "--timeout", bare="s")
    try:
        LIMITS(lim, "limits")
    except PhaseError as e:
        raise UsageError(f"bad limit: {e.message}") from None
    return lim


def parse_env(items: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep or not k or not (k[0].isalpha() or k[0] == "_") \
                or not all(c.isalnum() or c == "_" for c in k) or not k.isascii():
            raise UsageError(f"--env {item!r}: expected NAME=VALUE")
        env[k] = v
    return env


def parse_dirs(items: list[str]) -> list[tuple[str, str, bool]]:
    """``--dir host[::guest][:rw]`` (as `wasmtime run`, plus a read-only default)."""
    out = []
    for item in items or []:
        writable = item.endswith(":rw")
        spec = item.removesuffix(":rw").removesuffix(":ro")
        host, sep, guest = spec.partition("::")
        if not sep:
            guest = host
        if not host or not guest:
            raise UsageError(f"--dir {item!r}: expected <host>[::<guest>][:rw]")
        out.append((host, guest, writable))
    return out


def read_module(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_MODULE_BYTES:
                raise InputError(f"{path} is over the module size cap of {MAX_MODULE_BYTES} "
                                 "bytes", slug="too_large")
            return f.read(MAX_MODULE_BYTES + 1)
    except FileNotFoundError:
        raise MissingInput(f"no such module: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a directory, not a module") from None


def exit_status(ended: str, exit_code: int | None) -> int:
    if ended == "exited" and exit_code is not None:
        return exit_code
    return FENCE_EXIT[ended]


def _home(args: dict[str, Any]) -> Path:
    return home.resolve(args.get("--home"))


def _identity(args: dict[str, Any]) -> Any:
    """The signing key: --key, or the node key, created on first use with a notice."""
    from phase_core.identity import load, load_or_create
    if args.get("--key"):
        return load(Path(args["--key"]))
    path = home.key_path(_home(args))
    try:
        return load(path)
    except MissingInput:
        pass
    ident = load_or_create(path)
    log.get().warning("plasm.key.created", path=str(path), node_id=ident.node_id,
                      message=f"this node had no signing key: created one at {path}; "
                              "`plasm-exec key` prints it as a keyring entry for verifiers")
    return ident


# -- run -------------------------------------------------------------------------

def _executor(hm: Path, args: dict[str, Any], guard: SignalGuard | None) -> Any:
    """An Executor whose compiling and running defer signals to ``guard``."""
    from plasm_exec.api import Executor

    with guard.critical() if guard is not None else contextlib.nullcontext():
        ex = Executor(hm, disk_cache=not args.get("--no-cache"))
    ex.guard = guard
    return ex


def cmd_run(args: dict[str, Any], guard: SignalGuard | None = None) -> int:
    from plasm_exec.api import RunResult, RunSpec

    module_path = args["<module.wasm>"]
    limits = limits_from_args(args)
    spec = RunSpec(argv=[os.path.basename(module_path), *args["<arg>"]],
                   env=parse_env(args["--env"]), limits=limits,
                   deterministic=bool(args["--deterministic"]), dirs=parse_dirs(args["--dir"]))
    spec.check()
    framed = guest_stderr_framed(args.get("--guest-stderr") or "auto")
    receipt_path = args.get("--receipt")
    wasm = read_module(module_path)
    hm = _home(args)
    ex = _executor(hm, args, guard)
    prog = ex.load(wasm)
    identity = _identity(args) if receipt_path else None  # fail early on a bad key
    outcome, stdin_id, out, err, stdin_copy = _stream(ex, prog, spec, keep_stdin=bool(
        receipt_path), guard=guard, framed=framed)
    lg = log.get()
    if outcome.ended == "broken_pipe":
        if stdin_copy is not None:
            os.close(stdin_copy)
        lg.info("plasm.run.broken_pipe", wall_ms=outcome.wall_ms,
                message="the reader of stdout went away; the guest was stopped and no "
                        "receipt was written")
        return exitcodes.BROKEN_PIPE
    result = RunResult(outcome, stdin_id, out.content_id, err.content_id, out.size, err.size)
    lg.info("plasm.run.ended", ended=outcome.ended, exit_code=outcome.exit_code,
            trap=outcome.trap, fuel_consumed=outcome.fuel_consumed, wall_ms=outcome.wall_ms)
    if outcome.ended != "exited":
        lg.warning("plasm.run.fence", ended=outcome.ended, trap=outcome.trap,
                   message=outcome.message or "", limits=limits)
    if receipt_path:
        from plasm_exec.runreceipt import write_receipt
        try:
            write_receipt(Path(receipt_path), ex, hm, identity, wasm, prog.module_id, spec,
                          result, stdin_copy)
        finally:
            if stdin_copy is not None:
                os.close(stdin_copy)
    return exit_status(outcome.ended, outcome.exit_code)


def guest_stderr_framed(how: str) -> bool:
    """``--guest-stderr``: whether the guest's stderr is framed as log records."""
    if how not in ("auto", "raw", "framed"):
        raise UsageError(f"--guest-stderr must be auto, raw or framed, got {how!r}")
    if how == "auto":
        return not os.isatty(2)
    return how == "framed"


def _stream(ex: Any, prog: Any, spec: Any, keep_stdin: bool,
            guard: SignalGuard | None = None, framed: bool = False) -> tuple[Any, ...]:
    """Run with our own stdio: stdin streamed (or spooled), stdout/stderr forwarded.

    With a signal guard the guest runs in a worker thread and this (main) thread
    waits: a signal stops the guest, and ``Stop`` is raised once it has ended.
    """
    from plasm_exec.api import guest_stdin
    from plasm_exec.stdio import Budget, OutputTap, StdinPump, memfd

    ctl = ex.new_control()
    if guard is not None:
        ctl.cancel = guard.event
    budget = Budget(int(spec.limits["output_bytes"]), ctl)
    copy_fd = None
    pump = None
    try:
        st = os.fstat(0)
    except OSError:
        st = None
    spool = st is None or spec.deterministic or stat.S_ISREG(st.st_mode)
    stdin_bytes = None
    if spool:  # a file, or the deterministic profile: the guest reads fixed bytes
        data = _read_all(0) if st is not None else b""
        stdin_bytes, copy_fd, stdin_path = guest_stdin(data)  # as Executor.run does
        if keep_stdin and copy_fd is None:  # the receipt stores it
            copy_fd, _ = memfd("plasm-stdin", data)
        from phase_core.digest import content_id
        stdin_id = content_id(data)
    else:
        keep = None
        if keep_stdin:
            copy_fd, _ = memfd("plasm-stdin-copy")
            keep = os.fdopen(os.dup(copy_fd), "wb", buffering=0)
        pump = StdinPump(0, ctl, keep)
        stdin_path = pump.path
    if pump is not None and guard is not None:
        guard.wake_on_signal(pump.interrupt)
    out = OutputTap(1, budget, ctl)
    err = OutputTap(2, budget, ctl, framed=framed)
    try:
        def go() -> Any:
            return ex.execute(prog, spec, stdin_path=stdin_path, stdout_path=out.path,
                              stderr_path=err.path, control=ctl, stdin_bytes=stdin_bytes)
        outcome = guard.in_worker(go) if guard is not None else go()
    finally:
        out.finish()
        err.finish()
        if pump is not None:
            pump.finish()
            if pump.keep is not None:
                pump.keep.close()
    if pump is not None:
        stdin_id = pump.content_id
    if budget.exceeded and outcome.ended != "output_limit":
        outcome = outcome.replace(ended="output_limit", exit_code=None, trap=None,
                                  fuel_exact=False)
    if copy_fd is not None and not keep_stdin:
        os.close(copy_fd)
        copy_fd = None
    return outcome, stdin_id, out, err, copy_fd


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        b = os.read(fd, 1 << 20)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


# -- job -------------------------------------------------------------------------

def cmd_job(args: dict[str, Any], guard: SignalGuard | None = None) -> int:
    from phase_core.cas import ContentStore
    from phase_core.timefmt import now as clock
    from phase_core.timefmt import parse_time
    from phase_core.trust import Keyring
    from plasm_exec.job import execute_job
    from plasm_exec.jobpipe import open_jobs, run_jobs

    hm = _home(args)
    keyring = Keyring.load(Path(args["--keys"])) if args.get("--keys") else None
    ceilings = limits_from_args(args)
    now = parse_time(args["--now"], "--now") if args.get("--now") else clock()
    identity = _identity(args)
    cas = ContentStore(home.cas_path(hm))
    ex = _executor(hm, args, guard)
    src = open_jobs(args.get("<jobs.jsonl>"))

    def execute(man: Any, mpath: Path | None, ipath: Path | None) -> Any:
        return execute_job(man, executor=ex, cas=cas, identity=identity, now=now,
                           keyring=keyring, ceilings=ceilings, module_path=mpath,
                           stdin_path=ipath)
    try:
        return run_jobs(src, None if args.get("--quiet") else sys.stdout, execute)
    finally:
        if src is not sys.stdin.buffer:
            src.close()


# -- verify ------------------------------------------------------------------------

def cmd_verify(args: dict[str, Any], guard: SignalGuard | None = None) -> int:
    from phase_core.canonical import parse
    from phase_core.cas import ContentStore
    from phase_core.trust import Keyring
    from plasm_exec.receipts import manifest_path_for
    from plasm_exec.reexec import verify_receipt

    rpath = Path(args["<receipt>"])
    mpath = Path(args["--manifest"]) if args.get("--manifest") else manifest_path_for(rpath)
    robj = parse(_read(rpath))
    mobj = parse(_read(mpath))
    keyring = Keyring.load(Path(args["--keys"])) if args.get("--keys") else None
    hm = _home(args)
    res = verify_receipt(robj, manifest_obj=mobj, cas=ContentStore(home.cas_path(hm)),
                         keyring=keyring, executor=_executor(hm, args, guard))
    if not args.get("--quiet"):
        from phase_core.cli.jsonl import write_record
        write_record(res.record())
    return exitcodes.OK


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise MissingInput(f"no such file: {path}") from None


# -- key -----------------------------------------------------------------------

def cmd_key(args: dict[str, Any]) -> int:
    from phase_core.trust import format_entry
    ident = _identity(args)
    name = args.get("--name") or f"worker-{ident.node_id[:12]}"
    sys.stdout.write(format_entry(name, ident.node_id, ["worker"]))
    sys.stdout.flush()
    return exitcodes.OK
